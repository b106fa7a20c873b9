"""Guest RAM of a migrated pair: both (paused) sides dumped with pmemsave, compared by harness.analysis.integrity."""

from __future__ import annotations

from pathlib import Path

from harness.analysis.integrity import RamComparison, compare_dumps
from harness.vm.machine import Machine


def compare_guest_ram(source: Machine, destination: Machine, size_bytes: int, workdir: Path) -> RamComparison:
    """Both machines must be paused (source after completion, destination started with -S)."""
    dumps = [workdir / f"{m.name}.ram" for m in (source, destination)]
    try:
        source.pmemsave(dumps[0], size_bytes)
        destination.pmemsave(dumps[1], size_bytes)
        return compare_dumps(*dumps)
    finally:
        for dump in dumps:
            dump.unlink(missing_ok=True)
