"""Run only by tests/faults/test_interrupts.py, in a child pytest that it then interrupts (SIGINT, SIGTERM) or
lets pytest-timeout end. Boots a pair, starts a migration that cannot converge, tells the outer test it is under
way (QMH_INNER_READY: pids and dirs as JSON), then waits for completion that never comes."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from harness.vm import workloads
from harness.migration.config import MigrationConfig
from harness.migration.testbed import Pair
from harness.migration.testbed import Testbed
from harness.vm.workloads import Dirty
from harness.core.units import MiB


@pytest.mark.timeout(int(os.environ.get("QMH_INNER_TIMEOUT", "600")))
@pytest.mark.guest(memory_mib=256)
def test_interrupted_migration(testbed: Testbed, pair: Pair) -> None:
    workloads.start(pair.source, Dirty(size_mib=32, rate_mibps=0))
    migration = testbed.migrate(pair.source, pair.destination, MigrationConfig(parameters={"max-bandwidth": 4 * MiB}))
    migration.wait_status({"active"}, 60)
    ready = Path(os.environ["QMH_INNER_READY"])
    record = {"pytest_pid": os.getpid(),
              "qemu_pids": [m.process.pid for m in (pair.source, pair.destination) if m.process],
              "dirs": [str(testbed.workdir), *(str(m.tmpdir) for m in (pair.source, pair.destination))]}
    ready.with_suffix(".tmp").write_text(json.dumps(record))
    ready.with_suffix(".tmp").rename(ready)
    migration.wait_completed(600)
