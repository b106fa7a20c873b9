"""The x86_64 image's bzImage and the machines that boot it (for S3 resume) — pure: nothing boots."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.qemu.arch import arch_spec
from harness.qemu.binary import QemuBinary
from harness.qemu.image import GuestImage
from harness.vm.config import MachineConfig
from harness.vm.exits import MachineError
from harness.vm.machine import Machine


def make_image(directory: Path, bzimage: str | None) -> GuestImage:
    (directory / "ssh").mkdir(parents=True)
    for name in ("kernel", "initramfs.cpio", "ssh/id_ed25519", "ssh/host_key.pub", *([bzimage] if bzimage else [])):
        (directory / name).write_text("x")
        (directory / name).chmod(0o600)
    manifest = {"arch": "x86_64", "kernel": "kernel", "initrd": "initramfs.cpio", "cmdline": "console=ttyS0",
                "kernel_bzimage": bzimage}
    (directory / "manifest.json").write_text(json.dumps(manifest))
    return GuestImage.load(directory)


def kernel_arg(image: GuestImage, tmp_path: Path, bzimage: bool) -> str:
    config = MachineConfig(arch=arch_spec("x86_64"), bzimage=bzimage)
    machine = Machine(QemuBinary(Path("/usr/bin/qemu-system-x86_64")), image, config, "m", tmp_path / "artefacts")
    args = machine.command_line(tmp_path / "qmp.sock", ssh_port=2222)
    return args[args.index("-kernel") + 1]


def test_a_machine_boots_the_pvh_kernel_unless_it_asks_for_the_bzimage(tmp_path: Path) -> None:
    image = make_image(tmp_path / "img", "kernel.bzimage")
    assert image.bzimage == tmp_path / "img" / "kernel.bzimage"
    assert kernel_arg(image, tmp_path, bzimage=False) == str(tmp_path / "img" / "kernel")
    assert kernel_arg(image, tmp_path, bzimage=True) == str(tmp_path / "img" / "kernel.bzimage")


def test_asking_for_a_bzimage_the_image_lacks_says_so(tmp_path: Path) -> None:
    image = make_image(tmp_path / "img", None)
    assert image.bzimage is None
    with pytest.raises(MachineError, match="has no bzImage"):
        kernel_arg(image, tmp_path, bzimage=True)
