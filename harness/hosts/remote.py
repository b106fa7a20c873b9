"""Remote QEMUs: a Machine's QEMU started on another host over SSH (paramiko), configured by a hosts file.

What a Machine needs of the host its QEMU runs on is one small interface, `QemuHost` (harness.hosts.qemu_host): the command
line's host-specific parts (binary, QMP address, console chardev, image and trace paths), starting the process and
knowing how it ended, signalling it, reaching its guest's SSH forward, fetching a file it wrote. `LocalHost` there
is this host (harness.hosts.local); `RemoteQemu` here is a QEMU on the far side of one paramiko transport:

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

The hosts file (TOML, `--hosts FILE`, documented in the README): a `[source]` and/or `[destination]` section makes
that side remote. Pure parts (parsing, the wrapper, exit statuses) are unit-tested; `start_sshd` runs the sshd that
tests/behaviour/test_remote.py uses as its remote host, inside a test namespace.
"""

from __future__ import annotations

import base64
import logging
import os
import random
import re
import shlex
import signal
import socket
import stat
import subprocess
import threading
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Callable, Mapping

import paramiko

from harness.hosts import netns

from harness.core import workdirs
from harness.core.process import die_with_parent
from harness.hosts.parallel import PortReservation

log = logging.getLogger(__name__)

SIDES = ("source", "destination")
REQUIRED_KEYS = ("address", "key", "qemu_binary", "image_dir", "work_dir")
OPTIONAL_KEYS = {"port": int, "user": str, "host_key": str, "migration_address": str}
TOP_LEVEL_KEYS = {"local_address": str}
CONNECT_TIMEOUT = 10.0
# Ports on the remote's loopback for QMP and the guest's SSH forward: drawn at random (nothing here can probe the
# remote's free ports without a race anyway); a QEMU that cannot bind one is relaunched with another.
PORT_RANGE = (20000, 60000)
PID_LINE = re.compile(r"^qmh-remote: QEMU pid (\d+)", re.M)
CONNECTION_LOST = 255      # what ssh(1) exits with when the connection fails: the status of a QEMU we lost


class HostsFileError(ValueError):
    """The hosts file cannot be used (its message is one line, naming the file and the key)."""


class RemoteUnusable(RuntimeError):
    """A remote host of the hosts file cannot run a QEMU (unreachable, no such binary, no image): one line."""


@dataclass(frozen=True)
class RemoteHost:
    """One side's remote host, as the hosts file describes it. `netns` (not in the file): the SSH connection is
    made from inside this network namespace (tests whose remote host is an sshd in a test namespace)."""
    side: str
    address: str
    key: Path
    qemu_binary: str
    image_dir: str
    work_dir: str
    port: int = 22
    user: str = "root"
    host_key: Path | None = None       # the host's public key (OpenSSH .pub); None: ~/.ssh/known_hosts
    migration_address: str | None = None
    netns: str | None = None
    version: str | None = None         # the remote QEMU's `-version` line, once checked


    @property
    def listen_address(self) -> str:
        """Where this host's QEMU listens for an incoming migration."""
        return self.migration_address or self.address

    def describe(self) -> str:
        version = f" ({self.version.removeprefix('QEMU emulator version ')})" if self.version else ""
        return (f"{self.side} remote: {self.user}@{self.address}:{self.port}, QEMU {self.qemu_binary}{version}, images "
                f"{self.image_dir}, work dir {self.work_dir}" + (f" (ssh from netns {self.netns})" if self.netns
                                                                 else ""))

    def to_json(self) -> dict[str, Any]:
        return {"address": self.address, "port": self.port, "user": self.user, "qemu_binary": self.qemu_binary,
                "version": self.version,
                "image_dir": self.image_dir, "work_dir": self.work_dir, "migration_address": self.listen_address,
                "netns": self.netns}


@dataclass(frozen=True)
class HostsFile:
    remotes: Mapping[str, RemoteHost]
    local_address: str | None = None     # where a remote source reaches a local destination


