"""This host as the host of a Machine's QEMU: `LocalHost`, the default harness.hosts.qemu_host.QemuHost."""

from __future__ import annotations

import os
import shlex
import socket
import subprocess
from pathlib import Path
from typing import Any, Callable

from harness.analysis.integrity import PageDigests, digest_dump
from harness.core import process
from harness.hosts import netns, parallel
from harness.qemu.binary import QemuBinary
from harness.qemu.launch import Launch


class LocalHost:
    """Where a Machine's QEMU runs: this host (the default). harness.hosts.remote_qemu.RemoteQemu is the same
    interface (harness.hosts.qemu_host.QemuHost) for a QEMU started on another host over SSH."""

    def where(self) -> str:
        return "local"

    def prepare(self, name: str) -> None:
        pass

    def reserve_port(self) -> parallel.PortReservation:
        """A port for the guest's SSH forward, held against other harness processes (xdist workers, other runs)
        until released. `free_tcp_port` is looked up at each call, so a test can stand in for the probe."""
        return parallel.reserve_port(probe=lambda: process.free_tcp_port())

    def launch(self, binary: QemuBinary) -> Launch:
        return binary.launch

    def qmp_arg(self, qmp_socket: Path) -> str:
        return f"unix:{qmp_socket},server=on,wait=off"

    def console_chardev(self, console: Path) -> str:
        return f"file,id=console,path={console}"

    def image_path(self, path: Path) -> str:
        return str(path)

    def work_path(self, path: Path) -> str:
        return str(path)

    def script(self, args: list[str]) -> str:
        return "#!/bin/sh\n# launched by the harness; exact command line\n" + shlex.join(args) + "\n"

    def start(self, args: list[str], output: Path, console: Path) -> "subprocess.Popen[bytes]":
        with open(output, "ab") as out:
            return subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                    start_new_session=True, preexec_fn=process.die_with_parent)

    def signal(self, qemu: "subprocess.Popen[bytes]", sig: int) -> None:
        os.killpg(qemu.pid, sig)

    def guest_socket(self, namespace: str | None) -> Callable[[str, int, float], socket.socket] | None:
        if namespace is None:
            return None
        return lambda host, port, timeout: netns.connect_in(namespace, host, port, timeout)

    def dump_path(self, local: Path) -> str:
        return str(local)

    def after_dump(self, remote: str, local: Path) -> None:
        pass

    def digest_dump(self, remote: str, local: Path) -> PageDigests:
        try:
            return digest_dump(local)
        finally:
            local.unlink(missing_ok=True)

    def release(self, qemu: Any, trace: Path) -> None:
        pass
