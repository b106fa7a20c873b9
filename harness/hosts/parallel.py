"""What concurrent harness processes on one host share, and how they share it: pytest-xdist workers of one run
(`-n N`, `--tx`), two `make` runs at once, a bench beside a suite.

- A runtime directory (0700, one per user): `$QMH_RUNTIME_DIR`, else `$XDG_RUNTIME_DIR/qmh`, else `/run/qmh` for
  root, else `/tmp/.qmh-runtime-UID`. Never named `qmh-*` in the temp dir: harness.core.workdirs reaps those.
- Port reservations (`reserve_port`): a port free right now *and* not reserved by another harness process, held by
  an flock on `ports/PORT.lock` until QEMU has bound it. Two workers can no longer both probe the same free port
  and race to bind it; a process outside the harness still can, which Machine.launch's retry covers as before.
- The host CPU budget (`CpuBudget`): one token file per CPU this process may run on (os.sched_getaffinity), each
  held with flock by the test that uses that core. A test takes the CPUs it needs (`cpus_needed`: each TCG vCPU
  thread is a busy core, so a source + destination pair of 1-vCPU guests needs 2; `@pytest.mark.cpus(n)`
  overrides) before its first QEMU starts and gives them back at teardown — after a failure, Ctrl-C or SIGTERM
  too, and the kernel drops a dead process's flocks, so a SIGKILLed run never keeps a core. Timing-sensitive tests
  therefore never share a core, whatever -n says; a serial run takes the budget too (a second run at once waits).

Taking n tokens without deadlock: a waiter first holds `cpus/gate.lock`, then collects tokens as they come free,
then lets the gate go. Only one process collects at a time, so two waiters can never each hold half of what the
other needs; a holder gives its tokens back without the gate. Waiters are served in gate order, so a test that
needs 2 is not starved by a stream of tests that need 1.
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Collection, Iterable, TextIO

from harness.core.process import free_tcp_port

POLL_S = 0.05      # how often a waiter looks for a free lock (flock has no timeout of its own)


class BudgetTimeout(TimeoutError):
    """The CPUs (or the gate before them) did not come free within the timeout."""


# -- the runtime directory -----------------------------------------------------------------------------------------
def runtime_dir(environ: dict[str, str] | None = None, uid: int | None = None) -> Path:
    """Where this user's harness processes meet (see the module doc), created 0700. Raises PermissionError when it
    exists but is not this user's private directory (someone could then hold or fake its locks)."""
    environ = dict(os.environ) if environ is None else environ
    uid = os.getuid() if uid is None else uid
    if environ.get("QMH_RUNTIME_DIR"):
        path = Path(environ["QMH_RUNTIME_DIR"])
    elif environ.get("XDG_RUNTIME_DIR"):
        path = Path(environ["XDG_RUNTIME_DIR"]) / "qmh"
    elif uid == 0:
        path = Path("/run/qmh")
    else:
        path = Path(f"/tmp/.qmh-runtime-{uid}")
    return private_directory(path, uid)


def private_directory(path: Path, uid: int | None = None) -> Path:
    uid = os.getuid() if uid is None else uid
    try:
        path.mkdir(mode=0o700, parents=True)
    except FileExistsError:
        pass
    info = path.lstat()
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != uid or info.st_mode & 0o077:
        raise PermissionError(f"{path}: not a private directory of uid {uid} (mode {stat.filemode(info.st_mode)}, "
                              f"owner {info.st_uid}): remove it or set QMH_RUNTIME_DIR")
    return path


def _try_lock(path: Path) -> TextIO | None:
    """`path` opened and flocked exclusively, or None if another open file holds it."""
    handle = open(path, "a")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        handle.close()
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
            return None
        raise
    return handle


# -- ports ---------------------------------------------------------------------------------------------------------
@dataclass
class PortReservation:
    """A port only this process may hand to a QEMU until release(): call it once QEMU has bound the port."""
    port: int
    _lock: TextIO | None = field(default=None, repr=False)

    def release(self) -> None:
        if self._lock is not None:
            self._lock.close()
            self._lock = None


def reserve_port(directory: Path | None = None, probe: Callable[[], int] = free_tcp_port,
                 attempts: int = 50) -> PortReservation:
    """A free port that no other harness process holds a reservation on (ports/PORT.lock under `directory`,
    default the runtime dir). The lock file stays (an empty file per port ever used): taking an flock on it is
    what reserves, and a dead holder's flock is gone with it."""
    ports = private_directory((directory or runtime_dir()) / "ports")
    for _ in range(attempts):
        port = probe()
        lock = _try_lock(ports / f"{port}.lock")
        if lock is not None:
            return PortReservation(port, lock)
    raise OSError(f"no unreserved free port after {attempts} tries (reservations in {ports})")


# -- the CPU budget ------------------------------------------------------------------------------------------------
def host_cpus() -> int:
    """The CPUs this process may run on (its affinity mask, which a container's cpuset narrows), not the host's."""
    return len(os.sched_getaffinity(0))


