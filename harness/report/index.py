"""The run's index.html and results.json (one row per test: outcome, verdicts, plots, files). `make matrix`'s
page is harness.report.matrix_page."""

from __future__ import annotations

import html
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence
from urllib.parse import quote

from harness.analysis.oracles import failure_line, fails_test
from harness.report.plots import short_text
from harness.core.files import atomic_write_text, json_default
from harness.report.artefacts import safe_name
from harness.core.units import MiB


# -- the run index -----------------------------------------------------------------------------------------------
@dataclass
class TestResult:
    __test__ = False  # not a pytest test class, despite the name

    nodeid: str
    outcome: str                 # passed | failed | error | skipped | xfailed | xpassed | interrupted
    duration: float = 0.0
    message: str = ""            # crash line of a failure/error, reason of a skip
    directory: Path | None = None  # the test's artefacts directory, if it has one

    def verdicts(self) -> list[dict[str, Any]]:
        path = self.directory / "verdicts.json" if self.directory else None
        if path is None or not path.is_file():
            return []
        try:
            return list(json.loads(path.read_text()))
        except (OSError, ValueError):
            return []

    def to_json(self) -> dict[str, Any]:
        return {"nodeid": self.nodeid, "outcome": self.outcome, "duration": round(self.duration, 3),
                "message": self.message, "directory": self.directory.name if self.directory else None,
                "verdicts": self.verdicts()}


OUTCOME_COLOURS = {"passed": "#2e7d32", "failed": "#c62828", "error": "#c62828", "skipped": "#9e9e9e",
                   "xfailed": "#9e9e9e", "xpassed": "#ef6c00", "interrupted": "#6a1b9a"}
# Outcomes listed under "Failures" at the top of the index: anything that is not a clean pass, skip or xfail.
NOT_OK = ("failed", "error", "xpassed", "interrupted")

_CSS = """
body{font-family:system-ui,sans-serif;margin:1.2em;color:#222}
table{border-collapse:collapse;width:100%} td,th{border-bottom:1px solid #ddd;padding:.35em;vertical-align:top;
text-align:left;font-size:13px} .badge{color:#fff;padding:.1em .5em;border-radius:.3em;font-weight:bold}
.fail{color:#b00000} .pass{color:#1b5e20} .muted{color:#777} img{max-width:320px;border:1px solid #ccc;margin:2px}
code{font-size:12px} details summary{cursor:pointer} .files a{margin-right:.8em;white-space:nowrap}
"""


def _rel(path: Path, root: Path, prefix: str) -> str:
    return prefix + quote(str(path.relative_to(root)))


def _verdict_html(verdicts: list[dict[str, Any]]) -> str:
    failed = [v for v in verdicts if fails_test(v)]
    expected = [v for v in verdicts if not v.get("passed") and v.get("expected_failure")]
    passed = [v for v in verdicts if v.get("passed") and not fails_test(v)]
    out = [f"<div class=fail>✗ <b>{html.escape(str(v.get('name')))}</b>: "
           f"{html.escape(failure_line(v)[len(str(v.get('name'))) + 2:])}</div>" for v in failed]
    out += [f"<div class=muted>✗ expected failure, <b>{html.escape(str(v.get('name')))}</b>: "
            f"{html.escape(str(v.get('why')))} (measured {html.escape(short_text(v.get('measured')))}, bound "
            f"{html.escape(short_text(v.get('bound')))}) — {html.escape(str(v.get('expected_failure')))}</div>"
            for v in expected]
    if passed:
        items = "".join(f"<div class=pass>✓ {html.escape(str(v.get('name')))}: {html.escape(str(v.get('why')))}"
                        "</div>" for v in passed)
        out.append(f"<details><summary class=pass>{len(passed)} verdict(s) passed</summary>{items}</details>")
    return "".join(out)


def _files_html(directory: Path, root: Path, prefix: str) -> tuple[str, str]:
    """(thumbnails of the PNGs, links to every other file) of one test's artefacts directory."""
    if not directory.is_dir():
        return "", ""
    files = sorted(p for p in directory.iterdir() if p.is_file())
    pngs = sorted((p for p in files if p.suffix == ".png"), key=lambda p: (p.name != "comparison.png", p.name))
    thumbs = "".join(f"<a href='{_rel(p, root, prefix)}'><img src='{_rel(p, root, prefix)}' "
                     f"title='{html.escape(p.name)}' loading=lazy></a>" for p in pngs)
    links = "".join(f"<a href='{_rel(p, root, prefix)}'>{html.escape(p.name)}</a><span class=muted>"
                    f"{_size(p)}</span> " for p in files if p.suffix != ".png")
    return thumbs, links


def _size(path: Path) -> str:
    size = path.stat().st_size
    return f" {size / MiB:.1f} MiB" if size >= MiB else f" {size / 1024:.0f} KiB" if size >= 10240 else ""


def counts(results: Sequence[TestResult]) -> dict[str, int]:
    tally: dict[str, int] = {}
    for r in results:
        tally[r.outcome] = tally.get(r.outcome, 0) + 1
    return tally


