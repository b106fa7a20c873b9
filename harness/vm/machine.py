"""One QEMU process: its command line, QMP session, console, SSH forward and guaranteed cleanup.

Every Machine owns a private 0700 temp dir (QMP socket, migration sockets) and writes its command line, QEMU's own
output, the guest console and any trace log into the artefacts directory, which outlives it.
"""

from __future__ import annotations

import json
import logging
import signal
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Callable, Collection

from harness.analysis.integrity import PageDigests
from harness.analysis.oracles import Verdict, equals
from harness.core import workdirs
from harness.core.process import LiveSet
from harness.hosts.local import LocalHost
from harness.hosts.qemu_host import QemuHost
from harness.vm.heartbeat import HeartbeatReader, device_args as heartbeat_device_args
from harness.vm.console import ConsoleCrash, ConsoleWatcher, crash_lines
from harness.vm.config import MachineConfig
from harness.vm.exits import ExitExpectation, ExitInfo, ExpectedExit, MachineError, QemuExited
from harness.vm.guest import GuestPanicked, GuestShell
from harness.qemu.image import GuestImage
from harness.qemu.binary import QemuBinary
from harness.qemu.qmp import QMPSession

log = logging.getLogger(__name__)

_LIVE: "LiveSet[Machine]" = LiveSet()   # killed at exit, whatever ended the run


# Kernel messages that mean the guest is gone for good (its vCPUs spin or halt; SSH will never answer again).
PANIC_MARKERS = ("Kernel panic - not syncing", "kernel BUG at")


@dataclass
class MachineFiles:
    cmdline: Path
    output: Path
    console: Path
    trace: Path


