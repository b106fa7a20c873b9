"""The SSH connection to a remote host (paramiko): commands, SFTP, direct-tcpip channels to its loopback, and the
check that the host can run the harness's QEMU (harness.hosts.remote_qemu runs it there)."""

from __future__ import annotations

import base64
import logging
import os
import random
import shlex
import socket
import stat
import threading
from pathlib import Path, PurePosixPath
from typing import Any, Callable

import paramiko

from harness.hosts import netns, paramiko_channels
from harness.hosts.hosts_file import RemoteHost
from harness.qemu.launch import Launch, launch_for

log = logging.getLogger(__name__)

CONNECT_TIMEOUT = 10.0


class RemoteUnusable(RuntimeError):
    """A remote host of the hosts file cannot run a QEMU (unreachable, no such binary, no image): one line."""


class ForwardRefused(ConnectionRefusedError):
    """Nothing accepted a direct-tcpip channel's connection on the remote (a QMP or guest SSH port not listening yet,
    or any more): one line naming the host and the port. The connection stays usable. A ConnectionRefusedError, so
    whatever retries a refused local connect (the guest's SSH, the QMP bridge) retries this one the same way."""


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
        paramiko_channels.install()  # no data on a channel after its CLOSE: sshd would drop the whole connection
        self.transport = transport
        self._sftp: paramiko.SFTPClient | None = None
        self._sftp_lock = threading.Lock()
        self._launch: Launch | None = None

    @property
    def launch(self) -> Launch:
        """How the host's qemu_binary starts there: decided by harness.qemu.launch from the files around it on
        that host, exactly as for a binary here (firmware -L dirs, module dir)."""
        if self._launch is None:
            self._launch = launch_for(self.host.qemu_binary, RemoteFiles(self))
        return self._launch

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
            if not sftp_exists(sftp, remote):
                return False
            sftp.get(remote, str(local), prefetch=True, max_concurrent_prefetch_requests=64)
            return True
        return bool(self.sftp(get))

    def open_tcp(self, host: str, port: int, timeout: float) -> paramiko.Channel:
        """A direct-tcpip channel to host:port as seen from the remote (its loopback for QMP and the guest SSH);
        ForwardRefused when the remote's sshd could not connect there."""
        try:
            return self.transport.open_channel("direct-tcpip", (host, port), ("127.0.0.1", 0), timeout=timeout)
        except paramiko.ChannelException as exc:
            raise ForwardRefused(f"[{self.host.side}] {self.host.address}: nothing accepts {host}:{port} there "
                                 f"(sshd: {exc.text}, code {exc.code})") from None

    def check(self, image_files: list[str]) -> str:
        """That QEMU can run there: the binary says "QEMU emulator version", the image dir holds the image's files,
        the work dir takes a private dir. Returns the version line; RemoteUnusable (one line) if not."""
        host, where = self.host, f"[{self.host.side}] {self.host.address}"
        status, out, err = self.run(f"{shlex.join(self.launch.argv())} -version")
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


def sftp_exists(sftp: paramiko.SFTPClient, path: str) -> bool:
    try:
        sftp.stat(path)
    except OSError:
        return False
    return True


class RemoteFiles:
    """harness.qemu.launch's view of the remote host's files, over the connection's SFTP session."""

    def __init__(self, connection: Connection) -> None:
        self.connection = connection

    def _mode(self, path: str) -> int | None:
        try:
            return self.connection.sftp(lambda s: s.stat(path)).st_mode
        except OSError:
            return None

    def is_dir(self, path: str) -> bool:
        return stat.S_ISDIR(self._mode(path) or 0)

    def is_file(self, path: str) -> bool:
        return stat.S_ISREG(self._mode(path) or 0)

    def read_text(self, path: str) -> str:
        def read(sftp: paramiko.SFTPClient) -> str:
            with sftp.open(path) as f:
                return f.read().decode()
        return str(self.connection.sftp(read))
