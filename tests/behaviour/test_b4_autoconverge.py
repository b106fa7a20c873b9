"""B4 — auto-converge syncs the dirty bitmap periodically during a long pass (seeds/004; QEMU 9.2).

Given a guest whose RAM pass takes well over two timer periods at the migration bandwidth (16 s in `make check`'s
case, 24 s in the `slow` one) and which dirties faster than that bandwidth, with auto-converge on a 5 s timer forces a dirty sync (and so a throttle decision) whenever no sync happened in the
last 5 s, once the first pass is done. Without it, throttling only reacts once per pass.

The timer skips a tick when a pass-end sync happened since the previous tick, so one gap may reach two periods;
the steady state is one period.

Oracles and what anchors each:
  (1) auto-converge off: the median gap between syncs exceeds two timer periods (or, with no sync in its window, the
      window does: in `make check` it is shorter than a pass) — the same-run control, proving the run can tell
      periodic syncs from pass-end syncs;
  (2) auto-converge on: the first gap ≤ two periods, then every gap ≤ one period + TOLERANCE_S — anchored to the
      mechanism's absolute (CPU_THROTTLE_DIRTY_SYNC_TIMESLICE_MS = 5 s), not to the control;
  (3) cpu-throttle-percentage goes initial, initial + increment, … capped at max (and is held at a cap below 99) —
      anchored to the parameters the test set: QEMU's own report of its decisions;
  (4) the throttle has its effect: the guest's OWN achieved dirty rate (a flat-out, CPU-bound dirtier logging its
      progress every 100 ms) falls at each throttle level in the proportion the throttle implies (the vCPU runs
      1 − throttle of the time): the slope of the achieved slowdown against the throttle fraction is within
      [SLOPE_LOW, SLOPE_HIGH] of 1. Anchored to the guest's view and the mechanism, so a build that reports its
      decisions (3) but never sleeps the vCPUs fails (regressions/B4-throttle-never-sleeps-vcpus.patch). The
      unthrottled rate it is compared with is the same guest's, just before the first throttle step. Host load
      moves the guest's rate too (on 2 shared cores, other work can halve it), so each window's rate is divided by
      the share of its runnable time the vCPU thread got a CPU (the kernel's run-queue accounting, as in (5)): the
      load's share is given back, the throttle's sleep is not. Even so the guest's work per CPU-second varies on
      TCG, so the band is wide;
  (5) the throttle's mechanism seen from the host: the source's vCPU thread's sleep share (wall time neither on a
      CPU nor waiting for one, from the kernel's /proc/PID/task/TID/schedstat) per level over its baseline just
      before the first step, as (s − s0)/(1 − s0); its slope against the throttle fraction is within
      [SLEEP_SLOPE_LOW, SLEEP_SLOPE_HIGH] of 1. Anchored to the mechanism's absolute (cpu_throttle_thread sleeps p of
      each wall-clock period) measured outside QEMU: host load goes into run-queue wait, not sleep, so the band is
      narrow where (4)'s must be wide. It catches a throttle that sleeps too little but still slows the guest about
      as much as (4) allows (regressions/B4-throttle-sleeps-too-little.patch: p(1 − p) instead of p), and the
      never-sleeps variant. It replaced a ratio of the guest's rates at the highest and lowest level, dropped because
      it failed the unmodified build under host load (0.91 and 1.01 against 0.86; quiet runs 0.58–0.84) while the
      never-sleeps variant measured 0.95–1.20: no separation.
"""

from __future__ import annotations

import dataclasses
import statistics
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import pytest

from harness.analysis import oracles

from harness.vm import workloads
from harness.analysis.series import (ClockMap, ThreadTimes, ThrottleLevel, ThrottleSleep, gaps,
                              parse_rate_log, progress_mib, ran_share_of_runnable, rate_between, sleep_slope,
                              slowdown_slope, throttle_levels, throttle_sleeps)
