"""What a migration's query-migrate answers say about its progress (pure: read from the recorded series): a one-line
summary of an answer, the dirty rate in MiB/s, what each pass over the dirty set left, and whether precopy was
converging — the notes a stalled or failed wait gives its reader."""

from __future__ import annotations

from typing import Any, Mapping

from harness.core.units import PAGE, MiB
from harness.analysis.samples import Series, lookup


def dirty_mibps(info: Mapping[str, Any]) -> float | None:
    """query-migrate's dirty-pages-rate in MiB/s (pages of ram.page-size, else the target page size)."""
    rate = lookup(dict(info), "ram.dirty-pages-rate")
    return None if rate is None else rate * (lookup(dict(info), "ram.page-size") or PAGE) / MiB


def summarize(info: Mapping[str, Any]) -> str:
    """One line of what a query-migrate answer says, for failure messages."""
    keys = ["status", "ram.transferred", "ram.remaining", "ram.dirty-sync-count", "ram.dirty-pages-rate",
            "cpu-throttle-percentage", "ram.postcopy-requests", "error-desc"]
    parts = [f"{k}={v}" for k in keys if (v := lookup(dict(info), k)) is not None]
    return ", ".join(parts) or "(no sample)"


def left_after_syncs(series: Series, side: str = "source") -> list[tuple[float, int, float]]:
    """(t, dirty-sync-count, ram.remaining) at the first sample after each dirty sync: what each pass left."""
    found: list[tuple[float, int, float]] = []
    last_count = None
    for sample in series.samples.get(side) or []:
        count, remaining = lookup(sample["info"], "ram.dirty-sync-count"), lookup(sample["info"], "ram.remaining")
        if count is None or remaining is None:
            continue
        if last_count is not None and count > last_count:
            found.append((sample["t"], count, remaining))
        last_count = count
    return found


def convergence_note(series: Series, side: str = "source") -> str:
    """Whether `side`'s precopy was converging (pure: for stall messages). A pass over the dirty set ends with a
    dirty sync, after which ram.remaining is what the guest re-dirtied meanwhile: converging means that set
    shrinks pass after pass; if it does not (by 10 %), the guest dirties as fast as QEMU sends. The rates in
    query-migrate are given for the reader, not judged: dirty-pages-rate is pages per sync period, which a hot
    set smaller than one pass caps."""
    samples = series.samples.get(side) or []
    if not samples:
        return f"{side}: no query-migrate sample at all"
    last = samples[-1]
    info = last["info"]
    note = f"{side} still {info.get('status')!r} at t={last['t']:.1f}s"
    passes = left_after_syncs(series, side)
    if len(passes) >= 2:
        (_, _, before), (_, count, after) = passes[-2], passes[-1]
        verdict = "converging" if after < 0.9 * before else "not converging: the re-dirtied set did not shrink"
        note += (f"; left after the last two dirty syncs: {before / MiB:.1f} → {after / MiB:.1f} MiB "
                 f"({verdict}), dirty-sync-count {count}")
    else:
        note += f"; {len(passes)} dirty sync(s) after the first sample: too early to tell whether it converges"
    rate = dirty_mibps(info)
    mbps, remaining = lookup(info, "ram.mbps"), lookup(info, "ram.remaining")
    if remaining is not None:
        note += f"; remaining now {remaining / MiB:.1f} MiB"
    if rate is not None:
        note += f", dirty-pages-rate {rate:.1f} MiB/s"
    if isinstance(mbps, (int, float)):
        note += f", throughput {mbps * 1e6 / 8 / MiB:.1f} MiB/s"
    return note
