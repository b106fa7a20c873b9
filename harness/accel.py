"""Choose KVM only when a real guest demonstrably runs under it; otherwise TCG, saying why in one line.

On some hosts /dev/kvm exists but guests hit emulation failures or stall while QEMU reports "running" (nested
virtualisation): only a probe boot with a deadline tells. The verdict is cached per host boot, QEMU binary and image.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from .arch import arch_spec, host_arch
from .image import GuestImage
from .machine import Machine, MachineConfig
from .qemu import QemuBinary, binary_key
from .report import atomic_write_text

log = logging.getLogger(__name__)

PROBE_TIMEOUT = 15.0


@dataclass(frozen=True)
class AccelChoice:
    name: str   # "kvm" | "tcg"
    reason: str

    def describe(self) -> str:
        return f"accelerator: {self.name} ({self.reason})"


def _cache_key(binary: QemuBinary, image: GuestImage) -> str:
    boot_id = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    return binary_key(binary, boot_id, image.inputs_hash)


def probe_kvm(binary: QemuBinary, image: GuestImage, artefacts: Path, timeout: float = PROBE_TIMEOUT) -> str | None:
    """Boot the guest under KVM; None if it reached SSH and ran a command, else why not."""
    config = MachineConfig(arch=arch_spec(image.arch), accel="kvm", memory_mib=256)
    try:
        with Machine(binary, image, config, "kvm-probe", artefacts) as machine:
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
    if image.arch != host_arch():
        return AccelChoice("tcg", f"guest arch {image.arch} differs from host arch {host_arch()}")
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return AccelChoice("tcg", "/dev/kvm missing or not accessible")
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
