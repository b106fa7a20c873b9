"""Basics every migration user expects (docs/BEHAVIOURS.md, "Basics").

Each test: given a guest running real workloads, when migrating in some mode, then QMP and the guest agree that
it worked — RAM identical on both paused sides (host hash) and the sequential-increment invariant intact.

Oracles and what anchors each (#16 audit: none of these compares two arms of one run):
  - RAM identical — host-side pmemsave hashes of both paused sides, a measurement outside the migration stream;
  - seqcheck invariant — the guest's own view (adjacent pages differ by ≤ 1, ≤ 1 break);
  - downtime ≤ downtime-limit + DOWNTIME_SLACK_MS — the parameter the test set plus measured slack;
  - bytes sent while stopped ≤ max-bandwidth × downtime-limit × (1 + STOP_COPY_TOLERANCE) — a mechanism-derived
    absolute from the two parameters the test set (QEMU may switch over only when the rest fits), not from the
    measured downtime a fast link would flatter;
  - reported downtime / the same interval on the host clock (the source's STOP → completed QMP event
    timestamps) within a band around 1; reported downtime ≤ about the blackout the guest lived (its heartbeat,
    stamped by the host); that blackout ≥ about STOP→RESUME and within downtime-limit + DOWNTIME_SLACK_MS;
    measures outside QEMU's own accounting (harness.analysis.blackout); total-time, setup-time and mbps against
    the host clock, as for every completed migration (harness.migration.self_report);
  - completed / went through postcopy-active, postcopy-paused, postcopy-recover — QEMU's status sequence;
  - postcopy-requests ≥ 1 — a floor (the destination really faulted pages in);
  - after cancel: source runstate running, the guest's own workload counter still advancing, and a second
    migration of the same source completing with the invariant intact — the guest's view plus a fresh migration.
"""

from __future__ import annotations

import time

import pytest

from harness.analysis import blackout, oracles

from harness.vm import workloads
from harness.migration.migrate import Migration
from harness.migration.config import MigrationConfig
from harness.migration.testbed import Pair
from harness.migration.scenarios import (COMPLETION_TIMEOUT, DIRTY_MIB, SEQINC_MIB, SEQINC_PASSES_PER_S,
                               postcopy_recovers, postcopy_with_integrity,
                               precopy_with_integrity)
from harness.migration.testbed import Testbed
from harness.vm.machine import Machine
from harness.vm.workloads import Dirty, Heartbeat, SeqInc
from harness.core.units import MiB

BANDWIDTH = 128 * MiB
# Measured on TCG (QEMU 10.0.2, 512 MiB guest, unix socket): downtime exceeded downtime-limit by at most ~110 ms
# (vCPU stop + device state). Twice that is the slack; an ignored limit shows seconds. Holds on s390x (TCG, same
# QEMU, 1 run): 13 ms of downtime.
DOWNTIME_SLACK_MS = 250.0
# Sent while stopped, against the 14.4 MiB budget (48 MiB/s × 300 ms), unmodified 10.0.2 on TCG, 6 runs:
# 0.81–1.003× (QEMU's own bandwidth estimate, pages dirtied between the last sync and the stop, device state).
# Half again is the tolerance. A limit read 1000× too large switches over after the first pass: 72.6 MiB, 5×.
# s390x guest (TCG, 1 run): 0.96×, inside the x86 range, so one tolerance serves both arches.
STOP_COPY_TOLERANCE = 0.5
# Calibrated with `make flake N=10` on the unmodified 10.0.2 (TCG, 2 shared cores; 10/10 passed), per bound:
# QEMU's downtime over the same interval on the host clock, the source's STOP → completed QMP event timestamps
# (harness.analysis.blackout): 1 on the mechanism, less ms rounding and the vCPU stop before STOP is emitted.
# Measured 0.969 … 1.03 … 1.11 (downtime 8 … 10 … 19 ms); downtime counted from after the stop-and-copy
# (regressions/basic-downtime-underreported): 0.0 (0 ms against 17 ms). Session 12, warm-booted guests, make flake
# N=10 on a host shared with a make matrix (the vCPUs' stop before STOP takes longer under load): 10/10, 1.13 … 1.2 …
# 1.35 (downtime 17 … 23 … 27 ms); reported / lived 0.195 … 0.399; lived / STOP→RESUME 1.85 … 2.84.
REPORTED_SHARE = (0.5, 1.5)
# QEMU's downtime over the blackout the guest lived (its heartbeat, stamped by the host): ≤ 1 on the mechanism.
# Measured 0.14 … 0.21 … 0.33: the lived blackout (36.8 … 49.6 … 65 ms) adds the destination's start and the fresh
# TCG destination's first translations before the first tick.
REPORTED_OVER_LIVED = 1.2
# The guest's lived blackout over STOP→RESUME: ≥ 1 on the mechanism (a stopped guest cannot tick), less tick
# delivery. Measured 2.22 … 4.14 … 5.33.
HEARTBEAT_OVER_EVENTS = 0.8


