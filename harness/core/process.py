"""Child processes and ports that never outlive the harness: the helpers every layer that starts a process shares.

- `die_with_parent`: a Popen preexec_fn; the child gets SIGKILL when the harness dies, even by SIGKILL;
- `LiveSet`: objects with a kill() that must not survive the interpreter (a Machine's QEMU): killed at exit;
- `free_tcp_port`: a port free on 127.0.0.1 right now (hosts.parallel.reserve_port holds it against other harness
  processes until QEMU binds it).
"""

from __future__ import annotations

import atexit
import ctypes
import signal
import socket
import weakref
from typing import Generic, Protocol, TypeVar

_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """In the child: get SIGKILL when the harness dies, even by SIGKILL (no orphan QEMU, iperf3 or sshd)."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
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
