"""qmh-mutate's pure parts: functions of a C file, sampling, patches, outcome classification, coverage mapping,
the resumable state and the page (harness.analysis.mutants, harness.analysis.coverage, harness.report.mutation_page)."""

from __future__ import annotations

import json

import pytest

from harness.analysis import mutants as mut
from harness.analysis.coverage import covering, executed_lines, line_map, source_key
from harness.report.mutation_page import render_page

C_SOURCE = """\
#include "qemu/osdep.h"

static const int table[] = {
    1, 2,
};

static bool
ram_is_hot(RAMBlock *block,
           int pages)
{
    if (pages > 3) {
        return true;
    }
    return false;
}

/* a comment */
void migration_go(void)
{
    int x = 1;
}
""".splitlines(keepends=True)


def mutant(line: int = 11, replacement: str = "    if (pages >= 3) {\n", file: str = "migration/ram.c",
           function: str = "ram_is_hot") -> mut.Mutant:
    return mut.Mutant(file, line, function, C_SOURCE[line - 1], replacement, "> ==> >=")


def test_function_spans_follow_qemu_style_and_skip_initialisers():
    spans = mut.function_spans(C_SOURCE)
    assert spans == [("ram_is_hot", 10, 15), ("migration_go", 19, 21)]
    assert mut.function_at(spans, 12) == "ram_is_hot"
    assert mut.function_at(spans, 4) == ""          # the table's initialiser is file scope


def test_only_lines_in_selected_functions_are_wanted():
    assert mut.wanted(mutant(), [])
    assert mut.wanted(mutant(), ["ram_is_hot"])
    assert not mut.wanted(mutant(), ["migration_go"])
    assert not mut.wanted(mutant(line=4, replacement="    1, 3,\n", function=""), [])


def test_sample_is_reproducible_and_independent_of_engine_order():
    many = [mutant(line=11, replacement=f"    if (pages > {i}) {{\n") for i in range(50)]
    first = mut.sample(many, 10, seed=7)
    assert first == mut.sample(list(reversed(many)), 10, seed=7)
    assert first != mut.sample(many, 10, seed=8)
    assert len(first) == 10 and len({m.id for m in first}) == 10
    assert set(first) <= set(mut.sample(many, 25, seed=7))          # a larger N extends the sample
    assert len(mut.sample(many, None, seed=7)) == 50                  # exhaustive: all


def test_ids_are_stable_and_distinguish_rewrites_of_one_line():
    assert mutant().id == mutant().id
    assert mutant().id != mutant(replacement="    if (pages < 3) {\n").id
    assert mutant().id.startswith("migration_ram-L11-")


def test_patch_text_is_a_p1_diff_of_the_one_line_after_the_header():
    text = mut.patch_text(mutant(), C_SOURCE, {"Description": "mutant", "Mutant": "x"})
    assert text.startswith("Description: mutant\nMutant: x\ndiff -u a/migration/ram.c b/migration/ram.c\n")
    assert "--- a/migration/ram.c\n+++ b/migration/ram.c\n" in text
    assert "-    if (pages > 3) {\n+    if (pages >= 3) {\n" in text
    inserted = mut.patch_text(mutant(line=14, replacement="    return false;\n    break;\n"), C_SOURCE)
    assert "     return false;\n+    break;\n }\n" in inserted     # the inserted line is a line of its own
    with pytest.raises(ValueError, match="not the mutant's original"):
        mut.patch_text(mut.Mutant("migration/ram.c", 12, "ram_is_hot", "stale\n", "new\n"), C_SOURCE)


@pytest.mark.parametrize("outcomes,timeouts,expected", [
    ({"a": "passed", "b": "failed"}, [], (mut.KILLED, "b")),
    ({"a": "error"}, [], (mut.KILLED, "a")),
    ({"a": "failed", "b": "failed"}, ["a"], (mut.KILLED, "b")),     # an outright failure beats a timeout
    ({"a": "failed", "b": "passed"}, ["a"], (mut.TIMED_OUT, "a")),
    ({"a": "passed", "b": "passed"}, [], (mut.SURVIVED, "")),
])
def test_classify(outcomes, timeouts, expected):
    assert mut.classify(outcomes, timeouts) == expected


@pytest.mark.parametrize("outcomes", [{}, {"a": "passed", "b": "skipped"}])
def test_classify_never_calls_a_run_that_proved_nothing_a_survivor(outcomes):
    with pytest.raises(ValueError):
        mut.classify(outcomes)


def test_timeout_messages():
    assert mut.is_timeout_message("Failed: Timeout >600.0s")
    assert mut.is_timeout_message("timed out after 900 s")
    assert not mut.is_timeout_message("AssertionError: 3 pages differ")


