"""Per-test gcov data (qmh-mutate's coverage run): `-p harness.plugin.gcov_prefix` with QMH_GCOV_ROOT=DIR gives
every test its own GCOV_PREFIX, DIR/<test's safe name>, before its fixtures start a QEMU.

A QEMU built with --coverage writes its .gcda files at exit under $GCOV_PREFIX + the object directory's absolute
path (merged with what an earlier QEMU of the same test wrote there), so one test's directory holds exactly what
that test's QEMUs executed: no reset between tests is needed, and xdist workers (separate processes, one test at a
time each) never mix their tests' data. A QEMU killed by SIGKILL writes nothing (the harness quits QEMU through
QMP or SIGTERM, which exit normally); a QEMU started on another host (test_remote's ssh side) writes there.
Without QMH_GCOV_ROOT the plugin does nothing.
"""

from __future__ import annotations

import os

import pytest

from harness.report.artefacts import safe_name

ROOT_VARIABLE = "QMH_GCOV_ROOT"


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> None:
    root = os.environ.get(ROOT_VARIABLE)
    if root:
        os.environ["GCOV_PREFIX"] = os.path.join(root, safe_name(item.nodeid))
