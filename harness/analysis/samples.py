"""A sampled migration: query-migrate replies and MIGRATION/MIGRATION_PASS events of one or both sides over time.

A Series is plain data (JSON round-trips), so oracles can be unit-tested on recorded runs; harness.migration.sampler
fills one from live QEMUs.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

SIDES = ("source", "destination")


def lookup(info: dict[str, Any], path: str) -> Any:
    """`lookup(info, "ram.dirty-sync-count")`; None when any part is absent."""
    node: Any = info
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node



@dataclass
class Series:
    t0: float       # time.monotonic() at the start; sample times are relative to it
    hz: float       # the rate the source is polled at (and any side in postcopy)
    wall_t0: float = field(default_factory=time.time)  # the same instant on the wall clock (trace timestamps)
    samples: dict[str, list[dict[str, Any]]] = field(default_factory=lambda: {s: [] for s in SIDES})
    events: dict[str, list[dict[str, Any]]] = field(default_factory=lambda: {s: [] for s in SIDES})
    marks: list[dict[str, Any]] = field(default_factory=list)  # harness actions: postcopy switch, cancel, …
    stalls: list[dict[str, Any]] = field(default_factory=list)  # polls a side's monitor took long to answer
    # The rate any other side is polled at outside postcopy, between its events (harness.migration.sampler);
    # None: every side at `hz` (a series recorded before session 14).
    slow_hz: float | None = None

    def track(self, path: str, side: str = "source") -> list[tuple[float, Any]]:
        """(t, value) for every sample of `side` that has `path`; t in seconds since t0."""
        return [(s["t"], v) for s in self.samples[side] if (v := lookup(s["info"], path)) is not None]

    def latest(self, side: str = "source") -> dict[str, Any]:
        return self.samples[side][-1]["info"] if self.samples[side] else {}

    def status(self, side: str = "source") -> str | None:
        """The most recent migration status of `side`, from query-migrate or a MIGRATION event, whichever is
        newer (events still arrive when the main loop, and so query-migrate, is blocked).

        A reply is only known to be newer than events received before its request was sent: QEMU may compute
        the reply, then emit a MIGRATION event from the migration thread, then write the reply, so an event
        received while the request was in flight is treated as the newer of the two."""
        if not self.reply_is_current(side):
            return str(self._last_migration_event(side)["data"].get("status"))
        return self.samples[side][-1]["info"].get("status") if self.samples.get(side) else None

    def reply_is_current(self, side: str = "source") -> bool:
        """The latest query-migrate reply was asked for after the latest MIGRATION event (or there is none)."""
        event = self._last_migration_event(side)
        if event is None:
            return True
        sample = self.samples[side][-1] if self.samples.get(side) else None
        return sample is not None and event["t"] <= sample.get("asked", sample["t"])

    def _last_migration_event(self, side: str) -> dict[str, Any] | None:
        return next((e for e in reversed(self.events.get(side, [])) if e["event"] == "MIGRATION"), None)

    def event_times(self, name: str, side: str = "source",
                    predicate: Callable[[dict[str, Any]], bool] = lambda data: True) -> list[float]:
        return [e["t"] for e in self.events[side] if e["event"] == name and predicate(e.get("data", {}))]

    def status_changes(self, side: str = "source") -> list[tuple[float, str]]:
        """Status transitions seen by polling or announced by MIGRATION events (brief states only show there)."""
        timeline = sorted(self.track("status", side) + [
            (e["t"], e["data"].get("status")) for e in self.events.get(side, []) if e["event"] == "MIGRATION"])
        changes: list[tuple[float, str]] = []
        for t, status in timeline:
            if not changes or changes[-1][1] != status:
                changes.append((t, status))
        return changes

    def achieved_hz(self, side: str = "source") -> float:
        samples = self.samples[side]
        if len(samples) < 2:
            return 0.0
        return (len(samples) - 1) / (samples[-1]["t"] - samples[0]["t"])

    def mark(self, what: str, **data: Any) -> None:
        self.marks.append({"t": time.monotonic() - self.t0, "what": what, **data})

    def to_json(self) -> dict[str, Any]:
        return {"t0": self.t0, "wall_t0": self.wall_t0, "hz": self.hz, "slow_hz": self.slow_hz,
                "achieved_hz": {s: self.achieved_hz(s) for s in self.samples}, "samples": self.samples,
                "events": self.events, "marks": self.marks, "stalls": self.stalls}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "Series":
        return cls(t0=data["t0"], wall_t0=data.get("wall_t0", 0.0), hz=data["hz"], samples=data["samples"],
                   events=data["events"], marks=data.get("marks", []), stalls=data.get("stalls", []),
                   slow_hz=data.get("slow_hz"))

    @classmethod
    def load(cls, path: Path) -> "Series":
        return cls.from_json(json.loads(path.read_text()))