# Every test here that checks RAM or the guest after a live migration is exposed to a source that loses dirty
# writes (a QEMU before 9.0 on TCG: harness.qemu.known_bugs) and is an expected failure there, not a false alarm.
DIRTY_TLB_BUG = pytest.mark.known_bug("tcg-dirty-tlb")


# The 8 MiB/s case is the precopy part of the smoke `make check` runs on the other guest arch (s390x on x86_64),
# and precopy's case in `make check`; the idle and the 32 MiB/s guests are `slow` (#35: make check ≤ 10 min).
@DIRTY_TLB_BUG
@pytest.mark.parametrize("dirty_mibps", [pytest.param(0, marks=pytest.mark.slow),
                                         pytest.param(8, marks=pytest.mark.smoke),
                                         pytest.param(32, marks=pytest.mark.slow)],
                         ids=lambda r: f"dirty{r}MiBps")
def test_precopy_completes_with_identical_ram_and_intact_guest(testbed: Testbed, paused_pair: Pair,
                                                               dirty_mibps: float) -> None:
    config = MigrationConfig(parameters={"downtime-limit": 300, "max-bandwidth": BANDWIDTH})
    precopy_with_integrity(testbed, paused_pair, config, dirty_mibps)


@DIRTY_TLB_BUG
@pytest.mark.needs(capabilities=["multifd"], parameters=["multifd-channels"])
# slow (#35): make check keeps multifd over sockets by test_tls.py's multifd precopy (TCP, every channel).
@pytest.mark.slow
@pytest.mark.parametrize("channels, transport", [(2, "unix"), (2, "tcp"), (4, "unix"), (4, "tcp")],
                         ids=["2-unix", "2-tcp", "4-unix", "4-tcp"])
def test_multifd_over_sockets_keeps_ram_identical(testbed: Testbed, paused_pair: Pair, transport: str,
                                                  channels: int) -> None:
    config = MigrationConfig(capabilities={"multifd": True},
                             parameters={"multifd-channels": channels, "max-bandwidth": BANDWIDTH},
                             transport=transport)
    precopy_with_integrity(testbed, paused_pair, config, dirty_mibps=16)


@pytest.mark.needs(fields=["ram.downtime-bytes"])
@pytest.mark.guest(heartbeat=True)
def test_downtime_stays_within_downtime_limit(testbed: Testbed, pair: Pair) -> None:
    limit_ms = 300
    bandwidth = 48 * MiB
    workloads.start(pair.source, Heartbeat())
    workloads.start(pair.source, Dirty(size_mib=DIRTY_MIB, rate_mibps=16))
    # Bandwidth above the dirty rate: converges, but only by honouring the limit (remaining ≤ bandwidth × limit).
    config = MigrationConfig(parameters={"downtime-limit": limit_ms, "max-bandwidth": bandwidth})
    migration = testbed.migrate(pair.source, pair.destination, config)
    final = migration.wait_completed(COMPLETION_TIMEOUT)
    heard = wait_for_heartbeat(pair.destination)
    series = migration.finish()
    testbed.artefacts.write_json("final-query-migrate", final)
    observed = blackout.measure(series, pair.source.heartbeat.snapshot(), heard, final.get("downtime"))
    testbed.artefacts.write_json("blackout", observed)
    testbed.artefacts.verdict(
        oracles.completed(final),
        oracles.downtime_within(final.get("downtime"), limit_ms, DOWNTIME_SLACK_MS),
        oracles.stop_copy_data_within(final.get("ram", {}).get("downtime-bytes"), bandwidth, limit_ms,
                                      STOP_COPY_TOLERANCE),
        blackout.reported_vs_source_clock(observed, *REPORTED_SHARE),
        blackout.reported_within_lived(observed, REPORTED_OVER_LIVED),
        blackout.heartbeat_covers_events(observed, HEARTBEAT_OVER_EVENTS),
        blackout.blackout_within_limit(observed, limit_ms, DOWNTIME_SLACK_MS))


