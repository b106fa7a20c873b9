"""qmh-mutate's kill confirmation (harness.tools.mutate.run_mutant): a mutant's kill stands only if the pristine
build passes the killing test when it runs again right after; pytest runs are stood in for (run_selection)."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.analysis import mutants as mut


@pytest.mark.parametrize("control, expected", [("passed", mut.KILLED), ("failed", mut.UNCONFIRMED)])
def test_a_kill_stands_only_if_pristine_passes_the_killing_test_again(monkeypatch: pytest.MonkeyPatch,
                                                                       tmp_path: Path, control: str,
                                                                       expected: str) -> None:
    """qmh-mutate's kill confirmation (harness.tools.mutate.run_mutant): the killing test is run again on pristine."""
    import argparse

    from harness.tools import mutate

    calls: list[tuple[str, list[str]]] = []

    def run_selection(name: str, binary: Path, tests: list[str], *args: object, **kwargs: object):
        calls.append((name, tests))
        if name.endswith(".pristine-control"):
            return {tests[0]: control}, {tests[0]: "rate 1.99× outside the band"} if control != "passed" else {}, \
                None, 2.0
        return {"t1": "passed", "t2": "failed"}, {"t2": "boom"}, None, 5.0

    monkeypatch.setattr(mutate, "run_selection", run_selection)
    monkeypatch.setattr(mutate, "MUTANTS_OUT", tmp_path)
    options = argparse.Namespace(arch="x86_64", artefacts=tmp_path)
    result = mutate.run_mutant(mut.Mutant("migration/ram.c", 9, "f", "x;\n", "y;\n"), ["t1", "t2"], options, 3.0)
    assert result.outcome == expected and result.killed_by == "t2"
    assert calls[1] == (calls[0][0] + ".pristine-control", ["t2"])
    assert result.run_seconds == 7.0
    if expected == mut.UNCONFIRMED:
        assert "pristine failed the same test right after" in result.note
