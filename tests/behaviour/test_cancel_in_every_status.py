"""migrate_cancel in every status the source can be in (docs/BEHAVIOURS.md, "Failure paths"; upstream
/migration/cancel/src/after/<status>, which asserts the status reached). Each case is data: how the scenario brings
the source to its status, and the end it declares for both sides. One skeleton then judges, for every case:

  (1) the cancel took the source out of the status the case names — the status QEMU announced just before
      'cancelling' (its own MIGRATION events; a state lasting a millisecond still shows), or, where QEMU refuses the
      cancel, its refusal text;
  (2) the source ends in the declared status; the destination as declared (exited 1 on its broken stream, never
      reached, or completed when the cancel was refused);
  (3) the guest still makes progress where it lives: its runstate is 'running' and seqinc's own pass counter, read
      in the guest's memory, advances (the guest's view: a source left stopped, or with a wedged vCPU, fails it);
  (4) the seqinc invariant holds there (guest's view);
  (5) the same source then migrates to a fresh paused destination: completed, RAM identical by host hashes (a
      measurement outside the stream) and seqcheck — what a cancel leaves behind must not spoil the next migration.

Cases: none (no migration yet), setup (the source's connect is held by a listener that never accepts), active (with
and without multifd), pre-switchover (pause-before-switchover: the vCPUs are already stopped), device (held there by
a SIGSTOPped destination: the migration thread holds the BQL through the phase, so the cancel waits; declared: it
comes too late, the migration completes and only the destination runs — 10.0.2 runs both, an expected failure),
cancelling (a second cancel sent right behind the first, proven to land in 'cancelling' by a query-migrate sent
right behind it), cancelled (a second cancel once the first ended), failed and completed (a cancel after the end is
a no-op) and postcopy-active (QEMU refuses; the migration completes). wait-unplug needs a failover NIC with a VFIO
primary (not reachable here); colo and the postcopy recovery states are outside this file (docs/BEHAVIOURS.md,
coverage table).
"""

from __future__ import annotations

import dataclasses
import signal
import socket
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Callable

import pytest

from harness.analysis import oracles
from harness.analysis.cancel import interrupted_status
from harness.migration.migrate import Migration, wait_runstate
from harness.migration.config import MigrationConfig, Outcome
from harness.migration.scenarios import (COMPLETION_TIMEOUT, DIRTY_MIB, SEQINC_MIB, SEQINC_PASSES_PER_S,
                                         migrates_again)
from harness.migration.testbed import Pair, Testbed
from harness.vm.machine import Machine
from harness.qemu.qmp import ExecuteError
from harness.core.units import MiB
from harness.vm import workloads
from harness.vm.workloads import Dirty, SeqInc

POSTCOPY_REFUSAL = "Postcopy migration in progress, cannot cancel."    # migration/migration.c, qmp_migrate_cancel
SLOW = MigrationConfig(parameters={"max-bandwidth": 4 * MiB})
FAST = MigrationConfig(parameters={"max-bandwidth": 128 * MiB})
MULTIFD = SLOW.with_capabilities(multifd=True).with_parameters(multifd_channels=2)
# Switch over at the first check, with the guest's written RAM still to send ('device' has work to block on).
PAUSED = MigrationConfig(capabilities={"pause-before-switchover": True},
                         parameters={"max-bandwidth": 32 * MiB, "downtime-limit": 1_000_000})


@dataclass
class Cancelled:
    """What reaching a status and cancelling in it left: the migration (None for 'none'), the status the cancel
    interrupted by QEMU's announcement (or None), QEMU's refusal of migrate_cancel if it refused it."""
    migration: Migration | None
    interrupted: str | None
    refusal: str | None = None
    destination: Machine | None = None     # the destination of the judged attempt, if not the pair's


def in_none(testbed: Testbed, pair: Pair) -> Cancelled:
    pair.source.qmp.cmd("migrate_cancel")   # nothing to cancel: a no-op that must leave no trace
    return Cancelled(None, pair.source.qmp.cmd("query-migrate").get("status", "none"))


def in_setup(testbed: Testbed, pair: Pair) -> Cancelled:
    """The source connects to a unix listener whose one-slot backlog is already taken: connect() blocks, so the
    source stays in 'setup' until the cancel. The listener is closed afterwards, which ends the blocked connect."""
    migration = testbed.prepare_migration(pair.source, None, SLOW, name="cancelled")
    path = migration.uri.removeprefix("unix:")
    with socket.socket(socket.AF_UNIX) as listener, socket.socket(socket.AF_UNIX) as filler:
        listener.bind(path)
        listener.listen(0)
        filler.connect(path)
        migration.start()
        migration.wait_status({"setup"}, 30)
        migration.cancel_and_wait(30)
    return Cancelled(migration, interrupted_status(migration.series))


