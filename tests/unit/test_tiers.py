"""Tiers in the manner of QEMU's smoke / --full split (#35): `make check` runs `-m "not slow"`, `make test`
everything. Every behaviour keeps at least one case in `make check`: each behaviour file has a case that is not
slow, or names here the case in `make check` that represents it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# A behaviour file whose every case is slow → the `make check` case that exercises the same behaviour.
# (test_postcopy_recovery.py, once all slow, now keeps its handshake case in make check.) Free page reporting is
# one page-lifecycle transition (a page freed by the guest, discarded by the host, reused): `make check` keeps the
# page-lifecycle precopy case; the discard path itself (40 s on TCG) runs in `make test`.
REPRESENTED_ELSEWHERE: dict[str, str] = {
    "tests/behaviour/test_free_page_reporting.py": "tests/behaviour/test_page_lifecycle.py::test_page_lifecycle_precopy",
}


def collected(*marks: str) -> set[str]:
    out = subprocess.run([sys.executable, "-m", "pytest", "tests/behaviour", "--collect-only", "-q",
                          "-p", "no:cacheprovider", *marks], cwd=ROOT, capture_output=True, text=True, timeout=120)
    nodes = {line.strip() for line in out.stdout.splitlines() if "::" in line}
    assert nodes, f"nothing collected:\n{out.stdout[-2000:]}\n{out.stderr[-2000:]}"
    return nodes


def test_every_behaviour_keeps_a_case_in_make_check() -> None:
    everything, check = collected(), collected("-m", "not slow")
    files = {node.split("::")[0] for node in everything}
    in_check = {node.split("::")[0] for node in check}
    unrepresented = sorted(files - in_check - set(REPRESENTED_ELSEWHERE))
    assert not unrepresented, f"behaviour files with every case slow and no representative: {unrepresented}"
    for file, representative in REPRESENTED_ELSEWHERE.items():
        assert any(node.startswith(representative) for node in check), f"{file}: {representative} is not in make check"
    assert len(check) < len(everything), "nothing is slow: make check and make test would be the same"


def test_every_test_module_has_a_basename_of_its_own() -> None:
    """pytest imports test modules by basename (rootdir, no packages): a second tests/*/test_x.py stops `make check`
    at collection ("import file mismatch"), as tests/unit/test_hugepages.py beside the behaviour one did."""
    seen: dict[str, Path] = {}
    clashes = []
    for path in sorted((ROOT / "tests").rglob("test_*.py")):
        if path.name in seen:
            clashes.append(f"{seen[path.name].relative_to(ROOT)} and {path.relative_to(ROOT)}")
        seen.setdefault(path.name, path)
    assert not clashes, "test modules sharing a basename: " + "; ".join(clashes)
