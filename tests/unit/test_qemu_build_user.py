"""qemu-build/ for a user after a root set-up (issue #34): what stops a user's build says so in one line, before
anything is built, installed or created — a missing package (named, for `make qemu-build-deps`; apt-get never
called), a tree left root-owned (named, with the chown that mends it). The unit tests run as root: "a user" is
`id -u` answering 1000 in the sourced library, and the tree's "foreign" owner a uid nobody has. The real thing, as a
real user, is .ci/nonroot's last step."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

LIB = Path(__file__).resolve().parents[2] / "qemu-build" / "lib.sh"
# `id -u` says 1000 (a user); apt-get, were it called, would say so on stdout.
AS_A_USER = ('id() { if [[ ${1:-} == -u ]]; then echo 1000; elif [[ ${1:-} == -un ]]; then echo someone; '
             'else command id "$@"; fi; }; apt-get() { echo "apt-get CALLED $*"; }')


def bash(tmp_path: Path, script: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("QB_", "CCACHE"))}
    env |= {"QB_ROOT": str(tmp_path / "qemu")}
    return subprocess.run(["bash", "-euo", "pipefail", "-c", f'source "{LIB}"; {script}'], env=env,
                          capture_output=True, text=True, timeout=60)


def error_lines(proc: subprocess.CompletedProcess[str]) -> list[str]:
    return [line for line in proc.stderr.splitlines() if "ERROR:" in line]


def test_a_user_missing_a_package_is_told_which_in_one_line_and_apt_get_is_not_called(tmp_path) -> None:
    proc = bash(tmp_path, f"{AS_A_USER}; qb_init --no-create; QB_APT_DEPS+=(libqmh-not-installed-dev); "
                          "qb_install_packages")
    assert proc.returncode == 1
    assert "apt-get CALLED" not in proc.stdout
    [line] = error_lines(proc)
    assert line.endswith("ERROR: missing packages: libqmh-not-installed-dev -- as root: make qemu-build-deps "
                         "(or apt-get install --no-install-recommends libqmh-not-installed-dev)")


def test_the_preflight_names_the_missing_package_and_creates_nothing(tmp_path) -> None:
    proc = bash(tmp_path, "qb_init --no-create; QB_APT_DEPS+=(libqmh-not-installed-dev); qb_preflight")
    assert proc.returncode == 1
    assert [line.split("ERROR: ")[1] for line in error_lines(proc)] == [
        "missing packages: libqmh-not-installed-dev -- as root: make qemu-build-deps"]
    assert not (tmp_path / "qemu").exists()


def test_a_root_owned_file_in_a_users_tree_is_found_and_named_with_its_mend(tmp_path) -> None:
    tree = tmp_path / "qemu"
    (tree / "build" / "sub").mkdir(parents=True)
    (tree / "build" / "sub" / "x.o").touch()
    subprocess.run(["chown", "-R", "4242:4242", str(tree)], check=True)
    os.chown(tree / "build" / "sub" / "x.o", 0, 0)        # one file left behind by a root build
    proc = bash(tmp_path, f'qb_foreign_path 4242 "{tree}"')
    assert proc.stdout.strip() == str(tree / "build" / "sub" / "x.o")
    os.chown(tree / "build" / "sub" / "x.o", 4242, 4242)
    assert bash(tmp_path, f'qb_foreign_path 4242 "{tree}" "{tree}/not-made-yet"').stdout == ""


def test_a_users_build_in_a_root_owned_tree_stops_in_qb_init_with_one_line(tmp_path) -> None:
    (tmp_path / "qemu").mkdir()                           # root's, as after a root build in a user's checkout
    proc = bash(tmp_path, f"{AS_A_USER}; qb_init")
    assert proc.returncode == 1
    [line] = proc.stderr.splitlines()
    assert line.endswith(f"ERROR: {tmp_path}/qemu is owned by root, not someone: the QEMU build cannot write "
                         f"there -- as root: chown -R someone: {tmp_path}/qemu (or remove it)")
    assert list((tmp_path / "qemu").iterdir()) == []      # no log dir, no lock made first


def test_root_builds_anywhere(tmp_path) -> None:
    (tmp_path / "qemu").mkdir()
    os.chown(tmp_path / "qemu", 4242, 4242)
    assert bash(tmp_path, "qb_init; echo ok").stdout == "ok\n"


def test_root_installs_exactly_the_missing_packages_with_apt_get(tmp_path) -> None:
    """`make qemu-build-deps` (root): apt-get install of what is missing and nothing else (stubbed here)."""
    proc = bash(tmp_path, 'apt-get() { echo "apt-get $*"; }; qb_init --no-create; '
                          "QB_APT_DEPS+=(libqmh-not-installed-dev); qb_install_packages")
    assert proc.returncode == 0, proc.stderr
    calls = [line for line in proc.stderr.splitlines() if line.startswith("apt-get ")]   # its output goes to stderr
    assert calls == ["apt-get install -y -q --no-install-recommends libqmh-not-installed-dev"]
    assert not (tmp_path / "qemu").exists()
