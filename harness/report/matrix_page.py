"""`make matrix`'s page (artefacts/matrix/index.html) from harness.tools.matrix's JSON, readable at a glance.

Above the grid, once per pair: its counts, the machine type and CPU model both binaries were given (why: on
hover), and the known QEMU bugs of its binaries with what the run did about each. The grid: one row per test,
its file named once beside its tests, one narrow column per pair; a cell is its outcome in a word, coloured, marked `*` when the
test ran with a known bug's workaround and `†` when one of its verdicts failed as a known bug says it does (the rest
judged). A cell's reason (skip or xfail reason, failing verdict, QEMU's refusal, the workaround, the expected
verdict failure) shows on hover, and a click opens the test's row in that pair's run index.
"""

from __future__ import annotations

import html
import re
from typing import Any, Mapping
from urllib.parse import quote

from harness.report.index import OUTCOME_COLOURS

COLOURS = {"pass": OUTCOME_COLOURS["passed"], "fail": OUTCOME_COLOURS["failed"], "error": "#8e0000",
           "skip": "#9e9e9e", "xfail": "#6d7f8f", "refused": "#ef6c00"}
_PLATFORM = re.compile(r"^machine (\S+), cpu (\S+) \((.*)\)$", re.S)

_CSS = """
body{font-family:system-ui,sans-serif;margin:1em 1.2em;color:#222;font-size:13px}
h2{margin:.2em 0 .5em} table{border-collapse:collapse} .muted{color:#666}
.pairs td,.pairs th{padding:.25em .7em;text-align:left;vertical-align:top;border-bottom:1px solid #ddd}
.pairs .bugs{font-size:12px;max-width:70em}
.grid{margin-top:.8em} .grid th{position:sticky;top:0;background:#fff;padding:.3em .5em;border-bottom:2px solid #999}
.grid td{padding:0 .5em;border-bottom:1px solid #eee;white-space:nowrap;line-height:1.35}
.grid tr.first td{border-top:1px solid #999} .grid td.file{font-weight:bold;vertical-align:top;font-size:12px}
.grid td.name{font-family:ui-monospace,monospace;font-size:12px}
.o{display:inline-block;min-width:5.2em;text-align:center;color:#fff;border-radius:.25em;font-size:12px;
font-weight:bold;text-decoration:none;padding:0 .3em} a.o:hover{outline:2px solid #222}
.n{display:inline-block;color:#fff;border-radius:.25em;padding:0 .35em;margin-right:.2em;font-size:12px}
"""


def _badge(outcome: str, text: str | None = None, klass: str = "o") -> str:
    return (f"<span class={klass} style='background:{COLOURS.get(outcome, '#555')}'>"
            f"{html.escape(text if text is not None else outcome)}</span>")


def _cell(cell: Mapping[str, Any] | None) -> str:
    if cell is None:
        return "<td class=muted>—</td>"
    outcome = cell["outcome"]
    title = "\n".join(part for part in (cell.get("reason", ""),
                                        f"workaround: {cell['workaround']}" if cell.get("workaround") else "",
                                        f"expected verdict failure: {cell['expected']}" if cell.get("expected")
                                        else "") if part)
    text = outcome + ("*" if cell.get("workaround") else "") + ("†" if cell.get("expected") else "")
    style = f"background:{COLOURS.get(outcome, '#555')}"
    attrs = f" title='{html.escape(title[:1500])}'" if title else ""
    if cell.get("link"):
        return f"<td><a class=o style='{style}' href='{quote(cell['link'], safe='/#')}'{attrs}>{text}</a></td>"
    return f"<td><span class=o style='{style}'{attrs}>{text}</span></td>"


def _platform(text: str) -> str:
    match = _PLATFORM.match(text)
    if match is None:
        return html.escape(text)
    return (f"<span title='{html.escape(match[3])}'>machine <b>{html.escape(match[1])}</b>, CPU "
            f"<b>{html.escape(match[2])}</b> <span class=muted>(why?)</span></span>")


def _pairs_table(pairs: list[Mapping[str, Any]]) -> str:
    rows = []
    for p in pairs:
        counts = p.get("counts", {})
        tally = " ".join(_badge(k, f"{n} {k}", "n") for k, n in counts.items() if n and k in COLOURS)
        worked = counts.get("with workaround", 0)
        if worked:
            tally += f" <span class=muted>({worked} passes with a workaround*)</span>"
        expected = counts.get("with expected verdict failure", 0)
        if expected:
            tally += f" <span class=muted>({expected} passes with one verdict an expected failure†)</span>"
        bugs = "".join(f"<div>{html.escape(line.strip())}</div>" for line in p.get("known_bugs", "").split("; ")
                       if line.strip())
        rows.append(f"<tr><th>{html.escape(p['pair'])}</th><td>{tally}</td>"
                    f"<td>{_platform(p.get('platform', ''))}</td>"
                    f"<td class=muted>{p.get('seconds', 0) / 60:.1f} min</td></tr>"
                    + (f"<tr><td></td><td colspan=3 class='bugs muted'>known QEMU bugs: {bugs}</td></tr>"
                       if bugs else ""))
    return f"<table class=pairs>{''.join(rows)}</table>"


def render_matrix(data: Mapping[str, Any]) -> str:
    pairs = list(data.get("pairs", []))
    tests = sorted({t for p in pairs for t in p.get("cells", {})})
    by_file: dict[str, list[str]] = {}
    for test in tests:
        by_file.setdefault(test.rpartition("::")[0], []).append(test)
    rows = []
    for file, file_tests in by_file.items():
        for i, test in enumerate(file_tests):
            first = (f"<td class=file rowspan={len(file_tests)}>{html.escape(file.split('/')[-1])}</td>"
                     if i == 0 else "")
            cells = "".join(_cell(p.get("cells", {}).get(test)) for p in pairs)
            rows.append(f"<tr{' class=first' if i == 0 else ''}>{first}<td class=name>"
                        f"{html.escape(test.rpartition('::')[2] or test)}</td>{cells}</tr>")
    head = "<th>file</th><th>test</th>" + "".join(f"<th>{html.escape(p['pair'])}</th>" for p in pairs)
    verdict = ("every cell pass, skip, xfail or refusal" if data.get("ok")
               else "NOT OK: a cell failed or errored")
    legend = " ".join(_badge(k, k, "n") for k in COLOURS)
    return (f"<!doctype html><html><head><meta charset=utf-8><title>migration harness: version matrix</title>"
            f"<style>{_CSS}</style></head><body><h2>QEMU version matrix — {html.escape(verdict)}</h2>"
            f"{_pairs_table(pairs)}"
            f"<p class=muted>{legend} &nbsp; * ran with a known QEMU bug's workaround and was judged. † one verdict "
            f"failed as a known QEMU bug says it does, every other verdict was judged. Hover a cell for its reason; "
            f"click it for the test in that pair's run.</p>"
            f"<table class=grid><tr>{head}</tr>{''.join(rows)}</table></body></html>\n")
