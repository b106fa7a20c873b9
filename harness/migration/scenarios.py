"""Scenario skeletons several behaviour files share: a migration under a known workload, then the integrity oracles.

Each takes the MigrationConfig that makes the test's point (multifd, TLS, xbzrle, compression, …) and runs the same
workloads, waits and integrity checks, so that what differs between two tests is only what they are about:

  precopy_with_integrity   seqinc (+ a dirtier), precopy to completion, both sides paused: RAM hashes equal, then
                           seqcheck on the destination;
  migrates_again           after a failed or cancelled migration, the same source to a fresh paused destination:
                           completed, RAM hashes equal, seqcheck;
  saved_and_restored       seqinc, a file migration saved and then restored into a paused destination: completed,
                           RAM hashes equal, seqcheck;
  postcopy_under_load      seqinc + a 64 MiB/s dirtier, precopy until the first pass is done, then postcopy;
  postcopy_with_integrity  that, to completion: pages faulted in by request, seqcheck on the destination;
  postcopy_recovers        that, broken 2 MiB into postcopy by the test's interruption (migrate-pause, a link
                           cut), optionally a recovery that fails again, recovered, completed with the guest
                           intact (and, into a paused destination, host RAM hashes equal);
  held_precopy             a hot set rewritten flat out while the bandwidth holds precopy back; after two passes
                           the test's own step runs (a window of counters, a workload's phases), then the limits
                           are lifted, the migration converges (a file: saved, then restored) and the integrity
                           oracles run;
  resend_window            held_precopy whose step is a window in which every page sent is one the destination
                           already has, with the counters the test names measured over it (for what xbzrle and
                           multifd compression send per page);
  non_converging_windows   per arm (a WindowArm: label, capabilities, parameters), precopy that cannot converge,
                           watched for a fixed window after its first pass and then cancelled: what QEMU did in the
                           window (the series, its counters, the source's trace events) for the test to judge one
                           arm against its mechanism and the arms against each other (B0, B4).
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import Any, Callable, Generic, Iterable, Mapping, Sequence, TypeVar

from harness.analysis import oracles

from harness.vm import workloads
from harness.analysis.samples import Series
from harness.analysis.series import CounterWindow, counter_delta, counter_window, increment_times
from harness.analysis.trace import parse_file
from harness.analysis.integrity import RamComparison
from harness.vm.ram import compare_guest_ram
from harness.vm.machine import Machine
from harness.migration.migrate import Migration, wait_runstate
from harness.migration.config import MigrationConfig
from harness.migration.relay import RelayCounts
from harness.qemu.qmp import ExecuteError
from harness.migration.testbed import Pair, Testbed
from harness.core.units import MiB
from harness.vm.workloads import Dirty, RunningWorkload, SeqCheck, SeqInc

T = TypeVar("T")

SEQINC_MIB = 32
SEQINC_PASSES_PER_S = 1     # 32 MiB/s of rewrites: checkable after any migration, convergent at 128 MiB/s
DIRTY_MIB = 128
COMPLETION_TIMEOUT = 120.0
# A scenario's first pass, before anything it watches: ~160–230 MiB of non-zero pages in the x86_64 guest took 7 s of
# a basic postcopy test's 12 at the 32 MiB/s postcopy_under_load used to have, 10 s of xbzrle's 21 at held_precopy's
# 16 MiB/s; ~1 s at this. A 1 ms downtime limit keeps it from converging at any rate (upstream's
# migrate_ensure_non_converge: the threshold, bandwidth × limit, is far below what the workloads keep dirty).
FIRST_PASS_BANDWIDTH = 256 * MiB
NON_CONVERGING_DOWNTIME_MS = 1
QEMU_DEFAULT_MAX_BANDWIDTH = 128 * MiB   # migration/options.c MAX_THROTTLE: what an arm that sets none gets back
QEMU_DEFAULT_DOWNTIME_MS = 300           # DEFAULT_MIGRATE_SET_DOWNTIME
HELD_PRECOPY_BANDWIDTH = 32 * MiB   # postcopy_under_load's precopy when the test acts in it: the dirtier outruns it


def fast_first_pass(config: MigrationConfig) -> MigrationConfig:
    """`config` with its first pass at FIRST_PASS_BANDWIDTH, held from converging by NON_CONVERGING_DOWNTIME_MS."""
    return config.with_parameters(max_bandwidth=FIRST_PASS_BANDWIDTH, downtime_limit=NON_CONVERGING_DOWNTIME_MS)


def hold_after_first_pass(migration: Migration, held: Mapping[str, Any], timeout: float) -> None:
    """Once the first pass has ended (dirty-sync-count 2), set the `held` parameters (QMP names) that the passes
    the test watches run at, and mark the moment in the series."""
    migration.wait_dirty_syncs(2, timeout)
    migration.source.qmp.cmd("migrate-set-parameters", **held)
    migration.series.mark("hold", **held)


def reports_verdicts(pair: Pair, marks: Mapping[str, int], expected: Sequence[str] = ()) -> list[oracles.Verdict]:
    """Neither QEMU reported an error or warning (oracles.reported_nothing) since `marks` (Machine.output_mark per
    side): for the plain migrations of the scenarios below, where nothing the test does provokes one."""
    return [oracles.reported_nothing(f"{side} QEMU reported nothing while migrating", machine.reports_since(
        marks[side]), expected) for side, machine in (("source", pair.source), ("destination", pair.destination))]


def output_marks(pair: Pair) -> dict[str, int]:
    return {"source": pair.source.output_mark(), "destination": pair.destination.output_mark()}


def precopy_with_integrity(testbed: Testbed, pair: Pair, config: MigrationConfig,
                           dirty_mibps: float, expected_reports: Sequence[str] = ()) -> dict[str, Any]:
    """Migrate with seqinc (+ dirty at `dirty_mibps`) running; both sides end paused (`paused_pair`); record and
    assert completed, host RAM hashes equal, the seqinc invariant on the destination, and that neither QEMU
    reported anything but `expected_reports` meanwhile (reports_verdicts). Returns the source's final
    query-migrate, for the test's own oracles."""
    seq = workloads.start(pair.source, SeqInc(size_mib=SEQINC_MIB, rate_passes=SEQINC_PASSES_PER_S))
    if dirty_mibps:
        workloads.start(pair.source, Dirty(size_mib=DIRTY_MIB, rate_mibps=dirty_mibps))
    marks = output_marks(pair)
    migration = testbed.migrate(pair.source, pair.destination, config)
    final = migration.wait_completed(COMPLETION_TIMEOUT)
    testbed.artefacts.verdict(oracles.completed(final))
    migration.finish()
    testbed.artefacts.write_json("final-query-migrate", final)

    _, check = compare_then_check(testbed, pair.source, pair.destination, seq)
    testbed.artefacts.verdict(oracles.guest_invariant(check.passed, check.line),
                              *reports_verdicts(pair, marks, expected_reports))
    return final


