"""`make matrix`: the behaviour tests over pairs of QEMU versions, as a pair × test table.

    python -m harness.tools.matrix --old build/qemu/debian-7.2…/usr/bin/qemu-system-x86_64 \\
        [--new /usr/bin/qemu-system-x86_64] [--pairs upgrade,downgrade,same] [--lock FILE] \\
        [--artefacts artefacts/matrix] [-- PYTEST SELECTION AND ARGS]

Pairs: old → new (upgrade, the host upgrade), new → old (downgrade, backward: QEMU supports it wherever the old
binary knows the machine type) and new → new (same). `--old`/`--new` take any binary or build tree, as
--qemu-binary does. Each pair is one pytest run with --qemu-src/--qemu-dst, so the harness picks the machine type
and CPU model both binaries support (harness.qemu.compat), skips a test needing a feature one side lacks, naming the
side ("QEMU lacks capability 'x' on the source"), and runs a test exposed to a known bug of one side with the bug's
workaround where it has one (harness.qemu.known_bugs), else expects it to fail.

A cell is `pass`, `fail` (with the first failing verdict or the crash), `error` (set-up or teardown failed: nothing
judged), `skip` or `xfail` (with pytest's reason), or `refused`: on a backward pair, a failure whose text carries
the destination QEMU's own refusal to load the stream (e.g. "error while loading state for instance 0x0 of device
…"): QEMU's message is shown. A forward pair's refusal is a failure (loading an older stream is what QEMU
promises). A cell also names the workarounds its test ran with (the test's platform.json, marked `*`) and the
verdicts a known bug made fail as expected while the rest of the test was judged (its verdicts.json, marked `†`).
The table, with each pair's machine/CPU choice, known bugs and counts under it, is printed at the end and written to
ARTEFACTS/matrix.json and ARTEFACTS/index.html (harness.report.matrix_page; cells link to each pair's run index).

Exit status: 0 every cell is pass, skip, xfail or refused; 1 a cell failed or errored; 4 a pytest run could not run
(pytest exit other than 0/1, no JUnit XML, no test ran; as `make validate`) — nothing is judged then; 130 stopped
by Ctrl-C or SIGTERM (even when started with `&` by a shell that ignores SIGINT in such jobs): the pair's pytest
gets one SIGTERM and ends as after its own Ctrl-C — its QEMUs, guests, namespaces and temp dirs removed — and
the matrix exits without a table (harness.core.process.run_child).
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

from harness.core.checkout import ROOT, require_checkout
from harness.core.process import interruptible
from harness.tools.flake import exclusive, failure_reasons
from harness.qemu.binary import QemuBinary, QemuNotFound, version_numbers
from harness.report.matrix_page import render_matrix
from harness.core.files import atomic_write_text
from harness.report.artefacts import safe_name
from harness.tools.validate import COULD_NOT_RUN, Case, read_run, run_pytest
from harness.tools.vmstate_check import CheckerFailed, CheckerUnavailable, check_pair

# Every behaviour file, so a new behaviour joins the matrix without an edit here; `slow` matrices stay out.
DEFAULT_TESTS = ["tests/behaviour", "-m", "not slow"]
# What a destination QEMU prints when it will not load a stream (savevm.c, migration.c, ram.c): its own words.
REFUSALS = ("load of migration failed", "error while loading state", "Machine type received", "Unknown savevm section",
            "Missing section footer", "Unknown ramblock", "Length mismatch", "Unknown combination of migration flags",
            "Failed to load")
_QEMU_LINE = re.compile(r"^\s*qemu-system-[\w-]+: (.+)$", re.M)


@dataclass(frozen=True)
class Pair:
    source: str          # label, e.g. "7.2"
    destination: str
    source_spec: str
    destination_spec: str
    backward: bool       # the destination is the older version

    @property
    def name(self) -> str:
        return f"{self.source}→{self.destination}"

    @property
    def slug(self) -> str:
        return f"{self.source}-to-{self.destination}"


@dataclass
class Cell:
    outcome: str         # pass | fail | error | skip | xfail | refused
    reason: str = ""
    link: str = ""       # the test's row in the pair's run index, relative to the matrix's directory
    workaround: str = ""  # the known bugs whose workaround the test ran with (harness.qemu.known_bugs), if any
    expected: str = ""    # verdicts that failed as a known bug says they do (harness.qemu.known_bugs), if any


@dataclass
class PairRun:
    pair: Pair
    cells: dict[str, Cell] = field(default_factory=dict)
    platform: str = ""   # the harness's machine type / CPU choice and why (from the run header)
    known_bugs: str = ""  # the known QEMU bugs the pair's binaries have and what the run did (run header)
    seconds: float = 0.0
    could_not_run: str | None = None


def version_of(spec: str, arch: str = "x86_64") -> tuple[int, ...]:
    """(major, minor, micro) of a binary or build tree; QemuNotFound with one line if it is not a QEMU."""
    binary = QemuBinary.locate(spec, f"qemu-system-{arch}")
    numbers = version_numbers(binary.identify(arch))
    if numbers is None:
        raise QemuNotFound(f"{spec}: cannot read a version from `-version`")
    return numbers


# pairs_for's pairs, in its order: old → new (the host upgrade), new → old (backward), new → new.
PAIR_KINDS = ("upgrade", "downgrade", "same")


def _pair_kinds(text: str) -> list[str]:
    kinds = [k.strip() for k in text.split(",") if k.strip()]
    unknown = [k for k in kinds if k not in PAIR_KINDS]
    if unknown or not kinds:
        raise argparse.ArgumentTypeError(f"{text!r}: pairs are {', '.join(PAIR_KINDS)}")
    return kinds


def pairs_for(old: str, new: str, old_version: tuple[int, ...], new_version: tuple[int, ...]) -> list[Pair]:
    o, n = ".".join(map(str, old_version[:2])), ".".join(map(str, new_version[:2]))
    if o == n:
        o, n = f"old-{o}", f"new-{n}"
    return [Pair(o, n, old, new, old_version > new_version), Pair(n, o, new, old, new_version > old_version),
            Pair(n, n, new, new, False)]


def refusal(message: str) -> str | None:
    """QEMU's own lines refusing to load a stream, if the failure text carries them."""
    lines = [m.strip() for m in _QEMU_LINE.findall(message)]
    refusing = [line for line in lines if any(r in line for r in REFUSALS)]
    return "; ".join(dict.fromkeys(refusing)) if refusing else None


