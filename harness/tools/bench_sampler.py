"""bench's sampler part: the rate the Sampler achieves and its cost to the guest (python -m harness.tools.bench).

The sampler's cost to the guest, judged on the upper end of its 95 % interval: one non-converging migration runs
throughout (dirty logging on, as in every test the sampler watches), and the Sampler is switched on and off in many
short windows, each pair in a random order. The guest's own progress log (LoggedDirty, every 100 ms) gives each
window's rate afterwards, read once, so nothing reaches into the guest during the windows. A pair's ratio cancels
host drift slower than a pair; the cost is 1 − the median ratio, its uncertainty a bootstrap 95 % interval over the
pairs (every pair kept). An earlier design (one migration per 8 s window, 3 pairs) gave 3 %, 18 % and 9 % slowdowns
with a 19 % spread: per-migration variance (setup, first sync, which pages the hot set hit) swamped a few-percent
cost. Session 14: many short pairs (1 s arms) spend the part's minutes where the verdict is (the migrating phase),
and each window also records the source QEMU's CPU (its vCPU thread's time on a CPU and waiting for one, from the
kernel's schedstat, and its other threads'), to say where a cost comes from.
"""

from __future__ import annotations

import os
import random
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from harness.analysis.series import ClockMap, parse_rate_log, progress_mib, rate_between
from harness.migration.migrate import TERMINAL_STATUSES
from harness.migration.config import MigrationConfig
from harness.hosts.capabilities import thread_times
from harness.migration.sampler import DEFAULT_SAMPLING_HZ, SLOW_SIDE_HZ, Sampler
from harness.migration.testbed import Testbed
from harness.core.units import MiB
from harness.vm import workloads
from harness.vm.machine import Machine
from harness.vm.workloads import RATE_LOG, LoggedDirty, guest_clock_reading

# Targets (README "Benchmark").
SAMPLER_MIN_HZ = 50.0             # the source's rate (another side: sampler.SLOW_SIDE_HZ outside postcopy)
SAMPLER_MAX_SLOWDOWN = 0.02       # judged on the upper end of the migrating phase's 95 % interval

HOT_SET_MIB = 64                  # re-dirtied flat out during the windows
SAMPLER_BANDWIDTH = 32 * MiB      # ≪ the guest's dirty rate: the migration stays active and dirty-logging
SAMPLER_SETTLE_S = 1.0            # after `migrate`, before the windows: setup and the first bitmap sync done
SAMPLER_BACKGROUND_HZ = 1.0       # the migration's own sampler, in sampled and unsampled windows alike

SAMPLER_PAIRS = 150               # while migrating (the judged phase); the idle phase gets a quarter of them
SAMPLER_PAIR_WINDOW_S = 1.0       # each arm of a pair; the guest logs 10 points in it
SAMPLER_EDGE_S = 0.1              # off each window's ends: the sampler's tasks starting/ending, clock mapping
# A pair in which the source's vCPU thread waited on a run queue this share of an arm: another process had the cores
# (bench holds the CPU tokens, but not every process takes them). Counted and shown, never dropped: the sampler's
# CPU displaces the guest's exactly then, which is part of its cost on a busy host.
CONTENDED_RUNQUEUE = 0.01
BOOTSTRAP_RESAMPLES = 4000


@dataclass(frozen=True)
class SamplerWindow:
    phase: str              # "idle" (no migration) or "migrating"
    pair: int
    sampled: bool
    t_start: float          # host time.monotonic()
    t_end: float
    harness_cores: float    # CPU the harness process (all its threads) used in the window, per wall second
    achieved_hz: dict[str, float] = field(default_factory=dict)
    # The source QEMU in the window, per wall second: its vCPU thread on a CPU and waiting on a run queue
    # (schedstat), and its process's CPU less the vCPU thread's (main loop, migration thread, I/O threads).
    qemu: dict[str, float] = field(default_factory=dict)


