"""harness.tools.matrix: pairs, cells (refusals only on backward pairs), the table, its JSON and HTML (no QEMU)."""

from __future__ import annotations

import argparse

import pytest

from harness.tools.matrix import (Cell, Pair, PairRun, _pair_kinds, cell_for, counts, expected_failures_of, main,
                                   pairs_for, refusal, render_text, to_json, workarounds_of)
from harness.report.matrix_page import render_matrix
from harness.tools.validate import Case

FORWARD = Pair("7.2", "10.0", "/old", "/new", backward=False)
BACKWARD = Pair("10.0", "7.2", "/new", "/old", backward=True)
LOAD_FAILED = ("destination QEMU (destination) exit status 1 while waiting for completed\nQEMU output tail:\n"
               "qemu-system-x86_64: Unknown savevm section or instance 'foo' 0. Make sure that your current VM "
               "setup matches your saved VM setup, including any hotplugged devices\n"
               "qemu-system-x86_64: load of migration failed: Invalid argument\n")


def test_pairs_are_upgrade_downgrade_and_new_to_new() -> None:
    pairs = pairs_for("/old", "/new", (7, 2, 22), (10, 0, 2))
    assert [(p.name, p.source_spec, p.destination_spec, p.backward) for p in pairs] == [
        ("7.2→10.0", "/old", "/new", False), ("10.0→7.2", "/new", "/old", True), ("10.0→10.0", "/new", "/new", False)]
    assert [p.name for p in pairs_for("/a", "/b", (10, 0, 1), (10, 0, 2))] == [
        "old-10.0→new-10.0", "new-10.0→old-10.0", "new-10.0→new-10.0"]


def test_a_refusal_is_qemus_own_words_and_only_on_a_backward_pair() -> None:
    assert refusal(LOAD_FAILED) == ("Unknown savevm section or instance 'foo' 0. Make sure that your current VM setup "
                                    "matches your saved VM setup, including any hotplugged devices; load of "
                                    "migration failed: Invalid argument")
    assert refusal("host RAM hashes equal: guest RAM differs in 3 pages") is None
    back = cell_for(Case("failed", LOAD_FAILED), BACKWARD)
    assert back.outcome == "refused" and back.reason.startswith("Unknown savevm section")
    # Forward: loading an older stream is what QEMU promises, so the same text is a failure.
    assert cell_for(Case("failed", LOAD_FAILED), FORWARD, "migration completed: status failed").outcome == "fail"


def test_cells_keep_the_reason_of_skips_xfails_and_failures() -> None:
    skip = cell_for(Case("skipped", "QEMU lacks capability 'mapped-ram' on the source"), FORWARD)
    assert (skip.outcome, skip.reason) == ("skip", "QEMU lacks capability 'mapped-ram' on the source")
    assert cell_for(Case("xfailed", "QEMU without the auto-converge periodic sync"), FORWARD).outcome == "xfail"
    fail = cell_for(Case("failed", "AssertionError: long\ntraceback"), FORWARD, "host RAM hashes equal: differs")
    assert (fail.outcome, fail.reason) == ("fail", "host RAM hashes equal: differs")
    assert cell_for(Case("passed"), FORWARD) == Cell("pass")


def test_table_json_and_page() -> None:
    runs = [PairRun(FORWARD, {"tests/behaviour/test_basics.py::test_a": Cell("pass"),
                              "tests/behaviour/test_b3.py::test_b": Cell("skip", "QEMU lacks x on the source")},
                    platform="machine pc-q35-7.2, cpu Westmere-v1 (…)"),
            PairRun(BACKWARD, {"tests/behaviour/test_basics.py::test_a": Cell("refused", "load of migration failed",
                                                                             "10.0-to-7.2/latest/index.html#a")})]
    table, ok = render_text(runs)
    assert ok
    lines = table.splitlines()
    assert lines[0].split() == ["test", "7.2→10.0", "10.0→7.2"]
    assert lines[1].split() == ["test_b3.py::test_b", "skip", "[1]", "-"]
    assert lines[2].split() == ["test_basics.py::test_a", "pass", "refused", "[2]"]
    assert "[1] skip: QEMU lacks x on the source" in lines and "[2] refused: load of migration failed" in lines
    assert "7.2→10.0: machine pc-q35-7.2, cpu Westmere-v1 (…)" in lines
    runs[0].cells["tests/behaviour/test_basics.py::test_a"] = Cell("fail", "RAM differs")
    assert render_text(runs)[1] is False
    page = render_matrix(to_json(runs, False))
    assert "NOT OK" in page and "RAM differs" in page and "href='10.0-to-7.2/latest/index.html#a'" in page


def test_a_missing_or_broken_old_qemu_is_could_not_run(capsys) -> None:
    assert main(["--old", ""]) == 4
    assert main(["--old", "/bin/true", "--new", "/bin/true"]) == 4
    out = capsys.readouterr().out
    assert "[matrix] could not run: --old is empty" in out
    assert "[matrix] could not run: /usr/bin/true is not a QEMU system emulator" in out


def test_an_error_is_its_own_outcome_and_not_ok() -> None:
    error = cell_for(Case("error", "destination QEMU exit status 1 at start\nqemu: could not load PC BIOS"), BACKWARD)
    assert error.outcome == "error"
    assert render_text([PairRun(BACKWARD, {"t.py::a": error})])[1] is False