# Fixtures that boot a source and a destination; one that boots a single guest; the testbed itself, which a test
# that boots its own QEMUs asks for directly (every harness test has it among its fixtures' fixtures).
PAIR_FIXTURES = frozenset({"pair", "paused_pair"})
SINGLE_FIXTURES = frozenset({"guest", "ssh"})
TESTBED_FIXTURE = "testbed"


@dataclass(frozen=True)
class CpuNeed:
    cpus: int
    why: str


def guests_booted(requested: Collection[str], closure: Collection[str]) -> int:
    """How many guests a test runs at once, from its fixtures: `requested` are those it names (its arguments and
    usefixtures), `closure` all it gets. A pair, or the testbed itself (a test that boots its own source and
    destination): 2; a guest alone: 1; else none."""
    if PAIR_FIXTURES & set(closure) or TESTBED_FIXTURE in requested:
        return 2
    return 1 if SINGLE_FIXTURES & set(closure) else 0


def cpus_needed(requested: Collection[str], closure: Collection[str], guest_overrides: dict[str, object],
                marker_cpus: int | None, budget: int) -> CpuNeed:
    """The host CPUs a test needs while it runs, at most `budget` (more could never be had). A `cpus` marker
    decides; else each guest's vCPUs (`guest(cpus=…)`, default 1) are busy cores under TCG, times the guests it
    runs at once (guests_booted)."""
    if marker_cpus is not None:
        need, why = int(marker_cpus), "@pytest.mark.cpus"
        if need < 0:
            raise ValueError(f"cpus marker: {marker_cpus} is not a CPU count")
    else:
        vcpus = int(guest_overrides.get("cpus", 1))  # type: ignore[call-overload]
        machines = guests_booted(requested, closure)
        what = {2: "a source + destination pair", 1: "one guest"}.get(machines)
        need = machines * vcpus
        why = f"{what} of {vcpus} vCPU(s), one busy host core each" if what else "boots no QEMU"
    if need > budget:
        return CpuNeed(budget, f"{why}: {need}, capped at the budget of {budget}")
    return CpuNeed(need, why)


@dataclass
class CpuGrant:
    """Tokens held for one test; release() gives them back (idempotent)."""
    tokens: list[int]
    waited_s: float
    _locks: list[TextIO] = field(default_factory=list, repr=False)

    def release(self) -> None:
        for lock in self._locks:
            lock.close()
        self._locks.clear()

    def __enter__(self) -> "CpuGrant":
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


class CpuBudget:
    """`size` CPU tokens under `directory` (default: the runtime dir's cpus/, size: host_cpus())."""

    def __init__(self, directory: Path | None = None, size: int | None = None) -> None:
        self.directory = private_directory((directory or runtime_dir()) / "cpus")
        self.size = host_cpus() if size is None else size
        if self.size < 1:
            raise ValueError(f"CPU budget of {self.size}: at least 1")

    def token(self, index: int) -> Path:
        return self.directory / f"token-{index}.lock"

    def acquire(self, n: int, timeout: float | None = None, sleep: Callable[[float], None] = time.sleep,
                clock: Callable[[], float] = time.monotonic) -> CpuGrant:
        """Wait for `n` tokens (n ≤ size); BudgetTimeout after `timeout` seconds (None: wait as long as it takes).
        Whatever ends the wait (the timeout, KeyboardInterrupt, pytest-timeout's exception) lets go of everything
        taken so far."""
        if not 0 <= n <= self.size:
            raise ValueError(f"{n} CPUs asked of a budget of {self.size}")
        start = clock()
        deadline = None if timeout is None else start + timeout
        if n == 0:
            return CpuGrant([], 0.0)
        held: dict[int, TextIO] = {}
        gate = None
        try:
            gate = self._wait(lambda: _try_lock(self.directory / "gate.lock"), deadline, sleep, clock,
                              f"the CPU budget's gate ({self.directory})")
            self._wait(lambda: self._collect(held, n), deadline, sleep, clock,
                       f"{n} of {self.size} CPU tokens ({self.directory})")
        except BaseException:
            for lock in held.values():
                lock.close()
            raise
        finally:
            if gate is not None:
                gate.close()
        return CpuGrant(sorted(held), round(clock() - start, 3), [held[i] for i in sorted(held)])

    def _collect(self, held: dict[int, TextIO], n: int) -> bool:
        for index in range(self.size):
            if len(held) >= n:
                break
            if index not in held and (lock := _try_lock(self.token(index))) is not None:
                held[index] = lock
        return len(held) >= n

    @staticmethod
    def _wait(attempt: Callable[[], object], deadline: float | None, sleep: Callable[[float], None],
              clock: Callable[[], float], what: str):  # type: ignore[no-untyped-def]
        while not (result := attempt()):
            if deadline is not None and clock() >= deadline:
                raise BudgetTimeout(f"waited in vain for {what}")
            sleep(POLL_S)
        return result

    def holders(self) -> Iterable[int]:
        """Tokens some process holds right now (a probe: for tests and messages)."""
        for index in range(self.size):
            lock = _try_lock(self.token(index))
            if lock is None:
                yield index
            else:
                lock.close()
