"""The matrix's static vmstate step: the checker's report parsed and judged per direction
(harness.analysis.vmstate_diff), and the matrix cell it becomes (harness.tools.matrix.static_check_cell), without
QEMU. The report lines are the real ones of Debian's 7.2 against 10.0.2 on pc-q35-7.2."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.analysis.vmstate_diff import judge, parse_report
from harness.tools import matrix
from harness.tools.vmstate_check import CheckerFailed, CheckerUnavailable
from harness.analysis.vmstate_diff import Judgement

FORWARD_REPORT = """\
Section "e1000e", Description "e1000e": expected field "core.eitr_guest_value", got "core.itr_guest_value"; skipping rest
Section "serial-mm" does not exist in dest
Section "hpet", Description "hpet": expected field "num_timers", got "num_timers_save"; skipping rest
Section "am53c974" Description "esp": Entry "Subsections" missing
"""
BACKWARD_REPORT = """\
Section "virtio-gpu-gl-device" does not exist in dest
Section "acpi-ged", Description "acpi-ged": Subsection "acpi-ged/cpuhp" not found
Section "am53c974" Description "esp": version error: 7 > 6
Section "x" Description "y": minimum version error: 1 < 2
Section "hpet" Description "hpet" Field "timers" size mismatch: 8 , 4
Warning: checking incompatible machine types: "pc-q35-7.2", "pc-q35-10.0"
something the parser does not know
"""


def test_every_line_is_a_finding_of_a_kind() -> None:
    kinds = [(f.kind, f.section) for f in parse_report(BACKWARD_REPORT)]
    assert kinds == [("section-missing", "virtio-gpu-gl-device"), ("subsection-missing", "acpi-ged"),
                     ("version-too-new", "am53c974"), ("version-below-minimum", "x"), ("size-mismatch", "hpet"),
                     ("machine-mismatch", ""), ("other", "")]


def test_forward_judges_version_findings_only() -> None:
    ok = judge(FORWARD_REPORT, backward=False)
    assert ok.passed and "no version finding" in ok.summary and ok.counts()["section-missing"] == 1
    broken = judge(FORWARD_REPORT + 'Section "apic" Description "apic": version error: 4 > 3\n', backward=False)
    assert not broken.passed and "apic" in broken.summary


def test_backward_lists_differences_and_an_empty_report_fails() -> None:
    listed = judge(BACKWARD_REPORT, backward=True)
    assert listed.passed and "am53c974" in listed.summary and "x" in listed.summary
    assert not judge("", backward=True).passed
    assert judge("", backward=False).passed      # forward: nothing found is what QEMU promises


PAIR = matrix.Pair("7.2", "10.0", "/old", "/new", backward=False)


@pytest.mark.parametrize("outcome, expected", [
    (CheckerUnavailable("no QEMU source tree"), "skip"),
    (CheckerFailed("-dump-vmstate: exit 1"), "error"),
    (Judgement(True, "old → new: no version finding", ()), "pass"),
    (Judgement(False, "old → new: 1 sections the newer QEMU cannot load", ()), "fail"),
])
def test_the_step_is_a_matrix_cell(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, outcome: object,
                                   expected: str) -> None:
    def check(*_args: object) -> Judgement:
        if isinstance(outcome, Exception):
            raise outcome
        assert isinstance(outcome, Judgement)
        return outcome
    monkeypatch.setattr(matrix, "check_pair", check)
    cell = matrix.static_check_cell(PAIR, tmp_path)
    assert cell.outcome == expected and cell.reason