def in_active(testbed: Testbed, pair: Pair, again_in: str | None = None,
              config: MigrationConfig = SLOW) -> Cancelled:
    """Cancel 8 MiB into a 4 MiB/s precopy. `again_in`: cancel a second time once the first has ended
    ('cancelled'), or right behind it ('cancelling': cancel_while_cancelling)."""
    if again_in == "cancelling":
        return cancel_while_cancelling(testbed, pair, config)
    migration = migrate_8_mib(testbed, pair.source, pair.destination, config, "cancelled")
    migration.cancel_and_wait(30)
    if again_in is None:
        return Cancelled(migration, interrupted_status(migration.series))
    seen = pair.source.qmp.pipeline("migrate_cancel", "query-migrate")[-1].get("status")
    migration.series.mark("second migrate_cancel", status_seen=seen)
    migration.cancel_and_wait(30)
    return Cancelled(migration, seen)


def migrate_8_mib(testbed: Testbed, source: Machine, destination: Machine, config: MigrationConfig,
                  name: str) -> Migration:
    migration = testbed.migrate(source, destination, config, name=name)
    migration.wait(lambda s: s.latest().get("ram", {}).get("transferred", 0) > 8 * MiB, 60, "8 MiB transferred")
    return migration


# 'cancelling' lasts from the cancel until the migration thread has seen it and the main loop has run its cleanup:
# 2.1 ms in session 14's make test on a loaded host, where the query behind the second cancel already saw
# 'cancelled' (QEMU's QMP dispatcher yields to the main loop between pipelined commands, so the cleanup can run
# between them). Such a query proves nothing about where the second cancel landed: the scenario did not reach its
# status, so it tries again with a fresh destination. A QEMU whose 'cancelling' never outlasts the dispatch of the
# next command fails every attempt, and the test with it.
CANCELLING_ATTEMPTS = 3


def cancel_while_cancelling(testbed: Testbed, pair: Pair, config: MigrationConfig) -> Cancelled:
    """A second cancel sent right behind the first, not waiting for its answer, and a query-migrate right behind
    that: QEMU runs the three in order on its main loop, so if the query still says 'cancelling', so did QEMU at
    the second cancel. Returns the first attempt whose query saw 'cancelling' (or the last), with its destination."""
    destination = pair.destination
    for attempt in range(1, CANCELLING_ATTEMPTS + 1):
        suffix = "" if attempt == 1 else f"-attempt{attempt}"
        migration = migrate_8_mib(testbed, pair.source, destination, config, f"cancelled{suffix}")
        seen = migration.cancel(and_then=("migrate_cancel", "query-migrate"))[-1].get("status")
        migration.series.mark("second migrate_cancel", status_seen=seen, attempt=attempt)
        migration.cancel_and_wait(30)
        if seen == "cancelling" or attempt == CANCELLING_ATTEMPTS:
            testbed.artefacts.write_json("cancelling-attempts", {"attempts": attempt, "last_seen": seen})
            return Cancelled(migration, seen, destination=destination)
        migration.finish()
        info = destination.wait_exit(30)    # its stream ended mid-load, as the judged attempt's will
        testbed.artefacts.verdict(oracles.equals(f"destination exit (attempt {attempt}, query saw {seen!r})",
                                                 info and info.returncode, 1, "its stream ended mid-load"))
        destination = testbed.incoming(pair.source, name=f"destination-attempt{attempt + 1}")
    raise AssertionError("unreachable")


def after_end(testbed: Testbed, pair: Pair, config: MigrationConfig) -> Cancelled:
    """A migration that has ended ('completed', or 'failed' where nothing listens): migrate_cancel is a no-op."""
    destination = pair.destination if config.expect is Outcome.COMPLETED else None
    migration = testbed.migrate(pair.source, destination, config, name="ended")
    final = migration.wait_outcome(COMPLETION_TIMEOUT)
    pair.source.qmp.cmd("migrate_cancel")
    migration.series.mark("migrate_cancel after the end")
    return Cancelled(migration, final.get("status"))


