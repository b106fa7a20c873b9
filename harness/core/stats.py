"""Statistics shared by the oracles, the latency records and the plots: one nearest-rank percentile, one
histogram (binned samples or the guest probe's log2 buckets), the wall time a set of possibly overlapping jobs
covered."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence


@dataclass(frozen=True)
class Histogram:
    """Counts over bins [edges[i], edges[i+1]) plus a summary (n, percentiles) in the data's unit."""
    edges: tuple[float, ...]
    counts: tuple[int, ...]
    summary: dict[str, float] = field(default_factory=dict)

    @classmethod
    def from_data(cls, data: Any) -> "Histogram":
        if isinstance(data, Mapping):
            if "histogram" in data:
                summary = {k.removesuffix("_us"): float(v) for k, v in data.items()
                           if isinstance(v, (int, float)) and not isinstance(v, bool)
                           and (k.endswith("_us") or k == "count")}
                return cls.from_buckets(data["histogram"], summary)
            if "edges" in data and "counts" in data:
                return cls(tuple(map(float, data["edges"])), tuple(map(int, data["counts"])))
            raise ValueError("histogram data: expected samples, [[upper, count], …] or a probe result")
        values = list(data)
        if values and isinstance(values[0], (list, tuple)):
            return cls.from_buckets(values)
        return cls.from_samples([float(v) for v in values])

    @classmethod
    def from_buckets(cls, buckets: Iterable[Sequence[float]], summary: dict[str, float] | None = None) -> "Histogram":
        """log2 buckets [[upper, count], …]: bucket (upper/2, upper], the first from 0."""
        pairs = sorted((float(u), int(c)) for u, c in buckets)
        if not pairs:
            return cls((), (), summary or {"count": 0})
        edges = [0.0 if i == 0 else pairs[i][0] / 2 for i in range(len(pairs))] + [pairs[-1][0]]
        counts = [c for _, c in pairs]
        if not summary:
            summary = {"count": float(sum(counts))}
            for q in (50, 90, 99):
                summary[f"p{q}"] = bucket_percentile(pairs, q / 100)
            summary["max"] = max((u for u, c in pairs if c), default=0.0)
        return cls(tuple(edges), tuple(counts), summary)

    @classmethod
    def from_samples(cls, values: list[float], bins: int = 40) -> "Histogram":
        if not values:
            return cls((), (), {"count": 0})
        lo, hi = min(values), max(values)
        positive = lo > 0
        if hi <= lo:
            edges = [lo * 0.9 if positive else lo - 0.5, hi * 1.1 if positive else hi + 0.5]
        elif positive:
            ratio = (hi / lo) ** (1 / bins)
            edges = [lo * ratio ** i for i in range(bins + 1)]
        else:
            edges = [lo + (hi - lo) * i / bins for i in range(bins + 1)]
        edges[-1] = max(edges[-1], hi) * (1 + 1e-9) + (1e-12 if edges[-1] == 0 else 0)
        counts = [0] * (len(edges) - 1)
        for v in values:
            i = _bin_index(edges, v)
            counts[i] += 1
        ordered = sorted(values)
        summary = {"count": float(len(values)), "mean": sum(values) / len(values), "min": ordered[0],
                   **{f"p{q}": nearest_rank(ordered, q / 100) for q in (50, 90, 99)}, "max": ordered[-1]}
        return cls(tuple(edges), tuple(counts), summary)

    def to_json(self) -> dict[str, Any]:
        return {"edges": list(self.edges), "counts": list(self.counts), "summary": self.summary}


def _bin_index(edges: Sequence[float], value: float) -> int:
    lo, hi = 0, len(edges) - 2
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if edges[mid] <= value:
            lo = mid
        else:
            hi = mid - 1
    return lo


def nearest_rank(sorted_values: Sequence[float], fraction: float) -> float:
    """The nearest-rank percentile (as probe's latstats.c): the smallest value with ≥ fraction of samples ≤ it."""
    if not sorted_values:
        raise ValueError("percentile of no samples")
    rank = min(len(sorted_values), max(1, math.ceil(len(sorted_values) * fraction - 1e-9)))
    return sorted_values[rank - 1]


def bucket_percentile(pairs: Sequence[tuple[float, int]], fraction: float) -> float:
    """The nearest-rank percentile of bucketed counts [(upper bound, count)], as the upper bound of its bucket."""
    total = sum(c for _, c in pairs)
    if not total:
        return 0.0
    rank, seen = max(1, math.ceil(total * fraction - 1e-9)), 0
    for upper, count in pairs:
        seen += count
        if seen >= rank:
            return upper
    return pairs[-1][0]


def log2_histogram(latencies_us: Iterable[float]) -> list[tuple[float, int]]:
    """[(upper bound µs, count)], bucket b holding (2^(b-1), 2^b] µs and bucket 0 [0, 1] µs, as latstats.c."""
    counts: dict[int, int] = {}
    for value in latencies_us:
        bucket = 0 if value <= 1 else math.ceil(math.log2(value) - 1e-12)
        counts[bucket] = counts.get(bucket, 0) + 1
    if not counts:
        return []
    return [(float(2 ** b), counts.get(b, 0)) for b in range(max(counts) + 1)]


def covered_seconds(spans: Iterable[tuple[float, float]]) -> float:
    """Length of the union of (start, end) intervals: wall time during which at least one of them ran (two
    overlapping jobs count once)."""
    total, reach = 0.0, float("-inf")
    for start, end in sorted(spans):
        if end > reach:
            total += end - max(start, reach)
            reach = end
    return total
