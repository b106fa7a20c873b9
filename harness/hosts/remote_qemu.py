"""Remote QEMUs: a Machine's QEMU started on another host over SSH (paramiko), configured by a hosts file.

What a Machine needs of the host its QEMU runs on is one small interface, `QemuHost` (harness.hosts.qemu_host): the
command line's host-specific parts (binary, QMP address, console chardev, image and trace paths), starting the
process and knowing how it ended, signalling it, reaching its guest's SSH forward, fetching a file it wrote.
`LocalHost` (harness.hosts.local) is this host; `RemoteQemu` here is a QEMU on the far side of one paramiko transport:

  - the command is a small sh wrapper (`WRAPPER`, `remote_command`): QEMU runs in the background with the channel's
    stdout as its console (`-chardev stdio`) and its stderr as its output; a watcher blocks reading the channel's
    stdin and SIGKILLs QEMU (and removes the run dir) when that reaches EOF — the harness closed the channel, or its
    connection is gone because the runner was killed, even by SIGKILL. The wrapper exits with QEMU's status
    (128+N for signal N), which the harness reads as the channel's exit status: the same ExitInfo, QemuExited and
    output tail as a local QEMU, noticed as soon as sshd reports it;
  - QMP listens on the remote's 127.0.0.1 (a TCP port, since paramiko has no direct-streamlocal channel); a local
    unix socket in the Machine's private 0700 dir is bridged to it, one direct-tcpip channel per connection, so
    qemu.qmp connects exactly as to a local QEMU;
  - the guest's SSH forward is on the remote's 127.0.0.1 too, reached by a direct-tcpip channel handed to paramiko
    as `sock=`;
  - files on the remote (the run dir: 0700 under the host's work_dir; RAM dumps, the trace log) are only touched
    over SFTP or by the remote command: never through this machine's file system.

Beside it: harness.hosts.hosts_file (the hosts file, TOML, `--hosts FILE`, documented in the README: a `[source]`
and/or `[destination]` section makes that side remote), harness.hosts.ssh (the paramiko connection) and
harness.hosts.sshd (the sshd that tests/behaviour/test_remote.py uses as its remote host, inside a test namespace).
Pure parts (parsing, the wrapper, exit statuses) are unit-tested.
"""

from __future__ import annotations

import logging
import random
import re
import shlex
import signal
import socket
import subprocess
import threading
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Callable

import paramiko

from harness.analysis import page_digests
from harness.analysis.integrity import PageDigests, digest_dump
from harness.hosts.hosts_file import RemoteHost
from harness.hosts.parallel import PortReservation
from harness.hosts.ssh import CONNECT_TIMEOUT, Connection, sftp_exists
from harness.qemu.launch import Launch

log = logging.getLogger(__name__)

# Ports on the remote's loopback for QMP and the guest's SSH forward: drawn at random (nothing here can probe the
# remote's free ports without a race anyway); a QEMU that cannot bind one is relaunched with another.
PORT_RANGE = (20000, 60000)
PID_LINE = re.compile(r"^qmh-remote: QEMU pid (\d+)", re.M)
# Digesting a dump on the remote (harness.analysis.page_digests): ~2 s for 512 MiB on a loaded TCG host.
DIGEST_TIMEOUT_S = 300.0
CONNECTION_LOST = 255      # what ssh(1) exits with when the connection fails: the status of a QEMU we lost


# -- the remote command (pure) ------------------------------------------------------------------------------------
# $1: the run dir; the rest: QEMU's command line. QEMU's stdin is /dev/null, its stdout (the console) and stderr
# (its output) are the channel's. The watcher holds the channel's stdin: EOF there (the harness closed the channel,
# or the connection is gone) marks the run dir and SIGKILLs QEMU, and the wrapper then removes the run dir, so
# nothing outlives the harness. Any other end of QEMU (its own exit, a signal the harness sent) leaves the run dir
# to the harness, which fetches the trace log from it first; the wrapper stops the watcher (QEMU's pid is not
# signalled again after its end). The wrapper ignores SIGHUP, SIGTERM and SIGPIPE (a lost connection brings one
# of them: without the trap the wrapper died before removing the run dir), so it lives to remove the run dir; QEMU,
# started before the trap, keeps its own handling of them.
WRAPPER = """\
dir=$1; shift
exec 3<&0 </dev/null
"$@" &
qemu=$!
trap '' HUP TERM PIPE
echo "qmh-remote: QEMU pid $qemu, run dir $dir" >&2
{ cat >/dev/null; : >"$dir/.eof"; kill -KILL "$qemu" 2>/dev/null; } <&3 >/dev/null 2>&1 &
watcher=$!
exec 3<&-
wait "$qemu"
status=$?
kill "$watcher" 2>/dev/null
[ -e "$dir/.eof" ] && rm -rf -- "$dir"
exit "$status"
"""


def remote_command(run_dir: str, args: list[str]) -> str:
    """The exact command sshd runs (through the login shell) for QEMU `args` in `run_dir`."""
    return "exec sh -c " + shlex.quote(WRAPPER) + " qmh-remote " + shlex.join([run_dir, *args])