def saved_and_restored(testbed: Testbed, source: Machine, config: MigrationConfig,
                       before_start: Callable[[Migration], None] | None = None,
                       after_save: Callable[[Migration], None] | None = None) -> tuple[Migration, dict[str, Any]]:
    """A file migration with seqinc running: saved (`before_start(migration)` first, e.g. to prepare the file;
    `after_save(migration)` once the source completed, e.g. to judge the file before a restore that may fail on
    it), then restored into a fresh paused destination; records completed, host RAM hashes equal and the seqinc
    invariant on the destination. Returns the finished migration (its file still there) and the final
    query-migrate."""
    seq = workloads.start(source, SeqInc(size_mib=SEQINC_MIB, rate_passes=SEQINC_PASSES_PER_S))
    migration = testbed.prepare_migration(source, None, config)
    if before_start is not None:
        before_start(migration)
    migration.start()
    migration.wait_status({"completed"}, COMPLETION_TIMEOUT)
    if after_save is not None:
        after_save(migration)
    destination = testbed.incoming(source, paused=True)
    migration.restore_into(destination)
    final = migration.wait_completed(COMPLETION_TIMEOUT)
    migration.finish()
    testbed.artefacts.write_json("final-query-migrate", final)
    testbed.artefacts.verdict(oracles.completed(final))
    _, check = compare_then_check(testbed, source, destination, seq)
    testbed.artefacts.verdict(oracles.guest_invariant(check.passed, check.line))
    return migration, final


