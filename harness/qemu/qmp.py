"""A synchronous face on qemu.qmp's asyncio client, with every event recorded from connection on.

The client runs on a private event loop in a daemon thread, so a sampler thread and the test body can both issue
commands while events keep being collected (the MIGRATION event may arrive before anyone polls for it).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from concurrent.futures import Future, TimeoutError as FutureTimeout
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Coroutine, TypeVar

from qemu.qmp import EventListener, QMPClient
from qemu.qmp.message import Message
from qemu.qmp.qmp_client import ExecuteError

__all__ = ["QMPSession", "QMPEvent", "ExecuteError", "QMPTimeout", "QMPClosed"]

log = logging.getLogger(__name__)
T = TypeVar("T")
# Events kept per name and session. A migration stuck in a loop of dirty syncs emits MIGRATION_PASS by the million
# (870k in one stalled run, 13.7 GB of harness memory); past this many, one name's events are counted, not kept
# (`dropped_events`), and a warning says so once. A healthy test emits a few hundred.
MAX_EVENTS_PER_NAME = 50_000


class QMPTimeout(TimeoutError):
    pass


class QMPClosed(ConnectionError):
    """The session was closed (by the harness or a test); nothing more can be sent on it."""


@dataclass(frozen=True)
class QMPEvent:
    t: float  # host time.monotonic() when received
    name: str
    data: dict[str, Any]
    # QEMU's own stamp (the event's "timestamp": the host's wall clock read when QEMU emitted it), in seconds:
    # free of the harness's delivery delay, so two events' interval is exact to the microsecond.
    wall: float | None = None

    def to_json(self) -> dict[str, Any]:
        return {"t": self.t, "event": self.name, "data": self.data, "wall": self.wall}


class _QueueOnlyListener(EventListener):
    """qemu.qmp's EventListener also appends every event it ever saw to its `history`, without bound; the session
    keeps its own (bounded) record, so this one only queues them for the pump."""

    async def put(self, event: Message) -> None:
        if self.accept(event):
            await self._queue.put(event)


class QMPSession:
    def __init__(self, name: str) -> None:
        self.name = name
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name=f"qmp-{name}", daemon=True)
        self._thread.start()
        self._client = QMPClient(name)
        self._listener = _QueueOnlyListener()
        self._client.register_listener(self._listener)
        self._events: list[QMPEvent] = []
        self._events_changed = threading.Condition()
        self._kept: dict[str, int] = {}      # events kept, per name
        self.dropped_events: dict[str, int] = {}   # events past MAX_EVENTS_PER_NAME, counted only
        self._pump: asyncio.Task[None] | None = None
        self._spawned: set[asyncio.Task[Any]] = set()   # spawn()ed tasks still running, cancelled by close()
        self._on_event: list[Callable[[QMPEvent], None]] = []   # on_event() callbacks, run on the loop
        self._closed = False
        # Set by the owning Machine: returns the real reason (QEMU exited) when a command fails or times out.
        self.explain_failure: Callable[[], BaseException | None] | None = None

    @property
    def closed(self) -> bool:
        return self._closed

    def _explained(self, exc: BaseException) -> BaseException:
        reason = self.explain_failure() if self.explain_failure is not None else None
        if reason is not None:
            reason.__cause__ = exc
            return reason
        return exc

    def _run(self, coro: Coroutine[Any, Any, T], timeout: float | None, explain: bool = True) -> T:
        if self._closed:
            coro.close()
            raise self._explained(QMPClosed(f"QMP {self.name}: session closed"))
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return future.result(timeout)
        except FutureTimeout:
            future.cancel()
            error = QMPTimeout(f"QMP {self.name}: no answer within {timeout}s")
            raise (self._explained(error) if explain else error) from None
        except ExecuteError:
            raise  # QEMU answered: an error reply is not a dead QEMU
        except Exception as exc:
            if not explain:
                raise
            explained = self._explained(exc)
            if explained is exc:
                raise
            raise explained from exc

    def connect(self, socket_path: Path, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                self._run(self._client.connect(str(socket_path)), timeout=max(0.1, deadline - time.monotonic()))
                break
            except (OSError, QMPTimeout, Exception) as exc:  # qemu.qmp wraps socket errors in ConnectError
                if time.monotonic() >= deadline:
                    raise QMPTimeout(f"QMP {self.name}: cannot connect to {socket_path}: {exc}") from exc
                time.sleep(0.02)
        self._pump = self._run(self._start_pump(), timeout=5)

    async def _start_pump(self) -> "asyncio.Task[None]":
        return asyncio.get_running_loop().create_task(self._pump_events())

    async def _stop_pump(self) -> None:
        if self._pump is not None:
            self._pump.cancel()
            try:
                await self._pump
            except asyncio.CancelledError:
                pass

    async def _pump_events(self) -> None:
        async for event in self._listener:
            stamp = event.get("timestamp") or {}
            wall = stamp["seconds"] + stamp["microseconds"] / 1e6 if "seconds" in stamp else None
            record = QMPEvent(time.monotonic(), event["event"], dict(event.get("data", {})), wall)
            with self._events_changed:
                if self._kept.get(record.name, 0) >= MAX_EVENTS_PER_NAME:
                    if record.name not in self.dropped_events:
                        log.warning("QMP %s: more than %d %s events; counting the rest, not keeping them",
                                    self.name, MAX_EVENTS_PER_NAME, record.name)
                    self.dropped_events[record.name] = self.dropped_events.get(record.name, 0) + 1
                    continue
                self._kept[record.name] = self._kept.get(record.name, 0) + 1
                self._events.append(record)
                self._events_changed.notify_all()
            for callback in list(self._on_event):
                callback(record)

    def cmd(self, command: str, timeout: float | None = 60.0, oob: bool = False, **arguments: Any) -> Any:
        """Execute and wait. `oob=True` uses exec-oob, which QEMU answers even while its main loop is blocked
        (e.g. a postcopy destination whose main thread faults on a missing page)."""
        return self._run(self._client.execute(command, arguments or None, oob=oob), timeout)

    def cmd_with_fd(self, command: str, fd: int, timeout: float | None = 60.0, **arguments: Any) -> Any:
        """Pass `fd` to QEMU (SCM_RIGHTS, over this unix-socket monitor) and execute `command` (getfd, add-fd), which
        takes it: both on the session's loop, so no other command can come between them."""
        async def send() -> Any:
            self._client.send_fd_scm(fd)
            return await self._client.execute(command, arguments or None)
        return self._run(send(), timeout)

    def pipeline(self, *commands: str, timeout: float | None = 60.0) -> list[Any]:
        """Send `commands` (without arguments) back to back, not waiting for one answer before sending the next, and
        return their answers in order, an error reply as its ExecuteError. QEMU runs them one after another on its
        main loop, so what a later one sees is, within a moment no round trip allows, what the earlier one left."""
        async def send_all() -> list[Any]:
            return await asyncio.gather(*(self._client.execute(c) for c in commands), return_exceptions=True)
        return self._run(send_all(), timeout)

    def spawn(self, coro: Coroutine[Any, Any, T]) -> "Future[T]":
        """Run `coro` on this session's own event loop without waiting for it (a poller that awaits `execute` there
        costs one wake-up per command instead of a hop between threads each way). A poller must keep one command
        pending at a time: re-sending on a slow answer would pile commands up until QEMU suspends the monitor
        (8 queued), which also blocks exec-oob."""
        if self._closed:
            coro.close()
            failed: "Future[T]" = Future()
            failed.set_exception(QMPClosed(f"QMP {self.name}: session closed"))
            return failed
        return asyncio.run_coroutine_threadsafe(self._tracked(coro), self._loop)

    async def _tracked(self, coro: Coroutine[Any, Any, T]) -> T:
        task = asyncio.current_task()
        assert task is not None
        self._spawned.add(task)
        try:
            return await coro
        finally:
            self._spawned.discard(task)

    async def _cancel_spawned(self) -> None:
        """Cancel what spawn() started, and let each handle it, before the loop stops: a task left on a stopped
        loop never runs again, so a poller would never learn that its session closed."""
        tasks = [task for task in self._spawned if not task.done()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def execute(self, command: str, **arguments: Any) -> Any:
        """An in-band command, awaited on this session's loop: only from a coroutine `spawn`ed on it."""
        return await self._client.execute(command, arguments or None)

    def on_event(self, callback: Callable[[QMPEvent], None]) -> Callable[[], None]:
        """Call `callback` for every event kept from now on, on this session's loop (so it must not block: e.g. it
        sets an asyncio.Event a spawned poller waits on, instead of that poller polling for events). Only from a
        coroutine `spawn`ed on this session. Returns the function that removes it."""
        self._on_event.append(callback)
        return lambda: self._on_event.remove(callback) if callback in self._on_event else None

    def hmp(self, command_line: str, timeout: float | None = 60.0) -> str:
        return str(self.cmd("human-monitor-command", timeout=timeout, **{"command-line": command_line}))

    @property
    def events(self) -> list[QMPEvent]:
        with self._events_changed:
            return list(self._events)

    def events_since(self, index: int) -> list[QMPEvent]:
        """The events from `index` on (a poller's incremental read: `events` copies them all)."""
        with self._events_changed:
            return self._events[index:]

    def wait_event(self, predicate: Callable[[QMPEvent], bool], timeout: float, since: int = 0,
                   what: str = "event") -> QMPEvent:
        """Wait for the first recorded event (from index `since`) matching `predicate`."""
        deadline = time.monotonic() + timeout
        with self._events_changed:
            while True:
                for event in self._events[since:]:
                    if predicate(event):
                        return event
                remaining = deadline - time.monotonic()
                if self.explain_failure is not None and (reason := self.explain_failure()) is not None:
                    raise reason  # no event will ever come from a QEMU that has exited
                if remaining <= 0:
                    seen = [e.name for e in self._events[since:]][-10:]
                    raise QMPTimeout(f"QMP {self.name}: no {what} within {timeout}s; last events: {seen}")
                self._events_changed.wait(min(remaining, 0.5))

    def notify(self) -> None:
        """Wake wait_event callers (e.g. QEMU exited) so they look again."""
        with self._events_changed:
            self._events_changed.notify_all()

    def close(self) -> None:
        if self._closed:
            return
        try:
            self._run(self._client.disconnect(), timeout=5, explain=False)
        except Exception as exc:  # the peer may be gone already (EOF after quit is expected)
            log.debug("QMP %s disconnect: %s", self.name, exc)
        try:
            self._run(self._stop_pump(), timeout=5, explain=False)
            self._run(self._cancel_spawned(), timeout=5, explain=False)
        except Exception as exc:
            log.debug("QMP %s pump: %s", self.name, exc)
        self._closed = True  # after the last _run; from here on every command fails at once with QMPClosed
        self.notify()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        if not self._thread.is_alive():
            self._loop.close()