from harness.hosts.capabilities import ThreadTimesSampler
from harness.analysis.oracles import Verdict
from harness.qemu.binary import QemuBinary
from harness.core.files import record_of
from harness.analysis.samples import Series
from harness.migration.scenarios import ArmWindow, NonConvergingWindow, WindowArm, non_converging_windows
from harness.migration.testbed import Testbed
from harness.vm.workloads import RATE_LOG, Dirty, LoggedDirty, guest_clock_reading
from harness.core.units import MiB, ratio

TIMER_PERIOD_S = 5.0         # CPU_THROTTLE_DIRTY_SYNC_TIMESLICE_MS in migration/cpu-throttle.c
# Measured on TCG here: timer syncs land 5.0–5.3 s apart (the tick is on QEMU_CLOCK_VIRTUAL_RT plus the time the
# sync itself takes under a 2-core host running two guests); 1 s covers that with margin.
TOLERANCE_S = 1.0
# Flat out (CPU-bound): only then does the throttle show in the guest's achieved rate (4). A rate-limited dirtier
# (40 MiB/s was used before #16) leaves the vCPU idle most of the time and absorbs a throttle of up to ~80 %.
DIRTY_RATE_MIBPS = 0
# (4) The throttle's effect. Each level's window: from when query-migrate first showed the value to when it
# showed the next, minus SETTLE_S at both ends (sampling lag, clock mapping error ~10 ms); at least MIN_LEVEL_S long.
# The unthrottled rate: the BASELINE_S before the first throttle step (after the first pass, with the same
# every-5-s sync cadence as the throttled levels).
SETTLE_S = 0.5
MIN_LEVEL_S = 2.0
BASELINE_S = 8.0
# Slope of achieved slowdown vs throttle fraction (1 = exactly the share the throttle takes; 0 = no effect).
# Calibration, pristine 10.0.2, TCG, 2 shared cores, 6 runs (levels 20/30/40 % of ~10/10/3 s each):
# 1.25–1.58 — the guest loses more than the throttle's share (as if ~20–35 % of its unthrottled time went to work
# that does not shrink with the throttle: each tick also kicks the vCPU out of its translated code, a sleep
# overshoots its deadline, guest timer work). The variant that never sleeps the vCPUs (2 runs): −0.19, −0.05.
# The band: 0.5 (2.5× below every pristine run, far above the variant) to 2.5 (only a throttle that sleeps
# grossly more than it should; the upper side is not what #16 asks for and must not flake on a busy host).
# Uncorrected, that lower bound failed the unmodified build once in 10 runs (make flake, session 9, while other jobs
# built images beside it): 0.134 — the unthrottled window had the vCPU queued 29 % of its runnable time, the 20 %
# level only 15 %, so the guest ran *faster* throttled. With the run-queue correction, the same 10 runs and a CI
# run: 0.475 0.774 0.992 1.040 1.043 1.232 1.261 1.263 1.398 1.519, CI 1.669 (uncorrected 0.134–1.895). The lowest
# corrected run (0.475) is a quiet one (every window ran ≥ 93 % of its runnable time) where the 20 % level showed no
# slowdown at all: TCG's work per CPU-second varies by that much. The band: 0.3 (1.6× below that run) to 2.5.
# The never-sleeps variant under validate (session 9): 0.224 corrected (0.313 uncorrected; its levels ran 0.84,
# 1.10, 0.91 of unthrottled with no throttle at all): (4) catches it, but narrowly — (5) is the oracle that
# separates it with margin (0.016 against 0.76).
# Final code, 10 runs (make flake 2×5, quiet host): 0.946 … 1.489, all passed.
SLOPE_LOW = 0.3
SLOPE_HIGH = 2.5
# s390x guest (TCG, same QEMU, 1 run): slope 1.27 (20 %: 0.72, 30 %: 0.63 of unthrottled); only the 20 and 30 %
# levels held MIN_LEVEL_S after settling (the run ended early in the 40 % level; x86: ~3 s of it).
# (5) Slope of the vCPU thread's sleep share against the throttle fraction (1 = it sleeps exactly what the
# throttle sets). Calibration, pristine 10.0.2, TCG, 2 shared cores, 20/30/40 % levels of 9/9/2.7 s:
#   10 runs (qmh-flake, nothing else running): 0.922 0.928 0.929 0.971 0.979 0.989 1.008 1.012 1.013 1.066;
#   under load (busy loops beside the test): 2 loops 0.864, 4 loops 0.962. Load lowers it a little because the
#   throttle's tick runs in the main loop, which then fires late: the period stretches, each sleep does not.
# The variant that sleeps p(1 − p) instead of p: 0.673 (shares 0.158/0.201/0.229; its guest-rate slope (4) was
# 0.55, inside that band); the never-sleeps variant ≈ 0 by construction. The band: 0.76 (the geometric middle
# between the lowest pristine run and that variant) to 1.5.
#   Session 9, 10 more runs (make flake, other jobs building beside it): 0.929 … 0.986 … 1.037. One clean-clone CI
#   run (session 8) measured 1.271 — shares 0.294/0.382/0.439 at 20/30/40 %, the guest's own rate 0.54 of
#   unthrottled at 20 %: the vCPU really stopped ~10 % more than the throttle's share, with no run-queue wait to
#   explain it (cause not found: the BQL the sleep re-takes, or the guest idling). The upper bound was 1.2 ("sleeps a
#   fifth more than it says") and failed that run; at 1.5 it is 1.18× above it. What it gives up: a throttle that
#   slept p/(1 − p) of the period instead of p would measure ≈ 1.45 here and pass; no regression patch claims that
#   side (#16 asks for a throttle that sleeps too little, caught at the lower bound).
#   Final code, the same 10 runs: 0.975 … 0.996, all passed.
SLEEP_SLOPE_LOW = 0.76
SLEEP_SLOPE_HIGH = 1.5
MIN_LEVELS = 2
BANDWIDTH = 16 * MiB
TIMER_TRACE_EVENT = "cpu_throttle_dirty_sync"  # only QEMU ≥ 9.2 has it: the behaviour's one footprint