def compare_then_check(testbed: Testbed, source: Machine, destination: Machine, seq: RunningWorkload,
                       judge: Callable[[RamComparison], oracles.Verdict] = oracles.ram_identical,
                       ) -> tuple[RamComparison, SeqCheck]:
    """The end of a migration to a paused destination, both sides paused: host RAM hashes of both, recorded at
    once (`ram-comparison.json` and the `host RAM hashes equal` verdict: a guest that then crashes on the damaged
    pages must not hide how many there are), then the destination runs on and seqcheck reads the invariant of
    seqinc `seq` there. `judge`: the RAM verdict (identical; or, with free page reporting, identical but for
    pages the source discarded)."""
    comparison = compare_guest_ram(source, destination, source.config.ram_bytes, testbed.workdir)
    testbed.artefacts.write_json("ram-comparison", comparison)
    testbed.artefacts.verdict(judge(comparison))
    destination.qmp.cmd("cont")
    return comparison, workloads.seqcheck(destination, seq)


def migrates_again(testbed: Testbed, source: Machine, seq: RunningWorkload, name: str = "migrates-again") -> None:
    """After a migration of `source` failed or was cancelled: the same source migrates plainly (what the earlier one
    set — capabilities, TLS, a switchover limit — switched off again) to a fresh paused destination at 128 MiB/s.
    Records completed, host RAM hashes equal and the seqinc invariant on the destination: a failure must not spoil
    the next migration."""
    destination = testbed.incoming(source, name=f"{name}-destination", paused=True)
    left_on = {c["capability"]: False for c in source.qmp.cmd("query-migrate-capabilities")
               if c["state"] and c["capability"] != "events"}
    plain = MigrationConfig(capabilities=left_on, parameters={"max-bandwidth": 128 * MiB, "downtime-limit": 300,
                                                              "tls-creds": "", "tls-hostname": ""})
    migration = testbed.migrate(source, destination, plain, name=name)
    final = migration.wait_completed(COMPLETION_TIMEOUT)
    migration.finish()
    testbed.artefacts.verdict(oracles.completed(final))
    _, check = compare_then_check(testbed, source, destination, seq)
    testbed.artefacts.verdict(oracles.guest_invariant(check.passed, check.line))


def postcopy_under_load(testbed: Testbed, pair: Pair, postcopy_bandwidth: int,
                        config: MigrationConfig = MigrationConfig(), dirty_mib: int = DIRTY_MIB,
                        before_postcopy: Callable[[Migration], None] | None = None,
                        ) -> tuple[RunningWorkload, Migration]:
    """seqinc + a 64 MiB/s dirtier of `dirty_mib`, precopy until the first pass is done, then
    `before_postcopy(migration)` (the test's own steps while precopy still runs, e.g. a workload's phases), then
    the switch to postcopy. `config` adds to postcopy-ram and the two bandwidths (e.g. TLS credentials, preempt)."""
    seq = workloads.start(pair.source, SeqInc(size_mib=SEQINC_MIB, rate_passes=SEQINC_PASSES_PER_S))
    workloads.start(pair.source, Dirty(size_mib=dirty_mib, rate_mibps=64))
    # With nothing to do before the switch, the first pass goes as fast as the host sends it, held from converging
    # by upstream's non-converge downtime limit (tests/qtest/migration: migrate_ensure_non_converge). A test that
    # acts while precopy runs (`before_postcopy`) keeps the held 32 MiB/s: at full speed its steps, each some syncs
    # apart, took milliseconds, and page lifecycle's precopy converged before its postcopy began.
    precopy = (fast_first_pass(config) if before_postcopy is None
               else config.with_parameters(max_bandwidth=HELD_PRECOPY_BANDWIDTH))
    config = (precopy.with_capabilities(postcopy_ram=True)
              .with_parameters(max_postcopy_bandwidth=postcopy_bandwidth))
    migration = testbed.migrate(pair.source, pair.destination, config)
    migration.wait_dirty_syncs(2, COMPLETION_TIMEOUT)  # first pass done: the rest goes by postcopy
    if before_postcopy is not None:
        before_postcopy(migration)
    migration.start_postcopy()
    return seq, migration


