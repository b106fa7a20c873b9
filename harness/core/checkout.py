"""The harness's repository checkout: the tools that build QEMU (qemu-build/), validate patches (regressions/) or run
pytest over the repository's tests need its files, which an installed package does not carry."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
NEEDED = ("qemu-build", "regressions", "tests/behaviour")


def require_checkout(tool: str, exit_code: int, root: Path | None = None) -> Path:
    """The checkout's root, or one line on stderr and SystemExit(exit_code) when the harness runs from an installed
    package (or a tree without these files)."""
    root = root or ROOT
    missing = [name for name in NEEDED if not (root / name).is_dir()]
    if missing:
        print(f"{tool}: needs a checkout of the harness repository ({missing[0]}/ is not beside {root / 'harness'}): "
              f"run it from one, e.g. `make setup` then .venv/bin/{tool}", file=sys.stderr)
        raise SystemExit(exit_code)
    return root
