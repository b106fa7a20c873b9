"""harness.analysis.oracles.reported_nothing: QEMU's own error and warning lines against what a test expects."""

from __future__ import annotations

from harness.analysis import oracles


def test_reported_nothing_passes_only_the_expected_reports() -> None:
    lines = ["qemu-system-x86_64: warning: UUID is received X, but local uuid isn't set"]
    assert oracles.reported_nothing("quiet", [], ()).passed
    assert oracles.reported_nothing("quiet", lines, ["UUID is received"]).passed
    verdict = oracles.reported_nothing("quiet", lines + ["qemu-system-x86_64: clear_bitmap_shift (0) too small"],
                                       ["UUID is received"])
    assert not verdict.passed and verdict.measured == ["qemu-system-x86_64: clear_bitmap_shift (0) too small"]
    assert "1 unexpected report(s), first: qemu-system-x86_64: clear_bitmap_shift" in verdict.why
