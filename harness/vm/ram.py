"""Guest RAM of a migrated pair: both (paused) sides dumped with pmemsave and digested page by page where each dump
is (Machine.ram_digests), the digests compared by harness.analysis.integrity."""

from __future__ import annotations

from pathlib import Path

from harness.analysis.integrity import RamComparison, compare_digests
from harness.vm.machine import Machine


def compare_guest_ram(source: Machine, destination: Machine, size_bytes: int, workdir: Path) -> RamComparison:
    """Both machines must be paused (source after completion, destination started with -S)."""
    digests = [m.ram_digests(workdir / f"{m.name}.ram", size_bytes) for m in (source, destination)]
    return compare_digests(*digests)
