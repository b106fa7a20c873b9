"""One QEMU process: its command line, QMP session, console, SSH forward and guaranteed cleanup.

Every Machine owns a private 0700 temp dir (QMP socket, migration sockets) and writes its command line, QEMU's own
output, the guest console and any trace log into the artefacts directory, which outlives it.
"""

from __future__ import annotations

import atexit
import ctypes
import json
import logging
import os
import shlex
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from .arch import ArchSpec
from .guest import GuestShell
from .image import GuestImage
from .qemu import QemuBinary
from .qmp import QMPSession

log = logging.getLogger(__name__)

_LIVE: "weakref.WeakSet[Machine]" = weakref.WeakSet()


def _kill_all_live() -> None:
    for machine in list(_LIVE):
        machine.kill()


atexit.register(_kill_all_live)

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """In the child: get SIGKILL when the harness dies, even by SIGKILL (no orphan QEMU)."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except OSError:
        pass


def free_tcp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class MachineError(RuntimeError):
    pass


@dataclass(frozen=True)
class Disk:
    """A block device: a -blockdev (JSON) and the guest device that exposes it."""
    node_name: str
    blockdev: dict[str, Any]
    device_options: str = ""


@dataclass(frozen=True)
class MachineConfig:
    arch: ArchSpec
    accel: str = "tcg"
    memory_mib: int = 512
    cpus: int = 1
    machine_type: str | None = None
    incoming: str | None = None          # e.g. "defer"
    start_paused: bool = False           # -S
    network: bool = True
    disks: tuple[Disk, ...] = ()
    trace_events: tuple[str, ...] = ()
    globals: tuple[str, ...] = ()        # -global values, e.g. "migration.multifd-flush-after-each-section=on"
    memory_backend: str | None = None    # e.g. "memory-backend-file,mem-path=/dev/hugepages,share=on"
    extra_args: tuple[str, ...] = ()
    qmp_timeout: float = 60.0


@dataclass
class MachineFiles:
    cmdline: Path
    output: Path
    console: Path
    trace: Path


class Machine:
    """A QEMU process. Use as a context manager; cleanup runs whatever happens in the body."""

    def __init__(self, binary: QemuBinary, image: GuestImage, config: MachineConfig, name: str,
                 artefacts: Path) -> None:
        self.binary, self.image, self.config, self.name = binary, image, config, name
        artefacts.mkdir(parents=True, exist_ok=True)
        self.files = MachineFiles(
            cmdline=artefacts / f"{name}.cmdline.sh",
            output=artefacts / f"{name}.qemu.log",
            console=artefacts / f"{name}.console.log",
            trace=artefacts / f"{name}.trace.log",
        )
        self.tmpdir: Path | None = None
        self.process: subprocess.Popen[bytes] | None = None
        self.qmp: QMPSession = QMPSession(name)
        self.ssh_port: int | None = None
        self._shell: GuestShell | None = None
        self.launched_at: float | None = None

    # -- command line -------------------------------------------------------------------------------------------
    def command_line(self, qmp_socket: Path, ssh_port: int | None) -> list[str]:
        cfg, arch = self.config, self.config.arch
        args = self.binary.base_args() + [
            "-name", f"{self.name},debug-threads=on",
            "-machine", cfg.machine_type or arch.machine,
            "-accel", cfg.accel,
            "-cpu", arch.cpu_kvm if cfg.accel == "kvm" else arch.cpu_tcg,
            "-smp", str(cfg.cpus),
            "-nodefaults", "-no-user-config", "-display", "none",
            "-qmp", f"unix:{qmp_socket},server=on,wait=off",
            "-chardev", f"file,id=console,path={self.files.console}", *arch.console_args,
            "-kernel", str(self.image.kernel), "-initrd", str(self.image.initrd),
            "-append", self.image.cmdline,
        ]
        if cfg.memory_backend:
            args += ["-m", f"{cfg.memory_mib}M",
                     "-object", f"{cfg.memory_backend},id=ram0,size={cfg.memory_mib}M",
                     "-machine", "memory-backend=ram0"]
        else:
            args += ["-m", f"{cfg.memory_mib}M"]
        if cfg.network and ssh_port is not None:
            args += ["-netdev", f"user,id=net0,hostfwd=tcp:127.0.0.1:{ssh_port}-:22",
                     "-device", f"{arch.nic},netdev=net0{arch.nic_options}"]
        for disk in cfg.disks:
            args += ["-blockdev", json.dumps(disk.blockdev),
                     "-device", f"{arch.disk},drive={disk.node_name}{disk.device_options}"]
        for value in cfg.globals:
            args += ["-global", value]
        if cfg.trace_events:
            # -msg timestamp=on makes the log backend prefix each line with PID@EPOCH (see harness.trace).
            args += ["-D", str(self.files.trace), "-msg", "timestamp=on"]
            for event in cfg.trace_events:
                args += ["-trace", f"enable={event}"]
        if cfg.start_paused:
            args.append("-S")
        if cfg.incoming:
            args += ["-incoming", cfg.incoming]
        return args + list(cfg.extra_args)

    # -- lifecycle ----------------------------------------------------------------------------------------------
    def launch(self, timeout: float = 30.0) -> "Machine":
        self.tmpdir = Path(tempfile.mkdtemp(prefix=f"qmh-{self.name}-"))  # mkdtemp makes it 0700
        qmp_socket = self.tmpdir / "qmp.sock"
        for attempt in range(3):
            self.ssh_port = free_tcp_port() if self.config.network else None
            args = self.command_line(qmp_socket, self.ssh_port)
            self.files.cmdline.write_text("#!/bin/sh\n# launched by the harness; exact command line\n"
                                          + shlex.join(args) + "\n")
            output = open(self.files.output, "ab")
            self.launched_at = time.monotonic()
            self.process = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=output,
                                            stderr=subprocess.STDOUT, start_new_session=True,
                                            preexec_fn=_die_with_parent)
            output.close()
            _LIVE.add(self)
            try:
                self._connect_qmp(qmp_socket, timeout)
                return self
            except MachineError:
                # Someone took the forwarded port between our probe and QEMU's bind: try another.
                if "host forwarding" in self.output_tail() and attempt < 2:
                    self._reap()
                    continue
                raise
        raise AssertionError("unreachable")

    def _connect_qmp(self, qmp_socket: Path, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not qmp_socket.exists():
            if self.process is not None and self.process.poll() is not None:
                raise MachineError(f"{self.name}: QEMU exited with {self.process.returncode} at start:\n"
                                   f"{self.output_tail()}")
            if time.monotonic() > deadline:
                raise MachineError(f"{self.name}: no QMP socket after {timeout}s\n{self.output_tail()}")
            time.sleep(0.01)
        self.qmp.connect(qmp_socket, timeout=max(1.0, deadline - time.monotonic()))

    def wait_console(self, marker: str, timeout: float) -> float:
        """Wait for `marker` on the guest console; returns seconds since launch."""
        deadline = time.monotonic() + timeout
        while True:
            if self.files.console.exists() and marker in self.files.console.read_text(errors="replace"):
                return time.monotonic() - (self.launched_at or 0.0)
            if self.process is not None and self.process.poll() is not None:
                raise MachineError(f"{self.name}: QEMU exited ({self.process.returncode}) before the guest was "
                                   f"ready\n{self.output_tail()}\nconsole:\n{self.console_tail()}")
            if time.monotonic() > deadline:
                status = self.qmp.cmd("query-status", timeout=5)
                raise MachineError(f"{self.name}: guest not ready after {timeout}s (QEMU says {status}); "
                                   f"console tail:\n{self.console_tail()}")
            time.sleep(0.02)

    def wait_booted(self, timeout: float = 60.0) -> float:
        """Wait for the guest's ready marker, then for a command to run over SSH."""
        start = time.monotonic()
        self.wait_console(self.image.ready_marker, timeout)
        self.shell.wait_ready(max(1.0, timeout - (time.monotonic() - start)))
        return time.monotonic() - (self.launched_at or start)

    @property
    def shell(self) -> GuestShell:
        if self._shell is None:
            if self.ssh_port is None:
                raise MachineError(f"{self.name} has no network")
            self._shell = GuestShell(self.ssh_port, self.image.client_key, self.image.host_key_pub,
                                     self.image.ssh_user)
        return self._shell

    def is_running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def runstate(self) -> str:
        return str(self.qmp.cmd("query-status", timeout=10)["status"])

    def shutdown(self, timeout: float = 10.0) -> None:
        """Ask QEMU to quit, then insist. Always releases process, sockets and temp dir."""
        try:
            if self.is_running():
                try:
                    self.qmp.cmd("quit", timeout=min(timeout, 5.0))
                except Exception:  # EOF after quit is expected; a dead monitor is handled below
                    pass
                try:
                    assert self.process is not None
                    self.process.wait(timeout)
                except subprocess.TimeoutExpired:
                    log.warning("%s did not quit within %ss; killing it", self.name, timeout)
        finally:
            self.kill()

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self._reap()
        self.qmp.close()
        if self.tmpdir is not None:
            shutil.rmtree(self.tmpdir, ignore_errors=True)
            self.tmpdir = None
        _LIVE.discard(self)

    def _reap(self) -> None:
        if self.process is not None:
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(10)

    def __enter__(self) -> "Machine":
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.shutdown()

    # -- diagnostics --------------------------------------------------------------------------------------------
    @staticmethod
    def _tail(path: Path, lines: int) -> str:
        if not path.exists():
            return "(none)"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    def output_tail(self, lines: int = 20) -> str:
        return self._tail(self.files.output, lines)

    def console_tail(self, lines: int = 20) -> str:
        return self._tail(self.files.console, lines)

    # -- guest memory -------------------------------------------------------------------------------------------
    def pmemsave(self, path: Path, size_bytes: int, timeout: float = 120.0) -> None:
        self.qmp.cmd("pmemsave", timeout=timeout, val=0, size=size_bytes, filename=str(path))