@dataclass(frozen=True)
class Shape:
    """How big and how long: the guest, its dirty set (prefilled, then re-dirtied at random faster than BANDWIDTH:
    one pass over it ≈ dirty_mib / 16 s), and how long each arm is watched after its first pass."""
    guest_mib: int
    dirty_mib: int
    on_window_s: float      # several timer periods: ≥ 2 steady gaps and ≥ MIN_LEVELS throttle levels
    off_window_s: float     # the control: > 2 periods + TOLERANCE_S with no sync in it, or the pass-end gaps
    throttle_increment: int | None = None   # cpu-throttle-increment; None: not set (QEMU's default, 10)

    @property
    def parameters(self) -> dict[str, Any]:
        return {} if self.throttle_increment is None else {"cpu-throttle-increment": self.throttle_increment}

    @property
    def increment(self) -> int:
        return 10 if self.throttle_increment is None else self.throttle_increment


# The original case (`make test`): one pass ≈ 384/16 = 24 s, each arm watched 30 s, about one natural pass. The
# figures next to SLOPE_*, SLEEP_SLOPE_* and TOLERANCE_S were measured with it.
LONG_PASS = Shape(guest_mib=768, dirty_mib=384, on_window_s=30.0, off_window_s=30.0)
# `make check`'s case (#35: 126 s → ~90 s on TCG): one pass ≈ 256/16 = 16 s (+ the OS's own pages), still
# 1.45× the two periods + tolerance the control must exceed. The on-arm window: the first timer sync comes 5–10 s
# after the pass-end sync (the tick after it is skipped), the throttle steps every second sync (QEMU's
# dirty_rate_high_cnt ≥ 2), so 25 s holds the first level ~9 s and the second ≥ 4 s even when the first sync
# comes 10 s late. The off arm: 14 s (> 11 s) with no sync in it shows the syncs are pass-bound. The throttle steps
# by 20: its two levels are then 20 and 40 %, as far apart as the original's 20/30/40 — with QEMU's 10 they were 20
# and 30 %, and (5) separated the sleeps-too-little variant by 2 % only (0.744 against 0.76; 20/30/40: 0.673).
# Calibration of this case, pristine 10.0.2, TCG, 10 runs (make flake under the CPU lock, session 13, the host shared
# with a mutation run): 10/10 passed; control 14.0 (no sync in the off window) every run; first gap 9.55–9.59 s
# (≤ 11); steady gaps 5.00–5.01 s (≤ 6); throttle [20, 40]; 2 levels (20 % ~9 s, 40 % ~4.5 s); (4) 1.13 … 1.32 …
# 1.47 (band 0.3–2.5); (5) 0.980 … 0.990 … 0.992 (band 0.76–1.5); 86.4–88.8 s a run (CPU waits subtracted, each
# in a session of its own). Before, with QEMU's step of 10, 6 runs: (5) 0.951–0.991. s390x guest (1 run each step):
# passed, (5) 0.976 (by 10) and 0.972 (by 20). Variants under validate (x86_64): no periodic sync — first gap
# 15.8 s, no steady sync; never sleeps — (4) 0.046, (5) −0.002; sleeps too little — (5) 0.662 (by 10: 0.744).
# Since session 14 both shapes run their first pass, which no window watches, at full speed (NonConvergingWindow's
# fast_first_pass: 20 s of each arm's 35–45 s at 16 MiB/s): each arm's bandwidth is set at the sync that ends it,
# where the windows begin; the throttle still steps from the third sync. Calibration of SHORT_PASS so, pristine
# 10.0.2, TCG, make flake N=10 under the CPU lock (session 14, host shared with a bench): 10/10 passed; control 14.0
# every run; first gap 7.81–8.70 s (≤ 11); steady gaps 5.00–5.01 s (≤ 6); 2 levels [20, 40]; (4) 1.14 … 1.25 … 1.34
# (band 0.3–2.5); (5) 0.986 … 0.991 … 0.993 (band 0.76–1.5); 48–50 s a run, session start included.
SHORT_PASS = Shape(guest_mib=448, dirty_mib=256, on_window_s=25.0, off_window_s=14.0, throttle_increment=20)
# The non-default parameters' case (since session 15; it ran LONG_PASS, 70 s of make test): SHORT_PASS's guest and
# control, but the on-arm watched 27 s. Its oracle needs a decision made at the cap: throttle 30 % at the third sync
# after the pass end, 35 % two periods later, then ≥ 1 sync held there — the 4th sync, 5 s after the cap is reached.
# Measured on LONG_PASS (session 14's make test): syncs 8.0, 13.0, 18.0, 23.0, 28.0 s after the pass end, 30 % at
# 8.0, 35 % at 18.0; SHORT_PASS's first gap is 7.81–8.70 s (10 runs), so its 4th sync comes by 23.7 s: 27 s leaves
# 3.3 s. Calibration, pristine 10.0.2, TCG, make flake N=10 (session 15, interleaved by CPU tokens with a make
# validate): 10/10 passed; control 14.0 every run; first gap 8.61–8.69 s (≤ 11); steady gaps 5.00–5.01 s (≤ 6);
# steps [30, 35] every run, 35 % reached 18.6–18.7 s after the pass end, then 1 decision held there every run;
# (4) 1.05 … 1.20 … 1.38 (band 0.3–2.5); (5) 0.988 … 0.990 … 0.991 (band 0.76–1.5); 51–54 s a test (was 70 s).
NON_DEFAULT_PASS = Shape(guest_mib=448, dirty_mib=256, on_window_s=27.0, off_window_s=14.0)


