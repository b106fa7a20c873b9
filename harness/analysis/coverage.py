"""Which tests execute which source lines: gcov's JSON per test, folded into line → tests (qmh-mutate's selection).

Each test of the coverage run writes its own .gcda files (its own GCOV_PREFIX, harness.plugin.gcov_prefix), so
`gcov --json-format` over one test's files says exactly what that test executed, in the QEMUs it started. A
mutant then runs only the tests whose coverage holds its line; a line no test executes is "not covered".
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping, Sequence


def source_key(gcov_path: str, wanted: Iterable[str]) -> str | None:
    """The selected file (relative to the QEMU source root, e.g. migration/ram.c) that a path as gcov records it
    (relative to the build dir, e.g. ../src/qemu-10.0.2/migration/ram.c, or absolute) names, or None."""
    path = gcov_path.replace("\\", "/")
    for key in wanted:
        if path == key or path.endswith("/" + key):
            return key
    return None


def executed_lines(gcov_json: Mapping[str, Any], wanted: Iterable[str]) -> dict[str, set[int]]:
    """File → the lines with a non-zero execution count, for the selected files of one gcov JSON document
    (gcc ≥ 9: {"files": [{"file": …, "lines": [{"line_number": n, "count": c}, …]}]})."""
    keys = list(wanted)
    lines: dict[str, set[int]] = {}
    for entry in gcov_json.get("files", []):
        key = source_key(str(entry.get("file", "")), keys)
        if key is None:
            continue
        hit = {int(line["line_number"]) for line in entry.get("lines", []) if int(line.get("count", 0)) > 0}
        lines.setdefault(key, set()).update(hit)
    return lines


def line_map(per_test: Mapping[str, Mapping[str, Iterable[int]]]) -> dict[str, dict[str, list[str]]]:
    """test → file → lines, turned around: file → line (as a string: JSON keys) → the tests that execute it,
    sorted."""
    table: dict[str, dict[str, set[str]]] = {}
    for test, files in per_test.items():
        for file, lines in files.items():
            per_line = table.setdefault(file, {})
            for line in lines:
                per_line.setdefault(str(line), set()).add(test)
    return {f: {line: sorted(tests) for line, tests in sorted(lines.items(), key=lambda kv: int(kv[0]))}
            for f, lines in sorted(table.items())}


def covering(table: Mapping[str, Mapping[str, Sequence[str]]], file: str, line: int,
             order: Sequence[str] = ()) -> list[str]:
    """The tests that execute `file`:`line`, in `order` (the selection's order; the rest after, sorted)."""
    tests = list(table.get(file, {}).get(str(line), []))
    rank = {t: i for i, t in enumerate(order)}
    return sorted(tests, key=lambda t: (rank.get(t, len(rank)), t))


def covered_count(table: Mapping[str, Mapping[str, Sequence[str]]], file: str) -> int:
    return len(table.get(file, {}))
