"""Choose KVM only when a real guest demonstrably runs under it; otherwise TCG, saying why in one line.

On some hosts /dev/kvm exists but guests hit emulation failures or stall while QEMU reports "running" (nested
virtualisation): only a probe boot with a deadline tells. The verdict is cached per host boot, QEMU binary and image.

The same path on every host arch: KVM needs the guest arch to be the host's (an s390x guest on an s390x host, an
LPAR or a KVM guest with nesting), a usable /dev/kvm, and a probe boot of the real guest with `-accel kvm` and the
arch's KVM CPU model (`-cpu host`, harness/qemu/arch.py). What is arch-specific is only what to do when /dev/kvm is
missing (KVM_HINTS).
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from harness.qemu.arch import arch_spec, host_arch
from harness.qemu.image import GuestImage
from harness.vm.config import MachineConfig
from harness.vm.machine import Machine
from harness.qemu.binary import QemuBinary, binary_key
from harness.core.files import atomic_write_text

log = logging.getLogger(__name__)

PROBE_TIMEOUT = 15.0

# What to do about a missing /dev/kvm, per host arch: said with the TCG fallback, so a user knows what to fix.
KVM_HINTS = {
    "x86_64": "load kvm_intel or kvm_amd (VT-x/AMD-V enabled in the firmware) and give this user rw on /dev/kvm",
    # KVM on s390x runs guests with the SIE instruction: an LPAR has it, a KVM guest has it when its host runs
    # kvm with nested=1, a z/VM guest does not; without it the kvm module refuses to load ("SIE is not available").
    "s390x": "modprobe kvm (it needs the SIE facility: an LPAR, or a KVM guest whose host has kvm.nested=1; "
             "`grep -w sie /proc/cpuinfo` shows it) and give this user rw on /dev/kvm",
}


@dataclass(frozen=True)
class AccelChoice:
    name: str   # "kvm" | "tcg"
    reason: str

    def describe(self) -> str:
        return f"accelerator: {self.name} ({self.reason})"


def _cache_key(binary: QemuBinary, image: GuestImage) -> str:
    boot_id = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    return binary_key(binary, boot_id, image.inputs_hash)


def kvm_unusable(guest_arch: str, host: str, dev_kvm_usable: bool) -> str | None:
    """Why KVM cannot run this guest here, known without booting anything; None: a probe boot decides."""
    if guest_arch != host:
        return f"guest arch {guest_arch} differs from host arch {host}"
    if not dev_kvm_usable:
        hint = KVM_HINTS.get(host)
        return "/dev/kvm missing or not accessible" + (f"; to use KVM: {hint}" if hint else "")
    return None


def probe_config(image: GuestImage) -> MachineConfig:
    """The probe guest: the test guest itself, on KVM with the arch's KVM CPU model, in less memory."""
    return MachineConfig(arch=arch_spec(image.arch), accel="kvm", memory_mib=256)


def probe_kvm(binary: QemuBinary, image: GuestImage, artefacts: Path, timeout: float = PROBE_TIMEOUT) -> str | None:
    """Boot the guest under KVM; None if it reached SSH and ran a command, else why not."""
    try:
        with Machine(binary, image, probe_config(image), "kvm-probe", artefacts) as machine:
            machine.launch(timeout=timeout)
            seconds = machine.wait_booted(timeout=timeout)
            machine.shell.run("cat /proc/uptime", timeout=5, retry_for=2)
            log.info("KVM probe guest booted to SSH in %.1fs", seconds)
            return None
    except Exception as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return f"KVM probe boot failed within {timeout:.0f}s: {first_line}"


def choose_accel(requested: str, binary: QemuBinary, image: GuestImage, artefacts: Path,
                 cache_dir: Path | None = None) -> AccelChoice:
    if requested in ("tcg", "kvm"):
        return AccelChoice(requested, "requested with --accel")
    if requested != "auto":
        raise ValueError(f"--accel must be auto, kvm or tcg, not {requested!r}")
    unusable = kvm_unusable(image.arch, host_arch(), os.access("/dev/kvm", os.R_OK | os.W_OK))
    if unusable is not None:
        return AccelChoice("tcg", unusable)
    cache = (cache_dir / f"accel-{_cache_key(binary, image)}.json") if cache_dir else None
    if cache is not None and cache.exists():
        try:
            cached = json.loads(cache.read_text())
            return AccelChoice(cached["name"], cached["reason"] + " (cached for this host boot)")
        except (OSError, ValueError, KeyError, TypeError):
            log.warning("ignoring unreadable accelerator cache %s; probing again", cache)
    failure = probe_kvm(binary, image, artefacts)
    choice = (AccelChoice("kvm", "a probe guest booted to SSH under KVM") if failure is None
              else AccelChoice("tcg", failure))
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        # Concurrent sessions probe and write the same cache file: rename, so none reads half of it.
        atomic_write_text(cache, json.dumps(choice.__dict__))
    return choice