class Machine:
    """A QEMU process. Use as a context manager; cleanup runs whatever happens in the body."""

    def __init__(self, binary: QemuBinary, image: GuestImage, config: MachineConfig, name: str,
                 artefacts: Path, host: QemuHost | None = None) -> None:
        self.binary, self.image, self.config, self.name = binary, image, config, name
        # LocalHost, or harness.hosts.remote_qemu.RemoteQemu for a QEMU on another host.
        self.host: QemuHost = host if host is not None else LocalHost()
        artefacts.mkdir(parents=True, exist_ok=True)
        self.files = MachineFiles(
            cmdline=artefacts / f"{name}.cmdline.sh",
            output=artefacts / f"{name}.qemu.log",
            console=artefacts / f"{name}.console.log",
            trace=artefacts / f"{name}.trace.log",
        )
        self.tmpdir: Path | None = None
        self.process: Any = None     # subprocess.Popen, or harness.hosts.remote_qemu.RemoteProcess
        self.qmp: QMPSession = QMPSession(name)
        self.ssh_port: int | None = None
        self._shell: GuestShell | None = None
        self.launched_at: float | None = None
        # Exit bookkeeping: the watcher thread records how QEMU ended and tells whoever waits (see on_exit).
        self.exit_info: ExitInfo | None = None
        self._exited = threading.Event()
        self._exit_lock = threading.Lock()
        self._exit_listeners: list[Callable[["Machine"], None]] = []
        self._harness_ended: str | None = None      # "quit" or "kill": the harness itself ended it
        self._expectations: list[ExitExpectation] = []
        self.exit_reported = False                  # raised to the test once: teardown does not repeat it
        # Consoles the guest now running here printed on before it migrated in (its earlier life).
        self.console_history: list[Path] = []
        self.qmp.explain_failure = self._dead_error
        self.heartbeat: HeartbeatReader | None = None
        self.console_watcher: ConsoleWatcher | None = None
        # (start, end) host monotonic of each RAM dump + digest (ram_digests): both sides of a pair run at once, so
        # a test's cost is the union of its machines' spans (Testbed.close), not their sum.
        self.ram_digest_spans: list[tuple[float, float]] = []

    # -- command line -------------------------------------------------------------------------------------------
    @property
    def kernel(self) -> Path:
        """The kernel this QEMU boots: the image's, or its bzImage when the config asks for one."""
        if not self.config.bzimage:
            return self.image.kernel
        if self.image.bzimage is None:
            raise MachineError(f"{self.name}: guest image {self.image.directory} has no bzImage (an x86_64 image "
                               f"built by images/build.sh has one: run `make image`)")
        return self.image.bzimage

    def command_line(self, qmp_socket: Path, ssh_port: int | None) -> list[str]:
        cfg, arch = self.config, self.config.arch
        host = self.host
        args = [*host.launch(self.binary).command(cfg.wrapper),
                "-name", f"{self.name},debug-threads=on",
                "-machine", cfg.machine_type or arch.machine,
                "-accel", ",".join((cfg.accel, *cfg.accel_properties)),
                "-cpu", cfg.cpu or (arch.cpu_kvm if cfg.accel == "kvm" else arch.cpu_tcg),
                "-smp", str(cfg.cpus),
                "-nodefaults", "-no-user-config", "-display", "none",
                "-qmp", host.qmp_arg(qmp_socket),
                "-chardev", host.console_chardev(self.files.console), *arch.console_args,
                "-kernel", host.image_path(self.kernel), "-initrd", host.image_path(self.image.initrd),
                "-append", self.image.cmdline,
        ]
        if cfg.memory_backend:
            args += ["-m", cfg.ram_size,
                     "-object", f"{cfg.memory_backend},id=ram0,size={cfg.ram_size}",
                     "-machine", "memory-backend=ram0"]
        else:
            args += ["-m", cfg.ram_size]
        if cfg.network and ssh_port is not None:
            args += ["-netdev", f"user,id=net0,hostfwd=tcp:127.0.0.1:{ssh_port}-:22",
                     "-device", f"{arch.nic},netdev=net0{arch.nic_options}"]
        for disk in cfg.disks:
            args += ["-blockdev", json.dumps(disk.blockdev),
                     "-device", f"{arch.disk},drive={disk.node_name}{disk.device_options}"]
        for value in cfg.globals:
            args += ["-global", value]
        if cfg.heartbeat:
            if not isinstance(host, LocalHost):
                raise MachineError(f"{self.name}: the heartbeat port needs a local QEMU")
            args += heartbeat_device_args(arch.virtio_serial, str(qmp_socket.with_name("heartbeat.sock")))
        if cfg.trace_events:
            # -msg timestamp=on makes the log backend prefix each line with PID@EPOCH (see harness.analysis.trace).
            args += ["-D", host.work_path(self.files.trace), "-msg", "timestamp=on"]
            for event in cfg.trace_events:
                args += ["-trace", f"enable={event}"]
        if cfg.start_paused:
            args.append("-S")
        if cfg.incoming:
            args += ["-incoming", cfg.incoming]
        return args + list(cfg.extra_args)

    # -- lifecycle ----------------------------------------------------------------------------------------------
    HOSTFWD_ATTEMPTS = 3
    # What QEMU says when a port it was given is taken: the SSH forward's (any host), QMP's (a remote's loopback).
    PORT_TAKEN = ("could not set up host forwarding", "address already in use")

    def launch(self, timeout: float = 30.0, connect: bool = True) -> "Machine":
        """Start QEMU and connect to its QMP socket. connect=False returns once QEMU runs, for a QEMU that opens
        its monitor only later (cpr-transfer's destination reads the cpr channel first): `connect()` then."""
        # workdirs.private_dir: 0700, and reaped by a later run if this one is SIGKILLed.
        self.tmpdir = workdirs.private_dir(self.name)
        qmp_socket = self.tmpdir / "qmp.sock"
        self.host.prepare(self.name)
        for attempt in range(self.HOSTFWD_ATTEMPTS):
            # Reserved until QEMU answers QMP (by then its netdev, with the forward, is up).
            reservation = self.host.reserve_port() if self.config.network else None
            self.ssh_port = reservation.port if reservation else None
            args = self.command_line(qmp_socket, self.ssh_port)
            self.files.cmdline.write_text(self.host.script(args))
            output_start = self.files.output.stat().st_size if self.files.output.exists() else 0
            try:
                self._start(args)
                if not connect:
                    return self
                self._connect_qmp(qmp_socket, timeout)
                if self.config.heartbeat:
                    self.heartbeat = HeartbeatReader(self.name, qmp_socket.with_name("heartbeat.sock")).start()
                return self
            except QemuExited:
                # Someone took the forwarded port between our probe and QEMU's bind: try another port. Only this
                # attempt's output counts (the log is appended to across attempts).
                output = self._output_since(output_start).lower()
                if attempt + 1 < self.HOSTFWD_ATTEMPTS and any(taken in output for taken in self.PORT_TAKEN):
                    log.warning("%s: a port (SSH %s) was taken before QEMU bound it; retrying with others",
                                self.name, self.ssh_port)
                    self._reset_exit_state()
                    if isinstance(self.host, LocalHost):
                        qmp_socket.unlink(missing_ok=True)
                    self.qmp.close()
                    self.qmp = QMPSession(self.name)
                    self.qmp.explain_failure = self._dead_error
                    continue
                raise
            finally:
                if reservation is not None:
                    reservation.release()
        raise AssertionError("unreachable")

    def connect(self, timeout: float = 30.0) -> "Machine":
        """Connect to the QMP socket of a QEMU launched with connect=False (its exit ends the wait at once)."""
        assert self.tmpdir is not None, f"{self.name}: connect() before launch()"
        self._connect_qmp(self.tmpdir / "qmp.sock", timeout)
        return self

    def _start(self, args: list[str]) -> None:
        self.launched_at = time.monotonic()
        self.process = self.host.start(args, self.files.output, self.files.console)
        _LIVE.add(self)
        if self.console_watcher is None:   # one per Machine: a retried launch appends to the same console
            self.console_watcher = ConsoleWatcher(self.files.console).start()
        process = self.process
        threading.Thread(target=self._watch, args=(process,), name=f"qemu-watch-{self.name}", daemon=True).start()

    def _watch(self, process: Any) -> None:
        """Block in wait() for QEMU's end; record it and wake every waiter at once (no polling deadline)."""
        returncode = process.wait()
        with self._exit_lock:
            if process is not self.process:
                return  # a retried launch replaced it
            self.exit_info = ExitInfo(returncode, time.monotonic())
            listeners = list(self._exit_listeners)
        self._exited.set()
        if self._harness_ended is None and not self._expected_now():
            log.warning("%s: QEMU %s unexpectedly", self.name, self.exit_info.describe())
        for listener in listeners:
            try:
                listener(self)
            except Exception as exc:  # a listener must not keep the others from hearing of it
                log.debug("exit listener of %s: %r", self.name, exc)

    def _reset_exit_state(self) -> None:
        self._reap()
        with self._exit_lock:
            self.exit_info = None
            self._exited.clear()
            self.exit_reported = False

    def output_mark(self) -> int:
        """Where QEMU's output ends now: `reports_since(mark)` later reads what it reported after this."""
        try:
            return self.files.output.stat().st_size
        except OSError:
            return 0

    def reports_since(self, mark: int) -> list[str]:
        """The error_report / warn_report lines (the program's name, then ': ') QEMU wrote since `mark`."""
        prefix = f"{self.binary.path.name}: "
        return [line.strip() for line in self._output_since(mark).splitlines() if prefix in line]

    def _output_since(self, offset: int) -> str:
        try:
            with open(self.files.output, "rb") as f:
                f.seek(offset)
                return f.read().decode(errors="replace")
        except OSError:
            return ""

    def _connect_qmp(self, qmp_socket: Path, timeout: float) -> None:
        """Connect to QMP while watching the process: QEMU leaves its socket file behind when it exits, so the
        file existing proves nothing; a QEMU that exits at start ends this at once with its own error."""
        deadline = time.monotonic() + timeout
        while True:
            self.raise_if_exited("at start")
            if qmp_socket.exists():
                try:
                    self.qmp.connect(qmp_socket, timeout=0.5)
                    return
                except Exception as exc:  # refused/EOF while QEMU starts up (or dies): look at the process again
                    self.raise_if_exited("at start")
                    last = exc
                else:  # pragma: no cover
                    return
            else:
                last = None
            if time.monotonic() > deadline:
                raise MachineError(f"{self.name}: no QMP connection after {timeout}s ({last!r}), QEMU still "
                                   f"running\n{self.output_tail()}")
            self._exited.wait(0.02)

    # -- exits --------------------------------------------------------------------------------------------------
    def on_exit(self, listener: Callable[["Machine"], None]) -> Callable[[], None]:
        """Call `listener(machine)` from the watcher thread when QEMU exits (at once if it already has);
        returns a function that unregisters it."""
        with self._exit_lock:
            already = self.exit_info is not None
            if not already:
                self._exit_listeners.append(listener)
        if already:
            listener(self)

        def remove() -> None:
            with self._exit_lock:
                if listener in self._exit_listeners:
                    self._exit_listeners.remove(listener)
        return remove

    @property
    def exited(self) -> bool:
        return self.exit_info is not None

    def wait_exit(self, timeout: float) -> ExitInfo | None:
        """Wait up to `timeout` s for QEMU to end (without asking it to); returns how it ended, or None."""
        if self.process is not None:
            self._exited.wait(timeout)
        return self.exit_info

    def expect_exit(self, reason: str, codes: Collection[int] = (0, 1),
                    signals: Collection[int] = (signal.SIGKILL, signal.SIGTERM)) -> ExpectedExit:
        """Declare that this QEMU may exit now (a test about to kill it, a destination whose incoming stream was
        cancelled). Waits then no longer treat its exit as a fault, and teardown does not count it as abnormal —
        unless it dies of a crash signal (SIGABRT, SIGSEGV, …), which is never expected. As a context manager
        the declaration is withdrawn on leaving the block if QEMU is still running."""
        expectation = ExitExpectation(reason, frozenset(codes), frozenset(int(s) for s in signals))
        with self._exit_lock:
            self._expectations.append(expectation)
        return ExpectedExit(expectation, self._withdraw)

    def _withdraw(self, expectation: ExitExpectation) -> None:
        with self._exit_lock:
            if self.exit_info is None and expectation in self._expectations:
                self._expectations.remove(expectation)

    def _expected_now(self) -> str | None:
        """The reason this exit was expected (declared and of an allowed kind), else None."""
        info = self.exit_info
        if info is None:
            return None
        for expectation in self._expectations:
            if expectation.allows(info):
                return expectation.reason
        return None

    def unexpected_exit(self) -> bool:
        """QEMU has exited and neither the harness nor the test asked for it."""
        return self.exit_info is not None and self._harness_ended is None and self._expected_now() is None

    def exit_error(self, side: str | None = None, when: str = "") -> QemuExited:
        assert self.exit_info is not None
        return QemuExited(self.name, self.exit_info, self.output_tail(), self.console_tail(10), side, when,
                          expected=self._expected_now())

    def raise_if_exited(self, when: str = "", side: str | None = None) -> None:
        """Raise QemuExited if QEMU has ended, whether expected or not (used where a live QEMU is needed)."""
        if self.exit_info is not None:
            if self.unexpected_exit():
                self.exit_reported = True
            raise self.exit_error(side, when)

    def _dead_error(self) -> BaseException | None:
        """For QMPSession/GuestShell: why talking to this machine failed, if the reason is that QEMU is gone."""
        if self.exit_info is None and self.process is not None and self.process.poll() is not None:
            self._exited.wait(1.0)  # the watcher records it within moments
        if self.exit_info is None:
            return None
        # Not marked exit_reported: the caller may swallow this (cleanup does), so teardown still judges the exit.
        return self.exit_error(when="(noticed by a QMP or SSH request)")

    def _guest_error(self) -> BaseException | None:
        return self._dead_error() or self.guest_panic()

    def guest_panic(self) -> GuestPanicked | None:
        """The guest kernel panicked (seen on this console or, for a migrated guest, on the one it came from)."""
        for path in [*self.console_history, self.files.console]:
            text = path.read_text(errors="replace") if path.exists() else ""
            if any(marker in text for marker in PANIC_MARKERS):
                return GuestPanicked(f"{self.name}: the guest kernel panicked (console {path.name}); its console "
                                     f"tail:\n{self._tail(path, 25)}")
        return None

    def console_crashes(self) -> list[ConsoleCrash]:
        """Kernel crash lines on this QEMU's own console (harness.vm.console), with the host time each was seen."""
        if self.console_watcher is not None:
            self.console_watcher.poll()
            return self.console_watcher.crashes
        text = self.files.console.read_text(errors="replace") if self.files.console.exists() else ""
        return crash_lines(text, self.files.console.name)

    def abnormal_exit(self) -> QemuExited | None:
        """After QEMU ended: the exit as an error if it was abnormal — a non-zero status or a signal the harness
        did not send, and not one a test declared — else None. A QEMU that aborts on `quit` is abnormal."""
        info = self.exit_info
        if info is None:
            return None
        if self._expected_now() is not None:
            return None
        if self._harness_ended == "kill" and info.signal == signal.SIGKILL:
            return None
        if info.returncode == 0:
            return None
        when = "on quit" if self._harness_ended == "quit" else "(not asked to by the harness or the test)"
        return QemuExited(self.name, info, self.output_tail(), self.console_tail(10), when=when)

    def wait_console(self, marker: str, timeout: float) -> float:
        """Wait for `marker` on the guest console; returns seconds since launch."""
        deadline = time.monotonic() + timeout
        while True:
            if self.files.console.exists() and marker in self.files.console.read_text(errors="replace"):
                return time.monotonic() - (self.launched_at or 0.0)
            self.raise_if_exited("before the guest was ready")
            if (panic := self.guest_panic()) is not None:
                raise panic
            if time.monotonic() > deadline:
                status = self.qmp.cmd("query-status", timeout=5)
                raise MachineError(f"{self.name}: guest not ready after {timeout}s (QEMU says {status}); "
                                   f"console tail:\n{self.console_tail()}")
            self._exited.wait(0.02)

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
                                     self.image.ssh_user, liveness=self._guest_error,
                                     open_socket=self.host.guest_socket(self.config.netns))
        return self._shell

    def is_running(self) -> bool:
        return self.process is not None and self.exit_info is None and self.process.poll() is None

    def still_running(self, after: str, name: str = "source still running") -> Verdict:
        """The guest was not stopped by `after` (a cancel, a refused command): its runstate is 'running'."""
        return equals(name, self.runstate(), "running", f"runstate after {after}")

    def runstate(self) -> str:
        return str(self.qmp.cmd("query-status", timeout=10)["status"])

    def shutdown(self, timeout: float = 10.0) -> ExitInfo | None:
        """Ask QEMU to quit, then insist. Always releases process, sockets and temp dir. Returns how QEMU ended;
        whether that was abnormal (e.g. it aborted on quit) is `abnormal_exit()`, which Testbed.close raises."""
        try:
            if self.is_running():
                with self._exit_lock:
                    if self.exit_info is None and self._harness_ended is None:
                        self._harness_ended = "quit"
                try:
                    self.qmp.cmd("quit", timeout=min(timeout, 5.0))
                except Exception:  # EOF after quit is expected; a dead monitor is handled below
                    pass
                if self.qmp.closed and self.exit_info is None:
                    # The session was closed before (a test, a fault): quit never reached QEMU, so do not wait.
                    log.warning("%s: QMP session already closed; killing QEMU", self.name)
                    with self._exit_lock:
                        self._harness_ended = "kill"
                elif not self._exited.wait(timeout):
                    # Reported, not failed: the harness sends this SIGKILL itself (a hang on quit shows here).
                    log.warning("%s did not quit within %ss; killing it", self.name, timeout)
                    with self._exit_lock:
                        if self.exit_info is None:
                            self._harness_ended = "kill"
        finally:
            self.kill()
        return self.exit_info

    def kill(self) -> ExitInfo | None:
        """SIGKILL QEMU (if still running) and release everything. A harness kill is never an abnormal exit."""
        if self.process is not None and self.process.poll() is None:
            with self._exit_lock:
                if self.exit_info is None and self._harness_ended != "quit":
                    self._harness_ended = "kill"
            try:
                self.host.signal(self.process, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self._reap()
        self.qmp.close()
        if self.heartbeat is not None:
            self.heartbeat.stop()
        if self.console_watcher is not None:
            self.console_watcher.stop()
        self.host.release(self.process, self.files.trace)
        if self.tmpdir is not None:
            workdirs.remove(self.tmpdir)
            self.tmpdir = None
        _LIVE.discard(self)
        return self.exit_info

    def _reap(self) -> None:
        if self.process is not None:
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.host.signal(self.process, signal.SIGKILL)
                self.process.wait(10)
            self._exited.wait(5)  # the watcher's record (exit_info) is what teardown judges

    def send_signal(self, sig: int) -> None:
        """Signal QEMU's process group, e.g. a fault test's deliberate SIGKILL (declare it with expect_exit
        first if the exit is not the failure under test)."""
        assert self.process is not None
        self.host.signal(self.process, sig)

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
        """Guest RAM into `path` here (a remote QEMU dumps into its run dir; the file is then fetched)."""
        target = self.host.dump_path(path)
        self.qmp.cmd("pmemsave", timeout=timeout, val=0, size=size_bytes, filename=target)
        self.host.after_dump(target, path)

    def ram_digests(self, path: Path, size_bytes: int, timeout: float = 120.0) -> PageDigests:
        """Guest RAM's per-page digests (harness.analysis.page_digests), computed where QEMU dumped it (a remote
        QEMU's dump never crosses the network); the dump is removed. `path` names the dump as pmemsave's would."""
        started = time.monotonic()
        try:
            target = self.host.dump_path(path)
            self.qmp.cmd("pmemsave", timeout=timeout, val=0, size=size_bytes, filename=target)
            return self.host.digest_dump(target, path)
        finally:
            self.ram_digest_spans.append((started, time.monotonic()))