def parse_hosts(text: str, origin: Path) -> HostsFile:
    """The hosts file's TOML → its remote sides; HostsFileError (one line) if malformed. Relative key paths are
    relative to the file's directory."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise HostsFileError(f"not TOML: {exc}") from None
    unknown = sorted(set(data) - set(SIDES) - set(TOP_LEVEL_KEYS))
    if unknown:
        raise HostsFileError(f"unknown key or section {unknown[0]!r} (sections: [source], [destination]; "
                             f"top-level keys: {', '.join(TOP_LEVEL_KEYS)})")
    local_address = data.get("local_address")
    if local_address is not None and not isinstance(local_address, str):
        raise HostsFileError("local_address: must be a string")
    remotes = {side: _parse_side(side, data[side], origin.parent) for side in SIDES if side in data}
    if not remotes:
        raise HostsFileError("no [source] or [destination] section: nothing would be remote")
    if "source" in remotes and "destination" not in remotes and local_address is None:
        raise HostsFileError("a remote [source] with a local destination needs local_address (where the remote "
                             "source reaches this host's destination QEMU)")
    return HostsFile(remotes, local_address)


def _parse_side(side: str, section: Any, base: Path) -> RemoteHost:
    if not isinstance(section, dict):
        raise HostsFileError(f"[{side}] must be a table")
    unknown = sorted(set(section) - set(REQUIRED_KEYS) - set(OPTIONAL_KEYS))
    if unknown:
        raise HostsFileError(f"[{side}] unknown key {unknown[0]!r} (known: "
                             f"{', '.join([*REQUIRED_KEYS, *OPTIONAL_KEYS])})")
    missing = [key for key in REQUIRED_KEYS if key not in section]
    if missing:
        raise HostsFileError(f"[{side}] missing {missing[0]!r}")
    for key in REQUIRED_KEYS:
        if not isinstance(section[key], str) or not section[key]:
            raise HostsFileError(f"[{side}] {key}: must be a non-empty string")
    for key, kind in OPTIONAL_KEYS.items():
        if key in section and (not isinstance(section[key], kind) or isinstance(section[key], bool)):
            raise HostsFileError(f"[{side}] {key}: must be {'an integer' if kind is int else 'a string'}")
    port = section.get("port", 22)
    if not 0 < port < 65536:
        raise HostsFileError(f"[{side}] port: {port} is not a TCP port")
    for key in ("image_dir", "work_dir", "qemu_binary"):
        if not section[key].startswith("/"):
            raise HostsFileError(f"[{side}] {key}: {section[key]!r} must be an absolute path on the remote host")

    def local(key: str) -> Path | None:
        value = section.get(key)
        return None if value is None else (base / Path(value).expanduser()).resolve()

    return RemoteHost(side=side, address=section["address"], key=local("key") or Path(),
                      qemu_binary=section["qemu_binary"], image_dir=section["image_dir"],
                      work_dir=section["work_dir"], port=port, user=section.get("user", "root"),
                      host_key=local("host_key"), migration_address=section.get("migration_address"))


def load_hosts(path: Path) -> HostsFile:
    try:
        text = path.read_text()
    except OSError as exc:
        raise HostsFileError(f"cannot read it ({exc.strerror or exc})") from None
    return parse_hosts(text, path)


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


# -- the SSH connection -----------------------------------------------------------------------------------------
class _PinnedKey(paramiko.MissingHostKeyPolicy):
    def __init__(self, expected: paramiko.PKey) -> None:
        self.expected = expected

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> None:
        if key.get_name() != self.expected.get_name() or key.asbytes() != self.expected.asbytes():
            raise paramiko.BadHostKeyException(hostname, key, self.expected)


def _public_key(path: Path) -> paramiko.PKey:
    kind, blob = path.read_text().split()[:2]
    return paramiko.PKey.from_type_string(kind, base64.b64decode(blob))


class Connection:
    """One paramiko transport to a remote host: commands, SFTP, direct-tcpip channels to its loopback."""

    def __init__(self, host: RemoteHost, timeout: float = CONNECT_TIMEOUT) -> None:
        self.host = host
        self.client = paramiko.SSHClient()
        if host.host_key is not None:
            self.client.set_missing_host_key_policy(_PinnedKey(_public_key(host.host_key)))
        else:
            self.client.load_system_host_keys()
            self.client.set_missing_host_key_policy(paramiko.RejectPolicy())
        where = f"[{host.side}] {host.user}@{host.address}:{host.port}"
        try:
            sock = (netns.connect_in(host.netns, host.address, host.port, timeout) if host.netns else
                    socket.create_connection((host.address, host.port), timeout=timeout))
            self.client.connect(host.address, host.port, username=host.user, key_filename=str(host.key),
                                timeout=timeout, banner_timeout=timeout, auth_timeout=timeout, allow_agent=False,
                                look_for_keys=False, sock=sock)
        except Exception as exc:
            self.client.close()
            raise RemoteUnusable(f"{where}: cannot connect: {type(exc).__name__}: {exc}") from None
        transport = self.client.get_transport()
        assert transport is not None
        transport.set_keepalive(5)   # a dead remote shows as a closed channel, not a hang
        self.transport = transport
        self._sftp: paramiko.SFTPClient | None = None
        self._sftp_lock = threading.Lock()

    def run(self, command: str, timeout: float = 30.0) -> tuple[int, str, str]:
        """Run `command` on the remote; (exit status, stdout, stderr)."""
        channel = self.transport.open_session(timeout=timeout)
        try:
            channel.settimeout(timeout)
            channel.exec_command(command)
            channel.shutdown_write()
            out, err = channel.makefile("rb").read(), channel.makefile_stderr("rb").read()
            return channel.recv_exit_status(), out.decode(errors="replace"), err.decode(errors="replace")
        finally:
            channel.close()

    def sftp(self, action: Callable[[paramiko.SFTPClient], Any]) -> Any:
        """`action(sftp)` on the connection's one SFTP session (paramiko's is not safe for concurrent use)."""
        with self._sftp_lock:
            if self._sftp is None:
                self._sftp = self.client.open_sftp()
            return action(self._sftp)

    def private_dir(self, what: str) -> str:
        """A fresh 0700 directory under the host's work dir (SFTP mkdir: made with that mode, never widened)."""
        for _ in range(10):
            path = str(PurePosixPath(self.host.work_dir) / f"qmh-{what}-{os.getpid()}-{random.randrange(16**8):08x}")
            try:
                self.sftp(lambda s: s.mkdir(path, 0o700))
            except OSError:
                continue   # taken (or the work dir is unusable: check() says which)
            if stat.S_IMODE(self.sftp(lambda s: s.stat(path)).st_mode or 0) & 0o077:
                self.sftp(lambda s: s.chmod(path, 0o700))   # a umask never widens; a server's mode handling might
            return path
        raise RemoteUnusable(f"[{self.host.side}] cannot make a directory in work_dir {self.host.work_dir}")

    def remove_dir(self, path: str) -> None:
        status, _, err = self.run(f"rm -rf -- {shlex.quote(path)}")
        if status != 0:
            log.warning("could not remove %s on %s: %s", path, self.host.address, err.strip())

    def fetch(self, remote: str, local: Path) -> bool:
        """Copy a remote file here; False if it does not exist (then nothing is made here)."""
        def get(sftp: paramiko.SFTPClient) -> bool:
            if not _exists(sftp, remote):
                return False
            sftp.get(remote, str(local), prefetch=True, max_concurrent_prefetch_requests=64)
            return True
        return bool(self.sftp(get))

    def open_tcp(self, host: str, port: int, timeout: float) -> paramiko.Channel:
        """A direct-tcpip channel to host:port as seen from the remote (its loopback for QMP and the guest SSH)."""
        return self.transport.open_channel("direct-tcpip", (host, port), ("127.0.0.1", 0), timeout=timeout)

    def check(self, image_files: list[str]) -> str:
        """That QEMU can run there: the binary says "QEMU emulator version", the image dir holds the image's files,
        the work dir takes a private dir. Returns the version line; RemoteUnusable (one line) if not."""
        host, where = self.host, f"[{self.host.side}] {self.host.address}"
        status, out, err = self.run(f"{shlex.quote(host.qemu_binary)} -version")
        first = (out.strip().splitlines() or [err.strip()])[0]
        if status != 0 or "QEMU emulator version" not in out:
            raise RemoteUnusable(f"{where}: qemu_binary {host.qemu_binary} is not a QEMU system emulator there "
                                 f"(exit {status}: {first[:120]!r})")
        for name in image_files:
            path = str(PurePosixPath(host.image_dir) / name)
            try:
                self.sftp(lambda s: s.stat(path))
            except OSError:
                raise RemoteUnusable(f"{where}: image_dir {host.image_dir} has no {name} (copy the guest image "
                                     f"there: see the README's \"Remote QEMUs\")") from None
        self.remove_dir(self.private_dir("check"))
        return first

    def close(self) -> None:
        with self._sftp_lock:
            if self._sftp is not None:
                self._sftp.close()
                self._sftp = None
        self.client.close()