@dataclass(frozen=True)
class ConvergeRun:
    JSON_DERIVED = ("median_gap", "max_gap")
    label: str
    sync_times: list[float]       # after dirty-sync-count reached 2
    gaps: list[float]             # the first is measured from the sync that made the count 2
    timer_syncs: int
    throttle_steps: list[int]
    throttle_first_seen: dict[int, float]   # each throttle value → when it first appeared
    series_t0: float              # host time.monotonic() at the series' t = 0
    t_first_pass: float
    t_end: float                  # end of the observed window (the cancel follows)

    @property
    def window_s(self) -> float:
        return self.t_end - self.t_first_pass

    @property
    def median_gap(self) -> float | None:
        return statistics.median(self.gaps) if self.gaps else None

    @property
    def max_gap(self) -> float | None:
        return max(self.gaps) if self.gaps else None

    def syncs_after_reaching(self, throttle: int) -> int:
        """Throttle decisions (syncs) made once the throttle had reached `throttle`."""
        since = self.throttle_first_seen.get(throttle)
        return 0 if since is None else len([t for t in self.sync_times if t > since])


def throttle_steps(series: Series) -> tuple[list[int], dict[int, float]]:
    """Distinct consecutive values of cpu-throttle-percentage (present only while throttling), and when each value
    was first seen."""
    steps: list[int] = []
    first_seen: dict[int, float] = {}
    for t, value in series.track("cpu-throttle-percentage"):
        if not steps or steps[-1] != value:
            steps.append(int(value))
            first_seen.setdefault(int(value), t)
    return steps, first_seen


