"""How a migration's address is handed to QEMU: as a URI (the default), as the QAPI `channels` argument instead, or
as file descriptors the harness opened and passed over the monitor — getfd's `fd:NAME` (a socket pair, or a file)
and add-fd's `file:/dev/fdset/N` (upstream's /precopy/fd/{tcp,file}, /precopy/file/offset/fdset,
/multifd/file/mapped-ram/fdset, /validate_uri/channels/*).

MigrationConfig.address names the way (URI, CHANNELS, FD, FDSET); a Migration makes one Handoff from it and asks it
for the arguments of `migrate-incoming` and `migrate`. The migration URI the harness made (unix/tcp/file, with a
file's `,offset=`) stays the description of where the stream goes: CHANNELS says the same thing as QAPI data, FD and
FDSET open that socket pair or file here and pass the descriptors. Passing a descriptor needs the QEMU's monitor on
this host (SCM_RIGHTS).
"""

from __future__ import annotations

import os
import socket
from typing import Any

from harness.vm.machine import Machine

URI, CHANNELS, FD, FDSET = "uri", "channels", "fd", "fdset"
ADDRESSES = (URI, CHANNELS, FD, FDSET)
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

    def __init__(self, address: str) -> None:
        if address not in ADDRESSES:
            raise ValueError(f"unknown migration address {address!r} (one of {ADDRESSES})")
        self.address = address
        self._pair: tuple[socket.socket, socket.socket] | None = None

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
            raise ValueError(f"{machine.name}: a descriptor cannot be passed to a QEMU on another host")
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
        # source (O_CREAT | O_WRONLY, migration/file.c), read-only on the destination.
        self._pass(machine, path, os.O_RDONLY if side == 0 else os.O_CREAT | os.O_WRONLY, "add-fd",
                   **{"fdset-id": FDSET_ID})
        return {"uri": fdset_uri(uri)}

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
