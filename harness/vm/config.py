"""A Machine's configuration: MachineConfig and the block devices (Disk) it attaches."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from harness.qemu.arch import ArchSpec


@dataclass(frozen=True)
class Disk:
    """A block device: a -blockdev (JSON) and the guest device that exposes it."""
    node_name: str
    blockdev: dict[str, Any]
    device_options: str = ""


@dataclass(frozen=True)
class MachineConfig:
    """What one QEMU is launched with (harness.vm.machine.Machine builds the command line from it)."""
    arch: ArchSpec
    accel: str = "tcg"
    accel_properties: tuple[str, ...] = ()   # e.g. ("dirty-ring-size=4096",): -accel kvm,dirty-ring-size=4096
    memory_mib: int = 512
    # RAM this much short of memory_mib (a known bug's workaround, harness.qemu.known_bugs: a size that is not a
    # multiple of 256 KiB); QEMU rounds -m to 8 KiB, so a multiple of 8. Read the size as ram_bytes / ram_size.
    ram_short_kib: int = 0
    cpus: int = 1
    machine_type: str | None = None      # None: the arch's alias (q35)
    cpu: str | None = None               # None: the arch's default for the accelerator (max / host)
    incoming: str | None = None          # e.g. "defer"
    start_paused: bool = False           # -S
    network: bool = True
    disks: tuple[Disk, ...] = ()
    trace_events: tuple[str, ...] = ()
    globals: tuple[str, ...] = ()        # -global values, e.g. "migration.multifd-flush-after-each-section=on"
    memory_backend: str | None = None    # e.g. "memory-backend-file,mem-path=/dev/hugepages,share=on"
    extra_args: tuple[str, ...] = ()
    qmp_timeout: float = 60.0
    wrapper: tuple[str, ...] = ()        # --qemu-wrapper: prefixed to the command line (gdb, valgrind, rr)
    # The network namespace QEMU runs in (--topology netns; the wrapper then starts with `ip netns exec NAME`):
    # its SSH hostfwd is on that namespace's loopback, so the guest shell connects from inside it.
    netns: str | None = None
    # The remote host this QEMU runs on (harness.hosts.hosts_file.RemoteHost; Testbed gives the Machine its
    # RemoteQemu), or None: here.
    remote: Any = None
    # A virtio-serial port the guest `heartbeat` workload ticks on, read and timestamped by the harness
    # (harness.vm.heartbeat): the blackout as the guest lived it. Local QEMUs only.
    heartbeat: bool = False
    # Boot the image's bzImage (GuestImage.bzimage) through the Linux boot protocol instead of its PVH kernel: a
    # guest that must resume from S3 (suspend to RAM) needs it; SeaBIOS resets a PVH-booted kernel on wakeup.
    bzimage: bool = False

    @property
    def ram_bytes(self) -> int:
        """Guest RAM as the guest and a RAM dump see it."""
        return self.memory_mib * 1024 * 1024 - self.ram_short_kib * 1024

    @property
    def ram_size(self) -> str:
        """Guest RAM as -m and a memory backend's size= take it."""
        return f"{self.memory_mib * 1024 - self.ram_short_kib}K" if self.ram_short_kib else f"{self.memory_mib}M"