def auto_converge_scenario(parameters: dict[str, Any], shape: Shape) -> NonConvergingWindow:
    """A long pass at BANDWIDTH, auto-converge on then off, each watched its shape's window after its first pass."""
    parameters = {"max-bandwidth": BANDWIDTH, "downtime-limit": 100, **parameters}
    return NonConvergingWindow(
        arms=(WindowArm("auto-converge-on", {"auto-converge": True}, parameters),
              WindowArm("auto-converge-off", {"auto-converge": False}, parameters, window_s=shape.off_window_s)),
        window_s=shape.on_window_s, first_pass_timeout=180, trace_events=(TIMER_TRACE_EVENT,), fast_first_pass=True)


def converge_run(testbed: Testbed, window: ArmWindow) -> ConvergeRun:
    """B4's reading of one arm: the syncs after the first pass, their gaps, the timer's syncs, the throttle's
    steps."""
    times = window.increments("ram.dirty-sync-count")
    run = ConvergeRun(window.label, times, gaps([window.t_start, *times]),
                      len(window.trace_times.get(TIMER_TRACE_EVENT, [])), *throttle_steps(window.series),
                      window.series.t0, window.t_start, window.t_end)
    testbed.artefacts.write_json(f"run-{window.label}", run)
    return run


def periodic_sync_verdicts(on: ConvergeRun, off: ConvergeRun) -> list[Verdict]:
    """The control must be pass-bound; with the timer, every gap is one period — except the first after a pass-end
    sync, which may reach two (the tick right after it is skipped because a sync happened since the last tick).
    A window with no sync in it measures a gap of at least its own length (the control's in `make check`)."""
    control = statistics.median(off.gaps) if off.gaps else off.window_s
    first = on.gaps[0] if on.gaps else on.window_s
    steady = on.gaps[1:]
    longest_steady = max(steady, default=on.window_s)
    return [
        oracles.at_least("control run is pass-bound", round(control, 2), 2 * TIMER_PERIOD_S + TOLERANCE_S,
                         anchor=f"auto-converge off: median gap {control:.1f}s — must exceed two timer periods "
                                "for the test to tell periodic syncs from pass-end syncs"),
        oracles.at_most("first sync after the pass-end sync within two periods", round(first, 2),
                        2 * TIMER_PERIOD_S + TOLERANCE_S, " s",
                        anchor=f"auto-converge on: first gap {first:.1f}s after dirty-sync-count reached 2"),
        Verdict("then a sync every timer period", len(steady) >= 2 and longest_steady <= TIMER_PERIOD_S + TOLERANCE_S,
                round(longest_steady, 2), TIMER_PERIOD_S + TOLERANCE_S,
                f"auto-converge on: gaps {[round(g, 1) for g in on.gaps]} in {on.window_s:.0f}s "
                f"(auto-converge off: {[round(g, 1) for g in off.gaps]} in {off.window_s:.0f}s)"),
    ]


