"""One migration between a source and a destination Machine (or to a file), sampled from start to end.

Capabilities and parameters go on the destination before `migrate-incoming` (it was started with
`-incoming defer`), then on the source before `migrate`. Every wait has a deadline and, on expiry, says which phase
stalled and what the last samples of both sides showed.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

from .machine import Machine, free_tcp_port
from .sampler import Sampler, Series, lookup

log = logging.getLogger(__name__)

TERMINAL_STATUSES = frozenset({"completed", "failed", "cancelled"})
POSTCOPY_STATUSES = frozenset({"postcopy-active", "postcopy-paused", "postcopy-recover",
                               "postcopy-recover-setup"})


class MigrationFailed(AssertionError):
    pass


class MigrationStalled(AssertionError):
    pass


@dataclass(frozen=True)
class MigrationConfig:
    capabilities: Mapping[str, bool] = field(default_factory=dict)
    parameters: Mapping[str, Any] = field(default_factory=dict)
    transport: str = "unix"  # unix | tcp | file
    # Parameters that only make sense on one side (e.g. max-bandwidth is the source's business, but harmless on
    # the destination); everything is set on both unless listed here.
    source_only_parameters: frozenset[str] = frozenset()

    def with_capabilities(self, **caps: bool) -> "MigrationConfig":
        return MigrationConfig({**self.capabilities, **{k.replace("_", "-"): v for k, v in caps.items()}},
                               self.parameters, self.transport, self.source_only_parameters)

    def with_parameters(self, **params: Any) -> "MigrationConfig":
        return MigrationConfig(self.capabilities, {**self.parameters, **{k.replace("_", "-"): v
                                                                        for k, v in params.items()}},
                               self.transport, self.source_only_parameters)


def summarize(info: Mapping[str, Any]) -> str:
    """One line of what a query-migrate answer says, for failure messages."""
    keys = ["status", "ram.transferred", "ram.remaining", "ram.dirty-sync-count", "ram.dirty-pages-rate",
            "cpu-throttle-percentage", "ram.postcopy-requests", "error-desc"]
    parts = [f"{k}={v}" for k in keys if (v := lookup(dict(info), k)) is not None]
    return ", ".join(parts) or "(no sample)"


class Migration:
    def __init__(self, source: Machine, destination: Machine | None, config: MigrationConfig, workdir: Path,
                 name: str = "migration", hz: float = 50.0,
                 on_finish: Callable[["Migration"], None] | None = None) -> None:
        self.source, self.destination, self.config, self.workdir, self.name = (
            source, destination, config, workdir, name)
        self.hz = hz
        self.uri = self._make_uri(config.transport)
        self.sampler: Sampler | None = None
        self._series: Series | None = None
        self._on_finish = on_finish
        self._cancel_requested = False

    def _make_uri(self, transport: str, suffix: str = "") -> str:
        if transport == "unix":
            return f"unix:{self.workdir / f'{self.name}{suffix}.sock'}"
        if transport == "tcp":
            return f"tcp:127.0.0.1:{free_tcp_port()}"
        if transport == "file":
            return f"file:{self.workdir / f'{self.name}{suffix}.img'}"
        raise ValueError(f"unknown migration transport {transport!r}")

    @property
    def file_path(self) -> Path:
        if not self.uri.startswith("file:"):
            raise ValueError(f"{self.uri} is not a file migration")
        return Path(self.uri.removeprefix("file:").split(",")[0])

    # -- set-up ------------------------------------------------------------------------------------------------
    def _capabilities(self) -> dict[str, bool]:
        # MIGRATION_PASS events are part of every recording unless a test says otherwise.
        return {"events": True, **self.config.capabilities}

    def configure(self, machine: Machine, side: str) -> None:
        caps = self._capabilities()
        if caps:
            machine.qmp.cmd("migrate-set-capabilities",
                            capabilities=[{"capability": k, "state": v} for k, v in caps.items()])
        params = {k: v for k, v in self.config.parameters.items()
                  if side == "source" or k not in self.config.source_only_parameters}
        if params:
            machine.qmp.cmd("migrate-set-parameters", **params)

    def start(self) -> "Migration":
        sides = {"source": self.source.qmp}
        if self.destination is not None:
            sides["destination"] = self.destination.qmp
            self.configure(self.destination, "destination")
            self.destination.qmp.cmd("migrate-incoming", uri=self.uri)
        self.configure(self.source, "source")
        self.sampler = Sampler(sides, hz=self.hz).start()
        self.sampler.series.mark("migrate", uri=self.uri)
        self.source.qmp.cmd("migrate", uri=self.uri)
        return self

    def restore_into(self, destination: Machine) -> "Migration":
        """Second half of a file migration: load the saved file into a fresh `-incoming defer` machine."""
        self.destination = destination
        self.configure(destination, "destination")
        assert self.sampler is not None
        self.sampler.add_side("destination", destination.qmp)
        self.sampler.series.mark("migrate-incoming", uri=self.uri)
        destination.qmp.cmd("migrate-incoming", uri=self.uri)
        return self

    @property
    def started(self) -> bool:
        """False when start() failed before sampling began (e.g. QEMU refused a capability)."""
        return self.sampler is not None

    # -- waiting -----------------------------------------------------------------------------------------------
    @property
    def series(self) -> Series:
        if self._series is not None:
            return self._series
        assert self.sampler is not None, "migration not started"
        return self.sampler.series

    def status(self, side: str = "source") -> str | None:
        return self.series.status(side)

    def wait(self, predicate: Callable[[Series], bool], timeout: float, what: str) -> Series:
        assert self.sampler is not None, "migration not started"
        failed = {}

        def done(series: Series) -> bool:
            for side in series.samples:
                if side == "destination" and self._cancel_requested:
                    continue  # a cancelled stream ends mid-load: the destination failing is the expected outcome
                if series.status(side) == "failed":
                    failed[side] = series.latest(side)
                    return True
            return predicate(series)

        if not self.sampler.wait_until(done, timeout):
            raise MigrationStalled(f"{self.name}: {what} did not happen within {timeout}s; "
                                   + self._state_report())
        if failed:
            side, info = next(iter(failed.items()))
            raise MigrationFailed(f"{self.name}: {side} reports failure: {info.get('error-desc', '?')}; "
                                  + self._state_report())
        return self.series

    def wait_status(self, statuses: Iterable[str], timeout: float, side: str = "source") -> dict[str, Any]:
        wanted = frozenset(statuses)
        self.wait(lambda s: s.status(side) in wanted, timeout,
                  f"{side} status in {sorted(wanted)}")
        # The status may have come from an event that overtook the last reply: return a reply asked after it
        # (unless that side's monitor stays stuck, where the latest reply is all there is).
        assert self.sampler is not None
        self.sampler.wait_until(lambda s: s.reply_is_current(side), min(timeout, 5.0))
        return self.series.latest(side)

    def wait_dirty_syncs(self, count: int, timeout: float) -> dict[str, Any]:
        self.wait(lambda s: (lookup(s.latest(), "ram.dirty-sync-count") or 0) >= count, timeout,
                  f"dirty-sync-count >= {count}")
        return self.series.latest()

    def wait_completed(self, timeout: float) -> dict[str, Any]:
        """Wait for both sides to report completion; returns the source's final query-migrate."""
        self.wait_status({"completed"}, timeout, "source")
        if self.destination is not None:
            self.wait_status({"completed"}, timeout, "destination")
        return self.series.latest("source")

    def _state_report(self) -> str:
        lines = []
        for side, machine in (("source", self.source), ("destination", self.destination)):
            if machine is None:
                continue
            lines.append(f"\n  {side}: status {self.series.status(side)}; "
                         f"last sample: {summarize(self.series.latest(side))}")
            # A side whose main loop is stuck answers no query-migrate, but its MIGRATION events still arrive.
            announced = [e for e in self.series.events.get(side, []) if e["event"] == "MIGRATION"]
            if announced:
                lines.append(f"; last MIGRATION event: {announced[-1]['data'].get('status')} "
                             f"at t={announced[-1]['t']:.2f}s")
            try:
                lines.append(f"; runstate {machine.qmp.cmd('query-status', timeout=2)['status']}")
            except Exception as exc:
                lines.append(f"; QMP unavailable ({exc!r}); QEMU output tail:\n{machine.output_tail(5)}")
        return "".join(lines)

    # -- actions -----------------------------------------------------------------------------------------------
    def start_postcopy(self) -> None:
        self.series.mark("migrate-start-postcopy")
        self.source.qmp.cmd("migrate-start-postcopy")

    def cancel(self) -> None:
        self.series.mark("migrate_cancel")
        self._cancel_requested = True
        self.source.qmp.cmd("migrate_cancel")

    def pause(self, timeout: float = 30.0) -> None:
        """Break a postcopy migration's channel on purpose; both sides must enter postcopy-paused."""
        self.series.mark("migrate-pause")
        self.source.qmp.cmd("migrate-pause", oob=True)
        self.wait_status({"postcopy-paused"}, timeout, "source")
        if self.destination is not None:
            self.wait_status({"postcopy-paused"}, timeout, "destination")

    def recover(self, timeout: float = 30.0) -> None:
        # As QEMU's own postcopy recovery test: the destination listens, then the source resumes at once.
        """Resume a paused postcopy over a fresh channel (migrate-recover, then migrate resume=true)."""
        assert self.destination is not None
        self.uri = self._make_uri(self.config.transport, suffix="-recover")
        self.series.mark("migrate-recover", uri=self.uri)
        # exec-oob: the destination's main loop may be blocked on a missing page until recovery.
        self.destination.qmp.cmd("migrate-recover", oob=True, uri=self.uri, timeout=timeout)
        self.source.qmp.cmd("migrate", uri=self.uri, resume=True)

    def finish(self) -> Series:
        """Stop sampling (idempotent) and hand the series to whoever records it."""
        if self._series is None and self.sampler is not None:
            self._series = self.sampler.stop()
            if self._on_finish is not None:
                self._on_finish(self)
        return self.series

    def __enter__(self) -> "Migration":
        return self

    def __exit__(self, *exc: object) -> None:
        self.finish()


def wait_runstate(machine: Machine, states: Iterable[str], timeout: float) -> str:
    wanted = frozenset(states)
    deadline = time.monotonic() + timeout
    while True:
        state = machine.runstate()
        if state in wanted:
            return state
        if time.monotonic() > deadline:
            raise MigrationStalled(f"{machine.name}: runstate {state!r}, wanted {sorted(wanted)} within {timeout}s")
        time.sleep(0.05)
