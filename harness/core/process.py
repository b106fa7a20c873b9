"""Child processes and ports that never outlive the harness: the helpers every layer that starts a process shares.

- `die_with_parent`: a Popen preexec_fn; the child gets SIGKILL when the harness dies, even by SIGKILL;
- `LiveSet`: objects with a kill() that must not survive the interpreter (a Machine's QEMU): killed at exit;
- `free_tcp_port`: a port free on 127.0.0.1 right now (hosts.parallel.reserve_port holds it against other harness
  processes until QEMU binds it);
- `main_thread_state`: where a local process's main thread waits in the kernel (a QEMU whose monitor stopped
  answering: its main loop blocked in a read is told from one busy or idle in poll);
- `interruptible` and `run_child`: a tool that runs pytest (or any child that cleans up on SIGTERM) stops on Ctrl-C
  or SIGTERM, and its child ends the way the harness's own teardown ends a test, never SIGKILLed mid-teardown.
"""

from __future__ import annotations

import atexit
import ctypes
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import weakref
from pathlib import Path
from types import FrameType
from typing import IO, Generic, Protocol, Sequence, TypeVar

_PR_SET_PDEATHSIG = 1


def die_with_parent(sig: int = signal.SIGKILL) -> None:
    """In the child: get `sig` (SIGKILL) when the harness dies, even by SIGKILL (no orphan QEMU, iperf3 or sshd)."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, sig)
    except OSError:
        pass


def free_tcp_port() -> int:
    """A port free on 127.0.0.1 right now (the kernel's choice for bind(0)). Racy by nature (another process may
    bind it before QEMU does): migration sockets do not use it (the destination binds port 0 and reports the port);
    the SSH forward probes with it through hosts.parallel.reserve_port, so no other harness process (an xdist
    sibling, a second run) is handed the same port before QEMU binds it, and Machine.launch retries when a process
    outside the harness took it first. For a QEMU in its own network namespace (hosts.netns) the port is bound on
    that namespace's loopback, where nothing else listens: free here is free enough there."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Killable(Protocol):
    def kill(self) -> object: ...


K = TypeVar("K", bound=Killable)


class LiveSet(Generic[K]):
    """The live members of one kind (weakly held); whatever is still in it when the interpreter exits is killed."""

    def __init__(self) -> None:
        self._members: "weakref.WeakSet[K]" = weakref.WeakSet()
        atexit.register(self.kill_all)

    def add(self, member: K) -> None:
        self._members.add(member)

    def discard(self, member: K) -> None:
        self._members.discard(member)

    def __len__(self) -> int:
        return len(self._members)

    def kill_all(self) -> None:
        for member in list(self._members):
            member.kill()


def kernel_stack(text: str, frames: int = 5) -> str:
    """The innermost `frames` functions of a /proc/PID/task/TID/stack text, innermost first, joined by " <- "
    ("[<0>] wait_woken+0x89/0x90" -> "wait_woken")."""
    names = [line.split("] ", 1)[-1].split("+", 1)[0].strip() for line in text.splitlines() if line.strip()]
    return " <- ".join(names[:frames])


def main_thread_state(pid: int) -> str:
    """Where process `pid`'s main thread waits in the kernel: its kernel stack (root) or wait channel, "" when
    /proc has neither (the process is gone, or not here)."""
    task = Path(f"/proc/{pid}/task/{pid}")
    for name, read in (("stack", kernel_stack), ("wchan", str.strip)):
        try:
            state = read((task / name).read_text())
        except OSError:
            continue
        if state and state != "0":
            return state
    return ""


def _stop_with_parent() -> None:
    """In a pytest child of a tool: SIGTERM (its teardown runs, as after Ctrl-C) when the tool dies."""
    die_with_parent(signal.SIGTERM)


# How long a child told to stop may take over its teardown (a test's QEMUs, guests, namespaces, temp dirs: seconds
# on an idle host, tens on a loaded TCG one) before it is killed with everything in its process group.
STOP_GRACE_S = 120.0


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum} ({signal.Signals(signum).name})")