def throttle_verdict(steps: list[int], initial: int, increment: int, maximum: int) -> Verdict:
    expected = [min(initial + k * increment, maximum) for k in range(len(steps))]
    ok = bool(steps) and steps == expected
    return Verdict("throttle starts at initial, steps by increment, capped at max", ok, steps, expected,
                   f"cpu-throttle-percentage went {steps}" + ("" if steps else " (never throttled)"))


@dataclass(frozen=True)
class ThrottleEffect:
    baseline_window: tuple[float, float]
    baseline_mibps: float | None      # corrected by baseline_ran_of_runnable
    baseline_ran_of_runnable: float | None
    levels: list[ThrottleLevel]
    slope: float | None
    off_run_mibps: float | None       # diagnostic: the same guest with auto-converge off (uncorrected)
    clock: ClockMap


def throttle_effect(log: list[tuple[float, int]], clock: ClockMap, on: ConvergeRun, off: ConvergeRun,
                    vcpu_samples: list[ThreadTimes]) -> ThrottleEffect:
    """The guest's own achieved rate (MiB/s) before and at each throttle level of the auto-converge-on run, each
    divided by the share of its runnable time the vCPU thread got a CPU (host load given back)."""
    def ran_of_runnable(a: float, b: float) -> float | None:
        return ran_share_of_runnable(vcpu_samples, a + on.series_t0, b + on.series_t0)
    points = progress_mib(log, clock, on.series_t0)
    first = min(on.throttle_first_seen.values(), default=on.t_end)
    window = (first - BASELINE_S, first - SETTLE_S)
    raw, ran = rate_between(points, *window), ran_of_runnable(*window)
    baseline = ratio(raw, ran)
    levels = throttle_levels(points, on.throttle_first_seen, on.t_end, baseline or 0.0, SETTLE_S, MIN_LEVEL_S,
                             ran_of_runnable)
    return ThrottleEffect(window, baseline, ran, levels, slowdown_slope(levels),
                          rate_between(progress_mib(log, clock, off.series_t0), off.t_first_pass, off.t_end), clock)


@dataclass(frozen=True)
class VcpuSleep:
    baseline_window: tuple[float, float]    # host monotonic, the guest-rate baseline's window
    baseline_sleep: float | None
    levels: list[ThrottleSleep]
    slope: float | None
    samples: list[ThreadTimes]


def vcpu_sleep(samples: list[ThreadTimes], effect: ThrottleEffect, series_t0: float) -> VcpuSleep:
    """(5): the source vCPU thread's sleep share per throttle level, in the same windows as the guest's rates."""
    windows = [(lv.percent, lv.t_start + series_t0, lv.t_end + series_t0) for lv in effect.levels]
    baseline = (effect.baseline_window[0] + series_t0, effect.baseline_window[1] + series_t0)
    base, levels = throttle_sleeps(samples, windows, baseline)
    return VcpuSleep(baseline, base, levels, sleep_slope(levels), samples)


def vcpu_sleep_verdict(sleep: VcpuSleep) -> Verdict:
    described = ", ".join(f"{lv.percent}%: {lv.share:.3f}" for lv in sleep.levels)
    base = "?" if sleep.baseline_sleep is None else f"{sleep.baseline_sleep:.3f}"
    return oracles.within_band("vCPU thread sleeps the share the throttle sets (share per throttle fraction)",
                               sleep.slope, SLEEP_SLOPE_LOW, SLEEP_SLOPE_HIGH,
                               anchor=f"host kernel's schedstat of the source vCPU thread, sleep share over its "
                                      f"unthrottled {base}: {described}")


