"""What a running QEMU holds, read from the host kernel: its open file descriptors and its threads.

A failed or cancelled migration must give back everything it took (sockets, channels, pipes, the migration thread,
multifd and return-path threads): `Footprint.of(pid)` before the migration and `settle_to()` after it compare the
kernel's own view (/proc/PID/fd, /proc/PID/task), not anything QEMU reports about itself. The comparison is by
kind — what each fd points at (a socket by its family and local port), each thread's name — so a leak names
itself, and an fd number reused for the same kind of thing is no leak.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Collection, Mapping


@dataclass(frozen=True)
class Footprint:
    """fd number → what it points at (readlink), thread id → its name (comm)."""
    fds: Mapping[int, str]
    threads: Mapping[int, str]

    @classmethod
    def of(cls, pid: int, proc: Path = Path("/proc"), ignore_tcp_ports: Collection[int] = ()) -> "Footprint":
        """Read `pid`'s fds and threads. A socket fd is named by its kind from the process's own /proc/PID/net
        tables ('socket:unix', 'socket:tcp:PORT' with the local port); TCP sockets on `ignore_tcp_ports` are left
        out: the guest's SSH forward, whose connections the harness itself opens and closes (not the migration's)."""
        base = proc / str(pid)
        sockets = _socket_kinds(base / "net")
        fds: dict[int, str] = {}
        for entry in _listdir(base / "fd"):
            try:
                target = os.readlink(base / "fd" / entry)
            except OSError:
                continue  # closed between listing and reading: not held
            if target.startswith("socket:[") and target[8:-1] in sockets:
                target = f"{sockets[target[8:-1]]}:[{target[8:-1]}]"
                if any(target.startswith(f"socket:tcp:{port}:") for port in ignore_tcp_ports):
                    continue
            fds[int(entry)] = target
        threads: dict[int, str] = {}
        for entry in _listdir(base / "task"):
            try:
                threads[int(entry)] = (base / "task" / entry / "comm").read_text().strip()
            except OSError:
                continue  # exited between listing and reading
        return cls(fds, threads)

    def added_since(self, before: "Footprint") -> dict[str, list[str]]:
        """What this footprint holds beyond `before`, by kind (fd targets with their inode numbers dropped, thread
        names), as multisets: an fd reused under another number is the same holding. A socket in none of the
        /proc net tables (a TCP connection of the SSH forward being torn down as the snapshot is read) is no
        holding of the migration's and is not counted."""
        def kinds(targets: Mapping[int, str]) -> Counter[str]:
            return Counter(kind for t in targets.values() if (kind := _kind(t)) != "socket")
        return {"fds": sorted((kinds(self.fds) - kinds(before.fds)).elements()),
                "threads": sorted((Counter(self.threads.values()) - Counter(before.threads.values())).elements())}

    def to_json(self) -> dict[str, Any]:
        return {"fd_count": len(self.fds), "thread_count": len(self.threads),
                "fds": {str(k): v for k, v in sorted(self.fds.items())},
                "threads": {str(k): v for k, v in sorted(self.threads.items())}}


def _listdir(path: Path) -> list[str]:
    try:
        return os.listdir(path)
    except FileNotFoundError:
        return []


def _kind(target: str) -> str:
    """'socket:unix:[123]' → 'socket:unix', 'pipe:[9]' → 'pipe', 'anon_inode:[eventfd]' stays, a path stays."""
    head, _, rest = target.rpartition(":[")
    return head if head and rest.endswith("]") and rest[:-1].isdigit() else target


def _socket_kinds(net: Path) -> dict[str, str]:
    """inode → 'socket:unix' or 'socket:tcp:PORT' / 'socket:udp:PORT' (local port), from the /proc net tables of
    the process's network namespace; an inode found in none stays a bare 'socket'."""
    kinds: dict[str, str] = {}
    try:
        for line in (net / "unix").read_text().splitlines()[1:]:
            fields = line.split()
            if len(fields) >= 7:
                kinds[fields[6]] = "socket:unix"
    except OSError:
        pass
    for table in ("tcp", "tcp6", "udp", "udp6"):
        try:
            lines = (net / table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) >= 10:
                kinds[fields[9]] = f"socket:{table.rstrip('6')}:{int(fields[1].rsplit(':', 1)[1], 16)}"
    return kinds


def settle_to(pid: int, before: Footprint, timeout: float, interval: float = 0.2,
              ignore_tcp_ports: Collection[int] = ()) -> Footprint:
    """Poll the footprint of `pid` until it holds nothing `before` did not (threads a failed migration starts are
    joined asynchronously, a moment after the status changes), or `timeout` passes; returns the last one read."""
    deadline = time.monotonic() + timeout
    while True:
        now = Footprint.of(pid, ignore_tcp_ports=ignore_tcp_ports)
        added = now.added_since(before)
        if not (added["fds"] or added["threads"]) or time.monotonic() > deadline:
            return now
        time.sleep(interval)