def wait_for_heartbeat(machine: Machine, timeout: float = 10.0) -> list[tuple[float, int]]:
    """The heartbeat arrivals of `machine` once it has delivered its first tick (the guest runs there)."""
    assert machine.heartbeat is not None
    deadline = time.monotonic() + timeout
    while not machine.heartbeat.snapshot() and time.monotonic() < deadline:
        time.sleep(0.05)
    return machine.heartbeat.snapshot()


@DIRTY_TLB_BUG
@pytest.mark.smoke
@pytest.mark.needs_userfaultfd
@pytest.mark.needs(capabilities=["postcopy-ram"], commands=["migrate-start-postcopy"])
def test_postcopy_completes_with_intact_guest(testbed: Testbed, pair: Pair) -> None:
    postcopy_with_integrity(testbed, pair, postcopy_bandwidth=32 * MiB)


@pytest.mark.slow    # make check: test_cancel_in_every_status.py[pre-switchover] cancels, then re-migrates
@DIRTY_TLB_BUG
def test_cancel_leaves_source_running_and_migratable(testbed: Testbed, pair: Pair) -> None:
    seq = workloads.start(pair.source, SeqInc(size_mib=SEQINC_MIB, rate_passes=SEQINC_PASSES_PER_S))
    dirty = workloads.start(pair.source, Dirty(size_mib=DIRTY_MIB, rate_mibps=8))
    slow = MigrationConfig(parameters={"max-bandwidth": 4 * MiB})
    migration = testbed.migrate(pair.source, pair.destination, slow, name="cancelled")
    migration.wait(lambda s: (s.latest().get("ram", {}).get("transferred", 0)) > 8 * MiB, 60,
                   "8 MiB transferred")
    migration.cancel()
    migration.wait_status({"cancelled"}, 30)
    migration.finish()

    testbed.artefacts.verdict(pair.source.still_running("migrate_cancel"))
    before, after = dirty.wait_progress(pair.source)
    testbed.artefacts.verdict(oracles.progressed("guest workload keeps running after cancel", before, after, 1))
    check = workloads.seqcheck(pair.source, seq)
    testbed.artefacts.verdict(oracles.guest_invariant(check.passed, check.line))

    # Usable: the same source migrates completely to a fresh destination.
    second = testbed.incoming(pair.source, name="destination2")
    retry = testbed.migrate(pair.source, second, MigrationConfig(parameters={"max-bandwidth": BANDWIDTH}),
                            name="after-cancel")
    testbed.artefacts.verdict(oracles.completed(retry.wait_completed(COMPLETION_TIMEOUT)))
    check = workloads.seqcheck(second, seq)
    testbed.artefacts.verdict(oracles.guest_invariant(check.passed, check.line))


# slow (#35, 13 s on TCG): test_postcopy_recovery.py's [handshake] case keeps this in `make check` — the same
# skeleton (postcopy_recovers: pause 2 MiB into postcopy, migrate-recover, resume, completion, seqinc), its working
# recovery coming after one made to fail, into a paused destination so that host RAM hashes are compared too.
@pytest.mark.slow
@DIRTY_TLB_BUG
@pytest.mark.needs_userfaultfd
@pytest.mark.needs(capabilities=["postcopy-ram"], commands=["migrate-pause", "migrate-recover"])
def test_postcopy_recovers_after_pause(testbed: Testbed, pair: Pair) -> None:
    postcopy_recovers(testbed, pair, Migration.pause)
