"""Bad --hosts inputs stop the session with exit 4 and one line, as the README's bad-input table does for the other
options (tests/inputs/test_bad_inputs.py); nothing boots. The unreachable host is a closed port on this host's
loopback (nothing else is ever a target here); a remote whose QEMU binary is missing is tests/behaviour/
test_remote.py's (it needs the sshd that test starts)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.inputs.test_bad_inputs import USAGE_ERROR, pytest_run

SECTION = ('[destination]\naddress = "127.0.0.1"\nport = 1\nkey = "id"\nqemu_binary = "/usr/bin/qemu-system-x86_64"\n'
           'image_dir = "/srv/images"\nwork_dir = "/var/tmp"\n')
ROWS = [
    ("not-toml", "[destination\n", "not TOML: "),
    ("missing-key", '[destination]\naddress = "127.0.0.1"\n', "[destination] missing 'key'"),
    ("unknown-section", SECTION.replace("[destination]", "[dst]"), "unknown key or section 'dst' (sections: "
                                                                   "[source], [destination]; top-level keys: "
                                                                   "local_address)"),
    ("unreachable", SECTION, "[destination] root@127.0.0.1:1: cannot connect: ConnectionRefusedError: "),
]


@pytest.mark.parametrize("text, start", [(t, s) for _, t, s in ROWS], ids=[r[0] for r in ROWS])
def test_a_bad_hosts_file_stops_the_session_with_one_line(text: str, start: str, tmp_path: Path) -> None:
    hosts = tmp_path / "hosts.toml"
    hosts.write_text(text)
    proc = pytest_run(tmp_path, "tests/behaviour/test_basics.py", "--hosts", str(hosts), "--accel", "tcg",
                      "--artefacts", str(tmp_path / "artefacts"))
    output = proc.stdout + proc.stderr
    assert proc.returncode == USAGE_ERROR, output
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"ERROR: harness: --hosts {hosts}: {start}"), output


def test_a_missing_hosts_file_is_one_line(tmp_path: Path) -> None:
    proc = pytest_run(tmp_path, "tests/behaviour/test_basics.py", "--hosts", str(tmp_path / "none.toml"),
                      "--accel", "tcg")
    assert proc.returncode == USAGE_ERROR, proc.stdout + proc.stderr
    assert proc.stderr.strip().splitlines() == [
        f"ERROR: harness: --hosts {tmp_path / 'none.toml'}: cannot read it (No such file or directory)"]


def test_hosts_and_a_netns_topology_do_not_mix(tmp_path: Path) -> None:
    hosts = tmp_path / "hosts.toml"
    hosts.write_text(SECTION)
    proc = pytest_run(tmp_path, "tests/behaviour/test_basics.py", "--hosts", str(hosts), "--topology", "netns",
                      "--accel", "tcg")
    assert proc.returncode == USAGE_ERROR, proc.stdout + proc.stderr
    assert proc.stderr.strip().splitlines() == [
        f"ERROR: harness: --hosts {hosts}: a remote host is not in this host's network namespaces; use --topology "
        "loopback (the default)"]
