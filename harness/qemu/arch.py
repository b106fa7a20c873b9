"""Everything that differs between guest architectures, in one table."""

from __future__ import annotations

import platform
from dataclasses import dataclass


@dataclass(frozen=True)
class ArchSpec:
    name: str
    qemu_binary: str
    machine: str
    cpu_tcg: str                 # one binary on both sides (harness.qemu.compat)
    cpu_kvm: str
    # Named models for two different binaries, preferred first: harness.qemu.compat takes the first both define
    # and can run (TCG, or this host under KVM). Versioned (-v1) names mean the same CPU in every version.
    cpu_models: tuple[str, ...]
    nic: str
    disk: str
    # How the serial console chardev is attached.
    console_args: tuple[str, ...]
    # Extra -device options that keep boot fast (no option ROM to load, no PXE).
    nic_options: str = ""
    # The virtio-serial bus device (the guest heartbeat's port, harness.vm.heartbeat).
    virtio_serial: str = "virtio-serial-pci"


ARCHES: dict[str, ArchSpec] = {
    "x86_64": ArchSpec(
        name="x86_64",
        qemu_binary="qemu-system-x86_64",
        machine="q35",
        cpu_tcg="max",
        cpu_kvm="host",
        cpu_models=("Westmere-v1", "Nehalem-v1", "qemu64-v1"),
        nic="virtio-net-pci",
        disk="virtio-blk-pci",
        console_args=("-serial", "chardev:console"),
        nic_options=",romfile=",
    ),
    "s390x": ArchSpec(
        name="s390x",
        qemu_binary="qemu-system-s390x",
        machine="s390-ccw-virtio",
        cpu_tcg="max",
        cpu_kvm="host",
        cpu_models=("qemu",),
        nic="virtio-net-ccw",
        virtio_serial="virtio-serial-ccw",
        disk="virtio-blk-ccw",
        console_args=("-device", "sclpconsole,chardev=console"),
    ),
}


def host_arch() -> str:
    machine = platform.machine()
    return {"amd64": "x86_64", "AMD64": "x86_64"}.get(machine, machine)


def arch_spec(name: str) -> ArchSpec:
    try:
        return ARCHES[name]
    except KeyError:
        raise ValueError(f"unsupported guest arch {name!r}; known: {', '.join(sorted(ARCHES))}") from None
