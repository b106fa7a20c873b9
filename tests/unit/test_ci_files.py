"""The nightly CI pipelines (GitLab, QEMU's own CI, and GitHub Actions) are valid against the official schemas
that check-jsonschema vendors (no network), and that check does fail on a broken pipeline."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CHECK = Path(sys.executable).with_name("check-jsonschema")   # installed by scripts/setup.sh (the `dev` extra)
PIPELINES = [(".gitlab-ci.yml", "vendor.gitlab-ci"), (".github/workflows/nightly.yml", "vendor.github-workflows")]


def check(path: Path, schema: str) -> subprocess.CompletedProcess[str]:
    assert CHECK.exists(), f"{CHECK} missing: run `make setup` (scripts/setup.sh installs the dev extra)"
    return subprocess.run([str(CHECK), "--builtin-schema", schema, str(path)], capture_output=True, text=True,
                          timeout=120)


@pytest.mark.parametrize("path, schema", PIPELINES, ids=[p for p, _ in PIPELINES])
def test_pipeline_matches_the_official_schema(path: str, schema: str) -> None:
    proc = check(REPO / path, schema)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_a_broken_pipeline_is_refused(tmp_path: Path) -> None:
    broken = tmp_path / "nightly.yml"
    broken.write_text((REPO / ".github/workflows/nightly.yml").read_text()
                      .replace("timeout-minutes: 300", "timeout-minutes: [300]"))
    assert check(broken, "vendor.github-workflows").returncode != 0