def interruptible() -> None:
    """In a tool's main: Ctrl-C (SIGINT) and SIGTERM both raise KeyboardInterrupt. SIGINT is set even where the
    tool inherited it ignored — what a shell without job control does to a job started with `&`, which made
    `kill -INT` a no-op on `make matrix` — since a tool that is asked to stop must stop."""
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)


def run_child(args: Sequence[str], cwd: Path, grace: float = STOP_GRACE_S) -> tuple[int, str]:
    """Run `args` and return (exit status, its stderr); its stdout and stderr stream through as they come. The
    child runs in its own process group, so a terminal's Ctrl-C reaches only this process, which passes it on as
    exactly one SIGTERM (a second signal in the middle of pytest's teardown would cut that teardown short): on
    KeyboardInterrupt here the child gets SIGTERM, is waited for up to `grace` s (further interrupts are ignored
    meanwhile), then its whole group is SIGKILLed, and the KeyboardInterrupt goes on. (subprocess.run would SIGKILL
    the child at once, leaving its temp dirs and namespaces behind.) The child also gets SIGTERM if this process
    dies."""
    proc = subprocess.Popen(list(args), cwd=cwd, stderr=subprocess.PIPE, text=True, process_group=0,
                            preexec_fn=_stop_with_parent)
    assert proc.stderr is not None
    lines: list[str] = []
    tee = threading.Thread(target=_tee, args=(proc.stderr, lines), name="child-stderr", daemon=True)
    tee.start()
    try:
        proc.wait()
    except KeyboardInterrupt:
        _stop(proc, grace)
        raise
    finally:
        tee.join(5.0)
    return proc.returncode, "".join(lines)


def run_logged(args: Sequence[str], cwd: Path, log: IO[str], timeout: float | None = None,
               env: dict[str, str] | None = None, grace: float = STOP_GRACE_S) -> int | None:
    """run_child for a child whose output goes to `log` (a file): the same process group, the same one SIGTERM
    and grace on KeyboardInterrupt (then re-raised), the same SIGTERM if this process dies; and after `timeout` s
    the same stop, returning None instead of an exit status."""
    with _LIVE_LOCK:
        if _STOPPING.is_set():
            # the tool is stopping (stop_logged_children): a worker thread must not start another child
            raise KeyboardInterrupt("the tool is stopping")
        proc = subprocess.Popen(list(args), cwd=cwd, stdout=log, stderr=subprocess.STDOUT, text=True, env=env,
                                process_group=0, preexec_fn=_stop_with_parent)
        _LIVE.add(proc)
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        _stop(proc, grace)
        return None
    except KeyboardInterrupt:
        _stop(proc, grace)
        raise
    finally:
        with _LIVE_LOCK:
            _LIVE.discard(proc)


def stop_logged_children(grace: float = STOP_GRACE_S) -> None:
    """Stop every run_logged child still running, as run_logged stops its own on Ctrl-C: for a tool whose
    children wait in worker threads, where the KeyboardInterrupt reaches only the main thread."""
    with _LIVE_LOCK:
        _STOPPING.set()     # and none starts after this (session 13: a kill's pristine control run did)
        live = list(_LIVE)
    for proc in live:
        _stop(proc, grace)


_LIVE: set["subprocess.Popen[str]"] = set()
_LIVE_LOCK = threading.Lock()
_STOPPING = threading.Event()


def _tee(stream: IO[str], lines: list[str]) -> None:
    for line in stream:
        sys.stderr.write(line)
        sys.stderr.flush()
        lines.append(line)


def _stop(proc: "subprocess.Popen[str]", grace: float) -> None:
    """SIGTERM the child, wait up to `grace` s for it, then SIGKILL its process group."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace
    while True:
        try:
            proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            return
        except KeyboardInterrupt:
            continue      # already stopping: a second Ctrl-C must not abandon the child's teardown
        except subprocess.TimeoutExpired:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait()
            return
