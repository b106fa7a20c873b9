"""The QMP session's event record stays bounded: a QEMU stuck emitting MIGRATION_PASS by the million must not take
the harness's memory with it (no QEMU: events are fed to the session's listener as the client would)."""

from __future__ import annotations

import asyncio

import pytest
from qemu.qmp.message import Message

from harness.qemu import qmp


def test_events_past_the_cap_are_counted_not_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(qmp, "MAX_EVENTS_PER_NAME", 5)
    session = qmp.QMPSession("unit")
    try:
        session._pump = session._run(session._start_pump(), timeout=5)

        async def feed() -> None:
            for i in range(12):
                await session._listener.put(Message({"event": "MIGRATION_PASS", "data": {"pass": i}}))
            await session._listener.put(Message({"event": "MIGRATION", "data": {"status": "completed"}}))
        session._run(feed(), timeout=5)
        completed = session.wait_event(lambda e: e.name == "MIGRATION", timeout=5)
        assert completed.data == {"status": "completed"}
        assert [e.data["pass"] for e in session.events if e.name == "MIGRATION_PASS"] == [0, 1, 2, 3, 4]
        assert session.dropped_events == {"MIGRATION_PASS": 7}
        assert session._listener.history == ()   # qemu.qmp's own unbounded history is not kept either
    finally:
        session._run(session._stop_pump(), timeout=5)
        session.close()