def postcopy_with_integrity(testbed: Testbed, pair: Pair, postcopy_bandwidth: int) -> dict[str, Any]:
    """postcopy_under_load to completion: completed, went through postcopy-active, the destination faulted pages
    in by request (≥ 1), the seqinc invariant on the destination, and neither QEMU reported anything meanwhile
    (reports_verdicts). Returns the final query-migrate."""
    marks = output_marks(pair)
    seq, migration = postcopy_under_load(testbed, pair, postcopy_bandwidth=postcopy_bandwidth)
    final = migration.wait_completed(COMPLETION_TIMEOUT)
    migration.finish()
    testbed.artefacts.write_json("final-query-migrate", final)
    testbed.artefacts.verdict(oracles.completed(final))
    testbed.artefacts.verdict(oracles.went_through(migration.series, ["postcopy-active"]))
    requests = final.get("ram", {}).get("postcopy-requests", 0)
    testbed.artefacts.verdict(oracles.progressed("destination faulted pages in by request", 0, requests, 1))
    check = workloads.seqcheck(pair.destination, seq)
    testbed.artefacts.verdict(oracles.guest_invariant(check.passed, check.line), *reports_verdicts(pair, marks))
    return final


def postcopy_recovers(testbed: Testbed, pair: Pair, interrupt: Callable[[Migration], None],
                      config: MigrationConfig = MigrationConfig(),
                      then: Callable[[Migration], None] | None = None) -> Migration:
    """Postcopy under load (`config` adds to it, e.g. postcopy-preempt), 2 MiB into postcopy `interrupt(migration)`
    breaks its channel (it returns once both sides are postcopy-paused and the channel can be made again),
    `then(migration)` if given (e.g. a recovery that fails again and leaves both sides paused once more:
    harness.migration.recovery_faults), recovery (migrate-recover + resume), the postcopy bandwidth lifted to
    64 MiB/s (what recovery had to prove it has), completion with the guest intact: seqinc's invariant on the
    destination, and where the destination was started paused (`paused_pair`: it never runs, so both sides end
    paused) first the host RAM hashes of both sides — every page, not just those the guest touched. Returns the
    migration, for the test's own verdicts on its series."""
    seq, migration = postcopy_under_load(testbed, pair, postcopy_bandwidth=4 * MiB, config=config)
    migration.wait_status({"postcopy-active"}, 30)
    migration.wait(lambda s: s.latest().get("ram", {}).get("postcopy-bytes", 0) > 2 * MiB, 60,
                   "2 MiB sent in postcopy")
    interrupt(migration)
    if then is not None:
        then(migration)
    migration.recover()
    migration.wait_status({"postcopy-active", "completed"}, 30)
    pair.source.qmp.cmd("migrate-set-parameters", **{"max-postcopy-bandwidth": 64 * MiB})
    final = migration.wait_completed(COMPLETION_TIMEOUT)
    migration.finish()
    testbed.artefacts.write_json("final-query-migrate", final)
    testbed.artefacts.verdict(oracles.completed(final))
    testbed.artefacts.verdict(oracles.went_through(migration.series, ["postcopy-active", "postcopy-paused"]))
    testbed.artefacts.verdict(oracles.went_through(migration.series, ["postcopy-recover"], side="destination"))
    if pair.destination.config.start_paused:
        _, check = compare_then_check(testbed, pair.source, pair.destination, seq)
    else:
        wait_runstate(pair.destination, {"running"}, 30)
        check = workloads.seqcheck(pair.destination, seq)
    testbed.artefacts.verdict(oracles.guest_invariant(check.passed, check.line))
    return migration


def integrity_verdicts(final: Mapping[str, Any], check: SeqCheck) -> list[oracles.Verdict]:
    """completed and the seqinc invariant (host RAM hashes equal was recorded by compare_then_check)."""
    return [oracles.completed(dict(final)), oracles.guest_invariant(check.passed, check.line)]


@dataclass(frozen=True)
class HeldPrecopy(Generic[T]):
    """What `held_precopy` ends with: the (unfinished) migration, the source's final query-migrate, the
    integrity checks of the end state, and what the test's `during` step returned."""
    migration: Migration
    final: Mapping[str, Any]
    comparison: RamComparison
    check: SeqCheck
    during: T

    def integrity_verdicts(self) -> list[oracles.Verdict]:
        return integrity_verdicts(self.final, self.check)