def returncode_of(exit_status: int) -> int:
    """The wrapper's exit status → Popen's convention (negative: killed by that signal). sh reports a child
    killed by signal N as 128+N; QEMU itself never exits above 128. -1 (paramiko: the channel closed without an
    exit status, the connection was lost) → CONNECTION_LOST."""
    if exit_status < 0:
        return CONNECTION_LOST
    if 128 < exit_status < 128 + 65:
        return -(exit_status - 128)
    return exit_status


def remote_pid(output: str) -> int | None:
    match = PID_LINE.search(output)
    return int(match[1]) if match else None


class RemoteProcess:
    """A remote QEMU seen as a Popen: poll()/wait()/returncode from the channel's exit status; its stdout
    (console) and stderr (output) pumped into local files as they come."""

    def __init__(self, connection: Connection, command: str, output: Path, console: Path) -> None:
        self.connection, self.output = connection, output
        self.channel = connection.transport.open_session(timeout=CONNECT_TIMEOUT)
        self.channel.exec_command(command)
        self.pid: int | None = None
        self._pid_known = threading.Event()
        self.returncode: int | None = None
        self._pumps = [threading.Thread(target=self._pump, args=(self.channel.recv, console, False), daemon=True,
                                        name="remote-console"),
                       threading.Thread(target=self._pump, args=(self.channel.recv_stderr, output, True),
                                        daemon=True, name="remote-output")]
        for pump in self._pumps:
            pump.start()

    def _pump(self, receive: Callable[[int], bytes], path: Path, find_pid: bool) -> None:
        seen = b""
        with open(path, "ab", buffering=0) as out:
            while True:
                try:
                    data = receive(65536)
                except Exception:      # the transport died: the exit status says so
                    data = b""
                if not data:
                    break
                out.write(data)
                if find_pid and self.pid is None:
                    seen += data
                    if (pid := remote_pid(seen.decode(errors="replace"))) is not None:
                        self.pid = pid
                        self._pid_known.set()
        self._pid_known.set()

    def poll(self) -> int | None:
        if self.returncode is None and (self.channel.exit_status_ready() or self.channel.closed):
            self._finish()
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if not self.channel.status_event.wait(timeout):
            raise subprocess.TimeoutExpired("remote QEMU", timeout or 0)
        self._finish()
        assert self.returncode is not None
        return self.returncode

    def _finish(self) -> None:
        for pump in self._pumps:
            pump.join(5)    # the logs are complete before anyone reads the exit
        if self.returncode is not None:
            return
        if not self.channel.exit_status_ready():
            with open(self.output, "a") as out:   # the output tail a QemuExited shows must say why
                out.write(f"qmh-remote: the SSH connection to {self.connection.host.address} was lost; QEMU's own "
                          f"end is unknown (the remote command's watcher kills it when the connection goes)\n")
        self.returncode = returncode_of(self.channel.exit_status if self.channel.exit_status_ready() else -1)

    def send_signal(self, sig: int) -> None:
        """Signal the remote QEMU (`kill -s NAME PID` over the connection); SIGKILL without a known pid (or a
        connection that no longer runs commands) closes the channel instead: the wrapper's watcher kills it."""
        self._pid_known.wait(5)
        name = signal.Signals(sig).name.removeprefix("SIG")
        if self.pid is not None and not self.channel.closed:
            try:
                self.connection.run(f"kill -s {name} {self.pid}", timeout=10)
                return
            except Exception as exc:
                log.warning("kill -s %s %s on %s failed: %r", name, self.pid, self.connection.host.address, exc)
        if sig == signal.SIGKILL:
            self.channel.close()

    def close(self) -> None:
        self.channel.close()


class _Bridge:
    """A local unix socket (in a private 0700 dir) whose every connection is a fresh direct-tcpip channel to a
    port on the remote's loopback: what qemu.qmp connects to for a remote QMP."""

    def __init__(self, path: Path, connect: Callable[[], paramiko.Channel]) -> None:
        self.path, self._connect = path, connect
        self._server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._server.bind(str(path))
        self._server.listen(4)
        self._closed = False
        self._open: list[Any] = []
        threading.Thread(target=self._accept, name=f"qmp-bridge-{path.parent.name}", daemon=True).start()

    def _accept(self) -> None:
        while not self._closed:
            try:
                local, _ = self._server.accept()
            except OSError:
                return
            try:
                channel = self._connect()
            except Exception as exc:   # nothing listens yet (QEMU starting) or the connection is gone
                log.debug("bridge %s: %r", self.path, exc)
                local.close()
                continue
            self._open += [local, channel]
            for source, sink in ((local.recv, channel.sendall), (channel.recv, local.sendall)):
                threading.Thread(target=self._copy, args=(source, sink, local, channel), daemon=True).start()

    @staticmethod
    def _copy(receive: Callable[[int], bytes], send: Callable[[bytes], Any], *ends: Any) -> None:
        try:
            while data := receive(65536):
                send(data)
        except OSError:
            pass
        finally:
            for end in ends:
                try:
                    end.close()
                except Exception:
                    pass

    def close(self) -> None:
        self._closed = True
        self._server.close()
        for end in self._open:
            try:
                end.close()
            except Exception:
                pass


