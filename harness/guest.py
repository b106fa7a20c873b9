"""SSH access to a guest: one fresh connection per command, host key pinned, retries only where safe.

Dropbear 2022.83 sometimes dies on channel close when a second command runs on one connection, and user-mode
networking accepts TCP before sshd is up; a fresh connection per command with a short banner timeout avoids both.
"""

from __future__ import annotations

import base64
import logging
import shlex
import socket
import time
from dataclasses import dataclass
from pathlib import Path

import paramiko
from tenacity import RetryError, Retrying, retry_if_exception_type, stop_after_delay, wait_fixed

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
    def __init__(self, port: int, client_key: Path, host_key_pub: Path, user: str = "root",
                 host: str = "127.0.0.1") -> None:
        self.host, self.port, self.user = host, port, user
        self._pkey = paramiko.Ed25519Key.from_private_key_file(str(client_key))
        self._host_key = _load_public_key(host_key_pub)

    def _connect(self, timeout: float) -> paramiko.SSHClient:
        client = paramiko.SSHClient()
        client.set_missing_host_key_policy(_PinnedHostKey(self._host_key))
        try:
            client.connect(self.host, self.port, username=self.user, pkey=self._pkey, timeout=timeout,
                           banner_timeout=timeout, auth_timeout=timeout, allow_agent=False,
                           look_for_keys=False)
        except BaseException:
            client.close()
            raise
        return client

    def _run_once(self, command: str, timeout: float) -> CommandResult:
        client = self._connect(timeout=min(timeout, 5.0))
        try:
            _, stdout, stderr = client.exec_command(command, timeout=timeout)
            out = stdout.read().decode(errors="replace")
            err = stderr.read().decode(errors="replace")
            status = stdout.channel.recv_exit_status()
            return CommandResult(command, status, out, err)
        finally:
            client.close()

    def run(self, command: str, timeout: float = 60.0, check: bool = True, retry_for: float = 20.0,
            idempotent: bool = True) -> CommandResult:
        """Run a shell command in the guest. Connection failures are retried for `retry_for` seconds;
        a command is re-run on a fresh connection only if `idempotent`."""
        attempts = Retrying(
            stop=stop_after_delay(retry_for if idempotent else 0),
            wait=wait_fixed(0.2),
            retry=retry_if_exception_type(CONNECT_ERRORS),
            reraise=True,
        )
        try:
            result = attempts(self._run_once, command, timeout)
        except CONNECT_ERRORS as exc:
            raise GuestUnreachable(f"guest at {self.host}:{self.port} unreachable for {retry_for}s: {exc!r}") from exc
        except RetryError as exc:  # pragma: no cover - reraise=True makes this unlikely
            raise GuestUnreachable(str(exc)) from exc
        if check and not result.ok:
            raise GuestCommandError(result)
        return result

    def wait_ready(self, timeout: float) -> float:
        """Wait until a command runs; returns seconds waited."""
        start = time.monotonic()
        self.run("true", timeout=min(timeout, 10), retry_for=timeout)
        return time.monotonic() - start

    def read_file(self, path: str, timeout: float = 30.0) -> str:
        return self.run(f"cat {shlex.quote(path)}", timeout=timeout).stdout
