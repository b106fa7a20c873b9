"""harness.qemu.launch: one binary's launch (firmware -L dirs, module dir), decided from the files around it, the
same for a QEMU started here and one on a remote host (whose files the decision reads over SFTP)."""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace
from typing import BinaryIO

from harness.hosts.ssh import RemoteFiles
from harness.qemu.launch import SYSTEM_FIRMWARE_DIRS, Launch, LocalFiles, launch_for


class Files:
    """A host's files as launch_for sees them: a set of dirs and a dict of files (a remote host, or this one)."""

    def __init__(self, dirs: set[str], files: dict[str, str] | None = None) -> None:
        self.dirs, self.files = dirs, files or {}

    def is_dir(self, path: str) -> bool:
        return path in self.dirs

    def is_file(self, path: str) -> bool:
        return path in self.files

    def read_text(self, path: str) -> str:
        return self.files[path]


DEBIAN_72 = "/srv/qemu/debian-7.2/usr/bin/qemu-system-x86_64"
DEBIAN_72_MODULES = "/srv/qemu/debian-7.2/usr/lib/x86_64-linux-gnu/qemu"


def test_an_installed_binary_starts_bare() -> None:
    files = Files(set(SYSTEM_FIRMWARE_DIRS), {"/usr/lib/x86_64-linux-gnu/qemu/accel-tcg-x86_64.so": ""})
    assert launch_for("/usr/bin/qemu-system-x86_64", files) == Launch("/usr/bin/qemu-system-x86_64")


def test_an_unpacked_distribution_build_gets_its_modules_and_the_hosts_firmware() -> None:
    """Debian's 7.2 unpacked beside the installed 10.0 (the case of #36: a remote 7.2 destination lacked -L)."""
    files = Files({"/usr/share/qemu", "/usr/share/seabios", "/srv/qemu/debian-7.2/usr/lib/qemu"},
                  {f"{DEBIAN_72_MODULES}/accel-tcg-x86_64.so": ""})
    launch = launch_for(DEBIAN_72, files)
    assert launch == Launch(DEBIAN_72, ("/usr/share/qemu", "/usr/share/seabios"), DEBIAN_72_MODULES)
    assert launch.command() == ["env", f"QEMU_MODULE_DIR={DEBIAN_72_MODULES}", DEBIAN_72,
                                "-L", "/usr/share/qemu", "-L", "/usr/share/seabios"]


def test_the_environment_goes_before_a_wrapper_and_the_program_after_it() -> None:
    launch = Launch("/q/qemu-system-x86_64", ("/fw",), "/mods")
    assert launch.command(["ip", "netns", "exec", "ns", "gdb", "--args"]) == [
        "env", "QEMU_MODULE_DIR=/mods", "ip", "netns", "exec", "ns", "gdb", "--args", "/q/qemu-system-x86_64",
        "-L", "/fw"]
    assert Launch("/q/qemu-system-x86_64").command(["rr", "record"]) == ["rr", "record", "/q/qemu-system-x86_64"]


def test_a_build_tree_gets_its_pc_bios_first_and_no_module_dir() -> None:
    files = Files({"/src/qemu/build/pc-bios", "/src/qemu/pc-bios", "/usr/share/seabios"})
    launch = launch_for("/src/qemu/build/qemu-system-x86_64", files)
    assert launch.firmware_dirs == ("/src/qemu/build/pc-bios", "/src/qemu/pc-bios", "/usr/share/seabios")
    assert launch.module_dir is None


def test_a_firmware_list_beside_the_binary_replaces_the_guess() -> None:
    files = Files({"/b/pc-bios", "/opt/fw", "/usr/share/qemu"},
                  {"/b/v/firmware-dirs.txt": "/opt/fw\n\n/missing\n/opt/fw\n"})
    assert launch_for("/b/v/qemu-system-x86_64", files).firmware_dirs == ("/opt/fw",)


def test_a_module_dir_needs_this_targets_tcg_module() -> None:
    """Debian's tree has usr/lib/qemu (helpers) too: only a dir with accel-tcg-<target>.so is a module dir."""
    files = Files(set(), {"/d/usr/lib/qemu/qemu-bridge-helper": "",
                          "/d/usr/lib/s390x-linux-gnu/qemu/accel-tcg-s390x.so": ""})
    assert launch_for("/d/usr/bin/qemu-system-x86_64", files).module_dir is None
    assert launch_for("/d/usr/bin/qemu-system-s390x", files).module_dir == "/d/usr/lib/s390x-linux-gnu/qemu"


def test_local_files_read_this_host(tmp_path: Path) -> None:
    binary = tmp_path / "usr" / "bin" / "qemu-system-x86_64"
    modules = tmp_path / "usr" / "lib" / "x86_64-linux-gnu" / "qemu"
    modules.mkdir(parents=True)
    binary.parent.mkdir(parents=True)
    (modules / "accel-tcg-x86_64.so").write_text("")
    (binary.parent / "firmware-dirs.txt").write_text(f"{tmp_path}\n")
    assert launch_for(str(binary), LocalFiles()) == Launch(str(binary), (str(tmp_path),), str(modules))


class _LocalSftp:
    """paramiko's SFTPClient calls launch_for makes, answered from this host's files."""

    def stat(self, path: str) -> os.stat_result:
        return os.stat(path)

    def open(self, path: str) -> BinaryIO:
        return open(path, "rb")


def test_a_remote_host_decides_the_same_launch_as_this_one(tmp_path: Path) -> None:
    """The remote's view (SFTP stat/open, harness.hosts.ssh.RemoteFiles) of the same files gives the same launch
    as LocalFiles: the decision does not depend on who starts the QEMU."""
    binary = tmp_path / "usr" / "bin" / "qemu-system-x86_64"
    modules = tmp_path / "usr" / "lib" / "x86_64-linux-gnu" / "qemu"
    modules.mkdir(parents=True)
    (modules / "accel-tcg-x86_64.so").write_text("")
    binary.parent.mkdir(parents=True)
    binary.write_text("")
    connection = SimpleNamespace(sftp=lambda action: action(_LocalSftp()))
    remote = launch_for(str(binary), RemoteFiles(connection))  # type: ignore[arg-type]
    assert remote == launch_for(str(binary), LocalFiles())
    assert remote.module_dir == str(modules) and remote.firmware_dirs   # this host's /usr/share/qemu at least
