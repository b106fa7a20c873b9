"""A file migration to a filesystem that fills up fails with QEMU's "No space left" error in the verdict, and the
filesystem (a small tmpfs in a private dir) is unmounted afterwards."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Iterator

import pytest

from harness.core import workdirs

from harness.vm import workloads
from harness.migration.config import MigrationConfig, MigrationFailed, Outcome
from harness.migration.testbed import Testbed
from harness.vm.workloads import Dirty

TMPFS_MIB = 16


@pytest.fixture
def small_filesystem() -> Iterator[Path]:
    directory = workdirs.private_dir("tmpfs")
    try:
        mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={TMPFS_MIB}m,mode=0700", "tmpfs",
                                  str(directory)], capture_output=True, text=True)
        if mounted.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here (needs root): {mounted.stderr.strip()}")
        yield directory
    finally:
        workdirs.remove(directory)
        assert not workdirs.mounts_under(directory), f"{directory} still mounted"
        assert not directory.exists()


@pytest.mark.timeout(120)
def test_file_migration_to_a_full_filesystem_fails_with_no_space(testbed: Testbed, small_filesystem: Path) -> None:
    source = testbed.boot("source", memory_mib=512)
    # 64 MiB of non-zero pages (and the guest's own) cannot fit in 16 MiB, whatever zero pages compress to.
    workloads.start(source, Dirty(size_mib=64, rate_mibps=1, prefill=True))
    migration = testbed.migrate(source, None, MigrationConfig(transport="file"), name="to-full-fs",
                                workdir=small_filesystem)
    with pytest.raises(MigrationFailed) as caught:     # undeclared, the failure ends the wait with its reason
        migration.wait_completed(60)
    message = str(caught.value)
    assert "source reports failure" in message and "No space left on device" in message, message
    assert migration.file_path.parent == small_filesystem
    assert source.runstate() == "running", "a failed save must leave the guest running"


@pytest.mark.timeout(120)
def test_a_declared_failure_is_the_outcome_waited_for(testbed: Testbed, small_filesystem: Path) -> None:
    """Outcome.FAILED declared (as migration-test's `result`): wait_outcome returns the failure, and a save that
    unexpectedly completed would raise instead."""
    source = testbed.boot("source", memory_mib=512)
    workloads.start(source, Dirty(size_mib=64, rate_mibps=1, prefill=True))
    config = MigrationConfig(transport="file", expect=Outcome.FAILED)
    migration = testbed.migrate(source, None, config, name="declared-failure", workdir=small_filesystem)
    final = migration.wait_outcome(60)
    assert final["status"] == "failed" and "No space left on device" in final.get("error-desc", ""), final
    assert migration.file_path.parent == small_filesystem
    assert source.runstate() == "running", "a failed save must leave the guest running"
