"""Run only by tests/faults/test_debug_hooks.py in a child pytest with --qemu-wrapper and --keep-workdir: saves
the guest to a file in the test's work dir, then fails on purpose, so `--keep-workdir failed` must keep it."""

from __future__ import annotations

from harness.migration.config import MigrationConfig
from harness.migration.testbed import Testbed


def test_saves_to_a_file_then_fails(testbed: Testbed) -> None:
    source = testbed.boot(memory_mib=256)
    source.qmp.cmd("stop")
    migration = testbed.migrate(source, None, MigrationConfig(transport="file"), name="save")
    migration.wait_status({"completed"}, 120)
    raise AssertionError(f"deliberate failure after saving {migration.file_path.name}")