def in_pre_switchover(testbed: Testbed, pair: Pair) -> Cancelled:
    migration = testbed.migrate(pair.source, pair.destination, PAUSED, name="cancelled")
    migration.wait_status({"pre-switchover"}, COMPLETION_TIMEOUT)
    migration.cancel_and_wait(30)
    return Cancelled(migration, interrupted_status(migration.series))


def in_device(testbed: Testbed, pair: Pair) -> Cancelled:
    """'device' cannot be cancelled at once: the migration thread holds the BQL through the phase (the rest of RAM
    and the device state go with the vCPUs stopped), so a migrate_cancel sent then waits for it. Held in 'device' by a
    SIGSTOPped destination (the source blocks on the full socket), the cancel is sent, still unanswered 2 s later
    (recorded), then the destination continues. Declared: the cancel comes too late, the migration completes and
    the source stays stopped — in every case exactly one of the two runs the guest (recorded here)."""
    migration = testbed.migrate(pair.source, pair.destination, PAUSED, name="cancel-in-device")
    migration.wait_status({"pre-switchover"}, COMPLETION_TIMEOUT)
    source, destination = pair.source, pair.destination
    destination.host.signal(destination.process, signal.SIGSTOP)
    migration.series.mark("destination SIGSTOP")
    with ThreadPoolExecutor(1) as pool:
        try:
            source.qmp.cmd("migrate-continue", state="pre-switchover")
            migration.wait_status({"device"}, 30)
            migration.series.mark("migrate_cancel in device")
            answer = pool.submit(source.qmp.cmd, "migrate_cancel", timeout=COMPLETION_TIMEOUT)
            held = wait([answer], timeout=2).not_done == {answer}
        finally:
            destination.host.signal(destination.process, signal.SIGCONT)
            migration.series.mark("destination SIGCONT")
        answer.result()
    migration.series.mark("migrate_cancel answered")
    # Either end is possible on the source ('cancelled' is what 10.0.2 does): wait for it, not for the declared one.
    destination.expect_exit("its source may fail the stream under a late cancel", codes=(1,))
    final = migration.wait_status({"completed", "cancelled", "failed"}, COMPLETION_TIMEOUT)
    migration.wait_status({"completed", "failed"}, COMPLETION_TIMEOUT, side="destination")
    running = [m.name for m in (source, destination) if not m.exited and m.runstate() == "running"]
    testbed.artefacts.verdict(
        oracles.equals("migrate_cancel held while the source is in 'device'", held, True,
                       "the migration thread holds the BQL through the device phase"),
        oracles.equals("QEMUs running the guest after the late cancel", running, [destination.name],
                       "one guest, never two: the destination took over"))
    return Cancelled(migration, final.get("status"))


def in_postcopy(testbed: Testbed, pair: Pair) -> Cancelled:
    config = MigrationConfig(capabilities={"postcopy-ram": True},
                             parameters={"max-bandwidth": 32 * MiB, "max-postcopy-bandwidth": 8 * MiB})
    migration = testbed.migrate(pair.source, pair.destination, config, name="refused-cancel")
    migration.wait_dirty_syncs(2, COMPLETION_TIMEOUT)
    migration.start_postcopy()
    migration.wait_status({"postcopy-active"}, 30)
    try:
        pair.source.qmp.cmd("migrate_cancel")
        refusal = None
    except ExecuteError as exc:
        refusal = str(exc)
    migration.series.mark("migrate_cancel refused", error=refusal)
    migration.wait_completed(COMPLETION_TIMEOUT)
    return Cancelled(migration, migration.status(), refusal)


@dataclass(frozen=True)
class Case:
    reach: Callable[[Testbed, Pair], Cancelled]
    interrupted: str            # (1) the status the cancel interrupted (or the refused cancel's status)
    source_end: str             # (2)
    destination_end: str        # (2) exited | untouched | completed
    refusal: str | None = None


CASES = {
    "none": Case(in_none, "none", "none", "untouched"),
    "setup": Case(in_setup, "setup", "cancelled", "untouched"),
    "active": Case(in_active, "active", "cancelled", "exited"),
    "pre-switchover": Case(in_pre_switchover, "pre-switchover", "cancelled", "exited"),
    "device": Case(in_device, "completed", "completed", "completed"),
    "cancelling": Case(lambda t, p: in_active(t, p, again_in="cancelling"), "cancelling", "cancelled", "exited"),
    "cancelled": Case(lambda t, p: in_active(t, p, again_in="cancelled"), "cancelled", "cancelled", "exited"),
    "failed": Case(lambda t, p: after_end(t, p, dataclasses.replace(SLOW, expect=Outcome.FAILED)), "failed",
                   "failed", "untouched"),
    "completed": Case(lambda t, p: after_end(t, p, FAST), "completed", "completed", "completed"),
    "active-multifd": Case(lambda t, p: in_active(t, p, config=MULTIFD), "active", "cancelled", "exited"),
    "postcopy-active": Case(in_postcopy, "completed", "completed", "completed", POSTCOPY_REFUSAL),
}
REPRESENTATIVE = {"pre-switchover"}    # make check; the rest is `slow` (test_basics covers a cancel in active)


