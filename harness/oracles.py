"""Pure judgements: measured data in, a Verdict out (passed, measured value, bound, one-line reason)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Iterable

from .integrity import RamComparison
from .sampler import Series


@dataclass(frozen=True)
class Verdict:
    name: str
    passed: bool
    measured: Any
    bound: Any
    why: str

    def check(self) -> "Verdict":
        if not self.passed:
            raise AssertionError(f"{self.name}: {self.why} (measured {self.measured!r}, bound {self.bound!r})")
        return self

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def completed(info: dict[str, Any]) -> Verdict:
    status = info.get("status")
    return Verdict("migration completed", status == "completed", status, "completed",
                   "status is completed" if status == "completed"
                   else f"status {status}: {info.get('error-desc', 'no error description')}")


def ram_identical(comparison: RamComparison) -> Verdict:
    return Verdict("host RAM hashes equal", comparison.equal, comparison.differing_pages, 0, comparison.describe())


def guest_invariant(passed: bool, line: str) -> Verdict:
    return Verdict("guest seqcheck invariant", passed, line, "SEQCHECK PASS", line)


def downtime_within(downtime_ms: float | None, limit_ms: float, slack_ms: float) -> Verdict:
    bound = limit_ms + slack_ms
    if downtime_ms is None:
        return Verdict("downtime within limit", False, None, bound, "query-migrate reported no downtime")
    ok = downtime_ms <= bound
    return Verdict("downtime within limit", ok, downtime_ms, bound,
                   f"downtime {downtime_ms:.0f} ms {'≤' if ok else '>'} downtime-limit {limit_ms:.0f} ms "
                   f"+ slack {slack_ms:.0f} ms")


def went_through(series: Series, statuses: Iterable[str], side: str = "source") -> Verdict:
    """The run really visited these states (e.g. postcopy-active), so it tested what it claims to."""
    seen = [status for _, status in series.status_changes(side)]
    missing = [s for s in statuses if s not in seen]
    return Verdict(f"{side} went through {', '.join(statuses)}", not missing, seen, list(statuses),
                   "all states seen" if not missing else f"never saw {missing}; status sequence {seen}")


def progressed(name: str, before: float, after: float, minimum: float) -> Verdict:
    delta = after - before
    return Verdict(name, delta >= minimum, delta, minimum,
                   f"advanced by {delta:g} ({before:g} → {after:g}); needed ≥ {minimum:g}")


def ratio_at_most(name: str, value: float, baseline: float, factor: float, floor: float = 0.0) -> Verdict:
    """value ≤ factor × baseline (with `floor` as the smallest baseline, so near-zero baselines don't divide)."""
    base = max(baseline, floor)
    ratio = value / base if base else float("inf") if value else 1.0
    return Verdict(name, ratio <= factor, round(ratio, 3), factor,
                   f"{value:g} vs baseline {baseline:g}: ratio {ratio:.2f} {'≤' if ratio <= factor else '>'} {factor}")
