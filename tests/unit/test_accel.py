"""The accelerator choice and the command lines it leads to, per guest arch — pure: nothing boots.

The KVM path of an s390x host cannot run on this x86 machine; these tests pin what it does there: the probe and
the tests boot `-accel kvm -cpu host` on s390-ccw-virtio with the ccw devices and the SCLP console, a probe failure
falls back to TCG with its reason, and a missing /dev/kvm says what to do on that arch.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.vm import accel
from harness.qemu.arch import ARCHES, arch_spec
from harness.qemu.image import GuestImage
from harness.vm.config import Disk, MachineConfig
from harness.vm.machine import Machine
from harness.qemu.binary import QemuBinary


def image(tmp_path: Path, arch: str) -> GuestImage:
    return GuestImage(directory=tmp_path, arch=arch, kernel=tmp_path / "kernel", initrd=tmp_path / "initramfs.cpio",
                      cmdline="console=ttysclp0", ready_marker="READY", ssh_user="root",
                      client_key=tmp_path / "id", host_key_pub=tmp_path / "host.pub", inputs_hash="0" * 64)


def command_line(tmp_path: Path, config: MachineConfig, arch: str) -> list[str]:
    binary = QemuBinary(Path(f"/usr/bin/{config.arch.qemu_binary}"))
    machine = Machine(binary, image(tmp_path, arch), config, "m", tmp_path / "artefacts")
    return machine.command_line(tmp_path / "qmp.sock", ssh_port=2222)


def option(args: list[str], name: str) -> list[str]:
    return [args[i + 1] for i, a in enumerate(args) if a == name]


def test_s390x_probe_boots_kvm_with_the_host_cpu_and_ccw_devices(tmp_path: Path) -> None:
    args = command_line(tmp_path, accel.probe_config(image(tmp_path, "s390x")), "s390x")
    assert args[0] == "/usr/bin/qemu-system-s390x"
    assert option(args, "-accel") == ["kvm"] and option(args, "-cpu") == ["host"]
    assert option(args, "-machine") == ["s390-ccw-virtio"]
    assert "sclpconsole,chardev=console" in option(args, "-device")
    assert "virtio-net-ccw,netdev=net0" in option(args, "-device")


def test_s390x_tcg_guest_with_a_disk_uses_max_cpu_and_virtio_blk_ccw(tmp_path: Path) -> None:
    disk = Disk("disk0", {"driver": "null-co", "node-name": "disk0", "size": 1 << 30})
    args = command_line(tmp_path, MachineConfig(arch=arch_spec("s390x"), disks=(disk,)), "s390x")
    assert option(args, "-accel") == ["tcg"] and option(args, "-cpu") == ["max"]
    assert "virtio-blk-ccw,drive=disk0" in option(args, "-device")
    assert "-serial" not in args  # the console is on SCLP, not a UART


@pytest.mark.parametrize("arch", sorted(ARCHES))
def test_kvm_is_tried_only_for_the_host_arch_with_a_usable_dev_kvm(arch: str) -> None:
    assert accel.kvm_unusable(arch, arch, dev_kvm_usable=True) is None
    other = next(a for a in ARCHES if a != arch)
    assert accel.kvm_unusable(other, arch, True) == f"guest arch {other} differs from host arch {arch}"
    missing = accel.kvm_unusable(arch, arch, dev_kvm_usable=False)
    assert missing is not None and missing.startswith("/dev/kvm missing or not accessible; to use KVM: ")


def test_missing_dev_kvm_on_s390x_says_modprobe_kvm_and_sie() -> None:
    reason = accel.kvm_unusable("s390x", "s390x", dev_kvm_usable=False)
    assert reason is not None and "modprobe kvm" in reason and "SIE" in reason and "LPAR" in reason


@pytest.fixture
def s390x_host_with_kvm(monkeypatch: pytest.MonkeyPatch) -> list[MachineConfig]:
    """This process believes it runs on an s390x host with a usable /dev/kvm; the probe boot is replaced by a
    recorder (no QEMU here can boot under KVM). Yields the probe configs the choice asked to boot."""
    booted: list[MachineConfig] = []
    monkeypatch.setattr(accel, "host_arch", lambda: "s390x")
    monkeypatch.setattr(accel.os, "access", lambda path, mode: path == "/dev/kvm")
    monkeypatch.setattr(accel, "probe_kvm", lambda binary, img, artefacts: booted.append(accel.probe_config(img)))
    return booted


def test_auto_on_an_s390x_kvm_host_probes_the_guest_and_picks_kvm(tmp_path: Path,
                                                                   s390x_host_with_kvm: list[MachineConfig]) -> None:
    choice = accel.choose_accel("auto", QemuBinary(Path("/usr/bin/qemu-system-s390x")), image(tmp_path, "s390x"),
                                tmp_path)
    assert choice == accel.AccelChoice("kvm", "a probe guest booted to SSH under KVM")
    [probe] = s390x_host_with_kvm
    assert (probe.arch.name, probe.accel) == ("s390x", "kvm")


def test_auto_on_an_s390x_host_falls_back_to_tcg_with_the_probe_failure(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch,
                                                                        s390x_host_with_kvm: list) -> None:
    monkeypatch.setattr(accel, "probe_kvm", lambda *a: "KVM probe boot failed within 15s: no SSH")
    choice = accel.choose_accel("auto", QemuBinary(Path("/usr/bin/qemu-system-s390x")), image(tmp_path, "s390x"),
                                tmp_path)
    assert choice == accel.AccelChoice("tcg", "KVM probe boot failed within 15s: no SSH")


def test_auto_for_an_x86_guest_on_an_s390x_host_is_tcg_without_a_probe(tmp_path: Path,
                                                                        s390x_host_with_kvm: list) -> None:
    choice = accel.choose_accel("auto", QemuBinary(Path("/usr/bin/qemu-system-x86_64")),
                                image(tmp_path, "x86_64"), tmp_path)
    assert choice == accel.AccelChoice("tcg", "guest arch x86_64 differs from host arch s390x")
    assert s390x_host_with_kvm == []


@pytest.mark.parametrize("arch", sorted(ARCHES))
def test_accelerator_properties_follow_the_accelerator_on_its_option(tmp_path: Path, arch: str) -> None:
    """dirty-limit's guest: `-accel kvm,dirty-ring-size=4096`, and still the host CPU (the accelerator is kvm)."""
    config = MachineConfig(arch=arch_spec(arch), accel="kvm", accel_properties=("dirty-ring-size=4096",))
    args = command_line(tmp_path, config, arch)
    assert option(args, "-accel") == ["kvm,dirty-ring-size=4096"] and option(args, "-cpu") == ["host"]