@dataclass(frozen=True)
class ResendWindow:
    """What `resend_window` measured: each named query-migrate counter's increase over [t_start, t_end] (series
    time), the final query-migrate, and the integrity checks of the end state. With a relay (MigrationConfig.relay)
    also what the transport carried from source to destination: `carried` over the window (read right after the
    samples that open and close it) and `relay` over the whole migration (drained once it completed); None
    without one (a remote side or a link: harness.migration.testbed)."""
    t_start: float
    t_end: float
    counters: Mapping[str, float]
    final: Mapping[str, Any]
    comparison: RamComparison
    check: SeqCheck
    carried: int | None = None
    relay: RelayCounts | None = None

    def integrity_verdicts(self) -> list[oracles.Verdict]:
        return integrity_verdicts(self.final, self.check)

    def wire(self) -> tuple[float, str]:
        """The bytes sent in the window and what counted them, for a verdict's name: the relay's count, else (no
        relay) QEMU's own ram.transferred, which the test must have asked for among its counters."""
        if self.carried is not None:
            return self.carried, "bytes the relay carried"
        return self.counters["ram.transferred"], "ram.transferred (QEMU's own count: no relay)"

    def to_json(self) -> dict[str, Any]:
        return {"t_start": self.t_start, "t_end": self.t_end, "counters": dict(self.counters),
                "carried": self.carried, "relay": self.relay, "final": dict(self.final)}


HOT_SET_MIB = 64
RESEND_SEQINC_MIB = 16
RESEND_BANDWIDTH = 16 * MiB     # far below the dirtier's rate: no convergence while the window lasts
CONVERGE_BANDWIDTH = 1024 * MiB
# The switch-over threshold is QEMU's measured throughput (bytes on the wire per second) × downtime-limit: 5 s of
# it is ≫ what the hot set leaves dirty when its pages go whole. A stream whose pages cost a fraction of their size
# (compressed, xbzrle deltas) measures a few MB/s of bytes for far more pages, so such a test passes
# ENCODED_CONVERGE_DOWNTIME_MS: a minute of that throughput holds the 64 MiB hot set, which stop-copy then sends
# encoded. Measured: multifd zlib hovered 1–35 MiB above 5 s of it for a minute; xbzrle from a 7.2 source with the
# tcg-dirty-tlb workaround (a dirty sync resets the TLB page by page) measured 9–38 Mbit/s, 5 s of which is
# 6–24 MB while each pass left 64–80 MiB dirty: it converged only after a pass that happened to be short, and once
# not within 180 s (10.0 passes 0.1 s apart at 130 Mbit/s: 5 s of it, 80 MB, just held the hot set).
CONVERGE_DOWNTIME_MS = 5000
ENCODED_CONVERGE_DOWNTIME_MS = 60_000
RESEND_COMPLETION_TIMEOUT = 180.0


def held_precopy(testbed: Testbed, pair: Pair, config: MigrationConfig, during: Callable[[Migration], T],
                 hot_set: Dirty = Dirty(size_mib=HOT_SET_MIB, rate_mibps=0, order="random"),
                 bandwidth: int = RESEND_BANDWIDTH, converge_downtime_ms: int = CONVERGE_DOWNTIME_MS,
                 hold_downtime_ms: int = 100,
                 ram_judge: Callable[[RamComparison], oracles.Verdict] = oracles.ram_identical) -> HeldPrecopy[T]:
    """A precopy held back, then let go. The `dirty` workload rewrites a `hot_set` (by default 8 words of each
    page of HOT_SET_MIB, random order, flat out; above `bandwidth` in any case) and seqinc one byte of each page
    of its own set, on a `paused_pair`; after a first pass at FIRST_PASS_BANDWIDTH, `config` (plus `bandwidth`
    and `hold_downtime_ms` of downtime-limit) keeps precopy re-sending them. From the third dirty sync (two passes
    done: every page now sent is one the destination has) the test's `during(migration)` runs; then CONVERGE_BANDWIDTH and
    `converge_downtime_ms` are set (the scenario's own end of the hold) and precopy converges with the dirtier
    still running: nothing talks to the guest while the migration loads the host. A `file` transport saves into
    its file and is then restored into the paused destination. Both sides end paused: RAM is compared, then the
    destination runs seqcheck. The migration is not finished: the caller reads what it needs (e.g. the relay's
    counts) and finishes it."""
    source, destination = pair.source, pair.destination
    seq = workloads.start(source, SeqInc(size_mib=RESEND_SEQINC_MIB, rate_passes=1))
    workloads.start(source, hot_set)
    # The first pass at full speed (no convergence: upstream's 1 ms non-converge limit), then the hold: the second
    # pass, and all the test watches from the third sync, runs at `bandwidth` as before. At 16 MiB/s the first pass
    # alone (~160 MiB of non-zero pages) took 10 s of xbzrle's 21 s migration.
    config = fast_first_pass(config)
    to_file = config.transport == "file"
    migration = testbed.migrate(source, None if to_file else destination, config)
    hold_after_first_pass(migration, {"max-bandwidth": bandwidth, "downtime-limit": hold_downtime_ms}, 120)
    migration.wait_dirty_syncs(3, timeout=120)
    result = during(migration)
    migration.source.qmp.cmd("migrate-set-parameters", **{"max-bandwidth": CONVERGE_BANDWIDTH,
                                                         "downtime-limit": converge_downtime_ms})
    if to_file:
        migration.wait_status({"completed"}, RESEND_COMPLETION_TIMEOUT)
        migration.restore_into(destination)
    final = migration.wait_completed(RESEND_COMPLETION_TIMEOUT)
    return HeldPrecopy(migration, final, *compare_then_check(testbed, source, destination, seq, ram_judge), result)