def bootstrap_interval(values: list[float], seed: int = 0, resamples: int = BOOTSTRAP_RESAMPLES,
                       level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of the median of `values` (seeded: the same data gives the same interval)."""
    rng = random.Random(seed)
    medians = sorted(statistics.median(rng.choices(values, k=len(values))) for _ in range(resamples))
    tail = (1 - level) / 2
    return medians[int(tail * resamples)], medians[min(resamples - 1, int((1 - tail) * resamples))]


def sampler_cost(rates: list[tuple[float, float]], target: float = SAMPLER_MAX_SLOWDOWN) -> dict[str, Any]:
    """(sampled, unsampled) guest rates per pair → cost = 1 − median ratio, with its 95 % interval and the verdict
    against `target`: True when the interval's upper end is below it, False when its lower end is not, None (NOISY)
    when the interval straddles it (pure: unit-tested)."""
    ratios = [s / u for s, u in rates if u > 0]
    if len(ratios) < 3:
        return {"pairs": len(ratios), "cost": None, "interval": None, "verdict": None}
    low, high = bootstrap_interval(ratios)
    median = statistics.median(ratios)
    interval = [round(1 - high, 4), round(1 - low, 4)]
    return {"pairs": len(ratios), "ratios": [round(r, 4) for r in ratios], "cost": round(1 - median, 4),
            "interval": interval, "half_width": round((high - low) / 2, 4),
            "ratio_sd": round(statistics.stdev(ratios), 4),
            "verdict": True if interval[1] < target else False if interval[0] >= target else None}


def cpu_seconds(pid: int) -> float:
    """A process's CPU time (user + system, all its threads) from /proc/PID/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class QemuCpu:
    """The source QEMU's CPU over one window: read at its start and end only (nothing runs in between)."""

    def __init__(self, pid: int, vcpu_tid: int) -> None:
        self.pid, self.vcpu_tid = pid, vcpu_tid

    def read(self) -> tuple[float, float, float, float]:
        vcpu = thread_times(self.pid, self.vcpu_tid)
        return time.monotonic(), vcpu.on_cpu_s, vcpu.runqueue_s, cpu_seconds(self.pid)

    @staticmethod
    def per_second(start: tuple[float, float, float, float],
                   end: tuple[float, float, float, float]) -> dict[str, float]:
        """Shares of the wall time between two reads (the process's CPU counts in clock ticks: ±0.01 in 1 s)."""
        wall = end[0] - start[0]
        on_cpu, runqueue, process = (end[i] - start[i] for i in (1, 2, 3))
        return {"vcpu_on_cpu": round(on_cpu / wall, 4), "vcpu_runqueue": round(runqueue / wall, 4),
                "other_threads": round(max(0.0, process - on_cpu) / wall, 4)}


def sampler_window(source: Machine, destination: Machine, phase: str, pair: int, sampled: bool,
                   qemu: QemuCpu, slow_hz: float) -> SamplerWindow:
    """One arm of a pair: SAMPLER_PAIR_WINDOW_S with the harness's Sampler polling both sides at its default
    rates (sampler.side_hz), or with nothing polling."""
    qemu_start = qemu.read()
    started, cpu = time.monotonic(), time.process_time()
    series = None
    if sampled:
        sampler = Sampler({"source": source.qmp, "destination": destination.qmp}, slow_hz=slow_hz).start()
        time.sleep(SAMPLER_PAIR_WINDOW_S)  # the sampled window itself
        series = sampler.stop()
    else:
        time.sleep(SAMPLER_PAIR_WINDOW_S)  # the unsampled window itself
    ended, harness_cpu = time.monotonic(), time.process_time() - cpu
    hz = {side: round(series.achieved_hz(side), 1) for side in series.samples if series.samples[side]} if series else {}
    return SamplerWindow(phase, pair, sampled, started, ended, harness_cpu / (ended - started), hz,
                         QemuCpu.per_second(qemu_start, qemu.read()))


def sampler_pairs(source: Machine, destination: Machine, phase: str, pairs: int, order: random.Random,
                  qemu: QemuCpu, slow_hz: float) -> list[SamplerWindow]:
    windows = []
    for pair in range(pairs):
        arms = [False, True]
        order.shuffle(arms)
        windows += [sampler_window(source, destination, phase, pair, sampled, qemu, slow_hz) for sampled in arms]
    return windows


def arm_medians(windows: list[SamplerWindow], phase: str) -> dict[str, dict[str, float]]:
    """Per arm (sampled, unsampled) of `phase`: the median harness cores and source QEMU CPU shares."""
    result = {}
    for arm, on in (("sampled", True), ("unsampled", False)):
        chosen = [w for w in windows if w.phase == phase and w.sampled == on]
        if not chosen:
            continue
        result[arm] = {"harness_cores": round(statistics.median(w.harness_cores for w in chosen), 4),
                       **{key: round(statistics.median(w.qemu[key] for w in chosen), 4) for key in chosen[0].qemu}}
    return result


def contended_pairs(windows: list[SamplerWindow], phase: str) -> int:
    """Pairs of `phase` in which an arm's vCPU thread waited on a run queue ≥ CONTENDED_RUNQUEUE of the time."""
    return len({w.pair for w in windows
                if w.phase == phase and w.qemu.get("vcpu_runqueue", 0.0) >= CONTENDED_RUNQUEUE})


def min_hz(windows: list[SamplerWindow]) -> dict[str, float]:
    """The lowest rate each side achieved over the sampled windows."""
    lowest: dict[str, float] = {}
    for w in windows:
        for side, hz in w.achieved_hz.items():
            lowest[side] = min(hz, lowest.get(side, hz))
    return lowest


def bench_sampler(bed: Testbed, source: Machine, pairs: int, log: Callable[[str], None],
                  slow_hz: float = SLOW_SIDE_HZ) -> dict[str, Any]:
    """The sampler's rate and cost in two phases of one guest's life: with the destination waiting and no
    migration ("idle", pairs // 4 pairs: a reference, not judged), then during a non-converging migration
    ("migrating", `pairs` pairs: as in the tests, and judged). `slow_hz`: the destination's rate outside postcopy
    (the Sampler's default; DEFAULT_SAMPLING_HZ measures the sampler as it was before session 14)."""
    running = workloads.start(source, LoggedDirty(size_mib=HOT_SET_MIB, rate_mibps=0, order="random"), name="hot")
    destination = bed.incoming(source, name="destination-sampler")
    assert source.process is not None
    qemu = QemuCpu(source.process.pid, int(source.qmp.cmd("query-cpus-fast")[0]["thread-id"]))
    readings = [guest_clock_reading(source)]
    order = random.Random(1)
    windows = sampler_pairs(source, destination, "idle", max(3, pairs // 4), order, qemu, slow_hz)
    # The harness's own migration driver, its sampler slowed to SAMPLER_BACKGROUND_HZ: the polling whose cost is
    # measured is the windows' own (a sampled window's Sampler, one poll a second beside it in both arms).
    config = MigrationConfig(parameters={"max-bandwidth": SAMPLER_BANDWIDTH, "downtime-limit": 50})
    migration = bed.migrate(source, destination, config, name="sampler", hz=SAMPLER_BACKGROUND_HZ)
    try:
        migration.wait_status({"active"}, timeout=30)
        time.sleep(SAMPLER_SETTLE_S)  # setup and the first bitmap sync done before any window
        windows += sampler_pairs(source, destination, "migrating", pairs, order, qemu, slow_hz)
        status = migration.wait_status(TERMINAL_STATUSES | {"active"}, timeout=30)["status"]
        if status != "active":
            raise RuntimeError(f"sampler: migration {status!r} during the windows, not an active precopy")
    finally:
        migration.cancel_and_wait(60)   # the measurement's own end: the destination's exit is expected
        destination.shutdown()
    readings.append(guest_clock_reading(source))
    log_rows = parse_rate_log(source.shell.run(f"cat {RATE_LOG}", timeout=60).stdout)
    running.stop(source)
    clock = ClockMap.fit(readings)
    points = progress_mib(log_rows, clock)

    def mibps(w: SamplerWindow) -> float | None:
        return rate_between(points, w.t_start + SAMPLER_EDGE_S, w.t_end - SAMPLER_EDGE_S)

    phases = {}
    for phase in ("idle", "migrating"):
        by_pair: dict[int, dict[bool, float | None]] = {}
        for w in windows:
            if w.phase == phase:
                by_pair.setdefault(w.pair, {})[w.sampled] = mibps(w)
        phases[phase] = {**sampler_cost([(arms[True], arms[False]) for arms in by_pair.values()
                                         if arms.get(True) and arms.get(False)]),
                         "cpu": arm_medians(windows, phase), "contended_pairs": contended_pairs(windows, phase)}
        log(f"sampler {phase}: cost {phases[phase]['cost']} (95 % {phases[phase]['interval']})")
    lowest = min_hz(windows)
    source_hz = lowest.get("source", 0.0)
    judged = phases["migrating"]
    return {"requested_hz": DEFAULT_SAMPLING_HZ, "slow_side_hz": slow_hz, "achieved_hz_min": source_hz,
            "achieved_hz_min_by_side": lowest,
            "achieved_hz": [w.achieved_hz for w in windows if w.sampled],
            "phases": phases, "judged_phase": "migrating", **judged,
            "dirty_mibps": [{"phase": w.phase, "pair": w.pair, "sampled": w.sampled, "mibps": mibps(w),
                             "harness_cores": round(w.harness_cores, 4), **w.qemu} for w in windows],
            # The sampler's own CPU (its tasks on the QMP sessions' loops): on a host with no core to spare, this is
            # what the guest's vCPU thread competes with.
            "harness_cores": {arm: round(statistics.median(w.harness_cores for w in windows if w.sampled == on), 4)
                              for arm, on in (("sampled", True), ("unsampled", False))},
            "window_s": SAMPLER_PAIR_WINDOW_S, "edge_s": SAMPLER_EDGE_S, "clock": clock.to_json(),
            "rate_log_rows": len(log_rows), "target_hz": SAMPLER_MIN_HZ, "target_slowdown": SAMPLER_MAX_SLOWDOWN,
            # An interval that straddles the target cannot say which side of it the cost is: no verdict, not a PASS.
            "pass": None if judged["verdict"] is None else (source_hz >= SAMPLER_MIN_HZ and judged["verdict"])}


def sampler_rows(sampler: dict[str, Any], verdict: Callable[[bool | None], str]) -> list[tuple[str, str, str, str]]:
    """bench's table rows for this part's results."""
    cost = "n/a" if sampler["cost"] is None else (
        f"{sampler['cost']:+.1%} (95 % {sampler['interval'][0]:+.1%} … {sampler['interval'][1]:+.1%}, "
        f"{sampler['pairs']} pairs of {sampler['window_s']:g} s, {sampler.get('judged_phase') or 'migrating'}"
        + (f", {sampler['contended_pairs']} with the vCPU waiting for a CPU" if sampler.get("contended_pairs") else "")
        + f"); harness CPU {sampler['harness_cores']['sampled']:.2f} cores sampling")
    others = ", ".join(f"{side} {hz:.0f} Hz" for side, hz in sampler.get("achieved_hz_min_by_side", {}).items()
                       if side != "source")
    return [("sampler rate (100 Hz asked)", f"source min {sampler['achieved_hz_min']:.0f} Hz over windows"
             + (f" ({others}, {sampler.get('slow_side_hz', 0):g} Hz asked outside postcopy)" if others else ""),
             f"≥ {SAMPLER_MIN_HZ:g} Hz", verdict(sampler["achieved_hz_min"] >= SAMPLER_MIN_HZ)),
            ("sampler cost to the guest", cost, f"< {SAMPLER_MAX_SLOWDOWN:.0%} (95 % upper end)",
             "NOISY" if sampler["pass"] is None else verdict(sampler["pass"]))]
