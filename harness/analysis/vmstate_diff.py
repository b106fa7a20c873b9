"""QEMU's scripts/vmstate-static-checker.py report (two binaries' `-dump-vmstate` of one machine type compared),
parsed into findings and judged for one direction of a cross-version pair — pure: the dumps and the run are
harness.tools.vmstate_check's.

What the checker sees is every device type compiled in, not only those a guest has, and names, not wire formats:
a renamed field with the same layout ("hpet": num_timers → num_timers_save, 7.2 → 10.0) or a QOM type renamed
(pci-piix3 → PIIX3) is reported although the stream loads. So the judgement is narrow, and says so:
  forward (the destination is the newer QEMU: what QEMU promises to load): no VERSION finding — a section whose
      version the destination does not know (source version > destination's) or no longer accepts (source version
      < destination's minimum) cannot be loaded at all, whatever the names; the other findings are listed;
  backward (the destination is the older QEMU): differences are expected and must be listed (a report with no
      finding between two versions compared nothing); version findings there are what the older QEMU cannot
      load, listed, not failed.
A line the parser does not recognise is kept as kind 'other' and listed (a newer checker may say more)."""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass

VERSION_KINDS = frozenset({"version-too-new", "version-below-minimum"})
_KINDS = (   # (kind, pattern) in the checker's print order of precedence
    ("section-missing", re.compile(r'^Section "(?P<section>[^"]+)" does not exist in dest')),
    ("version-below-minimum", re.compile(r'^Section "(?P<section>[^"]+)".*minimum version error')),
    ("version-too-new", re.compile(r'^Section "(?P<section>[^"]+)".*version error')),
    ("size-mismatch", re.compile(r'^Section "(?P<section>[^"]+)".*size mismatch')),
    ("field-renamed", re.compile(r'^Section "(?P<section>[^"]+)".*expected field')),
    ("subsection-missing", re.compile(r'^Section "(?P<section>[^"]+)".*Subsection "[^"]+" not found')),
    ("entry-missing", re.compile(r'^Section "(?P<section>[^"]+)".*(Entry "[^"]+" missing|missing description)')),
    ("description-renamed", re.compile(r'^Section "(?P<section>[^"]+)".*missing, got')),
    ("machine-mismatch", re.compile(r"^Warning: checking incompatible machine types")),
)


@dataclass(frozen=True)
class Finding:
    kind: str
    section: str
    line: str


@dataclass(frozen=True)
class Judgement:
    passed: bool
    summary: str                 # one line: what was judged and found
    findings: tuple[Finding, ...]

    def counts(self) -> dict[str, int]:
        return dict(Counter(f.kind for f in self.findings))


def parse_report(text: str) -> list[Finding]:
    findings = []
    for line in (raw.strip() for raw in text.splitlines()):
        if not line:
            continue
        for kind, pattern in _KINDS:
            if match := pattern.search(line):
                findings.append(Finding(kind, match.groupdict().get("section") or "", line))
                break
        else:
            findings.append(Finding("other", "", line))
    return findings


def judge(report: str, backward: bool) -> Judgement:
    findings = tuple(parse_report(report))
    version = [f for f in findings if f.kind in VERSION_KINDS]
    tally = ", ".join(f"{n} {kind}" for kind, n in sorted(Counter(f.kind for f in findings).items())) or "none"
    if backward:
        passed = bool(findings)
        summary = (f"new → old: {len(findings)} differences listed ({tally}); "
                   + (f"{len(version)} sections the older QEMU cannot load: "
                      + ", ".join(sorted({f.section for f in version})) if version else "no version finding")
                   if passed else "new → old: the checker listed no difference between two versions")
        return Judgement(passed, summary, findings)
    passed = not version
    summary = (f"old → new: no version finding ({tally} listed, not judged: names, not wire formats)" if passed
               else f"old → new: {len(version)} sections the newer QEMU cannot load: "
                    + "; ".join(f.line for f in version[:5]))
    return Judgement(passed, summary, findings)
