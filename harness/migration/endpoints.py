"""How a migration's address is handed to QEMU: as a URI (the default), as the QAPI `channels` argument instead, as
file descriptors the harness opened and passed over the monitor — getfd's `fd:NAME` (a socket pair, or a file)
and add-fd's `file:/dev/fdset/N` — or as `exec:` commands QEMU runs through /bin/sh (upstream's /precopy/fd/{tcp,file},
/precopy/file/offset/fdset, /multifd/file/mapped-ram/fdset{,/dio}, /validate_uri/channels/*, functional
test_migration_with_exec).

MigrationConfig.address names the way (URI, CHANNELS, FD, FDSET, EXEC); a Migration makes one Handoff from it and
asks it for the arguments of `migrate-incoming` and `migrate`. The migration URI the harness made (unix/tcp/file,
with a file's `,offset=`) stays the description of where the stream goes: CHANNELS says the same thing as QAPI data,
FD and FDSET open that socket pair or file here and pass the descriptors (with `direct-io`, the fdset holds an
O_DIRECT descriptor beside the plain one: QEMU opens the main channel plain and the multifd channels O_DIRECT, and
takes from the set the member whose access mode and O_DIRECT flag match), EXEC names commands that move the stream
through a pipe. Passing a descriptor or running a command needs the QEMU on this host.

EXEC, and why it is safe: the commands are the harness's own fixed text (cat, tee, wc) around paths in the test's
private 0700 work dir, each quoted for the shell; QEMU runs them as the test's user. For a file the source runs
`cat > FILE` and the destination `cat FILE` (upstream's analyze-script test saves with `exec:cat > FILE`). For a
socket, where upstream pipes two `nc` through a probed TCP port, the pipe is a FIFO in the work dir instead (no port,
no other listener): the destination runs `cat FIFO`, the source `tee FIFO | wc -c > COUNT`, so that the count of what
went through the pipe — outside QEMU — can be set beside what QEMU says it sent (Handoff.piped_bytes).
"""

from __future__ import annotations

import os
import shlex
import socket
import time
from pathlib import Path
from typing import Any

from harness.vm.machine import Machine

URI, CHANNELS, FD, FDSET, EXEC = "uri", "channels", "fd", "fdset", "exec"
ADDRESSES = (URI, CHANNELS, FD, FDSET, EXEC)
LOCAL_ONLY = (FD, FDSET, EXEC)    # the ways that need the QEMU on this host (and no relay in between)
FD_NAME = "fd-mig"          # the name getfd gives the descriptor on each side, as upstream's tests
FDSET_ID = 1


def split_file_uri(uri: str) -> tuple[str, int]:
    """'file:PATH[,offset=N]' → (PATH, N); N as qemu_strtosz reads a plain number (decimal or 0x hex)."""
    if not uri.startswith("file:"):
        raise ValueError(f"{uri} is not a file URI")
    path, _, option = uri.removeprefix("file:").partition(",")
    if not option:
        return path, 0
    key, _, value = option.partition("=")
    if key != "offset":
        raise ValueError(f"{uri}: unknown file URI option {key!r}")
    return path, int(value, 0)


def channels_for(uri: str) -> list[dict[str, Any]]:
    """The QAPI `channels` argument (one 'main' channel) that says what `uri` says."""
    if uri.startswith("unix:"):
        addr: dict[str, Any] = {"transport": "socket", "type": "unix", "path": uri.removeprefix("unix:")}
    elif uri.startswith("tcp:"):
        host, _, port = uri.removeprefix("tcp:").rpartition(":")
        addr = {"transport": "socket", "type": "inet", "host": host, "port": port}
    elif uri.startswith("file:"):
        path, offset = split_file_uri(uri)
        addr = {"transport": "file", "filename": path, "offset": offset}
    else:
        raise ValueError(f"no channels form for {uri}")
    return [{"channel-type": "main", "addr": addr}]


def fdset_uri(uri: str) -> str:
    """The file URI naming fdset FDSET_ID instead of the file, its options kept."""
    _, _, options = uri.removeprefix("file:").partition(",")
    return f"file:/dev/fdset/{FDSET_ID}" + (f",{options}" if options else "")