def render_index(results: Sequence[TestResult], header: Mapping[str, str], root: Path, prefix: str = "",
                 other_runs: Sequence[tuple[str, str]] = ()) -> str:
    """The run's index: a summary, failures first in a short list, then one row per test with its verdicts,
    plots (thumbnails) and artefact files. Links are relative to `root` with `prefix` in front."""
    tally = counts(results)
    summary = ", ".join(f"<span style='color:{OUTCOME_COLOURS.get(k, '#222')}'>{n} {k}</span>"
                        for k, n in sorted(tally.items()))
    page_dir = root.parent if prefix else root
    head = "".join(f"<tr><th>{html.escape(k)}</th><td>{_header_value(str(v), page_dir)}</td></tr>"
                   for k, v in header.items())
    bad = [r for r in results if r.outcome in NOT_OK]
    failures = "".join(f"<li><a href='#{safe_name(r.nodeid)}'>{html.escape(r.nodeid)}</a>: "
                       f"<span class=fail>{html.escape(_first_reason(r))}</span></li>" for r in bad)
    rows, plain = [], []
    for r in results:
        if r.directory is None and r.outcome not in NOT_OK:
            plain.append(r)
            continue
        thumbs, links = _files_html(r.directory, root, prefix) if r.directory else ("", "")
        message = (f"<div class={'fail' if r.outcome in NOT_OK else 'muted'}><code>"
                   f"{html.escape(r.message[:600])}</code></div>" if r.message and not any(
                       fails_test(v) for v in r.verdicts()) else "")
        rows.append(
            f"<tr id='{safe_name(r.nodeid)}'><td><span class=badge style='background:"
            f"{OUTCOME_COLOURS.get(r.outcome, '#555')}'>{html.escape(r.outcome.upper())}</span></td>"
            f"<td><b>{html.escape(r.nodeid)}</b><br><span class=muted>{r.duration:.1f} s</span>"
            f"{_verdict_html(r.verdicts())}{message}<div class=files>{links}</div></td><td>{thumbs}</td></tr>")
    plain_html = ""
    if plain:
        plain_html = (f"<details><summary>{len(plain)} test(s) without artefacts ("
                      + ", ".join(f"{n} {k}" for k, n in sorted(counts(plain).items())) + ")</summary><ul>"
                      + "".join(f"<li>{html.escape(r.outcome)} — {html.escape(r.nodeid)} "
                                f"<span class=muted>{r.duration:.2f} s {html.escape(r.message[:200])}</span></li>"
                                for r in plain) + "</ul></details>")
    runs = ""
    if other_runs:
        runs = "<h3>Earlier runs</h3><ul>" + "".join(
            f"<li><a href='{href}'>{html.escape(text)}</a></li>" for href, text in other_runs) + "</ul>"
    return (f"<!doctype html><html><head><meta charset=utf-8><title>migration harness: {len(results)} tests"
            f"</title><style>{_CSS}</style></head><body><h2>QEMU migration harness — {summary}</h2>"
            f"<table style='width:auto'>{head}</table>"
            + (f"<h3 class=fail>Failures</h3><ul>{failures}</ul>" if failures else "")
            + "<h3>Tests</h3><table><tr><th>outcome</th><th>test, verdicts, files</th><th>plots</th></tr>"
            + "".join(rows) + f"</table>{plain_html}{runs}</body></html>\n")


def _header_value(value: str, page_dir: Path) -> str:
    """A file next to the artefacts (e.g. the JUnit XML) becomes a link; anything else is shown as code."""
    path = Path(value)
    if path.is_absolute() and path.is_file():
        try:
            href = quote(os.path.relpath(path, page_dir))
        except ValueError:
            href = ""
        if href and not href.startswith("../../"):
            return f"<a href='{href}'><code>{html.escape(value)}</code></a>"
    return f"<code>{html.escape(value)}</code>"


def _first_reason(result: TestResult) -> str:
    failed = [v for v in result.verdicts() if fails_test(v)]
    if failed:
        return "; ".join(f"{v.get('name')}: {v.get('why')}" for v in failed)[:300]
    return (result.message.strip().splitlines() or [result.outcome])[0][:300]


def write_index(run_dir: Path, results: Sequence[TestResult], header: Mapping[str, str]) -> Path:
    """run_dir/index.html + results.json, and run_dir.parent/index.html: the same page for the latest run,
    with links into run_dir and a list of the earlier runs' indexes. Each file is replaced atomically: runs
    sharing an artefacts directory read each other's results.json and overwrite the shared index.html."""
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run_dir / "results.json", json.dumps(
        {"header": dict(header), "counts": counts(results), "tests": [r.to_json() for r in results]},
        indent=1, default=json_default) + "\n")
    page = run_dir / "index.html"
    atomic_write_text(page, render_index(results, header, run_dir))
    base = run_dir.parent
    others = []
    for other in sorted(base.glob("run-*/results.json"), reverse=True):
        if other.parent == run_dir:
            continue
        try:
            tally = json.loads(other.read_text()).get("counts", {})
        except (OSError, ValueError):
            continue
        others.append((quote(other.parent.name) + "/index.html",
                       f"{other.parent.name}: " + ", ".join(f"{n} {k}" for k, n in sorted(tally.items()))))
    atomic_write_text(base / "index.html", render_index(results, header, run_dir, quote(run_dir.name) + "/",
                                                        others[:50]))
    return page
