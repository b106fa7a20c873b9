"""`make mutate`'s page (artefacts/mutate/index.html) from harness.tools.mutate's JSON record.

Top: the run's counts per outcome and its configuration. Then the score per file and per function (killed and
timed-out over everything that compiled and differs), then every survivor with its diff and the tests that
executed its line (a gap in the oracles, each one), then the not-covered, timed-out and killed mutants (with the
killing test and verdict), and the dropped ones (build failed, equivalent) in a fold.
"""

from __future__ import annotations

import html
from typing import Any, Mapping

COLOURS = {"killed": "#2e7d32", "timed-out": "#558b2f", "survived": "#c62828", "not-covered": "#ef6c00",
           "build-failed": "#9e9e9e", "equivalent": "#6d7f8f", "unconfirmed": "#b08900"}
_CSS = """
body{font-family:system-ui,sans-serif;margin:1em 1.2em;color:#222;font-size:13px}
table{border-collapse:collapse} td,th{padding:.2em .6em;border-bottom:1px solid #ddd;text-align:left}
.n{display:inline-block;color:#fff;border-radius:.25em;padding:0 .35em;font-size:12px;font-weight:bold}
pre{background:#f6f6f6;padding:.4em;margin:.2em 0 .8em;font-size:12px;overflow-x:auto} .muted{color:#666}
"""
_SCORE_COLUMNS = ("killed", "timed-out", "survived", "not-covered", "build-failed", "equivalent", "unconfirmed")


def _badge(outcome: str) -> str:
    return f"<span class=n style='background:{COLOURS.get(outcome, '#555')}'>{html.escape(outcome)}</span>"


def _percent(score: float | None) -> str:
    return "—" if score is None else f"{100 * score:.0f}%"


def _score_table(title: str, rows: Mapping[str, Mapping[str, Any]]) -> str:
    head = "".join(f"<th>{c}</th>" for c in _SCORE_COLUMNS)
    body = "".join(
        f"<tr><td><code>{html.escape(name)}</code></td><td><b>{_percent(row.get('score'))}</b></td>"
        + "".join(f"<td>{row.get(c, 0) or ''}</td>" for c in _SCORE_COLUMNS) + "</tr>"
        for name, row in rows.items())
    return f"<h3>{title}</h3><table><tr><th></th><th>score</th>{head}</tr>{body}</table>"


def _mutant_html(mutant: Mapping[str, Any], diff: str | None) -> str:
    tests = mutant.get("covering") or []
    lines = [f"<div id='{html.escape(mutant['id'])}'>{_badge(mutant.get('outcome') or 'pending')} "
             f"<b>{html.escape(mutant['id'])}</b> in <code>{html.escape(mutant['function'])}()</code> "
             f"<span class=muted>{html.escape(mutant.get('rule', ''))}</span>"]
    if mutant.get("killed_by"):
        lines.append(f"<div>by <code>{html.escape(mutant['killed_by'])}</code>: "
                     + html.escape("; ".join(mutant.get("verdicts") or [])[:500]) + "</div>")
    if mutant.get("note"):
        lines.append(f"<div class=muted>{html.escape(mutant['note'])}</div>")
    if tests:
        lines.append("<div class=muted>covering tests: " + ", ".join(f"<code>{html.escape(t)}</code>" for t in tests)
                     + "</div>")
    lines.append(f"<pre>{html.escape(diff if diff is not None else mutant['original'] + mutant['replacement'])}"
                 "</pre></div>")
    return "".join(lines)


def _diff_only(patch: str) -> str:
    return patch[patch.find("--- "):] if "--- " in patch else patch


def render_page(record: Mapping[str, Any], patches: Mapping[str, str]) -> str:
    """The page, from the record (harness.tools.mutate.write_record) and each mutant's patch text by id."""
    counts = record.get("counts", {})
    summary = " ".join(f"{_badge(o)} {n}" for o, n in counts.items() if n)
    config = "".join(f"<tr><th>{html.escape(str(k))}</th><td><code>{html.escape(str(v))}</code></td></tr>"
                     for k, v in record.get("config", {}).items())
    mutants = record.get("mutants", [])

    def section(outcome: str, title: str, fold: bool = False) -> str:
        chosen = [m for m in mutants if m.get("outcome") == outcome]
        if not chosen:
            return ""
        body = "".join(_mutant_html(m, _diff_only(patches[m["id"]]) if m["id"] in patches else None)
                       for m in chosen)
        if fold:
            return f"<details><summary>{len(chosen)} {title}</summary>{body}</details>"
        return f"<h3>{len(chosen)} {title}</h3>{body}"

    return ("<!doctype html><html><head><meta charset=utf-8><title>qmh-mutate</title>"
            f"<style>{_CSS}</style></head><body><h2>Mutation score of QEMU's migration code — {summary}</h2>"
            f"<table>{config}<tr><th>seconds</th><td>{record.get('seconds', '')}</td></tr></table>"
            + _score_table("Per file", record.get("per_file", {}))
            + _score_table("Per function", record.get("per_function", {}))
            + section("survived", "survivor(s): every covering test passed — a gap, unless equivalent or "
                                  "unobservable here")
            + section("not-covered", "not covered: no test of the selection executes the line")
            + section("timed-out", "timed out (counted as killed)")
            + section("unconfirmed", "unconfirmed: the killing test failed on pristine too, run again at once "
                                     "(dropped)")
            + section("killed", "killed", fold=True)
            + section("build-failed", "did not compile (dropped)", fold=True)
            + section("equivalent", "binary identical to pristine (dropped)", fold=True)
            + "</body></html>\n")
