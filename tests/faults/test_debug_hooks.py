"""The hooks QEMU developers debug with: --qemu-wrapper runs the chosen side's QEMU under a command (here a script
that logs its arguments and execs them, as gdb/valgrind/rr would run QEMU), --keep-workdir failed keeps a failed
test's work dir (the migration file) in its artefacts, and nothing else is left behind (the fault suite's check)."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
INNER = Path(__file__).parent / "inner" / "inner_keep.py"


# The child boots one guest: this test holds its CPU and the child takes none (as test_interrupts.py).
@pytest.mark.cpus(1)
@pytest.mark.usefixtures("cpu_budget")
def test_wrapper_runs_qemu_and_a_failed_tests_workdir_is_kept(tmp_path: Path) -> None:
    log = tmp_path / "wrapped.log"
    wrapper = tmp_path / "log-and-exec"
    wrapper.write_text(f'#!/bin/sh\necho "$@" >> {shlex.quote(str(log))}\nexec "$@"\n')
    wrapper.chmod(0o755)
    artefacts = tmp_path / "artefacts"
    proc = subprocess.run([sys.executable, "-m", "pytest", str(INNER), "--accel", "tcg", "-p", "no:cacheprovider",
                           "-q", "--artefacts", str(artefacts), "--qemu-wrapper", str(wrapper),
                           "--qemu-wrapper-side", "source", "--keep-workdir", "failed", "--cpu-budget", "0"],
                          cwd=ROOT, env={**os.environ, "QMH_INNER": "1"}, capture_output=True, text=True,
                          timeout=300)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 1 and "deliberate failure after saving" in output, output   # the test's own failure

    wrapped = log.read_text().splitlines()
    assert len(wrapped) == 1 and "-name source," in wrapped[0] and "qemu-system-" in wrapped[0], wrapped
    test_dir = next((artefacts / "latest").glob("*inner_keep*"))
    assert (test_dir / "source.cmdline.sh").read_text().splitlines()[-1].startswith(shlex.quote(str(wrapper)))
    kept = test_dir / "workdir"
    files = [p for p in kept.rglob("*") if p.is_file()]
    assert any(p.stat().st_size > 1 << 20 for p in files), f"no migration file kept in {kept}: {files}"
    assert not [p for p in kept.rglob("*") if p.is_socket()] and not (kept / ".owner").exists()
    assert "QEMU wrapper" in (artefacts / "latest" / "results.json").read_text()