def cell_for(case: Case, pair: Pair, reason: str = "") -> Cell:
    """One JUnit case as a matrix cell. `reason` is the failing verdict's first line, if the run recorded one."""
    first = (case.message.strip().splitlines() or [""])[0]
    if case.outcome == "passed":
        return Cell("pass")
    if case.outcome in ("skipped", "xfailed"):
        return Cell("skip" if case.outcome == "skipped" else "xfail", first)
    refused = refusal(case.message) if pair.backward else None
    if refused:
        return Cell("refused", refused)
    # An error is the test's set-up or teardown failing (a QEMU that would not start): nothing was judged.
    return Cell("error" if case.outcome == "error" else "fail", reason or first)


def run_pair(pair: Pair, artefacts: Path, pytest_args: Sequence[str], lock: Path | None) -> PairRun:
    directory = artefacts / pair.slug
    junit = artefacts / f"{pair.slug}.junit.xml"
    junit.unlink(missing_ok=True)   # an earlier run's file must never be read as this run's
    args = [sys.executable, "-m", "pytest", *pytest_args, "--qemu-src", pair.source_spec, "--qemu-dst",
            pair.destination_spec, "--artefacts", str(directory), f"--junitxml={junit}", "-p", "no:cacheprovider",
            "-q"]
    print(f"[matrix] {pair.name}: {' '.join(args[3:])}", flush=True)
    started = time.monotonic()
    with exclusive(lock):
        code, error_line = run_pytest(args)
    run = PairRun(pair, seconds=time.monotonic() - started)
    cases, run.could_not_run = read_run(code, junit, error_line)
    latest = directory / "latest"
    root = latest.resolve() if latest.exists() else None
    reasons = failure_reasons(root)
    header, directories = run_record(root)
    run.platform, run.known_bugs = header.get("machine and CPU", ""), header.get("known QEMU bugs", "")
    for test, case in cases.items():
        cell = run.cells[test] = cell_for(case, pair, reasons.get(test, ""))
        if root is not None:
            cell.link = f"{pair.slug}/latest/index.html#{safe_name(test)}"
            test_directory = root / directories.get(test, safe_name(test))
            cell.workaround, cell.expected = workarounds_of(test_directory), expected_failures_of(test_directory)
    if pair.source_spec != pair.destination_spec:
        run.cells[STATIC_CHECK] = static_check_cell(pair, directory / "vmstate")
    return run


# The matrix row of the static vmstate step (harness.tools.vmstate_check), beside the tests' rows.
STATIC_CHECK = "vmstate-static-checker (-dump-vmstate, source → destination)"


