"""The remote pieces' pure parts (harness.hosts.hosts_file, remote_qemu, sshd): the hosts file, the remote command's
wrapper (run here with sh: its exit statuses, its pid line, and that closing its stdin kills the command and removes
the run dir), exit statuses, the sshd config the remote-QEMU tests use."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import pytest

from harness.hosts import hosts_file
from harness.hosts import remote_qemu
from harness.hosts import sshd
GOOD = """
local_address = "192.0.2.1"

[source]
address = "192.0.2.10"
key = "keys/id_ed25519"
qemu_binary = "/usr/bin/qemu-system-x86_64"
image_dir = "/srv/qmh/images"
work_dir = "/var/tmp"

[destination]
address = "192.0.2.20"
port = 2222
user = "qmh"
key = "/etc/qmh/id_ed25519"
host_key = "dst.pub"
qemu_binary = "/opt/qemu/bin/qemu-system-x86_64"
image_dir = "/srv/qmh/images"
work_dir = "/var/tmp"
migration_address = "198.51.100.20"
"""


def test_a_hosts_file_gives_each_remote_side_with_defaults_and_paths_relative_to_it(tmp_path: Path) -> None:
    hosts = hosts_file.parse_hosts(GOOD, tmp_path / "hosts.toml")
    source, destination = hosts.remotes["source"], hosts.remotes["destination"]
    assert hosts.local_address == "192.0.2.1"
    assert (source.port, source.user, source.host_key) == (22, "root", None)
    assert source.key == tmp_path / "keys" / "id_ed25519"
    assert source.listen_address == "192.0.2.10"
    assert (destination.port, destination.user, destination.key) == (2222, "qmh", Path("/etc/qmh/id_ed25519"))
    assert destination.host_key == tmp_path / "dst.pub"
    assert destination.listen_address == "198.51.100.20"
    assert destination.qemu_binary == "/opt/qemu/bin/qemu-system-x86_64"


def test_one_remote_side_is_enough(tmp_path: Path) -> None:
    text = GOOD.split("[destination]")[1]
    hosts = hosts_file.parse_hosts("[destination]" + text, tmp_path / "hosts.toml")
    assert list(hosts.remotes) == ["destination"] and hosts.local_address is None


MINIMAL = ('address = "h"\nkey = "k"\nqemu_binary = "/q"\nimage_dir = "/i"\nwork_dir = "/w"\n')


@pytest.mark.parametrize("text, message", [
    ("[destination\n", "not TOML: "),
    ("", "no [source] or [destination] section: nothing would be remote"),
    ("[dest]\n" + MINIMAL, "unknown key or section 'dest' (sections: [source], [destination]; top-level keys: "
                           "local_address)"),
    ("[destination]\naddress = \"h\"\n", "[destination] missing 'key'"),
    ("[destination]\n" + MINIMAL + "colour = \"red\"\n", "[destination] unknown key 'colour' (known: address, key, "
                                                         "qemu_binary, image_dir, work_dir, port, user, host_key, "
                                                         "migration_address)"),
    ("[destination]\n" + MINIMAL + "port = \"22\"\n", "[destination] port: must be an integer"),
    ("[destination]\n" + MINIMAL + "port = 70000\n", "[destination] port: 70000 is not a TCP port"),
    ("[destination]\n" + MINIMAL.replace('"/w"', '"w"'),
     "[destination] work_dir: 'w' must be an absolute path on the remote host"),
    ("[destination]\n" + MINIMAL.replace('"h"', '""'), "[destination] address: must be a non-empty string"),
    ("[source]\n" + MINIMAL, "a remote [source] with a local destination needs local_address (where the remote "
                             "source reaches this host's destination QEMU)"),
])
def test_a_malformed_hosts_file_is_one_line_naming_the_key(text: str, message: str, tmp_path: Path) -> None:
    with pytest.raises(hosts_file.HostsFileError) as raised:
        hosts_file.parse_hosts(text, tmp_path / "hosts.toml")
    assert str(raised.value).startswith(message) and "\n" not in str(raised.value)


def test_an_unreadable_hosts_file_says_so(tmp_path: Path) -> None:
    with pytest.raises(hosts_file.HostsFileError, match=r"^cannot read it \(No such file or directory\)$"):
        hosts_file.load_hosts(tmp_path / "none.toml")


@pytest.mark.parametrize("status, returncode", [(0, 0), (1, 1), (128, 128), (137, -9), (134, -6), (-1, 255)])
def test_the_wrappers_status_reads_as_popens(status: int, returncode: int) -> None:
    assert remote_qemu.returncode_of(status) == returncode


def run_wrapper(run_dir: Path, command: list[str]) -> subprocess.Popen[bytes]:
    """The remote command as sshd would run it (through a shell), here."""
    return subprocess.Popen(["sh", "-c", remote_qemu.remote_command(str(run_dir), command)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


@pytest.mark.parametrize("script, returncode", [("exit 3", 3), ("kill -ABRT $$", -signal.SIGABRT)])
def test_the_wrapper_exits_with_qemus_status_and_names_its_pid(script: str, returncode: int,
                                                               tmp_path: Path) -> None:
    process = run_wrapper(tmp_path, ["sh", "-c", f"echo console; echo output >&2; {script}"])
    assert process.stdin is not None and process.stdout is not None and process.stderr is not None
    process.wait(10)           # with stdin still open, as the harness holds the channel until QEMU's end
    out, err = process.stdout.read(), process.stderr.read()
    process.stdin.close()
    assert remote_qemu.returncode_of(process.returncode) == returncode
    assert out == b"console\n"                      # QEMU's stdout: the console chardev
    assert b"output\n" in err and remote_qemu.remote_pid(err.decode()) is not None
    assert tmp_path.exists()                        # the harness fetches from it, then removes it itself


def test_closing_the_wrappers_stdin_kills_qemu_and_removes_the_run_dir(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    process = run_wrapper(run_dir, ["sleep", "60"])
    assert process.stderr is not None and process.stdin is not None
    pid = remote_qemu.remote_pid(process.stderr.readline().decode())
    assert pid is not None
    start = time.monotonic()
    process.stdin.close()                           # what sshd does when the harness's connection is gone
    process.wait(10)
    assert remote_qemu.returncode_of(process.returncode) == -signal.SIGKILL
    assert time.monotonic() - start < 5
    deadline = time.monotonic() + 5
    while run_dir.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not run_dir.exists()
    assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2]


def test_the_remote_command_quotes_every_argument() -> None:
    command = remote_qemu.remote_command("/tmp/run dir", ["/usr/bin/qemu", "-append", "console=ttyS0 quiet"])
    assert command.startswith("exec sh -c ")
    assert command.endswith(" qmh-remote '/tmp/run dir' /usr/bin/qemu -append 'console=ttyS0 quiet'")


def test_the_test_sshd_takes_keys_only_and_forwards_only_to_its_loopback(tmp_path: Path) -> None:
    lines = sshd.sshd_config(tmp_path, "198.18.0.2", 22).splitlines()
    for line in ["ListenAddress 198.18.0.2:22", "PasswordAuthentication no", "KbdInteractiveAuthentication no",
                 "AuthenticationMethods publickey", "PermitRootLogin prohibit-password", "PermitOpen 127.0.0.1:*",
                 "AllowTcpForwarding local", "X11Forwarding no", "AllowAgentForwarding no", "PermitTunnel no",
                 f"HostKey {tmp_path / 'host_ed25519'}", f"AuthorizedKeysFile {tmp_path / 'authorized_keys'}"]:
        assert line in lines


@pytest.mark.parametrize("host_class", ["LocalHost", "RemoteQemu"])
def test_both_hosts_satisfy_the_qemu_host_interface(host_class: str) -> None:
    """LocalHost and RemoteQemu are each a QemuHost: every member, with the parameters the Protocol names (Machine
    calls them by position, so a renamed or missing parameter would only show on that host's first launch)."""
    import inspect
    from harness.hosts.local import LocalHost
    from harness.hosts.qemu_host import QemuHost
    cls = {"LocalHost": LocalHost, "RemoteQemu": remote_qemu.RemoteQemu}[host_class]
    host = LocalHost() if cls is LocalHost else remote_qemu.RemoteQemu(connection=None)  # type: ignore[arg-type]
    assert isinstance(host, QemuHost)
    members = [name for name, value in vars(QemuHost).items() if callable(value) and not name.startswith("_")]
    assert len(members) == 16
    for name in members:
        wanted = list(inspect.signature(getattr(QemuHost, name)).parameters)
        assert len(inspect.signature(getattr(cls, name)).parameters) == len(wanted), name