def throttle_effect_verdicts(effect: ThrottleEffect) -> list[Verdict]:
    described = ", ".join(f"{lv.percent}%: {lv.ratio:.2f} (expect {lv.expected_ratio:.2f})" for lv in effect.levels)
    return [
        oracles.at_least("throttle levels long enough to see their effect", len(effect.levels), MIN_LEVELS,
                         anchor=f"levels held ≥ {MIN_LEVEL_S:g} s after settling: "
                                f"{[lv.percent for lv in effect.levels]}; unthrottled guest rate "
                                f"{effect.baseline_mibps} MiB/s"),
        oracles.within_band("guest's achieved rate falls as the throttle implies (slowdown per throttle)",
                            effect.slope, SLOPE_LOW, SLOPE_HIGH,
                            anchor=f"guest's own rate vs its unthrottled {effect.baseline_mibps or 0:.1f} MiB/s, "
                                   f"each per share of runnable time the vCPU ran (host schedstat; unthrottled "
                                   f"{effect.baseline_ran_of_runnable or 0:.2f}), against 1 − throttle: {described}"),
    ]


def has_periodic_sync(binary: QemuBinary) -> bool:
    return TIMER_TRACE_EVENT in binary.features.trace_events


def run_periodic_sync_test(testbed: Testbed, parameters: dict[str, Any], initial: int, increment: int,
                           maximum: int, request: pytest.FixtureRequest, shape: Shape = LONG_PASS) -> None:
    verdicts: list[oracles.Verdict] = []
    if not has_periodic_sync(testbed.env.source_binary):
        # The behaviour has no schema footprint but this trace event; absent, the test must say so by failing.
        request.applymarker(pytest.mark.xfail(reason="QEMU without the auto-converge periodic sync (≤ 9.1)",
                                              strict=True))
    source = testbed.boot(memory_mib=shape.guest_mib, trace_events=(TIMER_TRACE_EVENT,)
                          if has_periodic_sync(testbed.env.source_binary) else ())
    dirty = workloads.start(source, LoggedDirty(size_mib=shape.dirty_mib, rate_mibps=DIRTY_RATE_MIBPS, order="random",
                                                prefill=True))
    readings = [guest_clock_reading(source)]
    assert source.process is not None
    vcpu_thread = int(source.qmp.cmd("query-cpus-fast")[0]["thread-id"])
    vcpu_times = ThreadTimesSampler(source.process.pid, vcpu_thread)
    scenario = auto_converge_scenario(parameters, shape)
    if not has_periodic_sync(testbed.env.source_binary):
        scenario = dataclasses.replace(scenario, trace_events=())
    # The vCPU thread's times are sampled during the auto-converge-on arm only: (4) and (5) read its levels.
    windows = non_converging_windows(testbed, scenario, source, around=lambda arm: (
        vcpu_times if arm.label == "auto-converge-on" else nullcontext()))
    on, off = (converge_run(testbed, windows[label]) for label in ("auto-converge-on", "auto-converge-off"))
    readings.append(guest_clock_reading(source))
    testbed.artefacts.write_json("workload", dirty.status(source))
    log = parse_rate_log(source.shell.run(f"cat {RATE_LOG}", timeout=60).stdout)
    effect = throttle_effect(log, ClockMap.fit(readings), on, off, vcpu_times.samples)
    testbed.artefacts.write_json("throttle-effect", {**record_of(effect), "clock_readings": readings,
                                                     "rate_log_rows": len(log)})
    verdicts += periodic_sync_verdicts(on, off)                                       # (1), (2)
    verdicts.append(throttle_verdict(on.throttle_steps, initial, increment, maximum))  # (3)
    verdicts += throttle_effect_verdicts(effect)                                      # (4)
    sleep = vcpu_sleep(vcpu_times.samples, effect, on.series_t0)
    testbed.artefacts.write_json("vcpu-sleep", sleep)
    verdicts.append(vcpu_sleep_verdict(sleep))                                        # (5)
    if maximum < 99:
        # The cap must have been exercised: a decision made at the cap that still left the throttle there.
        held = on.syncs_after_reaching(maximum)
        verdicts.append(oracles.at_least("throttle held at max-cpu-throttle", held, 1,
                                         anchor=f"throttle decisions after reaching {maximum}%; steps "
                                                f"{on.throttle_steps}"))
    testbed.artefacts.verdict(*verdicts)