def static_check_cell(pair: Pair, directory: Path) -> Cell:
    """QEMU's vmstate-static-checker.py on both binaries' -dump-vmstate, judged for the pair's direction
    (harness.analysis.vmstate_diff); its dumps, report and judgement kept in `directory`."""
    link = f"{pair.slug}/vmstate/vmstate-static-checker.txt"
    try:
        judgement = check_pair(pair.source_spec, pair.destination_spec, pair.backward, directory)
    except CheckerUnavailable as exc:
        return Cell("skip", str(exc))
    except (CheckerFailed, QemuNotFound, OSError, subprocess.SubprocessError) as exc:
        return Cell("error", str(exc), link if (directory / "vmstate-static-checker.txt").exists() else "")
    print(f"[matrix] {pair.name}: vmstate-static-checker: {judgement.summary}", flush=True)
    return Cell("pass" if judgement.passed else "fail", judgement.summary, link)


def run_record(root: Path | None) -> tuple[dict[str, str], dict[str, str]]:
    """The run's header and each test's artefacts directory name, from the plugin's results.json."""
    try:
        results = json.loads((root / "results.json").read_text()) if root is not None else {}
    except (OSError, ValueError):
        return {}, {}
    directories = {t["nodeid"]: t["directory"] for t in results.get("tests", []) if t.get("directory")}
    return dict(results.get("header", {})), directories


def workarounds_of(test_directory: Path) -> str:
    """'KEY: summary' of each known-bug workaround the test ran with (its platform.json), '; '-joined."""
    try:
        found = json.loads((test_directory / "platform.json").read_text()).get("workarounds") or {}
    except (OSError, ValueError):
        return ""
    return "; ".join(f"{key}: {w.get('summary', '')}" for key, w in found.items())


def expected_failures_of(test_directory: Path) -> str:
    """'verdict: reason' of each verdict the test recorded as an expected failure that did fail (its verdicts.json),
    '; '-joined: the verdicts a known QEMU bug spoiled while the rest of the test was judged."""
    try:
        verdicts = json.loads((test_directory / "verdicts.json").read_text())
    except (OSError, ValueError):
        return ""
    return "; ".join(f"{v.get('name')}: {v['expected_failure']}" for v in verdicts
                     if isinstance(v, dict) and v.get("expected_failure") and not v.get("passed"))


OK_OUTCOMES = ("pass", "skip", "xfail", "refused")
OUTCOMES = ("pass", "fail", "error", "skip", "xfail", "refused")


def counts(run: PairRun) -> dict[str, int]:
    """The pair's cells by outcome, every outcome listed (0 too), and how many passed with a workaround."""
    tally = {outcome: 0 for outcome in OUTCOMES}
    for cell in run.cells.values():
        tally[cell.outcome] = tally.get(cell.outcome, 0) + 1
    tally["with workaround"] = sum(1 for c in run.cells.values() if c.workaround and c.outcome == "pass")
    tally["with expected verdict failure"] = sum(1 for c in run.cells.values() if c.expected and c.outcome == "pass")
    return tally


NOTES = ("with workaround", "with expected verdict failure")   # counts() keys that are not outcomes


def summary_line(run: PairRun) -> str:
    tally = counts(run)
    return (f"{run.pair.name}: " + ", ".join(f"{n} {k}" for k, n in tally.items() if k not in NOTES)
            + f" (of the passes: {tally['with workaround']} with a known bug's workaround, "
              f"{tally['with expected verdict failure']} with one verdict an expected failure), {run.seconds:.0f} s")


def render_text(runs: Sequence[PairRun]) -> tuple[str, bool]:
    """The pair × test table (tests as rows, pairs as columns) with numbered reasons under it; ok = no fail."""
    tests = sorted({t for run in runs for t in run.cells})
    notes: dict[str, int] = {}
    rows = [["test", *(run.pair.name for run in runs)]]
    for test in tests:
        row = [test.split("/")[-1]]
        for run in runs:
            cell = run.cells.get(test)
            if cell is None:
                row.append("-")
                continue
            text = cell.outcome + ("*" if cell.workaround else "") + ("†" if cell.expected else "")
            if cell.reason:
                note = notes.setdefault(f"{cell.outcome}: {cell.reason[:300]}", len(notes) + 1)
                text += f" [{note}]"
            row.append(text)
        rows.append(row)
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows]
    lines += [f"[{n}] {text}" for text, n in notes.items()]
    if any(c.workaround for run in runs for c in run.cells.values()):
        lines.append("* ran with a known QEMU bug's workaround (harness/qemu/known_bugs.py), and was judged")
    expected = {c.expected for run in runs for c in run.cells.values() if c.expected}
    if expected:
        lines.append("† one verdict failed as a known QEMU bug says it does (an expected failure); every other "
                     "verdict was judged:")
        lines += [f"  † {text[:300]}" for text in sorted(expected)]
    lines += [f"{run.pair.name}: {run.platform}" for run in runs if run.platform]
    lines += [f"{run.pair.name}: known QEMU bugs: {run.known_bugs}" for run in runs if run.known_bugs]
    lines += [""] + [summary_line(run) for run in runs]
    ok = all(c.outcome in OK_OUTCOMES for run in runs for c in run.cells.values())
    return "\n".join(lines), ok