NEEDS = {"active-multifd": [pytest.mark.needs(capabilities=["multifd"], parameters=["multifd-channels"])],
         "pre-switchover": [pytest.mark.needs(capabilities=["pause-before-switchover"])],
         "device": [pytest.mark.needs(capabilities=["pause-before-switchover"], commands=["migrate-continue"])],
         "postcopy-active": [pytest.mark.needs_userfaultfd,
                             pytest.mark.needs(capabilities=["postcopy-ram"], commands=["migrate-start-postcopy"])]}


# Seen on QEMU 10.0.2 (TCG) in 1 of 2 runs (a race; the other run ended as declared): the cancel, answered once
# the BQL is free, turns the source 'cancelled' ("Channel error: Input/output error") and restarts its vCPUs while
# the destination, which got the whole state, completes and runs too — two live copies of one guest. Reported by
# the test, not hidden: an expected failure.
SPLIT_BRAIN = pytest.mark.xfail(reason="QEMU 10.0.2: a cancel held through 'device' restarts the source although the "
                                       "destination completed and runs (both copies live)", strict=False)
# 'none' reads the status of a source that never migrated: a warm-booted source was restored by an incoming
# migration and reports its 'completed' (session 14's make test, the first run since warm boots), so it boots cold.
MARKS = {**NEEDS, "device": [*NEEDS["device"], SPLIT_BRAIN], "none": [pytest.mark.cold_boot]}


@pytest.mark.known_bug("tcg-dirty-tlb")
@pytest.mark.parametrize("status", [pytest.param(s, marks=MARKS.get(s, []) + ([] if s in REPRESENTATIVE
                                                                             else [pytest.mark.slow]))
                                    for s in CASES])
def test_cancel_in_status_leaves_a_running_migratable_source(testbed: Testbed, pair: Pair, status: str) -> None:
    case = CASES[status]
    seq = workloads.start(pair.source, SeqInc(size_mib=SEQINC_MIB, rate_passes=SEQINC_PASSES_PER_S))
    workloads.start(pair.source, Dirty(size_mib=DIRTY_MIB, rate_mibps=8))
    cancelled = case.reach(testbed, pair)
    if cancelled.migration is not None:
        cancelled.migration.finish()
    destination = cancelled.destination or pair.destination
    lives_on = destination if case.destination_end == "completed" else pair.source
    if lives_on is destination:
        wait_runstate(destination, {"running"}, 30)
    verdicts = [oracles.equals("status the cancel interrupted", cancelled.interrupted, case.interrupted,
                               "QEMU's MIGRATION events (or a query on the cancelling monitor)"),
                oracles.equals("source's end status", pair.source.qmp.cmd("query-migrate").get("status", "none"),
                               case.source_end, "declared")]
    if case.refusal is not None:
        verdicts.append(oracles.equals("migrate_cancel refused", cancelled.refusal, case.refusal, "QEMU's text"))
    if case.destination_end == "exited":
        info = destination.wait_exit(30)
        verdicts.append(oracles.equals("destination exit", info and info.returncode, 1, "its stream ended mid-load"))
    elif case.destination_end == "untouched":
        verdicts.append(oracles.equals("destination never reached",
                                       destination.qmp.cmd("query-migrate").get("status", "none"), "none"))
    running = lives_on.still_running(f"the cancel in {status}", f"{lives_on.name} still running")
    testbed.artefacts.verdict(*verdicts, running)     # recorded before anything that needs the guest to answer
    before, after = workloads.wait_seqinc_advances(lives_on, seq)
    progressing = oracles.progressed("the guest's own seqinc counter advances", before, after, 1)
    check = workloads.seqcheck(lives_on, seq)
    testbed.artefacts.verdict(progressing, oracles.guest_invariant(check.passed, check.line))
    if lives_on is pair.source and running.passed and progressing.passed:    # a source that runs on: try again
        migrates_again(testbed, pair.source, seq)
