"""Free page reporting during precopy (#29): pages the guest frees are reported to the host, which discards them
(virtio-balloon free-page-reporting=on, QEMU's virtio_balloon_handle_report → ram_block_discard_range) while the
migration runs; the guest then reuses and rewrites pages — and everything it holds arrives intact.

The page-lifecycle workload runs in its `thp` layout (guest-workloads/pagelife.c: one class per 2 MiB huge page),
so the pages it discards and unmaps free whole 2 MiB blocks, the order the guest's page reporting hands to the
host (pageblock order); the guest kernel reports them after its 2 s delay, so the hold lasts REPORT_WAIT_S more
after the last phase. Precopy is held back as in test_page_lifecycle (harness.migration.scenarios.held_precopy).

Oracles and what anchors each:
  - every page of pagelife's region holds what its phases imply (pagelife's own check), seqcheck — the guest's
    view;
  - host RAM, both sides paused, equal page by page except pages all zero on the source — the guest's memory
    itself: a page the source's host discarded after it was sent reads zero there and keeps what was sent on
    the destination (QEMU does not resend a discarded page, and a free page holds no data the guest reads);
    any other difference is damage (oracles.ram_identical_but_discarded);
  - provoked: the source's host discarded guest RAM while the migration ran (≥ MIN_DISCARDED, from the source's
    `ram_block_discard_range` trace: QEMU's own record of the madvise, the only account of it there is);
  - every discard a whole number of the guest's reporting blocks (REPORTING_BLOCK, what the guest's kernel hands
    over), recorded even when the migration stopped early: the RAM comparison cannot see a discard that took too
    much (those pages read zero on both sides), this can.
"""

from __future__ import annotations

import pytest

from harness.analysis import oracles
from harness.analysis.trace import TraceRecord, parse_file
from harness.core.units import MiB
from harness.migration.config import MigrationConfig
from harness.migration.scenarios import held_precopy
from harness.migration.testbed import Pair, Testbed
from harness.vm.workloads import PageLife

from test_page_lifecycle import BANDWIDTH, HOLD_DOWNTIME_MS, HOT_SET, Before, start_pagelife, step_through

DISCARD = "ram_block_discard_range"
BALLOON = ("-device", "virtio-balloon-pci,id=balloon0,free-page-reporting=on")
DRIVER = "/sys/bus/virtio/drivers/virtio_balloon"
# The guest reports free pages 2 s after they accumulate (mm/page_reporting.c, PAGE_REPORTING_DELAY): twice that.
REPORT_WAIT_S = 4.0
# pagelife frees 4 classes × 2 MiB… of its 32 MiB region per phase; one reported 2 MiB block is proof enough that
# the path ran during the migration.
MIN_DISCARDED = 2 * MiB
# The guest reports free blocks of at least its pageblock (x86_64: order 9, 2 MiB; page_reporting_order defaults to
# it and the image sets no other): every discard is a whole number of these. Measured: 4 MiB each.
REPORTING_BLOCK = 2 * MiB


def discard_length(record: TraceRecord) -> int:
    """The length of one `ram_block_discard_range` trace record (hex in QEMU's format)."""
    return int(record.fields.get("length", "0"), 16)


@pytest.mark.slow
@pytest.mark.known_bug("tcg-dirty-tlb")
@pytest.mark.needs(trace_events=[DISCARD])
@pytest.mark.guest(extra_args=BALLOON, trace_events=(DISCARD,))
def test_free_page_reporting_during_precopy_keeps_the_guest_intact(testbed: Testbed, paused_pair: Pair) -> None:
    source = paused_pair.source
    if source.config.arch.name != "x86_64":
        pytest.skip(f"virtio-balloon-pci on x86_64 only here (guest arch {source.config.arch.name})")
    if source.shell.run(f"test -d {DRIVER}", check=False).exit_status != 0:
        pytest.skip(f"the guest kernel has no virtio_balloon driver bound ({DRIVER} missing): no page reporting")
    life = start_pagelife(source, thp=True)
    before = Before()

    def phases_then_reports(migration):  # type: ignore[no-untyped-def]
        step_through(life, migration, before)
        migration.wait_until(migration.series.samples["source"][-1]["t"] + REPORT_WAIT_S, "free page reports")

    try:
        held = held_precopy(testbed, paused_pair, MigrationConfig(), phases_then_reports, hot_set=HOT_SET,
                            bandwidth=BANDWIDTH, hold_downtime_ms=HOLD_DOWNTIME_MS,
                            ram_judge=oracles.ram_identical_but_discarded)
    finally:
        # Recorded whatever stopped the migration: a discard past what the guest reported crashes the guest as
        # often as not, and this is the one verdict that names it (the pages it took read zero on both sides).
        testbed.artefacts.verdict(oracles.discards_whole_blocks(
            (discard_length(r) for r in parse_file(source.files.trace).named(DISCARD)), REPORTING_BLOCK))
    migration = held.migration
    series = migration.finish()
    result = life.stop(paused_pair.destination)
    start = series.wall_t0 + next(m["t"] for m in series.marks if m["what"] == "migrate")
    discards = [r for r in parse_file(source.files.trace).named(DISCARD) if r.t is None or r.t >= start]
    discarded = sum(discard_length(r) for r in discards)
    testbed.artefacts.write_json("pagelife", result)
    testbed.artefacts.write_json("discards", {"during_migration": len(discards), "bytes": discarded})
    testbed.artefacts.verdict(
        *held.integrity_verdicts(),
        oracles.equals("pagelife: every page holds what its phases imply", result["bad_pages"], 0, result["message"]),
        oracles.equals("pagelife phases run", result["phase"], PageLife.PHASES, "provoked: every transition"),
        oracles.at_least("guest RAM the source's host discarded during the migration (bytes)", discarded,
                         MIN_DISCARDED, anchor="provoked: free pages reported and discarded (source trace)"))