# -- one remote QEMU process ------------------------------------------------------------------------------------
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

    def base_args(self, binary: Any) -> list[str]:
        return [self.host.qemu_binary]

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
            self.connection.sftp(lambda s: s.remove(remote) if _exists(s, remote) else None)

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


def _exists(sftp: paramiko.SFTPClient, path: str) -> bool:
    try:
        sftp.stat(path)
    except OSError:
        return False
    return True


# -- an sshd of the test's own, in a network namespace -----------------------------------------------------------
SSHD = "/usr/sbin/sshd"
PRIVSEP_DIR = Path("/run/sshd")   # OpenSSH's compile-time privilege separation dir on Debian


def sshd_config(directory: Path, listen: str, port: int) -> str:
    """A key-only sshd: this test's host key and authorized client key, root by key only, forwarding only to the
    remote's loopback (QMP, the guest's SSH), SFTP in-process, nothing else."""
    return "\n".join([
        f"ListenAddress {listen}:{port}",
        f"HostKey {directory / 'host_ed25519'}",
        f"AuthorizedKeysFile {directory / 'authorized_keys'}",
        f"PidFile {directory / 'sshd.pid'}",
        "AuthenticationMethods publickey", "PubkeyAuthentication yes", "PasswordAuthentication no",
        "KbdInteractiveAuthentication no", "PermitRootLogin prohibit-password", "UsePAM no",
        # StrictModes refuses key files under a world-writable path (/tmp, sticky or not); these are 0600 files
        # in this run's 0700 dir (workdirs.private_dir), which is what StrictModes would check.
        "StrictModes no",
        "AllowTcpForwarding local", "PermitOpen 127.0.0.1:*", "GatewayPorts no", "X11Forwarding no",
        "AllowAgentForwarding no", "AllowStreamLocalForwarding no", "PermitTunnel no", "PermitUserRC no",
        "ClientAliveInterval 5", "ClientAliveCountMax 3", "LogLevel VERBOSE",
        "Subsystem sftp internal-sftp", "",
    ])


