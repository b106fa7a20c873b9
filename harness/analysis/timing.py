"""QEMU's timing figures of a completed migration held to the series' own clock (the host's).

QEMU reports, once a migration has completed, how long it took (`total-time`, from the `migrate` command to the
completion), how long its set-up took (`setup-time`, to the switch from 'setup' to 'active') and the throughput of
the whole transfer (`ram.mbps`: its bytes over total-time − setup-time, migration.c, migration_completion_end).
None of them may be taken on trust: each is compared with the same interval on the host's clock —

  - `migrate` sent: the harness's own mark in the series, just before the command goes out;
  - 'active' and 'completed': the source's MIGRATION events, at QEMU's timestamp of each (the host's wall clock when
    QEMU emitted it, placed on the series clock) or, for a QEMU on another host whose wall clock is not ours, at
    their arrival here (later by the delivery only, which loosens the upper bounds a little and nothing else);
  - bytes: what the transport carried (the relay's count, harness.migration.relay) where there is one, else
    `ram.transferred` (QEMU's own, so that rate check then rests on the host clock alone, and says so).

A QEMU that starts its clock late, stops it early or computes its throughput in the wrong unit shows as a ratio
away from 1. Pure: a Series and a query-migrate reply in, numbers and Verdicts out; the bands are the caller's
(harness.migration.self_report, calibrated there).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from harness.analysis.blackout import event_time, fmt
from harness.analysis.oracles import Verdict, at_most, within_band
from harness.analysis.samples import Series, lookup
from harness.core.units import interval_ms


MBPS_VS_HOST = "ram.mbps / bytes per host time from active to completed"   # the verdict's name

@dataclass(frozen=True)
class HostClock:
    """A migration's milestones on the series' clock (seconds; None where the series has none)."""
    migrate_t: float | None       # the harness sent `migrate`
    active_t: float | None        # the source reported 'active' (set-up over)
    completed_t: float | None     # the source reported 'completed'
    event_clock: str              # "QEMU timestamps" or "arrival" (a QEMU on another host)
    returned_t: float | None = None   # `migrate`'s reply arrived: QEMU had started its clock by then

    @property
    def total_ms(self) -> float | None:
        return interval_ms(self.migrate_t, self.completed_t)

    @property
    def setup_ms(self) -> float | None:
        return interval_ms(self.migrate_t, self.active_t)

    @property
    def transfer_ms(self) -> float | None:
        """From 'active' to 'completed': the span QEMU's final mbps divides its bytes by."""
        return interval_ms(self.active_t, self.completed_t)

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "total_ms": self.total_ms, "setup_ms": self.setup_ms,
                "transfer_ms": self.transfer_ms}


def _arrival(series: Series, side: str, status: str) -> float | None:
    return next((e["t"] for e in series.events.get(side, [])
                 if e["event"] == "MIGRATION" and e.get("data", {}).get("status") == status), None)


def host_clock(series: Series, qemu_timestamps: bool = True) -> HostClock:
    """The milestones of the (first) migration in `series`. `qemu_timestamps`: place QEMU's events by their own
    timestamps (a QEMU on this host); False: by their arrival (a QEMU on another host, another wall clock)."""
    start = next((m["t"] for m in series.marks if m["what"] == "migrate"), None)
    after = start if start is not None else float("-inf")
    if qemu_timestamps:
        active = event_time(series, "source", "MIGRATION", after=after, status="active")
        completed = event_time(series, "source", "MIGRATION", after=after, status="completed")
    else:
        active, completed = _arrival(series, "source", "active"), _arrival(series, "source", "completed")
    returned = next((m["t"] for m in series.marks if m["what"] == "migrate-returned"), None)
    return HostClock(start, active, completed, "QEMU timestamps" if qemu_timestamps else "arrival", returned)


