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
    ours = proc.stdout.split("fixtures defined from harness.plugin.fixtures", 1)[1]
    names = re.findall(r"^(\w+)(?: \[\w+ scope\])? -- ", ours, flags=re.M)
    assert {"testbed", "guest", "pair", "paused_pair", "artefacts", "environment"} <= set(names), ours
    assert "no docstring available" not in ours, ours


def test_the_public_classes_say_what_they_are() -> None:
    """What a test author touches besides the fixtures: each has a docstring (help() and the API read the same)."""
    from harness.vm.machine import Machine
    from harness.migration.migrate import Migration
    from harness.migration.config import MigrationConfig
    from harness.analysis.oracles import Verdict
    from harness.report.artefacts import Artefacts
    from harness.migration.testbed import Environment, Testbed
    for cls in (Machine, Migration, MigrationConfig, Testbed, Environment, Artefacts, Verdict):
        doc = cls.__doc__ or ""
        assert doc.strip() and not doc.startswith(f"{cls.__name__}("), f"{cls.__name__} has no docstring"
