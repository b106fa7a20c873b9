"""The sampler's per-side rates: the source at the full rate throughout, any other side slowly until postcopy, and
a side's event wakes its poller at once (no QEMU: a QMPSession whose query-migrate answers from a field, its events
fed to the session's listener as the client would)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from qemu.qmp.message import Message

from harness.migration.sampler import SLOW_SIDE_HZ, Sampler, side_hz
from harness.qemu.qmp import QMPSession


def test_source_is_polled_at_the_full_rate_in_every_status() -> None:
    for status in (None, "setup", "active", "postcopy-active", "completed"):
        assert side_hz("source", status, 100.0) == 100.0


def test_other_sides_are_slow_outside_postcopy_and_fast_in_it() -> None:
    for side in ("destination", "recovery-destination"):
        for status in (None, "setup", "active", "completed", "failed", "cancelled"):
            assert side_hz(side, status, 100.0) == SLOW_SIDE_HZ
        for status in ("postcopy-active", "postcopy-paused", "postcopy-recover-setup", "postcopy-recover"):
            assert side_hz(side, status, 100.0) == 100.0


def test_a_slow_rate_never_exceeds_the_asked_one() -> None:
    assert side_hz("destination", "active", 1.0) == 1.0   # e.g. bench's background sampler at 1 Hz


class AnsweringSession(QMPSession):
    """Answers query-migrate with `status` after a short delay, as a QEMU's monitor would."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.status = "setup"
        self._pump = self._run(self._start_pump(), timeout=5)

    async def execute(self, command: str, **arguments: Any) -> Any:
        await asyncio.sleep(0.001)
        return {"status": self.status}

    def announce(self, status: str) -> float:
        """Change status and emit its MIGRATION event; returns when (time.monotonic) it was fed."""
        self.status = status
        fed = time.monotonic()
        self._run(self._listener.put(Message({"event": "MIGRATION", "data": {"status": status}})), timeout=5)
        return fed

    def close(self) -> None:
        self._run(self._stop_pump(), timeout=5)
        super().close()


def samples_between(sampler: Sampler, side: str, start: float, end: float) -> int:
    t0 = sampler.series.t0
    return sum(1 for s in sampler.series.samples[side] if start - t0 <= s["asked"] < end - t0)


def test_destination_slow_until_postcopy_and_woken_by_its_events() -> None:
    source, destination = AnsweringSession("source"), AnsweringSession("destination")
    sampler = Sampler({"source": source, "destination": destination}, hz=100.0, slow_hz=2.0)
    try:
        sampler.start()
        time.sleep(1.25)   # halfway between two 2 Hz polls: without its wake-up, the event waits 0.25 s
        now = time.monotonic()
        assert samples_between(sampler, "destination", now - 0.8, now) <= 3    # 2 Hz (1–2 in 0.8 s), not 100
        assert samples_between(sampler, "source", now - 0.8, now) >= 30        # 100 Hz less a busy host's losses

        fed = destination.announce("active")
        assert sampler.wait_until(lambda s: s.status("destination") == "active" and s.reply_is_current("destination"),
                                  timeout=5)
        woke_after = sampler.series.samples["destination"][-1]["t"] + sampler.series.t0 - fed
        assert woke_after < 0.15, f"an event took {woke_after:.3f}s to bring a reply (2 Hz: up to 0.5 s)"

        destination.announce("postcopy-active")
        time.sleep(0.2)
        start = time.monotonic()
        time.sleep(0.8)
        assert samples_between(sampler, "destination", start, time.monotonic()) >= 30   # the full rate in postcopy

        destination.announce("completed")   # slow again, polled at once by the event's wake-up
        time.sleep(0.05)
        stopping = time.monotonic()
        series = sampler.stop()
        assert time.monotonic() - stopping < 0.25   # a slow poller ends at stop(), not at its next tick 0.45 s away
        assert series.status("destination") == "completed" and series.reply_is_current("destination")
        assert series.slow_hz == 2.0
    finally:
        sampler.stop()
        source.close()
        destination.close()
