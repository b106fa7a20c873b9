"""Per-access latency records of the guest `probe` workload: parsing and exact statistics (histograms and plots:
harness.core.stats, harness.report.plots).

`probe --raw FILE` writes one little-endian record per access: u64 CLOCK_MONOTONIC ns at the access, u32 page
index, u32 latency ns (guest-workloads/probe.c).
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

from harness.core.stats import nearest_rank

RAW_RECORD = struct.Struct("<QII")


@dataclass(frozen=True)
class Access:
    t_ns: int        # guest CLOCK_MONOTONIC when the access started
    page: int        # index of the page in the probe's region
    latency_ns: int


def parse_probe_raw(data: bytes) -> list[Access]:
    """Records of `probe --raw`; a trailing partial record means a truncated copy, so it is an error."""
    if len(data) % RAW_RECORD.size:
        raise ValueError(f"probe raw data is {len(data)} bytes, not a multiple of {RAW_RECORD.size}")
    return [Access(*fields) for fields in RAW_RECORD.iter_unpack(data)]


@dataclass(frozen=True)
class LatencySummary:
    """Exact statistics of a set of latencies, in microseconds."""
    count: int
    p50_us: float
    p90_us: float
    p99_us: float
    max_us: float
    mean_us: float
    sum_us: float

    @classmethod
    def of(cls, latencies_us: Iterable[float]) -> "LatencySummary":
        values = sorted(latencies_us)
        if not values:
            return cls(0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)
        total = math.fsum(values)
        return cls(len(values), nearest_rank(values, 0.50), nearest_rank(values, 0.90),
                   nearest_rank(values, 0.99), values[-1], total / len(values), total)

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


def dist_percentile_upper_bound_us(dist: Sequence[int], fraction: float) -> float | None:
    """Upper edge (µs) of the bucket holding the nearest-rank percentile of a QEMU `postcopy-latency-dist`
    (bucket N counts faults resolved in [2^N, 2^(N+1)) µs): the percentile is below this edge."""
    total = sum(dist)
    if total == 0:
        return None
    rank = max(1, math.ceil(total * fraction - 1e-9))
    seen = 0
    for n, count in enumerate(dist):
        seen += count
        if seen >= rank:
            return float(2 ** (n + 1))
    raise AssertionError("unreachable: rank ≤ total")


@dataclass(frozen=True)
class StallPoint:
    """One postcopy arm (preempt on or off) over one link: the round trip asked of the link, the link's measured
    round trip and the guest's stall summary."""
    configured_rtt_ms: float
    link_rtt_us: float | None     # measured (ping median over the link); None: not measured
    preempt: bool
    stalls: LatencySummary


def stall_curves(points: Iterable[StallPoint]) -> dict[str, dict[str, list[tuple[float, float]]]]:
    """Stall p50 and p99 in link round trips against the link's measured round trip, per arm:
    {"preempt on" | "preempt off": {"p50" | "p99": [(link RTT ms, stall / link RTT), …] by RTT}}. A point without a
    measured round trip (or a zero one) has no unit to count in and is left out; a stall in link round trips
    compares links of different lengths (a fault costs at least one round trip on any of them)."""
    curves: dict[str, dict[str, list[tuple[float, float]]]] = {}
    for point in sorted(points, key=lambda p: (p.link_rtt_us or 0.0, not p.preempt)):
        if not point.link_rtt_us:
            continue
        arm = curves.setdefault(f"preempt {'on' if point.preempt else 'off'}", {"p50": [], "p99": []})
        for stat, value_us in (("p50", point.stalls.p50_us), ("p99", point.stalls.p99_us)):
            arm[stat].append((point.link_rtt_us / 1e3, value_us / point.link_rtt_us))
    return curves