def test_counts_per_pair_and_workaround_cells_are_printed_at_the_end(tmp_path) -> None:
    run = PairRun(FORWARD, {"t.py::a": Cell("pass", workaround="tcg-dirty-tlb: guest RAM 8 KiB short"),
                            "t.py::b": Cell("pass"), "t.py::c": Cell("xfail", "known QEMU bug"),
                            "t.py::d": Cell("skip", "lacks x")}, known_bugs="tcg-dirty-tlb on the source: …",
                  seconds=61)
    assert counts(run) == {"pass": 2, "fail": 0, "error": 0, "skip": 1, "xfail": 1, "refused": 0,
                           "with workaround": 1, "with expected verdict failure": 0}
    table, ok = render_text([run])
    lines = table.splitlines()
    assert ok and lines[1].split() == ["t.py::a", "pass*"]
    assert "* ran with a known QEMU bug's workaround (harness/qemu/known_bugs.py), and was judged" in lines
    assert "7.2→10.0: known QEMU bugs: tcg-dirty-tlb on the source: …" in lines
    assert lines[-1] == ("7.2→10.0: 2 pass, 0 fail, 0 error, 1 skip, 1 xfail, 0 refused (of the passes: 1 with a "
                         "known bug's workaround, 0 with one verdict an expected failure), 61 s")
    # the workaround comes from the test's platform.json, as the testbed wrote it
    (tmp_path / "platform.json").write_text('{"workarounds": {"tcg-dirty-tlb": {"summary": "guest RAM short"}}}')
    assert workarounds_of(tmp_path) == "tcg-dirty-tlb: guest RAM short"
    assert workarounds_of(tmp_path / "missing") == ""


def test_the_page_is_a_compact_grid_with_the_platform_once_per_pair_and_reasons_on_hover() -> None:
    runs = [PairRun(FORWARD, {"tests/behaviour/test_basics.py::test_a": Cell(
                "pass", link="7.2-to-10.0/latest/index.html#a", workaround="tcg-dirty-tlb: RAM short"),
                "tests/behaviour/test_b3.py::test_b": Cell("skip", "QEMU lacks 'mapped-ram' on the source")},
                    platform="machine pc-q35-7.2, cpu Westmere-v1 (the newest pc-q35-X.Y both support)",
                    known_bugs="tcg-dirty-tlb on the source (7.2.22 < 9.0, TCG): workaround; b2 bug: xfail"),
            PairRun(BACKWARD, {"tests/behaviour/test_basics.py::test_a": Cell("error", "could not load PC BIOS")})]
    page = render_matrix(to_json(runs, False))
    assert page.count("pc-q35-7.2") == 1 and "title='the newest pc-q35-X.Y both support'" in page
    assert "<th>7.2→10.0</th><th>10.0→7.2</th>" in page
    assert page.count("<td class=file rowspan=1>") == 2 and ">test_basics.py<" in page and ">test_a<" in page
    assert "href='7.2-to-10.0/latest/index.html#a' title='workaround: tcg-dirty-tlb: RAM short'>pass*</a>" in page
    assert "title='QEMU lacks &#x27;mapped-ram&#x27; on the source'>skip<" in page
    assert "<div>b2 bug: xfail</div>" in page and "NOT OK" in page


def test_pairs_are_chosen_by_kind() -> None:
    assert _pair_kinds("upgrade") == ["upgrade"] and _pair_kinds("same, downgrade") == ["same", "downgrade"]
    for bad in ("", "sideways", "upgrade,old"):
        with pytest.raises(argparse.ArgumentTypeError):
            _pair_kinds(bad)


def test_a_pass_with_an_expected_verdict_failure_is_marked_and_explained(tmp_path) -> None:
    """A known bug with a `verdict` spoils that verdict alone: the cell stays a pass (the rest was judged), marked †,
    with the verdict and the bug listed under the table and on hover."""
    reason = "known QEMU bug on the source (7.2.22 < 8.2): ram.transferred counts pages at full size; fixed by …"
    run = PairRun(FORWARD, {"t.py::zlib": Cell("pass", workaround="tcg-dirty-tlb: RAM short",
                                               expected=f"bytes the relay carried − ram.transferred: {reason}"),
                            "t.py::none": Cell("pass")}, seconds=10)
    assert counts(run)["with expected verdict failure"] == 1
    table, ok = render_text([run])
    lines = table.splitlines()
    assert ok and lines[2].split() == ["t.py::zlib", "pass*†"]
    assert f"  † bytes the relay carried − ram.transferred: {reason}" in lines
    assert "1 with one verdict an expected failure" in lines[-1]
    page = render_matrix(to_json([run], True))
    assert ">pass*†<" in page and "expected verdict failure: bytes the relay carried" in page
    assert "(1 passes with one verdict an expected failure†)" in page
    # read from the test's verdicts.json: only an expected failure that did fail counts
    (tmp_path / "verdicts.json").write_text(
        '[{"name": "a", "passed": true}, {"name": "b", "passed": false, "expected_failure": "bug X"},'
        ' {"name": "c", "passed": true, "expected_failure": "bug Y"}]')
    assert expected_failures_of(tmp_path) == "b: bug X"
    assert expected_failures_of(tmp_path / "missing") == ""