class Handoff:
    """One migration's way of handing its address to QEMU (see the module doc): incoming() and outgoing() return
    the arguments of migrate-incoming and migrate, passing descriptors first where the way needs them; close()
    closes what is still open here (QEMU holds its own copies)."""

    def __init__(self, address: str, direct_io: bool = False) -> None:
        if address not in ADDRESSES:
            raise ValueError(f"unknown migration address {address!r} (one of {ADDRESSES})")
        self.address = address
        self.direct_io = direct_io
        self._pair: tuple[socket.socket, socket.socket] | None = None
        self._count: Path | None = None    # EXEC over a socket: where the source's `wc -c` writes its count

    def incoming(self, machine: Machine, uri: str) -> dict[str, Any]:
        return self._arguments(machine, uri, side=0)

    def outgoing(self, machine: Machine, uri: str) -> dict[str, Any]:
        return self._arguments(machine, uri, side=1)

    def _arguments(self, machine: Machine, uri: str, side: int) -> dict[str, Any]:
        if self.address == URI:
            return {"uri": uri}
        if self.address == CHANNELS:
            return {"channels": channels_for(uri)}
        if machine.config.remote is not None:
            raise ValueError(f"{machine.name}: a descriptor or a command cannot be handed to a QEMU on another host")
        if self.address == EXEC:
            return {"uri": f"exec:{self._command(uri, side)}"}
        if self.address == FD:
            if uri.startswith("file:"):
                path, _ = split_file_uri(uri)
                # The source writes (created here, as upstream's fd/file), the destination reads what it wrote.
                self._pass(machine, path, os.O_RDONLY if side == 0 else os.O_CREAT | os.O_RDWR, "getfd",
                           fdname=FD_NAME)
            else:
                if self._pair is None:
                    self._pair = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
                end = self._pair[side]
                machine.qmp.cmd_with_fd("getfd", end.fileno(), fdname=FD_NAME)
                end.close()
            return {"uri": f"fd:{FD_NAME}"}
        path, _ = split_file_uri(uri)
        # QEMU dups an fdset member whose access mode is the one it opens the file with: write-only on the
        # source (O_CREAT | O_WRONLY, migration/file.c), read-only on the destination; with direct-io its multifd
        # channels ask for O_DIRECT too, the main channel not (upstream's fdset_add_fds: one of each).
        flags = os.O_RDONLY if side == 0 else os.O_CREAT | os.O_WRONLY
        for extra in ((0, os.O_DIRECT) if self.direct_io else (0,)):
            self._pass(machine, path, flags | extra, "add-fd", **{"fdset-id": FDSET_ID})
        return {"uri": fdset_uri(uri)}

    def _command(self, uri: str, side: int) -> str:
        """The exec: command of `side` (0 the destination, 1 the source) for `uri` (see the module doc)."""
        if uri.startswith("file:"):
            path, offset = split_file_uri(uri)
            if offset:
                raise ValueError(f"{uri}: an exec: command writes the stream from its start, not at an offset")
            return f"cat > {shlex.quote(path)}" if side == 1 else f"cat {shlex.quote(path)}"
        if not uri.startswith("unix:"):
            raise ValueError(f"{uri}: exec: stands in for a file or a unix socket of the work dir")
        fifo = Path(uri.removeprefix("unix:")).with_suffix(".pipe")
        if side == 0:
            os.mkfifo(fifo, 0o600)
            return f"cat {shlex.quote(str(fifo))}"
        self._count = fifo.with_suffix(".count")
        return f"tee {shlex.quote(str(fifo))} | wc -c > {shlex.quote(str(self._count))}"

    def piped_bytes(self, timeout: float = 10.0) -> int | None:
        """EXEC over a socket: the bytes the source's pipe carried, counted by `wc -c` once the stream has ended
        (QEMU closes the pipe when the migration ends; the count is written as the command exits); None for any
        other way, or when no count appeared within `timeout`."""
        if self._count is None:
            return None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self._count.read_text().strip() if self._count.exists() else ""
            if text:
                return int(text)
            time.sleep(0.1)
        return None

    @staticmethod
    def _pass(machine: Machine, path: str, flags: int, command: str, **arguments: Any) -> None:
        fd = os.open(path, flags, 0o600)
        try:
            machine.qmp.cmd_with_fd(command, fd, **arguments)
        finally:
            os.close(fd)

    def close(self) -> None:
        if self._pair is not None:
            for end in self._pair:
                end.close()