def test_score_per_file_and_function_leaves_dropped_mutants_out():
    ms = [mutant(replacement=f"    if (pages > {i}) {{\n") for i in range(6)]
    outcomes = [mut.KILLED, mut.TIMED_OUT, mut.SURVIVED, mut.NOT_COVERED, mut.BUILD_FAILED, mut.EQUIVALENT]
    results = {m.id: mut.Result(o) for m, o in zip(ms, outcomes)}
    per_file = mut.score(ms, results)["migration/ram.c"]
    assert per_file["score"] == 0.5 and per_file[mut.BUILD_FAILED] == 1 and per_file[mut.EQUIVALENT] == 1
    assert list(mut.score(ms, results, "function")) == ["migration/ram.c:ram_is_hot"]
    only_dropped = {ms[4].id: mut.Result(mut.BUILD_FAILED)}
    assert mut.score(ms, only_dropped)["migration/ram.c"]["score"] is None


def test_state_round_trips_through_json_and_resumes_only_the_same_config():
    config = {"files": ["migration/ram.c"], "n": 2, "seed": 1}
    state = mut.State(config, [mutant(), mutant(replacement="    if (pages < 3) {\n")])
    state.results[state.mutants[0].id] = mut.Result(mut.KILLED, {"t": "failed"}, "t", ["integrity: 3 pages"])
    state.coverage = {"migration/ram.c": {"11": ["t"]}}
    saved = json.loads(json.dumps(state.to_json()))
    resumed, why = mut.resume(saved, config)
    assert why.startswith("resuming: 1 of 2")
    assert resumed.pending() == [state.mutants[1]]
    assert resumed.results[state.mutants[0].id].verdicts == ["integrity: 3 pages"]
    assert resumed.coverage == state.coverage
    resampled, why = mut.resume(saved, {**config, "seed": 2})
    assert resampled.mutants == [] and resampled.coverage == state.coverage and len(resampled.results) == 1
    assert resampled.config["seed"] == 2 and "new sample" in why
    fresh, why = mut.resume(saved, {**config, "files": ["migration/savevm.c"]})
    assert fresh.mutants == [] and fresh.results == {} and "another selection" in why
    assert mut.resume(None, config)[1] == "new run"


GCOV_JSON = {"files": [
    {"file": "../src/qemu-10.0.2/migration/ram.c",
     "lines": [{"line_number": 11, "count": 4}, {"line_number": 12, "count": 0}, {"line_number": 14, "count": 1}]},
    {"file": "../src/qemu-10.0.2/include/qemu/bitops.h", "lines": [{"line_number": 5, "count": 9}]},
]}


def test_gcov_json_gives_the_executed_lines_of_selected_files_only():
    assert source_key("../src/qemu-10.0.2/migration/ram.c", ["migration/ram.c"]) == "migration/ram.c"
    assert source_key("../src/qemu-10.0.2/migration/xram.c", ["migration/ram.c"]) is None
    assert executed_lines(GCOV_JSON, ["migration/ram.c"]) == {"migration/ram.c": {11, 14}}


def test_line_map_turns_per_test_coverage_into_tests_per_line():
    table = line_map({"t2": {"migration/ram.c": {11}}, "t1": {"migration/ram.c": {11, 14}}})
    assert table == {"migration/ram.c": {"11": ["t1", "t2"], "14": ["t1"]}}
    assert covering(table, "migration/ram.c", 11, order=["t2", "t1"]) == ["t2", "t1"]
    assert covering(table, "migration/ram.c", 12) == []
    assert covering(table, "migration/savevm.c", 11) == []


def test_page_lists_survivors_with_their_diff_and_covering_tests():
    m = mutant()
    record = {"config": {"n": 1}, "counts": {mut.SURVIVED: 1},
              "per_file": mut.score([m], {m.id: mut.Result(mut.SURVIVED)}),
              "per_function": mut.score([m], {m.id: mut.Result(mut.SURVIVED)}, "function"),
              "mutants": [{**m.to_json(), **mut.Result(mut.SURVIVED).to_json(), "covering": ["tests/x.py::t"]}]}
    page = render_page(record, {m.id: mut.patch_text(m, C_SOURCE)})
    assert "1 survivor(s)" in page and "tests/x.py::t" in page and "+    if (pages &gt;= 3) {" in page
    assert "migration/ram.c:ram_is_hot" in page


def test_run_order_is_the_pristine_passes_quickest_first():
    state = mut.State({}, pristine={"slow": "passed", "quick": "passed", "skipped": "skipped", "unknown": "passed"},
                      durations={"slow": 90.0, "quick": 4.0, "skipped": 0.1})
    assert state.run_order() == ["quick", "slow", "unknown"]


def test_a_run_cut_by_the_outer_deadline_is_timed_out():
    assert mut.classify({"a": "timeout", "b": "timeout"}, ["a", "b"]) == (mut.TIMED_OUT, "a")