@dataclass(eq=False)
class RemoteQemu:
    """Where one Machine's QEMU runs when its side is remote (harness.hosts.qemu_host.QemuHost): on `connection`'s host,
    in a private 0700 run dir under its work dir, with QMP and the guest's SSH forward on its loopback."""
    connection: Connection
    run_dir: str | None = None
    qmp_port: int | None = None
    _bridge: _Bridge | None = field(default=None, repr=False)

    @property
    def host(self) -> RemoteHost:
        return self.connection.host

    def where(self) -> str:
        return f"{self.host.user}@{self.host.address}:{self.host.port} ({self.host.side} remote)"

    def prepare(self, name: str) -> None:
        if self.run_dir is None:
            self.run_dir = self.connection.private_dir(name)

    def free_port(self) -> int:
        return random.randrange(*PORT_RANGE)

    def reserve_port(self) -> PortReservation:
        """A port on the remote's loopback: nothing here can reserve it there; a taken one fails QEMU's bind and
        Machine.launch retries with another."""
        return PortReservation(self.free_port())

    def launch(self, binary: Any) -> Launch:
        """The remote qemu_binary's launch (not `binary`, the local one of that side: its schema is what is read)."""
        return self.connection.launch

    def qmp_arg(self, qmp_socket: Path) -> str:
        self.qmp_port = self.free_port()
        if self._bridge is None:
            self._bridge = _Bridge(qmp_socket, lambda: self.connection.open_tcp("127.0.0.1", self.qmp_port or 0,
                                                                                CONNECT_TIMEOUT))
        return f"tcp:127.0.0.1:{self.qmp_port},server=on,wait=off"

    def console_chardev(self, console: Path) -> str:
        return "stdio,id=console,signal=off"   # the channel's stdout, pumped into `console`

    def image_path(self, path: Path) -> str:
        return str(PurePosixPath(self.host.image_dir) / path.name)

    def work_path(self, path: Path) -> str:
        assert self.run_dir is not None
        return str(PurePosixPath(self.run_dir) / path.name)

    def script(self, args: list[str]) -> str:
        assert self.run_dir is not None
        return (f"#!/bin/sh\n# launched by the harness on {self.where()} over SSH; exact remote command (QEMU's "
                f"command line is after the run dir)\n# QEMU: {shlex.join(args)}\n"
                f"ssh -p {self.host.port} {self.host.user}@{self.host.address} "
                f"{shlex.quote(remote_command(self.run_dir, args))}\n")

    def start(self, args: list[str], output: Path, console: Path) -> RemoteProcess:
        assert self.run_dir is not None
        return RemoteProcess(self.connection, remote_command(self.run_dir, args), output, console)

    def signal(self, process: Any, sig: int) -> None:
        process.send_signal(sig)

    def guest_socket(self, netns_name: str | None) -> Callable[[str, int, float], Any]:
        return self.connection.open_tcp

    def fetch(self, remote: str, local: Path) -> bool:
        return self.connection.fetch(remote, local)

    def dump_path(self, local: Path) -> str:
        return self.work_path(local)

    def after_dump(self, remote: str, local: Path) -> None:
        try:
            if not self.fetch(remote, local):
                raise FileNotFoundError(f"{remote} on {self.host.address}: QEMU wrote no dump")
        finally:
            self.connection.sftp(lambda s: s.remove(remote) if sftp_exists(s, remote) else None)

    def digest_dump(self, remote: str, local: Path) -> PageDigests:
        """Digested there by the remote's python3 (harness.analysis.page_digests' own source, run as a script):
        ~1 MiB of digests cross instead of the dump. A remote without python3 gets the dump fetched and digested
        here, as before, and says so in the log."""
        source = Path(page_digests.__file__).read_text()
        try:
            status, out, err = self.connection.run(f"python3 -c {shlex.quote(source)} {shlex.quote(remote)}",
                                                   timeout=DIGEST_TIMEOUT_S)
            if status == 0:
                return page_digests.decode(out)
            log.warning("digesting %s on %s failed (exit %s: %s); fetching the dump instead", remote,
                        self.host.address, status, err.strip()[-300:])
            self.after_dump(remote, local)
            try:
                return digest_dump(local)
            finally:
                local.unlink(missing_ok=True)
        finally:
            self.connection.sftp(lambda s: s.remove(remote) if sftp_exists(s, remote) else None)

    def release(self, process: Any, trace: Path) -> None:
        """After QEMU ended: the trace log fetched, the run dir removed, the channel (and the wrapper) closed."""
        try:
            if self.run_dir is not None:
                if not self.connection.transport.is_active():
                    return
                self.fetch(self.work_path(trace), trace)
                self.connection.remove_dir(self.run_dir)
                self.run_dir = None
        except Exception as exc:
            log.warning("releasing remote QEMU on %s: %r", self.host.address, exc)
        finally:
            if process is not None:
                process.close()
            if self._bridge is not None:
                self._bridge.close()
                self._bridge = None
