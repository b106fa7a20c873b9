"""The QEMU 10.0.2 source tree the validate builds unpack (qemu-build/fetch-source.sh into build/qemu/src): its
scripts/ are QEMU's own stream tools (analyze-migration.py, vmstate-static-checker.py), used as independent
readers of what a QEMU wrote."""

from __future__ import annotations

from pathlib import Path

from harness.core.checkout import ROOT

QEMU_SOURCE = ROOT / "build" / "qemu" / "src" / "qemu-10.0.2"
FETCH_HINT = "qemu-build/fetch-source.sh build/qemu/src (make validate runs it)"


def qemu_script(name: str, source: Path = QEMU_SOURCE) -> Path | None:
    """scripts/NAME of the unpacked source, or None when no source tree is there."""
    path = source / "scripts" / name
    return path if path.is_file() else None
