"""One migration between a source and a destination Machine (or to a file), sampled from start to end.

Capabilities and parameters go on the destination before `migrate-incoming` (it was started with
`-incoming defer`), then on the source before `migrate`. Every wait has a deadline and, on expiry, says which phase
stalled and what the last samples of both sides showed. Every wait also ends within about a second when a side's
QEMU exits unexpectedly (QemuExited, naming the side) or its monitor connection is lost (MonitorLost).

A migration that must fail says so up front, as `result` in QEMU's migration-test: MigrationConfig(expect=
Outcome.FAILED or DESTINATION_QUITS), and `wait_outcome()` waits for that end (a side's 'failed' and the
destination's exit 1 are then the outcome, not faults); an undeclared failure ends any wait with MigrationFailed.
A deliberate cancel has a declared outcome too: `cancel_and_wait()` accepts 'cancelled' and also 'failed' with a
channel error (QEMU 10.0 sometimes fails the stream it is tearing down a few ms after migrate_cancel), records
which one it was, and fails only on anything else.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Callable, Iterable

from harness.analysis.cancel import CancelOutcome, classify_cancel
from harness.analysis.progress import convergence_note, summarize
from harness.analysis.samples import Series, lookup
from harness.core.process import main_thread_state
from harness.vm.exits import QemuExited
from harness.vm.machine import Machine
from harness.migration.sampler import DEFAULT_SAMPLING_HZ, Sampler
from harness.migration.relay import StreamRelay
from harness.migration.endpoints import LOCAL_ONLY, Handoff
from harness.migration.config import (CancelNotHonoured, MigrationConfig, MigrationError, MigrationFailed,
                                     MigrationStalled, MonitorLost, Outcome)

log = logging.getLogger(__name__)

TERMINAL_STATUSES = frozenset({"completed", "failed", "cancelled"})
POSTCOPY_STATUSES = frozenset({"postcopy-active", "postcopy-paused", "postcopy-recover",
                               "postcopy-recover-setup"})


class Migration:
    """One migration between two Machines (or to a file): configures both sides, starts it, samples query-migrate
    and the MIGRATION events on both sides into a Series, and waits on that series. Every wait ends at once, with
    the reason, when a side fails, a QEMU exits or a monitor is lost (MigrationFailed, QemuExited, MonitorLost),
    or at its deadline (MigrationStalled); a deliberate migrate_cancel is the scenario's, never such a failure."""

    def __init__(self, source: Machine, destination: Machine | None, config: MigrationConfig, workdir: Path,
                 name: str = "migration", hz: float = DEFAULT_SAMPLING_HZ,
                 on_finish: Callable[["Migration"], None] | None = None,
                 on_note: Callable[[str, Any], None] | None = None, tcp_host: str = "127.0.0.1",
                 tcp_port: int = 0, link_counter: Callable[[], int] | None = None,
                 relay_host: str = "127.0.0.1", unmeasured_bytes: str | None = None) -> None:
        self.source, self.destination, self.config, self.workdir, self.name = (
            source, destination, config, workdir, name)
        self.hz = hz
        # Where the destination listens for tcp: its loopback, or its address on a link (harness.hosts.netns). Port 0:
        # the destination picks one; a fixed port (a private namespace, where no one else listens) is used for
        # the first listener, the next one up for each recovery.
        self.tcp_host, self.tcp_port = tcp_host, tcp_port
        self._recoveries = 0
        # For tcp this is the listen address (port 0) until the destination has bound and reported its port.
        self.uri = self._make_uri(config.transport)
        self.sampler: Sampler | None = None
        self._series: Series | None = None
        self._on_finish = on_finish
        self._on_note = on_note      # records a JSON note among the test's artefacts (Testbed passes one)
        self._cancel_requested = False
        self.cancel_outcome: CancelOutcome | None = None
        self._unlisten: list[Callable[[], None]] = []
        self.relay: StreamRelay | None = None
        self.handoff = Handoff(config.address, direct_io=bool(config.parameters.get("direct-io")))
        if config.relay and config.address in LOCAL_ONLY:
            raise ValueError(f"{name}: a relay needs a socket address, not passed descriptors or commands")
        # Where the relay listens: this host's loopback, or an address a QEMU on another host reaches it at.
        self.relay_host = relay_host
        # Over a link (harness.hosts.netns): the source's veth tx counter, read at `migrate` and after.
        self._link_counter = link_counter
        self._link_sent_at_start: int | None = None
        # Why no transport count of this migration's bytes can be had, where none can (for the report).
        self.unmeasured_bytes = unmeasured_bytes

    def _make_uri(self, transport: str, suffix: str = "") -> str:
        if transport == "unix":
            return f"unix:{self.workdir / f'{self.name}{suffix}.sock'}"
        if transport == "tcp":
            # Port 0: bound by the destination itself, never probed here and bound later, so no other run can take
            # it in between; the real port is read back from query-migrate (see _bound_uri). A fixed tcp_port (a
            # link's private namespace, where nothing else listens) is used as is, one up per recovery.
            return f"tcp:{self.tcp_host}:{self.tcp_port + self._recoveries if self.tcp_port else 0}"
        if transport == "file":
            offset = f",offset={self.config.file_offset}" if self.config.file_offset else ""
            return f"file:{self.workdir / f'{self.name}{suffix}.img'}{offset}"
        raise ValueError(f"unknown migration transport {transport!r}")

    def _bound_uri(self, destination: Machine, listen_uri: str, previous: str | None = None) -> str:
        """The URI the source must use: for tcp port 0, the port the destination bound, from its query-migrate
        `socket-address` (as QEMU's migration-test does)."""
        if not (listen_uri.startswith("tcp:") and listen_uri.endswith(":0")):
            return listen_uri
        addresses = destination.qmp.cmd("query-migrate").get("socket-address", [])
        bound = [f"tcp:{a['host']}:{a['port']}" for a in addresses if a.get("type") == "inet"]
        fresh = [uri for uri in bound if uri != previous]  # after migrate-recover the old listener may be listed
        if not fresh:
            raise MigrationError(f"{self.name}: {destination.name} listens on {listen_uri} but query-migrate reports "
                                 f"no new inet socket-address ({addresses!r})")
        return fresh[0]

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
                  if k not in (self.config.source_only_parameters if side == "destination"
                               else self.config.destination_only_parameters)}
        if params:
            machine.qmp.cmd("migrate-set-parameters", **params)

    def start(self) -> "Migration":
        sides = {"source": self.source.qmp}
        if self.destination is not None:
            sides["destination"] = self.destination.qmp
            self.configure(self.destination, "destination")
            self.destination.qmp.cmd("migrate-incoming", **self.handoff.incoming(self.destination, self.uri))
            self.uri = self._bound_uri(self.destination, self.uri)
            self._adopt_console_history(self.destination)
        elif self.uri.startswith("tcp:"):
            raise ValueError(f"{self.name}: a tcp migration needs a destination")
        self.configure(self.source, "source")
        if self.destination is not None and self.config.expect is not Outcome.COMPLETED:
            # Declared: the destination's incoming migration fails, and QEMU then exits 1.
            self.destination.expect_exit(f"{self.name} is declared {self.config.expect.value}", codes=(1,))
        # The series takes events from here on, but polling starts once `migrate` has returned: a query asked
        # before it would report the previous migration's end ('failed', 'cancelled', 'completed') as this one's.
        self.sampler = Sampler(sides, hz=self.hz)
        self._watch(self.source)
        if self.destination is not None:
            self._watch(self.destination)
        if self.config.relay:   # made once the sampler exists: finish() (teardown) closes it
            if self.destination is None:
                raise ValueError(f"{self.name}: a relay needs a destination socket (a file has its own size)")
            self.relay = StreamRelay(self.uri, self.workdir, self.name, self.relay_host)
            self.uri = self.relay.uri
        if self._link_counter is not None:
            self._link_sent_at_start = self._link_counter()
        self.sampler.series.mark("migrate", uri=self.uri)
        try:
            self.source.qmp.cmd("migrate", **self.handoff.outgoing(self.source, self.uri))
            self.sampler.series.mark("migrate-returned")     # QEMU's clock has started (analysis.timing)
        finally:
            self.sampler.start()
        return self

    def _watch(self, machine: Machine) -> None:
        """Wake this migration's waits the moment `machine`'s QEMU exits."""
        sampler = self.sampler
        assert sampler is not None
        self._unlisten.append(machine.on_exit(lambda _m: sampler.notify()))

    def _adopt_console_history(self, destination: Machine) -> None:
        # The guest arriving on `destination` printed its earlier life on the source's console (e.g. a panic).
        if self.source.files.console not in destination.console_history:
            destination.console_history[:] = [*self.source.console_history, self.source.files.console]

    def restore_into(self, destination: Machine) -> "Migration":
        """Second half of a file migration: load the saved file into a fresh `-incoming defer` machine."""
        self.destination = destination
        self.configure(destination, "destination")
        assert self.sampler is not None
        self.sampler.add_side("destination", destination.qmp)
        self._watch(destination)
        self._adopt_console_history(destination)
        self.sampler.series.mark("migrate-incoming", uri=self.uri)
        destination.qmp.cmd("migrate-incoming", **self.handoff.incoming(destination, self.uri))
        return self

    def link_sent(self) -> int | None:
        """Bytes the source's end of the link sent since `migrate` (the kernel's veth counter: the stream with its
        TCP/IP/Ethernet headers, and the return path's acknowledgements); None when not over a link."""
        if self._link_counter is None or self._link_sent_at_start is None:
            return None
        return self._link_counter() - self._link_sent_at_start

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

    # How often a wait looks at the sides' processes and monitors besides being woken by them.
    FAULT_CHECK_INTERVAL = 0.25

    def machines(self) -> dict[str, Machine]:
        sides = {"source": self.source}
        if self.destination is not None:
            sides["destination"] = self.destination
        return sides

    def fault(self) -> BaseException | None:
        """Why this migration can no longer be observed or go on, if so: a side's QEMU exited unexpectedly
        (QemuExited naming the side), or a side's monitor connection broke while its QEMU runs (MonitorLost).
        A side whose exit was expected (expect_exit, or after migrate_cancel) is not a fault."""
        assert self.sampler is not None
        for side, machine in self.machines().items():
            if machine.unexpected_exit():
                return self._exit_fault(side, machine)
        for side, error in self.sampler.errors().items():
            machine = self.machines().get(side)
            if machine is None:
                continue
            # The monitor's EOF usually beats the process's reaping by a moment: give the exit watcher a second
            # to say whether QEMU is gone before calling it a lost monitor.
            machine.wait_exit(1.0)
            if machine.exited:
                if machine.unexpected_exit():
                    return self._exit_fault(side, machine)
                continue  # an expected exit: that side's series simply ends
            pid = machine.process.pid if machine.process else "?"
            return MonitorLost(f"{self.name}: lost the {side} QMP connection ({error}) while its QEMU "
                               f"({machine.name}, pid {pid}) still runs: the migration can no longer be observed; "
                               + self._state_report())
        return None

    def _exit_fault(self, side: str, machine: Machine) -> QemuExited:
        machine.exit_reported = True
        for other_side, other in self.machines().items():
            if other is not machine:
                # Its peer gone, the other side's migration fails and a destination then exits 1: a consequence
                # of this exit, not a second fault (a crash signal still counts: expect_exit never allows it).
                other.expect_exit(f"its migration peer ({side}) exited", codes=(1,), signals=())
        return machine.exit_error(side, f"during migration {self.name!r}").with_report(self._state_report())

    # How long a failure seen in a MIGRATION event waits for a query-migrate asked after it (its error-desc).
    FAILURE_REPLY_WAIT_S = 2.0

    def _reply_after_event(self, side: str, info: dict[str, Any]) -> dict[str, Any]:
        """The reply that says why `side` failed. The 'failed' may have come from a MIGRATION event that overtook
        the last reply (status 'active', no error-desc: a full filesystem's failure read as '?'): wait briefly for
        a reply asked after the event. A side whose monitor is gone keeps what there was."""
        sampler = self.sampler
        assert sampler is not None
        if sampler.wait_until(lambda s: s.reply_is_current(side) or sampler.error(side) is not None,
                              self.FAILURE_REPLY_WAIT_S) and self.series.reply_is_current(side):
            return self.series.latest(side)
        return info

    def wait(self, predicate: Callable[[Series], bool], timeout: float, what: str) -> Series:
        return self._wait(predicate, timeout, what)

    def _wait(self, predicate: Callable[[Series], bool], timeout: float, what: str,
              failure_is_outcome: frozenset[str] = frozenset()) -> Series:
        """Wait for `predicate`; a side reporting 'failed' raises MigrationFailed (unless that side is in
        `failure_is_outcome`), a QEMU exit or a lost monitor raises at once, the deadline raises MigrationStalled."""
        sampler = self.sampler
        assert sampler is not None, "migration not started"
        failed: dict[str, dict[str, Any]] = {}
        machines = self.machines()
        if self.config.expect is not Outcome.COMPLETED:
            failure_is_outcome = frozenset(machines)     # declared: a side failing is what the test waits for

        def done(series: Series) -> bool:
            for side in series.samples:
                if side == "destination" and self._cancel_requested:
                    continue  # a cancelled stream ends mid-load: the destination failing is the expected outcome
                if side in failure_is_outcome:
                    continue
                if series.status(side) == "failed":
                    failed[side] = series.latest(side)
                    return True
            if predicate(series):
                return True
            # Wake up to look at a fault, judged outside the sampler's lock in fault(): an unexpected exit, or
            # sampling lost on a side not known to have ended (an expected exit is no reason to wake).
            return (any(m.unexpected_exit() for m in machines.values())
                    or any(side in machines and not machines[side].exited for side in sampler._errors))

        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            ended = sampler.wait_until(done, max(0.0, min(remaining, self.FAULT_CHECK_INTERVAL)))
            if failed:
                side, info = next(iter(failed.items()))
                # A side fails when its peer dies under it: then the peer's exit is the verdict. The failing
                # side sees the broken channel a moment before the dead peer is reaped, so give that a moment.
                for other_side, other in machines.items():
                    if other_side != side:
                        other.wait_exit(0.5)
                        if other.unexpected_exit():
                            raise self._exit_fault(other_side, other)
                machine = machines.get(side)
                if side == "destination" and machine is not None:
                    # A destination whose incoming migration failed exits 1: that exit is this failure, not another.
                    machine.expect_exit(f"its incoming migration failed ({self.name})", codes=(1,))
                info = self._reply_after_event(side, info)
                raise MigrationFailed(f"{self.name}: {side} reports failure: {info.get('error-desc', '?')}; "
                                      + self._state_report())
            if ended and predicate(self.series):
                return self.series
            if (fault := self.fault()) is not None:
                raise fault
            if remaining <= 0:
                raise MigrationStalled(f"{self.name}: {what} did not happen within {timeout}s; "
                                       f"{convergence_note(self.series)}; " + self._state_report())

    def wait_status(self, statuses: Iterable[str], timeout: float, side: str = "source") -> dict[str, Any]:
        """Wait for `side`'s status to be one of `statuses`; returns a query-migrate reply asked after it.
        After cancel(), waiting for the source's 'cancelled' goes through cancel_and_wait: a channel-error
        'failed' is the cancel completing too."""
        wanted = frozenset(statuses)
        if self._cancel_requested and side == "source" and "cancelled" in wanted:
            self.cancel_and_wait(timeout)
            return self.series.latest(side)
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

    def wait_until(self, t: float, what: str, slack: float = 30.0) -> Series:
        """Wait until the source's samples reach series time `t` (seconds since sampling began)."""
        now = self.series.samples["source"][-1]["t"] if self.series.samples["source"] else 0.0
        return self.wait(lambda s: s.samples["source"][-1]["t"] >= t, max(0.0, t - now) + slack, what)

    def wait_outcome(self, timeout: float) -> dict[str, Any]:
        """Wait for the declared outcome (config.expect) and return the source's final query-migrate; any other end
        raises: MigrationFailed for a failure not declared, MigrationError for a success that should have failed,
        QemuExited/MonitorLost/MigrationStalled as every wait."""
        expect = self.config.expect
        if expect is Outcome.COMPLETED:
            return self.wait_completed(timeout)
        final = self.wait_status(TERMINAL_STATUSES, timeout)
        if final.get("status") != "failed":
            raise MigrationError(f"{self.name}: declared {expect.value}, but the source ended "
                                 f"{final.get('status')!r}; " + self._state_report())
        if expect is Outcome.DESTINATION_QUITS and self.destination is not None:
            self.destination.wait_exit(timeout)
            if not self.destination.exited:
                raise MigrationError(f"{self.name}: declared {expect.value}, but the destination still runs; "
                                     + self._state_report())
        return final

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
            if machine.exit_info is not None:
                lines.append(f"; QEMU {machine.exit_info.describe()}")
                continue
            try:
                lines.append(f"; runstate {machine.qmp.cmd('query-status', timeout=2)['status']}")
            except Exception as exc:
                lines.append(f"; QMP unavailable ({type(exc).__name__})")
                # A monitor that does not answer: its main loop is blocked. Where, when the QEMU is local: e.g.
                # "wait_woken <- sk_wait_data <- tcp_recvmsg_locked" is a blocking read of a socket.
                pid = getattr(machine.process, "pid", None) if machine.host.where() == "local" else None
                if pid and (state := main_thread_state(pid)):
                    lines.append(f"; its main thread waits in the kernel in {state}")
                lines.append(f"; QEMU output tail:\n{machine.output_tail(5)}")
        panic = (self.destination.guest_panic() if self.destination is not None else None) or self.source.guest_panic()
        if panic is not None:
            lines.append(f"\n  {panic}")
        return "".join(lines)

    # -- actions -----------------------------------------------------------------------------------------------
    def start_postcopy(self) -> None:
        self.series.mark("migrate-start-postcopy")
        self.source.qmp.cmd("migrate-start-postcopy")

    def cancel(self, and_then: tuple[str, ...] = ()) -> list[Any]:
        """migrate_cancel on the source. `and_then`: commands (without arguments) sent right behind it without
        waiting for its answer (QMPSession.pipeline: e.g. a second cancel that must land while the first is still
        'cancelling'); returns their answers."""
        self.series.mark("migrate_cancel", and_then=list(and_then))
        self._cancel_requested = True
        if self.destination is not None:
            # The destination's incoming stream ends mid-load: QEMU then exits (status 1). That is the cancel.
            self.destination.expect_exit(f"migrate_cancel of {self.name!r} ends its incoming stream")
        if not and_then:
            self.source.qmp.cmd("migrate_cancel")
            return []
        answers = self.source.qmp.pipeline("migrate_cancel", *and_then)
        for answer in answers:
            if isinstance(answer, BaseException):
                raise answer
        return answers[1:]

    def cancel_and_wait(self, timeout: float) -> CancelOutcome:
        """Cancel (unless cancel() was called already) and wait for the source to end; returns how it ended.
        'cancelled' and a channel-error 'failed' are both the cancel's outcome; the latter is recorded (a mark
        in the series and a JSON note `NAME.cancel-outcome`) as a possible QEMU race worth reporting.
        Anything else raises CancelNotHonoured."""
        if not self._cancel_requested:
            self.cancel()
        self._wait(lambda s: s.status("source") in TERMINAL_STATUSES, timeout,
                   "the source ending after migrate_cancel", failure_is_outcome=frozenset({"source"}))
        assert self.sampler is not None
        # error-desc is only in a query-migrate reply: wait for one asked after the terminal MIGRATION event.
        self.sampler.wait_until(lambda s: s.reply_is_current("source"), min(timeout, 5.0))
        outcome = classify_cancel(self.series)
        self.cancel_outcome = outcome
        self.series.mark("cancel-outcome", kind=outcome.kind, error=outcome.error_desc)
        if outcome.channel_error_race:
            log.warning("%s: migrate_cancel ended in 'failed' (%s) %.3fs later, not 'cancelled'", self.name,
                        outcome.error_desc, outcome.seconds_after_cancel or 0.0)
        if self._on_note is not None and outcome.kind != "cancelled":
            self._on_note(f"{self.name}.cancel-outcome", {
                **outcome.to_json(),
                "note": "after migrate_cancel the source reported 'failed' with a channel error instead of "
                        "'cancelled': accepted as the cancel's outcome; possibly a QEMU race (see the series)"
                        if outcome.channel_error_race else "the cancel was not honoured"})
        if not outcome.accepted:
            raise CancelNotHonoured(f"{self.name}: after migrate_cancel the source ended {outcome.status!r} "
                                    f"({outcome.error_desc or 'no error'}), not cancelled; " + self._state_report())
        return outcome

    def pause(self, timeout: float = 30.0) -> None:
        """Break a postcopy migration's channel on purpose; both sides must enter postcopy-paused."""
        self.series.mark("migrate-pause")
        self.source.qmp.cmd("migrate-pause", oob=True)
        self.wait_paused(timeout)

    def wait_paused(self, timeout: float) -> None:
        """Wait for both sides to enter postcopy-paused (after migrate-pause, or a link the scenario cut)."""
        self.wait_status({"postcopy-paused"}, timeout, "source")
        if self.destination is not None:
            self.wait_status({"postcopy-paused"}, timeout, "destination")

    def recover(self, timeout: float = 30.0) -> None:
        # As QEMU's own postcopy recovery test: the destination listens, then the source resumes at once.
        """Resume a paused postcopy over a fresh channel (migrate-recover, then migrate resume=true)."""
        assert self.destination is not None
        if self.relay is not None:
            raise ValueError(f"{self.name}: recovery through a relay is not supported (its target is the old "
                             f"listener)")
        previous = self.uri
        self._recoveries += 1
        self.uri = self._make_uri(self.config.transport, suffix="-recover")
        self.series.mark("migrate-recover", uri=self.uri)
        # exec-oob: the destination's main loop may be blocked on a missing page until recovery.
        self.destination.qmp.cmd("migrate-recover", oob=True, uri=self.uri, timeout=timeout)
        self.uri = self._bound_uri(self.destination, self.uri, previous)
        self.source.qmp.cmd("migrate", uri=self.uri, resume=True)

    def finish(self) -> Series:
        """Stop sampling (idempotent) and hand the series to whoever records it."""
        if self._series is None and self.sampler is not None:
            self._series = self.sampler.stop()
            if self.relay is not None:
                self.relay.close()
            self.handoff.close()
            for unlisten in self._unlisten:
                unlisten()
            if self._on_finish is not None:
                self._on_finish(self)
        return self.series

    def __enter__(self) -> "Migration":
        return self

    def __exit__(self, *exc: object) -> None:
        self.finish()


def wait_runstate(machine: Machine, states: Iterable[str], timeout: float) -> str:
    """Poll query-status until one of `states`; a QEMU that exits meanwhile raises QemuExited at once (the
    query fails and the session explains why)."""
    wanted = frozenset(states)
    deadline = time.monotonic() + timeout
    while True:
        state = machine.runstate()
        if state in wanted:
            return state
        if time.monotonic() > deadline:
            raise MigrationStalled(f"{machine.name}: runstate {state!r}, wanted {sorted(wanted)} within {timeout}s")
        time.sleep(0.05)