@pytest.mark.needs(capabilities=["auto-converge"], fields=["ram.dirty-sync-count", "cpu-throttle-percentage"],
                   parameters=["cpu-throttle-increment"])
# The same oracles and bounds in both; the 24 s pass (the original, 126 s on TCG) is `slow`.
@pytest.mark.parametrize("shape", [SHORT_PASS, pytest.param(LONG_PASS, marks=pytest.mark.slow)],
                         ids=["16s-pass", "24s-pass"])
def test_auto_converge_syncs_every_period_during_a_long_pass(testbed: Testbed, request: pytest.FixtureRequest,
                                                            shape: Shape) -> None:
    run_periodic_sync_test(testbed, shape.parameters, initial=20, increment=shape.increment, maximum=99,
                           request=request, shape=shape)


@pytest.mark.slow
@pytest.mark.needs(capabilities=["auto-converge"], parameters=["cpu-throttle-initial", "cpu-throttle-increment",
                                                               "max-cpu-throttle"])
def test_auto_converge_honours_non_default_throttle_parameters(testbed: Testbed,
                                                               request: pytest.FixtureRequest) -> None:
    # Measured: the throttle starts at the third sync after the first pass and then steps every period, so a cap
    # one step above the initial value is reached and then held over the remaining decisions of the window.
    parameters = {"cpu-throttle-initial": 30, "cpu-throttle-increment": 5, "max-cpu-throttle": 35}
    run_periodic_sync_test(testbed, parameters, initial=30, increment=5, maximum=35, request=request,
                           shape=NON_DEFAULT_PASS)


@pytest.mark.slow
@pytest.mark.needs(capabilities=["auto-converge"], fields=["ram.dirty-sync-count"])
def test_periodic_sync_adds_nothing_when_passes_are_short(testbed: Testbed) -> None:
    """A small, fast guest syncs at every pass end anyway (< 5 s apart): the timer must not add syncs.

    Anchor: the same-run control only (syncs with auto-converge on ≤ 1.5 × off). A build that syncs too often in
    both arms passes this test; test_b0_sync_storm's per-pass bound is what holds the pass-end sync rate to its
    absolute (#16: not duplicated here, this test is `slow` and was not calibrated for one)."""
    source = testbed.boot(trace_events=(TIMER_TRACE_EVENT,) if has_periodic_sync(testbed.env.source_binary) else ())
    workloads.start(source, Dirty(size_mib=32, rate_mibps=0, order="random"))
    parameters = {"max-bandwidth": 32 * MiB, "downtime-limit": 50, "cpu-throttle-initial": 1,
                  "cpu-throttle-increment": 1, "max-cpu-throttle": 1}
    scenario = NonConvergingWindow(arms=(WindowArm("auto-converge-off", {"auto-converge": False}, parameters),
                                         WindowArm("auto-converge-on", {"auto-converge": True}, parameters)),
                                   window_s=15)
    windows = non_converging_windows(testbed, scenario, source)
    counts = {label: len(w.increments("ram.dirty-sync-count", include_start=True)) for label, w in windows.items()}
    testbed.artefacts.write_json("sync-counts", counts)
    testbed.artefacts.verdict(oracles.ratio_at_most("syncs with vs without auto-converge",
                                                    counts["auto-converge-on"], counts["auto-converge-off"], 1.5,
                                                    floor=1))