def resend_window(testbed: Testbed, pair: Pair, config: MigrationConfig, counters: Iterable[str],
                  window_s: float, converge_downtime_ms: int = CONVERGE_DOWNTIME_MS) -> ResendWindow:
    """held_precopy over a HOT_SET_MIB hot set at RESEND_BANDWIDTH whose `during` step is a window of `window_s`
    seconds from the third dirty sync: every page sent in it is one the destination already has. `counters`
    are measured over that window, and with a relay what it carried over the window and in all."""
    def carried(migration: Migration) -> int | None:
        return migration.relay.counts().sent if migration.relay is not None else None

    def window(migration: Migration) -> tuple[float, float, int | None]:
        t_start, at_start = migration.series.samples["source"][-1]["t"], carried(migration)
        migration.wait_until(t_start + window_s, f"{window_s:g}s of re-sending pages the destination has")
        t_end, at_end = migration.series.samples["source"][-1]["t"], carried(migration)
        return t_start, t_end, (at_end - at_start if at_start is not None and at_end is not None else None)

    held = held_precopy(testbed, pair, config, window, converge_downtime_ms=converge_downtime_ms)
    relay = held.migration.relay.drain(10.0) if held.migration.relay is not None else None
    series = held.migration.finish()
    t_start, t_end, in_window = held.during
    deltas = {name: counter_delta(series, name, t_start, t_end) for name in counters}
    result = ResendWindow(t_start, t_end, deltas, held.final, held.comparison, held.check, in_window, relay)
    testbed.artefacts.write_json("window", result)
    return result


@dataclass(frozen=True)
class WindowArm:
    """One arm of a non-converging window: its label (names its destination, migration and artefacts) and what its
    migration is asked to do. The scenario's parameters (bandwidth, downtime-limit) keep precopy from converging.
    `window_s`, when set, replaces the scenario's window for this arm (a control arm may need less to show what it
    must: B4's shows only that no sync comes within two timer periods)."""
    label: str
    capabilities: Mapping[str, bool] = field(default_factory=dict)
    parameters: Mapping[str, Any] = field(default_factory=dict)
    window_s: float | None = None

    @property
    def config(self) -> MigrationConfig:
        return MigrationConfig(capabilities=dict(self.capabilities), parameters=dict(self.parameters))


@dataclass(frozen=True)
class NonConvergingWindow:
    """The scenario as data: its arms, in order, each watched for `window_s` seconds after its first pass (the
    dirty sync that made dirty-sync-count 2, within `first_pass_timeout`), and the source trace events whose times
    in the window the test judges (the source must have been booted with them)."""
    arms: tuple[WindowArm, ...]
    window_s: float
    first_pass_timeout: float = 120.0
    trace_events: tuple[str, ...] = ()
    # The first pass, which no window watches, at FIRST_PASS_BANDWIDTH (held from converging by a 1 ms limit);
    # each arm's own bandwidth and downtime-limit are set the moment it ends, before its window begins.
    fast_first_pass: bool = False


class ArmRefused(Exception):
    """QEMU refused an arm's capabilities or parameters before the migration began (a test may skip on it)."""