def total_time_vs_host(clock: HostClock, final: dict[str, Any], low: float, high: float,
                       rounding_ms: float = 0.0) -> Verdict:
    """QEMU's total-time over the host's time from sending `migrate` to the source's `completed` event: ≤ 1 on the
    mechanism (QEMU's clock starts once the command has arrived) plus ms rounding, and not far below it.
    `rounding_ms` widens the band by that many ms of the host interval (both sides count whole ms: a migration of
    tens of ms must not fail on rounding). The command arrives when QEMU's main loop reads it, which on a loaded
    host can be hundreds of ms after it was sent (session 13, an exec: migration beside other runs: QEMU's clock
    started 225 ms after the host sent `migrate`); it has started by the time the reply is back, so the low end
    scales by (reply → completed) / (sent → completed) where the series marks the reply."""
    total, host = final.get("total-time"), clock.total_ms
    ratio = total / host if total is not None and host else None
    widen = rounding_ms / host if host else 0.0
    latest_start = interval_ms(clock.returned_t, clock.completed_t)
    if latest_start is not None and host:
        low = low * latest_start / host
    return within_band("total-time / host time from migrate to completed", ratio, round(low - widen, 4),
                       round(high + widen, 4),
                       anchor=f"the series' own clock ({clock.event_clock}): total-time {fmt(total)} ms, "
                              f"host {fmt(host)} ms" + (f", of it after `migrate` returned {fmt(latest_start)} ms"
                                                        if latest_start is not None else ""))


def setup_time_vs_host(clock: HostClock, final: dict[str, Any], slack_ms: float) -> Verdict:
    """QEMU's setup-time ≤ the host's time from sending `migrate` to the source's 'active' event + slack: QEMU
    stamps its set-up's end right after that switch (migration.c, qemu_savevm_wait_unplug), and its start after
    the command arrived."""
    setup, host = final.get("setup-time"), clock.setup_ms
    bound = host + slack_ms if host is not None else None
    if bound is None:
        return Verdict("setup-time within host time from migrate to active", False, setup, None,
                       "the series has no 'active' event after `migrate`")
    return at_most("setup-time within host time from migrate to active", setup, round(bound, 1), " ms",
                   f"the series' own clock ({clock.event_clock}): migrate → active {fmt(host)} ms + "
                   f"{slack_ms:g} ms")


def mbps_vs_host(clock: HostClock, final: dict[str, Any], carried: int | None, low: float,
                 high: float, rounding_ms: float = 0.0, carried_by: str = "the relay") -> Verdict:
    """QEMU's final ram.mbps over the bytes of the migration per host time from 'active' to 'completed'.

    At completion QEMU sets mbps to its transferred bytes × 8 over total-time − setup-time (migration.c,
    migration_completion_end): the same span on the host's clock. Bytes: what the transport carried (`carried`,
    counted by `carried_by`: the relay, an exec: pipe) where there is one, else ram.transferred (then only the
    clock is independent).
    `rounding_ms` widens the band by what that many ms would change in the span (QEMU's span is whole ms)."""
    mbps = lookup(final, "ram.mbps")
    span = clock.transfer_ms
    measured_bytes = carried if carried is not None else lookup(final, "ram.transferred")
    source = f"bytes {carried_by} carried" if carried is not None else "ram.transferred (no transport count here)"
    expected = measured_bytes * 8 / span / 1e3 if measured_bytes is not None and span else None
    ratio = mbps / expected if isinstance(mbps, (int, float)) and expected else None
    # QEMU's span starts before 'active': total-time counts from `migrate`, setup-time only from the migration
    # thread's start (migration.c: start_time in migrate_init, setup_start in migration_thread), so QEMU divides by
    # active → completed plus the part of migrate → active before its thread ran, which the host cannot tell
    # apart. Its span lies between active → completed and migrate → completed: the low end scales by their ratio
    # (≈ 1 for any transfer longer than its set-up; a 10 ms migration of 340 KB measured 0.34, ignore-shared).
    if span and clock.total_ms and clock.total_ms > span:
        low = low * span / clock.total_ms
    if span and rounding_ms:
        # QEMU's span is whole ms, and ≥ 1 ms whenever it reports an mbps (migration.c divides by it only when it
        # is not 0): a span shorter than the rounding (ignore-shared, 2.6 ms on the host, QEMU's 2) may read short
        # down to 1 ms, not to nothing. Before, such a span widened nothing and failed the unmodified build at 1.30.
        low, high = low * span / (span + rounding_ms), high * span / max(span - rounding_ms, 1.0)
    return within_band(MBPS_VS_HOST, ratio, round(low, 4),
                       round(high, 4),
                       anchor=f"the series' own clock ({clock.event_clock}) and {source}: mbps "
                              f"{mbps if mbps is None else f'{mbps:.1f}'}, {measured_bytes} bytes in "
                              f"{fmt(span)} ms = {'none' if expected is None else f'{expected:.1f}'} Mbit/s")
