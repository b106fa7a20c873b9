"""The layers are enforced, not just drawn: pyproject.toml's import-linter contracts hold for harness/, and they fail
when a module imports upwards, when analysis opens a socket, or when two modules import each other."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


def lint_imports(checkout: Path, *contracts: str) -> subprocess.CompletedProcess[str]:
    """lint-imports over `checkout`'s harness/ with its pyproject.toml, all contracts or the ones named (run there:
    the checkout's harness is what grimp finds first on the path)."""
    only = [arg for contract in contracts for arg in ("--contract", contract)]
    return subprocess.run([str(LINT_IMPORTS), str(checkout / "pyproject.toml"), "--no-cache", *only], cwd=checkout,
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "COLUMNS": "200"})   # no wrapped lines in the report


def test_harness_keeps_its_import_contracts() -> None:
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


@pytest.fixture
def copy_of_harness(tmp_path: Path) -> Path:
    shutil.copytree(ROOT / "harness", tmp_path / "harness", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


def test_the_copy_keeps_the_contracts_untouched(copy_of_harness: Path) -> None:
    """The control for the cases below: an unmodified copy passes, so their failures are the added import's."""
    result = lint_imports(copy_of_harness)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("module, added, contract, culprit", [
    # An upward import: the analysis layer reaching for the VM stack.
    ("analysis/series.py", "from harness.vm.machine import Machine", "layers", "harness.analysis.series -> harness.vm"),
    # core importing the migration layer.
    ("core/stats.py", "from harness.migration import testbed", "layers", "harness.core.stats -> harness.migration"),
    # qemu and report share a layer and import neither the other.
    ("report/index.py", "from harness.qemu import binary", "layers", "harness.report.index -> harness.qemu"),
    # analysis opening a socket.
    ("analysis/oracles.py", "import socket", "pure-analysis", "harness.analysis.oracles -> socket"),
    # Two sibling modules importing each other (workloads imports guest).
    ("vm/guest.py", "from harness.vm import workloads", "acyclic", "No cycles are allowed in harness.vm."),
])
def test_contracts_fail_on_a_deliberate_violation(copy_of_harness: Path, module: str, added: str, contract: str,
                                                  culprit: str) -> None:
    path = copy_of_harness / "harness" / module
    path.write_text(path.read_text() + f"\n{added}  # deliberate violation\n")
    result = lint_imports(copy_of_harness, contract)
    assert result.returncode != 0, result.stdout + result.stderr
    assert "1 broken" in result.stdout and culprit in result.stdout, result.stdout


def test_matrix_reads_result_files_without_loading_the_vm_stack() -> None:
    """What the layers buy: the matrix tool (result files in, a table out) loads no Machine, host, migration or SSH
    code — checked in a fresh interpreter, where nothing else has imported them first."""
    probe = ("import sys, harness.tools.matrix; print(sorted(m for m in sys.modules if m.startswith(("
             "'harness.vm', 'harness.hosts', 'harness.migration', 'harness.plugin', 'paramiko', 'qemu.qmp'))))")
    result = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
