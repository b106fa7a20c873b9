"""B5 — max-bandwidth changed during a migration takes effect within a second.

`migrate-set-parameters max-bandwidth` on an active precopy must re-arm the rate limiter at once (QEMU 10.0:
migrate_params_apply() → migration_rate_set()), both ways: lowering it is how management tools keep a migration
from starving the host's network, raising it is how they help one converge. Storing the new value without applying
it shows nothing in QMP: query-migrate-parameters reports it either way.

Provoke: a guest re-dirtying a 64 MiB hot set flat out cannot converge at HIGH, so the stream runs at whatever the
limiter admits; after the first pass, lower max-bandwidth to LOW, then raise it back to HIGH, WINDOW_S apart.

Oracles and what anchors each (docs/BEHAVIOURS.md):
  (1) before the change, bytes/s (ram.transferred) over the WINDOW_S before it are HIGH within BAND — anchored to
      the configured limit (mechanism: the limiter admits max-bandwidth/10 per 100 ms window); it also shows the
      stream could send more than LOW, so (2) measures the limiter and not a slow host;
  (2) from SETTLE_S after lowering, bytes/s over WINDOW_S are LOW within BAND — anchored to the new limit; a change
      applied later than SETTLE_S leaves HIGH's bytes in the window (each 0.1 s later adds 15 % of LOW over 2 s);
  (3) from SETTLE_S after raising it back, bytes/s are HIGH within BAND — the same anchor (catches a limiter that
      only ever lowers);
  (4) query-migrate-parameters reports each value set — QEMU's own view; it passes on a QEMU that stores the
      value without applying it, which (2) and (3) fail (regressions/B5-max-bandwidth-applied-next-migration.patch).
"""

from __future__ import annotations

import pytest

from harness.analysis import oracles

from harness.vm import workloads
from harness.analysis.series import counter_window
from harness.migration.migrate import Migration
from harness.migration.config import MigrationConfig
from harness.migration.testbed import Testbed
from harness.vm.workloads import Dirty
from harness.core.units import MiB

HOT_SET_MIB = 64
HIGH = 32 * MiB            # far below the dirtier's rate: precopy never converges at either limit
LOW = 8 * MiB
DOWNTIME_LIMIT_MS = 100    # threshold ≤ 3.2 MiB ≪ hot set
WINDOW_S = 2.0
SETTLE_S = 1.0             # "within one second"
# Bytes/s over the limit just set. Calibration, QEMU 10.0.2 on TCG here, `make flake N=10`, 10/10 passed:
#   before (HIGH) 0.99 … 1.04 … 1.07;  lowered (LOW) 1.04 … 1.10 … 1.15;  raised (HIGH) 1.01 … 1.02 … 1.02.
# s390x guest (TCG, same QEMU, 1 run): 1.019, 1.096, 1.018 — the limiter is the host's, one band serves both arches.
# The limiter overshoots by about the same bytes per 100 ms window at any limit (~+0.8 MiB/s), which is 10 % of LOW
# and 2 % of HIGH. On the regression (limit never re-armed) "lowered" is HIGH/LOW = 4.0 and "raised" stays ~1.
# 1.4 leaves the worst pristine run a 1.2× margin and the regression 2.9×.
BAND = (0.8, 1.4)


def set_bandwidth(migration: Migration, bandwidth: int) -> tuple[float, oracles.Verdict]:
    """Set max-bandwidth on the running source; return when it was set (series time) and what QEMU reports."""
    migration.source.qmp.cmd("migrate-set-parameters", **{"max-bandwidth": bandwidth})
    migration.series.mark("max-bandwidth", value=bandwidth)
    reported = migration.source.qmp.cmd("query-migrate-parameters").get("max-bandwidth")
    verdict = oracles.equals(f"query-migrate-parameters reports max-bandwidth {bandwidth // MiB} MiB/s",
                             reported, bandwidth)
    return migration.series.marks[-1]["t"], verdict


def judge_rate(name: str, rate: float, limit: int) -> oracles.Verdict:
    return oracles.within_band(name, rate / limit, *BAND,
                               anchor=f"mechanism: the limiter admits max-bandwidth; {rate / MiB:.2f} MiB/s at "
                                      f"{limit // MiB} MiB/s")


# A source before 9.0 on TCG stops logging the hot set's stores after the first sync (harness.qemu.known_bugs): the
# migration then converges at once (7.2 -> 10.0: completed at 8.6 s, dirty-pages-rate 0) and nothing is measured.
# The bug's workaround (guest RAM no multiple of 256 KiB) keeps the logging, so the test is judged there too.
@pytest.mark.known_bug("tcg-dirty-tlb")
@pytest.mark.needs(parameters=["max-bandwidth", "downtime-limit"], fields=["ram.transferred"])
def test_max_bandwidth_change_takes_effect_within_a_second(testbed: Testbed) -> None:
    source = testbed.boot("source")
    workloads.start(source, Dirty(size_mib=HOT_SET_MIB, rate_mibps=0, order="random"))
    config = MigrationConfig(parameters={"max-bandwidth": HIGH, "downtime-limit": DOWNTIME_LIMIT_MS})
    migration = testbed.migrate(source, testbed.incoming(source), config)
    migration.wait_dirty_syncs(2, timeout=120)      # the first pass is done: the stream is limiter-bound

    t_lowered, reported_low = set_bandwidth(migration, LOW)
    migration.wait_until(t_lowered + SETTLE_S + WINDOW_S, "the window after lowering")
    t_raised, reported_high = set_bandwidth(migration, HIGH)
    migration.wait_until(t_raised + SETTLE_S + WINDOW_S, "the window after raising")
    status = migration.status()
    migration.cancel_and_wait(timeout=60)   # the scenario's own end: what it measured is already in the series
    migration.finish()

    before = counter_window(migration.series, t_lowered - WINDOW_S, t_lowered).bytes_per_second
    lowered = counter_window(migration.series, t_lowered + SETTLE_S,
                             t_lowered + SETTLE_S + WINDOW_S).bytes_per_second
    raised = counter_window(migration.series, t_raised + SETTLE_S,
                            t_raised + SETTLE_S + WINDOW_S).bytes_per_second
    testbed.artefacts.write_json("rates", {"high": HIGH, "low": LOW, "before": before, "lowered": lowered,
                                           "raised": raised, "t_lowered": t_lowered, "t_raised": t_raised})
    testbed.artefacts.verdict(
        oracles.equals("precopy active throughout", status, "active",
                       "the dirtier must keep precopy from converging at either limit"),
        judge_rate("bytes/s before the change / HIGH", before, HIGH),
        reported_low,
        judge_rate(f"bytes/s from {SETTLE_S:g} s after lowering / LOW", lowered, LOW),
        reported_high,
        judge_rate(f"bytes/s from {SETTLE_S:g} s after raising / HIGH", raised, HIGH))
