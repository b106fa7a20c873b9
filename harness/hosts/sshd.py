"""An sshd of the test's own, in a network namespace: the remote host of tests/behaviour/test_remote.py."""

from __future__ import annotations

import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from harness.core import workdirs
from harness.core.process import die_with_parent
from harness.hosts import netns
from harness.hosts.hosts_file import RemoteHost
from harness.hosts.ssh import RemoteUnusable

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
