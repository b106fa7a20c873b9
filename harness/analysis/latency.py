"""Per-access latency records of the guest `probe` workload: parsing and exact statistics (histograms and plots:
harness.core.stats, harness.report.plots).

`probe --raw FILE` writes one little-endian record per access: u64 CLOCK_MONOTONIC ns at the access, u32 page
index, u32 latency ns (guest-workloads/probe.c).
"""

from __future__ import annotations

import json
import math
import struct
import subprocess
import sys
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


# Run in a child interpreter (never in the test process, whose QMP/sampler threads would contend for the GIL): a
# socketpair between it and a forked echo process; each round trip sends an 8-byte request and reads back a
# `reply`-byte answer (a page), as a postcopy page request does over the migration transport.
_PINGER = r"""
import json, os, socket, sys, time
count, warmup, reply = (int(a) for a in sys.argv[1:4])
a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
pid = os.fork()
if pid == 0:
    a.close()
    page = b"p" * reply
    while True:
        if not b.recv(8):
            os._exit(0)
        b.sendall(page)
b.close()
out = []
for i in range(warmup + count):
    t = time.perf_counter_ns()
    a.sendall(b"request!")
    got = 0
    while got < reply:
        got += len(a.recv(reply - got))
    if i >= warmup:
        out.append((time.perf_counter_ns() - t) / 1e3)
a.close()
os.waitpid(pid, 0)
print(json.dumps(out))
"""


def transport_round_trips_us(count: int = 2000, reply_bytes: int = 4096, warmup: int = 200) -> list[float]:
    """Host round trips (µs) over a unix stream socket between two processes: request 8 bytes, answer
    `reply_bytes`. A reference for page-request latency that no QEMU code path can move (B2's link RTT)."""
    result = subprocess.run([sys.executable, "-c", _PINGER, str(count), str(warmup), str(reply_bytes)],
                            capture_output=True, text=True, timeout=120, check=True)
    return [float(v) for v in json.loads(result.stdout)]


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
