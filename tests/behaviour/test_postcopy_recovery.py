"""Postcopy recovery beyond the plain case (docs/BEHAVIOURS.md, "Failure paths"; upstream
/migration/postcopy/preempt/recovery/plain asserts completion).

With postcopy-preempt the migration has two channels (the main stream and the urgent-page channel): a pause breaks
both and recovery must re-establish both. The skeleton is the basics' (harness.migration.scenarios.postcopy_recovers):
postcopy under load, migrate-pause 2 MiB into postcopy, migrate-recover + resume. Oracles: completed; the source went
through postcopy-active and postcopy-paused and the destination through postcopy-recover (QEMU's status sequence);
the seqinc invariant on the destination (the guest's view).
"""

from __future__ import annotations

import pytest

from harness.migration.migrate import Migration
from harness.migration.config import MigrationConfig
from harness.migration.scenarios import postcopy_recovers
from harness.migration.testbed import Pair, Testbed


@pytest.mark.slow
@pytest.mark.known_bug("tcg-dirty-tlb")
@pytest.mark.needs_userfaultfd
@pytest.mark.needs(capabilities=["postcopy-ram", "postcopy-preempt"], commands=["migrate-pause", "migrate-recover"])
def test_postcopy_with_preempt_recovers_after_pause(testbed: Testbed, pair: Pair) -> None:
    postcopy_recovers(testbed, pair, Migration.pause, MigrationConfig(capabilities={"postcopy-preempt": True}))
