"""`pytest --fixtures` documents every harness fixture, and needs no QEMU, image or artefacts dir to do so."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_every_harness_fixture_has_its_documentation_in_pytest_fixtures(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--fixtures",
                           "tests/behaviour/test_basics.py", "--image-dir", str(tmp_path / "no-image"),
                           "--qemu-binary", str(tmp_path / "no-qemu")],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    ours = proc.stdout.split("fixtures defined from harness.pytest_plugin", 1)[1]
    names = re.findall(r"^(\w+)(?: \[\w+ scope\])? -- ", ours, flags=re.M)
    assert {"testbed", "guest", "pair", "paused_pair", "artefacts", "environment"} <= set(names), ours
    assert "no docstring available" not in ours, ours
