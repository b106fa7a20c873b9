"""How one QEMU binary is started, decided in one place for a QEMU started here and one started on another host.

A binary outside a system prefix (a build tree, Debian's 7.2 unpacked by scripts/fetch-debian-qemu.sh, a variant
of `make validate`) does not find what its own prefix would give it:
  - firmware: its pc-bios beside it, else the distribution's blobs — one `-L DIR` each (a build tree's
    `firmware-dirs.txt`, one directory a line, replaces the guess: qemu-build/ writes it);
  - modules: a distribution build loads TCG itself as a module (accel-tcg-ARCH.so) from a compiled-in path, where
    the installed QEMU's modules of another version sit: QEMU_MODULE_DIR names the unpacked tree's own.
`launch_for` decides both from what exists around the binary, read through a `FileView`: `LocalFiles` for a QEMU
started here (harness.hosts.local.LocalHost), an SFTP view for one on a remote host (harness.hosts.ssh), so a
binary gets the same launch whoever starts it. The machine type and CPU model are the pair's choice
(harness.qemu.compat), given to both sides' command lines by harness.vm.machine the same way for either host.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any, Protocol, Sequence

# Where Debian's packages put the firmware a self-built QEMU does not install (-L search path).
SYSTEM_FIRMWARE_DIRS = ("/usr/share/qemu", "/usr/share/seabios", "/usr/lib/ipxe/qemu")
# A binary under one of these prefixes is installed: it knows its own firmware and module dirs.
SYSTEM_PREFIXES = ("/usr/bin/", "/usr/local/bin/", "/bin/")
# Build trees (qemu-build/) list their firmware dirs here, next to the binary.
FIRMWARE_LIST = "firmware-dirs.txt"
# Where a distribution package puts a QEMU's modules, relative to its prefix (<prefix>/bin/qemu-system-ARCH).
MODULE_DIRS = ("lib/x86_64-linux-gnu/qemu", "lib/s390x-linux-gnu/qemu", "lib/aarch64-linux-gnu/qemu",
               "lib64/qemu", "lib/qemu")


class FileView(Protocol):
    """What launch_for needs to see of the host the binary is on."""

    def is_dir(self, path: str) -> bool: ...

    def is_file(self, path: str) -> bool: ...

    def read_text(self, path: str) -> str: ...


class LocalFiles:
    def is_dir(self, path: str) -> bool:
        return os.path.isdir(path)

    def is_file(self, path: str) -> bool:
        return os.path.isfile(path)

    def read_text(self, path: str) -> str:
        with open(path) as f:
            return f.read()


@dataclass(frozen=True)
class Launch:
    """The start of a QEMU command line for one binary: its environment, the program, its firmware search path."""
    program: str
    firmware_dirs: tuple[str, ...] = ()
    module_dir: str | None = None

    def firmware_args(self) -> list[str]:
        return [arg for directory in self.firmware_dirs for arg in ("-L", directory)]

    def environment(self) -> list[str]:
        """`env QEMU_MODULE_DIR=…`, or nothing: the environment as a command prefix, so it reaches QEMU the same
        way through a local exec, `ip netns exec` and a remote shell, and is in *.cmdline.sh. It goes before any
        wrapper (a debugger then runs QEMU itself, not `env`)."""
        return ["env", f"QEMU_MODULE_DIR={self.module_dir}"] if self.module_dir else []

    def command(self, wrapper: Sequence[str] = ()) -> list[str]:
        """The environment, the wrapper (ip netns exec, gdb, valgrind…), the program and its -L dirs."""
        return [*self.environment(), *wrapper, self.program, *self.firmware_args()]

    def argv(self) -> list[str]:
        return self.command()

    def to_json(self) -> dict[str, Any]:
        return {"program": self.program, "firmware_dirs": list(self.firmware_dirs), "module_dir": self.module_dir}


def launch_for(program: str, files: FileView) -> Launch:
    """The launch of the QEMU binary at absolute path `program` on the host `files` shows."""
    path = PurePosixPath(program)
    if program.startswith(SYSTEM_PREFIXES):
        return Launch(program)
    bindir = path.parent
    listed = str(bindir / FIRMWARE_LIST)
    if files.is_file(listed):
        candidates = [line.strip() for line in files.read_text(listed).splitlines() if line.strip()]
    else:
        # Its own pc-bios first (a build tree: the binary in build/, pc-bios in build/ or the source tree), then the
        # distribution's blobs — the same ones the installed QEMU loads, so ROM sizes match across versions.
        candidates = [str(bindir / "pc-bios"), str(bindir.parent / "pc-bios"), *SYSTEM_FIRMWARE_DIRS]
    firmware = tuple(dict.fromkeys(d for d in candidates if files.is_dir(d)))
    return Launch(program, firmware, module_dir(path, files))


def module_dir(program: PurePosixPath, files: FileView) -> str | None:
    """The dir with this binary's own TCG module (accel-tcg-ARCH.so) under its prefix, if it has one: a
    distribution build unpacked elsewhere. A build tree loads its modules from beside itself (None)."""
    target = program.name.removeprefix("qemu-system-")
    prefix = program.parent.parent
    for relative in MODULE_DIRS:
        directory = prefix / relative
        if files.is_file(str(directory / f"accel-tcg-{target}.so")):
            return str(directory)
    return None
