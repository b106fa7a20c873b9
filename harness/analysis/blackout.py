"""The switchover blackout measured outside QEMU's own accounting, and QEMU's timing figures held to it.

Measures of the switchover on the host's clock — each QMP event's own timestamp (the wall clock QEMU read when it
emitted it: not QEMU's downtime accounting, and free of the harness's delivery delay), each heartbeat tick
stamped by the harness as it arrives:
  - the source's STOP event to its MIGRATION `completed` event: the very interval QEMU's `downtime` claims to
    measure (from just before the vCPUs stop to the end of the source's completion, migration.c);
  - the source's STOP to the destination's RESUME: the blackout as QMP tells it, which adds the destination's
    last load and start;
  - the guest heartbeat (harness.vm.heartbeat): the last tick the source's port delivered to the first tick the
    destination's port delivered — the blackout the guest itself lived through, as the outside world saw it.
A QEMU that measures its downtime from a later point, or stops the clock early, reports well below the first;
one that reports more than the guest lived through over-reports. (QEMU's other timing figures — total-time,
setup-time, mbps — are held to the series' clock for every migration: harness.analysis.timing.)

Every time here is seconds on the migration series' clock (time.monotonic() − Series.t0). Pure: data in, numbers
and Verdicts out.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from harness.analysis.oracles import Verdict, at_least, at_most, within_band
from harness.analysis.samples import Series
from harness.core.units import interval_ms


@dataclass(frozen=True)
class Blackout:
    """The switchover as each measure saw it (series seconds; None when that measure saw nothing)."""
    stop_t: float | None                 # source STOP event
    completed_t: float | None            # source MIGRATION completed event
    resume_t: float | None               # destination RESUME event
    last_source_tick: float | None       # last heartbeat arrival from the source before STOP→RESUME ended
    first_destination_tick: float | None  # first heartbeat arrival from the destination
    source_tick_gap_max: float | None    # largest gap between source ticks before STOP: the heartbeat's own jitter
    reported_ms: float | None            # query-migrate `downtime`

    JSON_DERIVED = ("source_ms", "events_ms", "heartbeat_ms")

    @property
    def source_ms(self) -> float | None:
        return interval_ms(self.stop_t, self.completed_t)

    @property
    def events_ms(self) -> float | None:
        return interval_ms(self.stop_t, self.resume_t)

    @property
    def heartbeat_ms(self) -> float | None:
        return interval_ms(self.last_source_tick, self.first_destination_tick)


def event_time(series: Series, side: str, name: str, after: float = float("-inf"),
               status: str | None = None) -> float | None:
    """When `side` emitted its first event `name` (with data status `status`, for MIGRATION) at or after `after`,
    in series seconds: from QEMU's own timestamp of the event (the host's wall clock at emission, placed on the
    series clock through Series.wall_t0) when it has one, else from when the harness received it."""
    for event in series.events.get(side, []):
        if event["event"] != name or (status is not None and event.get("data", {}).get("status") != status):
            continue
        wall = event.get("wall")
        t = wall - series.wall_t0 if wall is not None and series.wall_t0 else event["t"]
        if t >= after:
            return t
    return None


def measure(series: Series, source_arrivals: Sequence[tuple[float, int]],
            destination_arrivals: Sequence[tuple[float, int]], reported_ms: float | None) -> Blackout:
    """The blackout of the migration in `series`; arrivals are (time.monotonic(), bytes) from the heartbeat
    readers of the source and the destination."""
    stop = event_time(series, "source", "STOP")
    resume = event_time(series, "destination", "RESUME", after=stop if stop is not None else float("-inf"))
    completed = event_time(series, "source", "MIGRATION", status="completed")
    source = [t - series.t0 for t, _ in source_arrivals]
    destination = [t - series.t0 for t, _ in destination_arrivals]
    before_stop = [t for t in source if stop is None or t <= stop]
    # The source's port can deliver ticks sent just before STOP a moment after the event reached us: the last
    # source tick is the last one before the destination's first, whatever the event said.
    first_dst = destination[0] if destination else None
    last_src = max((t for t in source if first_dst is None or t < first_dst), default=None)
    gaps = [b - a for a, b in zip(before_stop, before_stop[1:])]
    return Blackout(stop, completed, resume, last_src, first_dst, max(gaps) if gaps else None, reported_ms)


def reported_vs_source_clock(blackout: Blackout, low: float, high: float) -> Verdict:
    """QEMU's downtime over the same interval on the host clock (source STOP → source completed), within
    [low, high]: the mechanism makes them one interval, so the band only absorbs event delivery and ms rounding."""
    host = blackout.source_ms
    ratio = blackout.reported_ms / host if blackout.reported_ms is not None and host else None
    return within_band("reported downtime / source STOP→completed (host clock)", ratio, low, high,
                       anchor=f"QMP event timestamps: reported {fmt(blackout.reported_ms)} ms, "
                              f"STOP→completed {fmt(host)} ms")


def reported_within_lived(blackout: Blackout, high: float) -> Verdict:
    """QEMU's downtime over the blackout the guest lived (its heartbeat): at most `high` (about 1 — the reported
    interval lies inside the guest's silence)."""
    heard = blackout.heartbeat_ms
    ratio = blackout.reported_ms / heard if blackout.reported_ms is not None and heard else None
    return at_most("reported downtime / guest heartbeat blackout", ratio, high,
                   anchor=f"the guest's ticks stamped by the host: {fmt(heard)} ms without a tick, reported "
                          f"{fmt(blackout.reported_ms)} ms")


def heartbeat_covers_events(blackout: Blackout, low: float) -> Verdict:
    """The guest's lived blackout over STOP→RESUME at least `low` (about 1: a stopped guest cannot tick), so the
    heartbeat really heard the switchover (a port that kept ticking elsewhere would not)."""
    events, heard = blackout.events_ms, blackout.heartbeat_ms
    ratio = heard / events if heard is not None and events else None
    return at_least("guest heartbeat blackout / STOP→RESUME blackout", ratio, low,
                    anchor=f"the guest's ticks stamped by the host: {fmt(heard)} ms without a tick, STOP→RESUME "
                           f"{fmt(events)} ms")


def blackout_within_limit(blackout: Blackout, limit_ms: float, slack_ms: float) -> Verdict:
    """The limit the test set, as the guest lived it (not as QEMU reports it)."""
    return at_most("guest heartbeat blackout within downtime-limit", blackout.heartbeat_ms, limit_ms + slack_ms,
                   " ms", f"downtime-limit {limit_ms:g} ms + slack {slack_ms:g} ms")


def fmt(value: float | None) -> str:
    return "none" if value is None else f"{value:.0f}"
