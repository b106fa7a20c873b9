"""Pure arithmetic over a sampled Series: windows, counter increments, gaps, rates."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .sampler import Series


def value_at(series: Series, path: str, t: float, side: str = "source") -> Any:
    """The last sampled value of `path` at or before time t (None before the first sample)."""
    last = None
    for ts, value in series.track(path, side):
        if ts > t:
            break
        last = value
    return last


def increment_times(series: Series, path: str, side: str = "source") -> list[float]:
    """Sample times at which a counter went up (one entry per sample that saw an increase)."""
    times, previous = [], None
    for t, value in series.track(path, side):
        if previous is not None and value > previous:
            times.append(t)
        previous = value
    return times


def gaps(times: list[float]) -> list[float]:
    return [b - a for a, b in zip(times, times[1:])]


@dataclass(frozen=True)
class CounterWindow:
    """How much counters moved between t_start and t_end."""
    t_start: float
    t_end: float
    syncs: int
    transferred_bytes: int

    @property
    def seconds(self) -> float:
        return self.t_end - self.t_start

    @property
    def syncs_per_second(self) -> float:
        return self.syncs / self.seconds if self.seconds > 0 else 0.0

    @property
    def bytes_per_sync(self) -> float | None:
        return self.transferred_bytes / self.syncs if self.syncs else None

    def to_json(self) -> dict[str, Any]:
        return {"t_start": self.t_start, "t_end": self.t_end, "seconds": self.seconds, "syncs": self.syncs,
                "transferred_bytes": self.transferred_bytes, "syncs_per_second": self.syncs_per_second,
                "bytes_per_sync": self.bytes_per_sync}


def counter_window(series: Series, t_start: float, t_end: float, side: str = "source") -> CounterWindow:
    def delta(path: str) -> int:
        a, b = value_at(series, path, t_start, side), value_at(series, path, t_end, side)
        return int((b or 0) - (a or 0))
    return CounterWindow(t_start, t_end, delta("ram.dirty-sync-count"), delta("ram.transferred"))


def count_between(times: list[float], t_start: float, t_end: float) -> int:
    return sum(1 for t in times if t_start <= t <= t_end)
