"""Run only by tests/faults/test_parallel.py in a child pytest with -n 2 (or two --tx popen workers): two tests that
each boot one guest (one CPU of the budget each, so on two CPUs they can run at once) and say where they ran."""

from __future__ import annotations

import os

import pytest

from harness.vm.machine import Machine
from harness.report.artefacts import Artefacts


@pytest.mark.parametrize("n", [1, 2])
def test_boots_and_says_where(guest: Machine, artefacts: Artefacts, n: int) -> None:
    guest.shell.run("true")
    artefacts.write_json("where", {"pid": os.getpid(), "worker": os.environ.get("PYTEST_XDIST_WORKER"),
                                   "ssh_port": guest.ssh_port, "workdir": str(guest.tmpdir)})
