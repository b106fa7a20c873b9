"""What a Machine needs of the host its QEMU runs on: the `QemuHost` interface.

harness.hosts.local.LocalHost is this host; harness.hosts.remote_qemu.RemoteQemu is a QEMU on another host over SSH.
Machine (harness.vm.machine) asks its host for every host-specific part of a launch — the binary's launch (its
environment, program and -L dirs, which harness.qemu.launch decides from the files on the host the binary is on,
the same way for both), the QMP address, the console chardev, image and work-file paths, the process itself, its signals, the guest's SSH
socket, files QEMU wrote — and does all the rest (command line, exit watching, QemuExited, QMP, cleanup) the same
way for both.
"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any, Callable, Protocol, runtime_checkable

from harness.analysis.integrity import PageDigests
from harness.hosts.parallel import PortReservation
from harness.qemu.launch import Launch

# A connection to the guest's SSH forward: (host, port, timeout) -> a connected socket (or a paramiko channel).
GuestSocket = Callable[[str, int, float], socket.socket | Any]


@runtime_checkable
class QemuProcess(Protocol):
    """A started QEMU as Machine watches it: subprocess.Popen here, harness.hosts.remote_qemu.RemoteProcess there."""

    @property
    def pid(self) -> int | None: ...

    @property
    def returncode(self) -> int | None: ...

    def poll(self) -> int | None: ...

    def wait(self, timeout: float | None = None) -> int: ...


@runtime_checkable
class QemuHost(Protocol):
    """Where one Machine's QEMU runs (see the module docstring)."""

    def where(self) -> str:
        """Where, for messages: "local" or user@address:port."""
        ...

    def prepare(self, name: str) -> None:
        """Before the first launch attempt: e.g. the remote run dir."""
        ...

    def reserve_port(self) -> PortReservation:
        """A port for the guest's SSH forward, held until QEMU bound it."""
        ...

    def launch(self, binary: Any) -> Launch:
        """How the QEMU binary starts there: its environment, program and -L dirs (harness.qemu.launch)."""
        ...

    def qmp_arg(self, qmp_socket: Path) -> str:
        """-qmp's argument such that a QMP client reaches it at the local unix socket `qmp_socket`."""
        ...

    def console_chardev(self, console: Path) -> str:
        """-chardev for the guest console, ending up in the local file `console`."""
        ...

    def image_path(self, path: Path) -> str:
        """A guest image file (kernel, initrd) as QEMU there sees it."""
        ...

    def work_path(self, path: Path) -> str:
        """A file QEMU writes (trace log, RAM dump, migration file) as QEMU there sees it."""
        ...

    def script(self, args: list[str]) -> str:
        """The exact command line as a shell script for the artefacts."""
        ...

    def start(self, args: list[str], output: Path, console: Path) -> QemuProcess:
        """Start QEMU; its output goes to the local file `output`."""
        ...

    def signal(self, process: Any, sig: int) -> None:
        """Signal a QEMU `start` returned (its whole process group here)."""
        ...

    def guest_socket(self, namespace: str | None) -> GuestSocket | None:
        """How to reach the guest's SSH forward (None: a plain TCP connection on this host)."""
        ...

    def dump_path(self, local: Path) -> str:
        """Where QEMU writes a RAM dump that should end up at `local`."""
        ...

    def after_dump(self, remote: str, local: Path) -> None:
        """After pmemsave: bring the dump at `remote` to `local`."""
        ...

    def digest_dump(self, remote: str, local: Path) -> PageDigests:
        """After pmemsave: the per-page digests of the dump at `remote`, computed where it is
        (harness.analysis.page_digests), and the dump removed; `local` is where after_dump would bring it."""
        ...

    def release(self, process: Any, trace: Path) -> None:
        """After QEMU ended: fetch what it wrote (the trace log), free what the host held."""
        ...