def to_json(runs: Sequence[PairRun], ok: bool) -> dict[str, Any]:
    return {"ok": ok, "pairs": [{"pair": run.pair.name, **asdict(run.pair), "platform": run.platform,
                                 "known_bugs": run.known_bugs, "counts": counts(run),
                                 "seconds": round(run.seconds, 1), "could_not_run": run.could_not_run,
                                 "cells": {t: asdict(c) for t, c in run.cells.items()}} for run in runs]}


INTERRUPTED = 130    # 128 + SIGINT, as a shell reports a job stopped by Ctrl-C


def main(argv: list[str] | None = None) -> int:
    interruptible()
    try:
        return _main(argv)
    except KeyboardInterrupt as interrupt:
        print(f"\n[matrix] stopped ({interrupt or 'Ctrl-C'}): the running pair's pytest was told to stop and has "
              f"ended; nothing judged (exit {INTERRUPTED})", flush=True)
        return INTERRUPTED


def _main(argv: list[str] | None) -> int:
    require_checkout("qmh-matrix", COULD_NOT_RUN)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--old", required=True, help="the older QEMU: a binary or build tree")
    parser.add_argument("--new", default=shutil.which("qemu-system-x86_64") or "qemu-system-x86_64",
                        help="the newer QEMU (default: qemu-system-x86_64 on PATH)")
    parser.add_argument("--artefacts", type=Path, default=ROOT / "artefacts" / "matrix")
    parser.add_argument("--lock", type=Path, default=None, help="hold a flock on this file during each pair's run")
    parser.add_argument("--pairs", default=",".join(PAIR_KINDS), type=_pair_kinds,
                        help=f"which pairs, comma-separated from {', '.join(PAIR_KINDS)} (default: all three)")
    parser.add_argument("pytest_args", nargs="*", help="pytest selection and arguments after -- (default: "
                                                       "every behaviour file, not slow)")
    options = parser.parse_args(argv)
    if not options.old.strip():
        # `make matrix` passes what scripts/fetch-debian-qemu.sh printed: nothing if it failed (its error is above).
        print("[matrix] could not run: --old is empty (no older QEMU); nothing judged", flush=True)
        return COULD_NOT_RUN
    try:
        versions = version_of(options.old), version_of(options.new)
    except QemuNotFound as exc:
        print(f"[matrix] could not run: {exc}; nothing judged", flush=True)
        return COULD_NOT_RUN
    pytest_args = options.pytest_args or DEFAULT_TESTS
    if not any(a.startswith("--accel") for a in pytest_args):
        pytest_args = [*pytest_args, "--accel", "tcg"]
    options.artefacts.mkdir(parents=True, exist_ok=True)
    runs = []
    started = time.monotonic()
    every = dict(zip(PAIR_KINDS, pairs_for(options.old, options.new, *versions)))
    for pair in (every[kind] for kind in options.pairs):
        run = run_pair(pair, options.artefacts, pytest_args, options.lock)
        runs.append(run)
        if run.could_not_run:
            line = f"[matrix] could not run {pair.name}: {run.could_not_run}; nothing judged (exit {COULD_NOT_RUN})"
            atomic_write_text(options.artefacts / "matrix.json",
                              json.dumps({**to_json(runs, False), "could_not_run": line}, indent=1) + "\n")
            print(line, flush=True)
            return COULD_NOT_RUN
    table, ok = render_text(runs)
    data = to_json(runs, ok)
    atomic_write_text(options.artefacts / "matrix.json", json.dumps(data, indent=1) + "\n")
    atomic_write_text(options.artefacts / "index.html", render_matrix(data))
    print("\n" + table)
    print(f"[matrix] {len(runs)} pair(s) in {(time.monotonic() - started) / 60:.1f} min")
    print(f"\n[matrix] {'every cell passed, skipped with a reason or was refused by QEMU' if ok else 'NOT OK'}; "
          f"{options.artefacts / 'matrix.json'}, {options.artefacts / 'index.html'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
