"""SSH access to a guest: one fresh connection per command, host key pinned, retries only where safe.

Dropbear 2022.83 sometimes dies on channel close when a second command runs on one connection, and user-mode
networking accepts TCP before sshd is up; a fresh connection per command with a short banner timeout avoids both.

Retries: connecting (TCP, banner, key exchange, authentication) is retried, since nothing has reached the guest's
shell yet. Once exec_command has been sent the command may be running in the guest, so a failure after that point
is never retried unless the caller says the command is idempotent.
"""

from __future__ import annotations

import base64
import logging
import shlex
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import paramiko

log = logging.getLogger(__name__)

# Failures to reach sshd (as opposed to a command that ran and failed).
CONNECT_ERRORS = (paramiko.SSHException, EOFError, OSError, socket.timeout)


class GuestCommandError(RuntimeError):
    def __init__(self, result: "CommandResult") -> None:
        super().__init__(f"guest command failed (exit {result.exit_status}): {result.command}\n"
                         f"stdout: {result.stdout[-2000:]}\nstderr: {result.stderr[-2000:]}")
        self.result = result


class GuestUnreachable(RuntimeError):
    pass


class GuestConnectionLost(GuestUnreachable):
    """The connection broke after the command was sent: it may or may not have run (it was not re-run)."""


class GuestPanicked(GuestUnreachable):
    """The guest kernel panicked: SSH will never answer again (the message carries the console tail)."""


# Paramiko's recv_exit_status() when the channel closed without the server sending an exit status.
NO_EXIT_STATUS = -1


@dataclass(frozen=True)
class CommandResult:
    command: str
    exit_status: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.exit_status == 0


class _PinnedHostKey(paramiko.MissingHostKeyPolicy):
    """Accept exactly the host key the image build generated."""

    def __init__(self, expected: paramiko.PKey) -> None:
        self.expected = expected

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> None:
        if key.get_name() != self.expected.get_name() or key.asbytes() != self.expected.asbytes():
            raise paramiko.SSHException(f"guest host key mismatch for {hostname}: got {key.get_base64()[:24]}…")


def _load_public_key(path: Path) -> paramiko.PKey:
    kind, b64 = path.read_text().split()[:2]
    return paramiko.PKey.from_type_string(kind, base64.b64decode(b64))


class GuestShell:
    RETRY_INTERVAL = 0.2

    def __init__(self, port: int, client_key: Path, host_key_pub: Path, user: str = "root",
                 host: str = "127.0.0.1", liveness: Callable[[], BaseException | None] | None = None,
                 open_socket: Callable[[str, int, float], socket.socket] | None = None) -> None:
        """`liveness` (given by Machine) returns why the guest can no longer answer — its QEMU exited, its kernel
        panicked — or None; retries stop at once with that error instead of running out their time.
        `open_socket(host, port, timeout)` makes the TCP connection SSH then runs over (a QEMU in a network
        namespace: harness.hosts.netns.connect_in); by default paramiko connects from here."""
        self.host, self.port, self.user = host, port, user
        self._open_socket = open_socket
        self._pkey = paramiko.Ed25519Key.from_private_key_file(str(client_key))
        self._host_key = _load_public_key(host_key_pub)
        self._liveness = liveness

    def _check_alive(self, cause: BaseException | None = None) -> None:
        reason = self._liveness() if self._liveness is not None else None
        if reason is not None:
            raise reason from cause

    def _connect(self, timeout: float) -> paramiko.SSHClient:
        client = paramiko.SSHClient()
        client.set_missing_host_key_policy(_PinnedHostKey(self._host_key))
        try:
            sock = self._open_socket(self.host, self.port, timeout) if self._open_socket is not None else None
            client.connect(self.host, self.port, username=self.user, pkey=self._pkey, timeout=timeout,
                           banner_timeout=timeout, auth_timeout=timeout, allow_agent=False,
                           look_for_keys=False, sock=sock)
        except BaseException:
            client.close()
            raise
        return client

    def _connect_retrying(self, timeout: float, retry_for: float) -> paramiko.SSHClient:
        """Connect, retrying connection failures for `retry_for` s (nothing has reached the guest's shell yet)."""
        deadline = time.monotonic() + retry_for
        while True:
            self._check_alive()
            try:
                return self._connect(timeout=min(timeout, 5.0))
            except CONNECT_ERRORS as exc:
                self._check_alive(exc)
                if time.monotonic() + self.RETRY_INTERVAL > deadline:
                    raise GuestUnreachable(f"guest at {self.host}:{self.port} unreachable for {retry_for}s: "
                                           f"{exc!r}") from exc
                log.debug("ssh %s:%s connect: %r; retrying", self.host, self.port, exc)
                time.sleep(self.RETRY_INTERVAL)

    @staticmethod
    def _execute(client: paramiko.SSHClient, command: str, timeout: float) -> CommandResult:
        """Send the command and collect its result. Raises CONNECT_ERRORS if the session breaks meanwhile
        (including a channel closed without an exit status: the server or the link went away)."""
        _, stdout, stderr = client.exec_command(command, timeout=timeout)
        out = stdout.read().decode(errors="replace")
        err = stderr.read().decode(errors="replace")
        status = stdout.channel.recv_exit_status()
        if status == NO_EXIT_STATUS:
            raise EOFError(f"channel closed without an exit status (stdout so far: {out[-200:]!r})")
        return CommandResult(command, status, out, err)

    def run(self, command: str, timeout: float = 60.0, check: bool = True, retry_for: float = 20.0,
            idempotent: bool = False) -> CommandResult:
        """Run a shell command in the guest. Connecting is retried for `retry_for` seconds. Once the command
        has been sent it may have run, so a broken session raises GuestConnectionLost — unless `idempotent`,
        when it is re-run on a fresh connection within the same `retry_for`. `timeout` bounds the silence
        while waiting for its output."""
        deadline = time.monotonic() + retry_for
        while True:
            client = self._connect_retrying(timeout, max(0.0, deadline - time.monotonic()))
            try:
                result = self._execute(client, command, timeout)
                break
            except CONNECT_ERRORS as exc:
                self._check_alive(exc)
                if not idempotent:
                    raise GuestConnectionLost(
                        f"guest at {self.host}:{self.port}: connection lost after the command was sent, so it "
                        f"may or may not have run; not re-run (not idempotent): {command!r}: {exc!r}") from exc
                if time.monotonic() + self.RETRY_INTERVAL > deadline:
                    raise GuestConnectionLost(f"guest at {self.host}:{self.port}: connection lost while running "
                                              f"{command!r} (re-run for {retry_for}s): {exc!r}") from exc
                log.debug("ssh %s:%s: %r during idempotent %r; re-running", self.host, self.port, exc, command)
                time.sleep(self.RETRY_INTERVAL)
            finally:
                client.close()
        if check and not result.ok:
            raise GuestCommandError(result)
        return result

    def wait_ready(self, timeout: float) -> float:
        """Wait until a command runs; returns seconds waited."""
        start = time.monotonic()
        self.run("true", timeout=min(timeout, 10), retry_for=timeout, idempotent=True)
        return time.monotonic() - start

    def read_file(self, path: str, timeout: float = 30.0) -> str:
        return self.run(f"cat {shlex.quote(path)}", timeout=timeout, idempotent=True).stdout