@dataclass
class TestSshd:
    """An sshd started by a test in a network namespace: its files in a private 0700 dir of this run (reaped after
    a SIGKILL), its process dying with the harness (PDEATHSIG; sshd's per-connection children end with their
    connection, and the remote command's watcher kills QEMU then)."""
    __test__ = False
    directory: Path
    process: subprocess.Popen[bytes]
    address: str
    port: int
    netns: str

    @property
    def client_key(self) -> Path:
        return self.directory / "client_ed25519"

    @property
    def host_key_pub(self) -> Path:
        return self.directory / "host_ed25519.pub"

    def remote_host(self, side: str, qemu_binary: str, image_dir: str, work_dir: str,
                    connect_from: str) -> RemoteHost:
        """A RemoteHost reached through this sshd, from namespace `connect_from` (across the link)."""
        return RemoteHost(side=side, address=self.address, port=self.port, key=self.client_key,
                          host_key=self.host_key_pub, qemu_binary=qemu_binary, image_dir=image_dir,
                          work_dir=work_dir, netns=connect_from)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        workdirs.remove(self.directory)


def start_sshd(namespace: str, address: str, log_path: Path, port: int = 22) -> TestSshd:
    """sshd on `address`:`port` inside `namespace`, with a fresh host key and client key (ed25519, generated here,
    0600 in a 0700 dir: root only) and a key-only config (sshd_config)."""
    directory = workdirs.private_dir("sshd")
    try:
        for name in ("host_ed25519", "client_ed25519"):
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"qmh-{name}", "-f",
                            str(directory / name)], check=True, capture_output=True, stdin=subprocess.DEVNULL)
        authorized = directory / "authorized_keys"
        authorized.write_text((directory / "client_ed25519.pub").read_text())
        authorized.chmod(0o600)
        config = directory / "sshd_config"
        config.write_text(sshd_config(directory, address, port))
        config.chmod(0o600)
        PRIVSEP_DIR.mkdir(mode=0o755, exist_ok=True)
        with open(log_path, "ab") as log_file:
            process = subprocess.Popen([*netns.exec_prefix(namespace), SSHD, "-D", "-e", "-f", str(config)],
                                       stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT,
                                       start_new_session=True, preexec_fn=die_with_parent)
    except BaseException:
        workdirs.remove(directory)
        raise
    return TestSshd(directory, process, address, port, namespace)


def wait_listening(sshd: TestSshd, connect_from: str, timeout: float = 10.0) -> None:
    """Until the sshd accepts a TCP connection from namespace `connect_from`; RemoteUnusable if it exited."""
    deadline = time.monotonic() + timeout
    while True:
        if sshd.process.poll() is not None:
            raise RemoteUnusable(f"sshd exited with status {sshd.process.returncode} (its log is in the artefacts)")
        try:
            netns.connect_in(connect_from, sshd.address, sshd.port, 1.0).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
