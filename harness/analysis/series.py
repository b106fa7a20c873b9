"""Pure arithmetic over a sampled Series: windows, counter increments, gaps, rates."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from harness.analysis.samples import Series
from harness.core.units import PAGE, MiB, ratio


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
    def bytes_per_second(self) -> float:
        return self.transferred_bytes / self.seconds if self.seconds > 0 else 0.0

    @property
    def bytes_per_sync(self) -> float | None:
        return ratio(self.transferred_bytes, self.syncs)

    def to_json(self) -> dict[str, Any]:
        return {"t_start": self.t_start, "t_end": self.t_end, "seconds": self.seconds, "syncs": self.syncs,
                "transferred_bytes": self.transferred_bytes, "syncs_per_second": self.syncs_per_second,
                "bytes_per_sync": self.bytes_per_sync}


def counter_delta(series: Series, path: str, t_start: float, t_end: float, side: str = "source") -> int:
    """How much a query-migrate counter (e.g. ram.transferred, xbzrle-cache.pages) moved between two series times."""
    a, b = value_at(series, path, t_start, side), value_at(series, path, t_end, side)
    return int((b or 0) - (a or 0))


def counter_window(series: Series, t_start: float, t_end: float, side: str = "source") -> CounterWindow:
    return CounterWindow(t_start, t_end, counter_delta(series, "ram.dirty-sync-count", t_start, t_end, side),
                         counter_delta(series, "ram.transferred", t_start, t_end, side))


def count_between(times: list[float], t_start: float, t_end: float) -> int:
    return sum(1 for t in times if t_start <= t <= t_end)


def parse_rate_log(text: str) -> list[tuple[float, int]]:
    """`dirty --rate-log` lines "<CLOCK_MONOTONIC ns> <pages so far>" → [(guest seconds, pages)]; a torn last line
    (the file read while being appended) is dropped."""
    rows: list[tuple[float, int]] = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) == 2 and all(f.isdigit() for f in fields):
            rows.append((int(fields[0]) / 1e9, int(fields[1])))
    return rows


@dataclass(frozen=True)
class ClockMap:
    """host = offset + scale × guest (seconds): a guest clock mapped onto the host's, from paired readings
    (guest reading, host time at the middle of the command that took it). Two readings also correct the rate
    (a TCG guest's calibrated clock may run a fraction of a percent off)."""
    offset: float
    scale: float = 1.0

    @classmethod
    def fit(cls, pairs: list[tuple[float, float]]) -> "ClockMap":
        if not pairs:
            raise ValueError("no clock readings")
        (g0, h0), (g1, h1) = pairs[0], pairs[-1]
        scale = (h1 - h0) / (g1 - g0) if g1 - g0 > 1.0 else 1.0
        return cls(h0 - scale * g0, scale)

    def host(self, guest_s: float) -> float:
        return self.offset + self.scale * guest_s

    def to_json(self) -> dict[str, Any]:
        return {"offset": self.offset, "scale": self.scale}


def progress_mib(rows: list[tuple[float, int]], clock: ClockMap, t0: float = 0.0) -> list[tuple[float, float]]:
    """A `dirty --rate-log` (parse_rate_log) as a cumulative MiB track on the host's clock, seconds since `t0` (the
    log counts guest pages: units.PAGE on both guest arches)."""
    return [(clock.host(g) - t0, pages * PAGE / MiB) for g, pages in rows]


def interpolate(points: list[tuple[float, float]], t: float) -> float | None:
    """Linear interpolation of a sorted (t, cumulative value) track at t; None outside it."""
    if not points or t < points[0][0] or t > points[-1][0]:
        return None
    for (ta, va), (tb, vb) in zip(points, points[1:]):
        if ta <= t <= tb:
            return va if tb == ta else va + (vb - va) * (t - ta) / (tb - ta)
    return points[-1][1]


def rate_between(points: list[tuple[float, float]], t_start: float, t_end: float) -> float | None:
    """Average rate of a cumulative track over [t_start, t_end] (units per second), None if not covered."""
    a, b = interpolate(points, t_start), interpolate(points, t_end)
    if a is None or b is None or t_end <= t_start:
        return None
    return (b - a) / (t_end - t_start)


@dataclass(frozen=True)
class ThrottleLevel:
    percent: int
    t_start: float          # the judged window (settling margins already taken off)
    t_end: float
    rate: float             # the guest's own achieved rate in it (divided by `ran_of_runnable` when given)
    ratio: float            # rate / unthrottled rate
    expected_ratio: float   # 1 − percent/100: the vCPU runs that fraction of the time
    ran_of_runnable: float = 1.0   # the correction applied: share of its runnable time the vCPU got a CPU

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


def throttle_levels(points: list[tuple[float, float]], first_seen: dict[int, float], t_end: float,
                    baseline_rate: float, settle_s: float, min_s: float,
                    ran_of_runnable: Callable[[float, float], float | None] | None = None) -> list[ThrottleLevel]:
    """The guest's rate while each throttle value held: from when the value was first seen to when the next one
    was (or t_end), minus `settle_s` at both ends; windows shorter than `min_s` are left out. With
    `ran_of_runnable(a, b)` (ran_share_of_runnable over the vCPU thread's samples) each rate is divided by it: what
    host load took (run-queue wait) is given back, what the throttle took (sleep) is not — `baseline_rate` must
    then be corrected the same way."""
    starts = sorted(first_seen.items(), key=lambda item: item[1])
    levels = []
    for i, (percent, since) in enumerate(starts):
        until = starts[i + 1][1] if i + 1 < len(starts) else t_end
        a, b = since + settle_s, until - settle_s
        if b - a < min_s or baseline_rate <= 0:
            continue
        rate = rate_between(points, a, b)
        ran = ran_of_runnable(a, b) if ran_of_runnable is not None else 1.0
        if rate is None or not ran:
            continue
        levels.append(ThrottleLevel(percent, a, b, rate / ran, rate / ran / baseline_rate, 1 - percent / 100, ran))
    return levels


def slowdown_slope(levels: list[ThrottleLevel]) -> float | None:
    """Least-squares slope through the origin of the achieved slowdown (1 − ratio) against the throttle fraction,
    each level weighted by its window length: 1.0 when the guest loses exactly the share the throttle takes,
    0 when the throttle has no effect."""
    sxx = sum((lv.t_end - lv.t_start) * (1 - lv.expected_ratio) ** 2 for lv in levels)
    sxy = sum((lv.t_end - lv.t_start) * (1 - lv.expected_ratio) * (1 - lv.ratio) for lv in levels)
    return ratio(sxy, sxx)


@dataclass(frozen=True)
class ThreadTimes:
    """One reading of a host thread's scheduler accounting (/proc/PID/task/TID/schedstat): cumulative seconds it
    ran and cumulative seconds it was runnable but waited for a CPU, at host time.monotonic() t."""
    t: float
    on_cpu_s: float
    runqueue_s: float

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


def sleep_fraction(samples: list[ThreadTimes], t_start: float, t_end: float) -> float | None:
    """Share of [t_start, t_end] (host monotonic) in which the thread neither ran nor waited for a CPU — it slept
    or blocked. Host load shows up as run-queue wait, not here; None when the samples do not cover the window."""
    busy = rate_between([(s.t, s.on_cpu_s + s.runqueue_s) for s in samples], t_start, t_end)
    return None if busy is None else 1.0 - busy


def ran_share_of_runnable(samples: list[ThreadTimes], t_start: float, t_end: float) -> float | None:
    """Share of the time the thread was runnable in [t_start, t_end] (host monotonic) that it spent on a CPU:
    1.0 on an idle host, lower the more it waited in the run queue behind other work; None when not covered."""
    ran = rate_between([(s.t, s.on_cpu_s) for s in samples], t_start, t_end)
    runnable = rate_between([(s.t, s.on_cpu_s + s.runqueue_s) for s in samples], t_start, t_end)
    return None if ran is None or not runnable else ran / runnable


@dataclass(frozen=True)
class ThrottleSleep:
    percent: int
    t_start: float          # the judged window, host monotonic
    t_end: float
    sleep: float            # the vCPU thread's sleep fraction in it
    share: float            # of the time the thread would otherwise have been awake, the share this level took

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


def throttle_sleeps(samples: list[ThreadTimes], windows: list[tuple[int, float, float]],
                    baseline: tuple[float, float]) -> tuple[float | None, list[ThrottleSleep]]:
    """(baseline sleep fraction, per throttle level (percent, start, end) its sleep and share).

    With throttle p the vCPU sleeps p of each wall-clock period and keeps its baseline sleep s0 (BQL waits, …) in
    the rest: s = p + (1 − p)·s0, so share = (s − s0)/(1 − s0) is p whatever the host load."""
    base = sleep_fraction(samples, *baseline)
    levels = []
    for percent, a, b in windows:
        sleep = sleep_fraction(samples, a, b)
        if sleep is not None and base is not None and base < 1.0:
            levels.append(ThrottleSleep(percent, a, b, sleep, (sleep - base) / (1.0 - base)))
    return base, levels


def sleep_slope(levels: list[ThrottleSleep]) -> float | None:
    """Least-squares slope through the origin of each level's sleep share against its throttle fraction, weighted
    by window length: 1.0 when the vCPU sleeps exactly the share the throttle sets, 0 when it never sleeps."""
    sxx = sum((lv.t_end - lv.t_start) * (lv.percent / 100) ** 2 for lv in levels)
    sxy = sum((lv.t_end - lv.t_start) * (lv.percent / 100) * lv.share for lv in levels)
    return ratio(sxy, sxx)