@dataclass(frozen=True)
class ArmWindow:
    """What one arm's window showed: the series (series time throughout), the window [t_start, t_end], the
    source's status at its end, and the series times of each asked-for trace event inside the window."""
    label: str
    t_start: float
    t_end: float
    status: str | None
    trace_times: Mapping[str, list[float]]
    series: Series = field(repr=False, compare=False)

    @property
    def counters(self) -> CounterWindow:
        """How far dirty-sync-count and ram.transferred moved in the window."""
        return counter_window(self.series, self.t_start, self.t_end)

    def increments(self, path: str, include_start: bool = False) -> list[float]:
        """Sample times in the window at which counter `path` went up; the sample that opened the window (the
        first pass's end) only with `include_start`."""
        return [t for t in increment_times(self.series, path)
                if (t >= self.t_start if include_start else t > self.t_start) and t <= self.t_end]

    def to_json(self) -> dict[str, Any]:
        return {"label": self.label, "t_start": self.t_start, "t_end": self.t_end, "status": self.status,
                "trace_times": dict(self.trace_times), "counters": self.counters}


def non_converging_window(testbed: Testbed, source: Machine, scenario: NonConvergingWindow,
                          arm: WindowArm) -> ArmWindow:
    """One arm: a fresh destination, precopy with the arm's config; once the first pass has ended (dirty-sync-count
    2), the arm's window (its own `window_s`, else the scenario's) more of it, the source's status noted, then the scenario's own cancel — never the
    failure under test — and sampling stops. A window in which precopy was not 'active' to the end did not measure
    what it claims: that raises, naming the status."""
    destination = testbed.incoming(source, name=f"destination-{arm.label}")
    held = {name: arm.parameters[name] for name in ("max-bandwidth", "downtime-limit") if name in arm.parameters}
    config = fast_first_pass(arm.config) if scenario.fast_first_pass else arm.config
    migration = testbed.prepare_migration(source, destination, config, name=arm.label)
    try:
        migration.start()
    except ExecuteError as exc:
        raise ArmRefused(f"QEMU refuses {dict(arm.capabilities)} {dict(arm.parameters)}: {exc}") from exc
    if scenario.fast_first_pass:
        hold_after_first_pass(migration, {"max-bandwidth": QEMU_DEFAULT_MAX_BANDWIDTH,
                                          "downtime-limit": QEMU_DEFAULT_DOWNTIME_MS, **held},
                              scenario.first_pass_timeout)
    migration.wait_dirty_syncs(2, timeout=scenario.first_pass_timeout)
    t_start = migration.series.samples["source"][-1]["t"]
    window_s = scenario.window_s if arm.window_s is None else arm.window_s
    t_end = t_start + window_s
    migration.wait_until(t_end, f"{window_s:g}s after the first pass")
    status = migration.status()
    migration.cancel_and_wait(timeout=60)
    migration.finish()
    if status != "active":
        raise AssertionError(f"{arm.label}: precopy was {status!r} during the window, not a non-converging "
                             "'active' phase: the scenario did not provoke what it measures")
    series = migration.series
    times: dict[str, list[float]] = {}
    if scenario.trace_events:
        trace = parse_file(source.files.trace)
        for event in scenario.trace_events:
            in_series = (r.t - series.wall_t0 for r in trace.named(event) if r.t is not None)
            times[event] = [t for t in in_series if t_start <= t <= t_end]
    window = ArmWindow(arm.label, t_start, t_end, status, times, series)
    testbed.artefacts.write_json(f"arm-{arm.label}", window)
    return window


def non_converging_windows(testbed: Testbed, scenario: NonConvergingWindow,
                           source: Machine | Callable[[WindowArm], Machine],
                           around: Callable[[WindowArm], AbstractContextManager[Any]] | None = None,
                           ) -> dict[str, ArmWindow]:
    """Every arm of `scenario` in order, by label. `source` is one Machine all arms migrate from in turn (each
    arm's cancel leaves it running), or a function booting a fresh source per arm, which is shut down after its
    arm so that no two arms compete for the host's CPUs. `around(arm)` wraps an arm (e.g. a host-side sampler of
    the source's threads)."""
    windows = {}
    for arm in scenario.arms:
        machine = source(arm) if callable(source) else source
        with (around(arm) if around is not None else nullcontext()):
            windows[arm.label] = non_converging_window(testbed, machine, scenario, arm)
        if callable(source):
            machine.shutdown()
    return windows
