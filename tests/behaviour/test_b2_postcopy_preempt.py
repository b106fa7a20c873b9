"""B2 — postcopy page requests are served promptly with postcopy-preempt (seeds/002; QEMU 82b54ef4c123 in 7.1,
reworked in 7.2/8.0 so that the return-path thread sends an urgent page itself on the preempt channel).

Given a guest whose `probe` touches every page of a 64 MiB region in a seeded random order and times each access,
when the migration switches to postcopy at once (so almost none of the region has been sent) with the background
stream throttled by max-postcopy-bandwidth (so the main channel always has a queue), then with postcopy-preempt
a faulting access costs about one request round trip (~40 µs here), while without it a request waits behind the
throttled stream: a quarter of them ~100 ms, until the next 100 ms rate-limit window.

The same QEMU binary and probe seed run twice, preempt on and off, each on a freshly booted guest. Oracles, and what
anchors each (docs/BEHAVIOURS.md: a regression must not be able to move the yardstick with the measurement):
  (a) with preempt, p50, p99 and max stall ≤ fixed multiples of the LINK RTT: the median host round trip of an
      8-byte request answered with one page over a unix stream socket between two processes (the migration
      transport here), measured on the same host just before the run's migration starts (harness.hosts.round_trips.
      transport_round_trips_us). Anchor: a measurement outside the judged path — no QEMU code can move it, and it
      scales with host speed as the fault round trip does (two socket hops, two thread wake-ups). Until #16 the
      yardstick was the run's own median stall, which a preempt path that serves every request uniformly slower
      moves along with p99 (regressions/B2-preempt-urgent-page-delayed.patch);
  (a') dropped: p99 ≤ 40 × the run's own median stall (tail shape). Its yardstick is the judged arm itself; it
      failed the unmodified build once (45.1, validate of 2026-12-02, a busy host: the same run's p99 was 96 link
      RTTs) and caught nothing the anchored bounds miss (skip-preempt-channel fails (a) p99 and (b) by far; the
      2 ms-delay variant passes it). p99 / own median is still recorded (latency-verdict-inputs.json);
  (b) with preempt, p99 stall ≤ P99_RATIO × the p99 stall without — anchored to the same-run control arm;
  (c) the destination's per-vCPU postcopy blocktime agrees with the guest's summed stalls, and the overlapped
      postcopy-blocktime is no longer than any vCPU's (see BLOCKTIME_* for why not more on 10.0) — anchored to the
      guest's own view (QEMU's figure vs the probe's);
  (e) both migrations complete and the guest's seqinc pattern is intact afterwards — anchored to the guest's own
      invariant; the probe met ≥ min_stalls remote pages (the run provoked what it measures).
On QEMU with postcopy-latency / postcopy-vcpu-latency / postcopy-latency-dist (10.1+), a separate test checks
that the destination's own latency figures (and its reworked overlapped blocktime) agree with the guest and show
the same preempt/no-preempt contrast.

Only one vCPU: the order in which concurrent requests are served (the other half of seeds/002) needs several
vCPUs faulting at once and is not asserted here.
"""

from __future__ import annotations

import base64
import time
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import pytest

from harness.hosts import capabilities as host

from harness.analysis import oracles

from harness.vm import workloads
from harness.analysis.latency import Access, LatencySummary, dist_percentile_upper_bound_us, parse_probe_raw
from harness.hosts.round_trips import transport_round_trips_us
from harness.report.plots import plot_latency_distributions
from harness.core.stats import log2_histogram
from harness.vm.machine import Machine
from harness.migration.config import MigrationConfig
from harness.migration.testbed import Testbed
from harness.vm.workloads import Probe, SeqInc
from harness.core.units import MiB, ratio

PROBE_SEED = 2002
# The probe is started on the source and the source paused as soon as the signal is sent (see postcopy_run):
# it runs a few ms on the source, the rest on the destination. A round takes ~20 ms on the source, so five
# rounds leave a wide margin; the rounds after the first post-switch one find every page present.
PROBE_ROUNDS = 5
# Guest time from the probe's SIGUSR1 to its first access (probe --start-delay-ms): longer than the host's gap from
# the signal to the guest being stopped (signal_s in the run's timeline, SSH return and QMP stop included: 0.17–0.25 s
# in 20 runs on a loaded 2-core host, 0.28 s in the CI run that went wrong); at most that long of the background
# stream reaches the destination before the probe starts (16 MiB/s × 0.5 s = 8 MiB of its 64 MiB, anonymous).
PROBE_START_DELAY_S = 0.5
PROBE_RAW = "/run/wl/probe.raw"
SEQINC_MIB = 4
SEQINC_PASSES_PER_S = 1
# Precopy lasts only until the immediate switch (~40 ms), so its bandwidth hardly matters.
PRECOPY_BANDWIDTH = 32 * MiB
# The max is a different animal: the longest stalls are accesses in which the guest ran other code (a timer
# interrupt, then another task) that itself faulted — QEMU's fault trace shows a 5.4 ms stall holding 70 remote
# faults of 30–40 µs, none slow. Measured max over 20 runs before #16: 4.7–162 ms; in the 7 #16 calibration runs
# 502–13 308 link RTTs (up to 387 ms on the busier host). The max bound (a) is 40 000 link RTTs (~1.2 s at 30 µs),
# which still catches a request left waiting for a large part of the ~3.5 s postcopy phase, as in seeds/002.
# (a) In units of the link RTT (median host unix-socket round trip with a one-page answer, ~20 µs here); the
# multiples and their calibration are per scenario (Scenario.*_link_multiple). The variant that holds each urgent
# page 2 ms before flushing the preempt channel puts p50 at ≥ 2 ms ≈ 100 link RTTs.
LINK_RTT_SAMPLES = 2000
# (b) Measured p99 ratio preempt/no-preempt: 0.0009–0.0044; with the build whose urgent pages skip the preempt
# channel (regressions/B2-urgent-pages-skip-preempt-channel.patch): ~1.1.
P99_RATIO = 0.5
# (c) postcopy-vcpu-blocktime / guest stall sum per vCPU, measured 0.63–0.76 with preempt, 0.99–2.2 without;
# session 12, with the probe's start delay (make flake N=10, 10/10, host shared with a make matrix): 0.68–1.43 with
# preempt, 1.32–1.80 without (worst 0.45 of the bound); 360–1 423 stalls without preempt, 6 645–16 774 with.
# QEMU times a fault from its fault thread reading it to the page being placed, so it misses the guest-side part
# of each fault (trap, wake-up, TLB refill: ~15 µs of a prompt ~40 µs fault): lower bound 0.4. The vCPU also
# faults outside the probe's access windows (kernel paths, the probe's own code and bookkeeping pages), which
# only QEMU sees; without preempt each such fault costs up to a rate-limit window: upper bound 4.
# The overlapped total postcopy-blocktime is only checked against the per-vCPU figures here: QEMU 10.0's
# accounting of it races (with one vCPU it should equal the per-vCPU figure, but came out as 8 ms against
# 1029 ms, 370 against 848 and 676 against 1060 ms in 3 of 19 runs with preempt, and 10–20 % low in a third of
# the runs without). The blocktime rework that came with postcopy-latency (10.1: "Push blocktime start/end into
# page req mutex", "Cleanup the total blocktime accounting") is checked in
# test_destination_latency_metrics_agree_with_guest.
BLOCKTIME_BELOW = 0.4
BLOCKTIME_ABOVE = 4.0
COMPLETION_TIMEOUT = 180.0
LATENCY_FIELDS = ["postcopy-latency", "postcopy-vcpu-latency", "postcopy-latency-dist"]


@dataclass(frozen=True)
class Scenario:
    name: str
    guest_mib: int
    probe_mib: int
    postcopy_bandwidth: int
    # An access slower than this is a stall. 4 KiB pages: an access to a present page takes ~1 µs under TCG, one
    # that a guest timer interrupt lands in 20–45 µs, a remote 4 KiB fault ≥ ~30 µs (median ~45 µs with preempt).
    stall_floor_us: float
    min_stalls: int               # per run: fewer means the probe met no remote pages, i.e. measured nothing
    # (a) bounds in link RTTs (the link RTT's answer is one host page of this scenario)
    p50_link_multiple: float
    p99_link_multiple: float
    max_link_multiple: float
    host_page_bytes: int = 4096
    memory_backend: str | None = None


# 64 MiB of 4 KiB pages: ~16 400 stalls with preempt; 140–430 without (most pages then arrive by the throttled
# stream while the guest waits up to ~0.1 s per fault).
ANONYMOUS = Scenario("anonymous", guest_mib=256, probe_mib=64, postcopy_bandwidth=16 * MiB, stall_floor_us=20.0,
                     min_stalls=30, p50_link_multiple=10.0, p99_link_multiple=400.0, max_link_multiple=40000.0)
# (a) calibration, pristine 10.0.2, TCG, 2 shared cores, 7 runs: link RTT 15.4–46.2 µs; p50 1.34–2.89 (bound 10:
# margin 3.5), p99 20.6–40.7, max 502–13 308 link RTTs (bound 40 000: margin 3); 10 more runs (qmh-flake, session
# 5): p50 1.86–2.88, p99 11.4–78.4; one validate pristine run on a busy host: p99 96.4. The 2 ms-per-urgent-page
# variant: p50 50–100, p99 275–515 link RTTs (4 runs); urgent pages off the preempt channel: p99 3096–6716. The p99
# bound, 100 until that busy run came within 4 % of it, is now 160: about the geometric middle between the worst
# pristine run (96.4) and the nearest variant (275), a factor of ~1.7 on each side.
# Session 10, a new host whose unix-socket RTT is 6.1–6.3 µs (below the 20 µs stall floor): the unit became
# max(RTT, stall floor) (link_unit_us), and two pristine runs under heavy host load (other jobs compiling) measured
# p50 56–64 µs and p99 3.3 ms, i.e. p99 164 units: over 160. The p99 bound is now 400 units (8 ms at the 20 µs
# floor), because p50 alone catches the 2 ms-per-page variant with a 10× margin (its p50 ≈ 2 ms = 100 units, bound
# 10), and p99 is kept for the variant that leaves the preempt channel (p99 3096–6716 RTTs of 15–46 µs, 50–300 ms,
# ≥ 2 500 units: a 6× margin). Recalibrated in units (make flake N=10, same host, quieter): 10/10, p50 1.99–3.68
# (bound 10), p99 7.98–19.4 (bound 400), max 297–4 530 (bound 40 000), p99 on/off 0.001–0.004 (bound 0.5). s390x guest (TCG, same QEMU,
# 1 run): p50 2.18, p99 39.4, max 4508 link RTTs, p99 / own median 18.1, p99 ratio preempt/no-preempt 0.006,
# blocktime / guest stalls 0.67 (preempt) and 1.04 — inside every x86 range, so the scenario serves both arches.
# 2 MiB host pages: one fault brings 512 guest pages, so the region is larger (128 huge pages) and the stream
# faster, to keep the run short. A remote fault moves 2 MiB (≳ 1 ms); timer interrupts (≤ 45 µs) are no stalls.
# Its link RTT answers with 2 MiB (~2.3 ms here). Not calibrated on this host (no free 2 MiB pages): the
# multiples are the anonymous scenario's, for a fault that moves the same bytes as the reference.
HUGETLBFS = Scenario("hugetlbfs", guest_mib=512, probe_mib=256, postcopy_bandwidth=32 * MiB, stall_floor_us=200.0,
                     min_stalls=40, p50_link_multiple=10.0, p99_link_multiple=160.0, max_link_multiple=40000.0,
                     host_page_bytes=2 * MiB,
                     memory_backend="memory-backend-file,mem-path={mount},share=on")


@dataclass(frozen=True)
class PostcopyRun:
    label: str
    preempt: bool
    stall_floor_us: float
    cpus: int
    accesses: list[Access]
    probe_result: dict[str, Any]
    source_final: dict[str, Any]
    destination_final: dict[str, Any]
    timeline: dict[str, float]
    seqcheck: workloads.SeqCheck
    statuses: list[str]
    link_rtt: LatencySummary      # host transport round trips, measured just before this run's migration

    @cached_property
    def stalls_us(self) -> list[float]:
        return [a.latency_ns / 1e3 for a in self.accesses if a.latency_ns / 1e3 >= self.stall_floor_us]

    @cached_property
    def stalls(self) -> LatencySummary:
        return LatencySummary.of(self.stalls_us)

    @property
    def guest_stall_ms_per_vcpu(self) -> float:
        return self.stalls.sum_us / 1e3 / self.cpus

    @property
    def blocktime_ms(self) -> int | None:
        return self.destination_final.get("postcopy-blocktime")

    @property
    def vcpu_blocktime_ms_per_vcpu(self) -> float | None:
        per_vcpu = self.destination_final.get("postcopy-vcpu-blocktime")
        return ratio(sum(per_vcpu), len(per_vcpu))

    def first_stall(self) -> dict[str, Any] | None:
        """Where the first stall came (diagnostic: how far the probe got on the source before the switch)."""
        for index, access in enumerate(self.accesses):
            if access.latency_ns / 1e3 >= self.stall_floor_us:
                return {"index": index, "after_probe_start_ms":
                        (access.t_ns - self.probe_result.get("started_at_ns", access.t_ns)) / 1e6}
        return None

    def to_json(self) -> dict[str, Any]:
        all_us = [a.latency_ns / 1e3 for a in self.accesses]
        return {"label": self.label, "preempt": self.preempt, "cpus": self.cpus, "stall_floor_us": self.stall_floor_us,
                "stalls": self.stalls, "all_accesses": LatencySummary.of(all_us),
                "stall_histogram": log2_histogram(self.stalls_us), "all_histogram": log2_histogram(all_us),
                "first_stall": self.first_stall(),
                "guest_stall_ms_per_vcpu": self.guest_stall_ms_per_vcpu, "blocktime_ms": self.blocktime_ms,
                "vcpu_blocktime_ms_per_vcpu": self.vcpu_blocktime_ms_per_vcpu,
                "postcopy_requests": self.source_final.get("ram", {}).get("postcopy-requests"),
                "probe_result": self.probe_result, "source_final": self.source_final,
                "destination_final": self.destination_final, "timeline": self.timeline,
                "seqcheck": self.seqcheck.line, "source_statuses": self.statuses, "link_rtt": self.link_rtt}

    def stall_records(self) -> dict[str, Any]:
        """Every stalled access: [guest monotonic ns, page index, latency ns]."""
        return {"label": self.label, "fields": ["t_ns", "page", "latency_ns"],
                "records": [[a.t_ns, a.page, a.latency_ns] for a in self.accesses
                            if a.latency_ns / 1e3 >= self.stall_floor_us]}


def read_guest_bytes(machine: Machine, path: str) -> bytes:
    return base64.b64decode(machine.shell.run(f"base64 {path}", timeout=120).stdout)


def hugetlbfs_backend(scenario: Scenario) -> str:
    """The memory-backend for a hugetlbfs scenario, or skip: both sides' RAM must fit in free 2 MiB pages."""
    capability = host.hugepages_2m()
    if not capability.available:
        pytest.skip(f"hugetlbfs guest RAM: {capability.reason}")
    mounts = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()
              if line.split()[2] == "hugetlbfs"]
    free = int(Path("/sys/kernel/mm/hugepages/hugepages-2048kB/free_hugepages").read_text())
    needed = 2 * (scenario.guest_mib // 2)   # source and destination RAM, in 2 MiB pages
    if free < needed:
        pytest.skip(f"hugetlbfs guest RAM: {free} free 2 MiB hugepages, source + destination need {needed}")
    assert scenario.memory_backend is not None
    return scenario.memory_backend.format(mount=mounts[0])


def postcopy_run(testbed: Testbed, scenario: Scenario, preempt: bool) -> PostcopyRun:
    """Boot a guest, arm the probe, migrate with an immediate switch to postcopy; collect the guest's stalls
    and both sides' final figures; shut both QEMUs down so the next run has the host to itself."""
    label = f"preempt-{'on' if preempt else 'off'}"
    overrides = {"memory_backend": hugetlbfs_backend(scenario)} if scenario.memory_backend else {}
    t0 = time.monotonic()
    source = testbed.boot(f"source-{label}", memory_mib=scenario.guest_mib, **overrides)
    seq = workloads.start(source, SeqInc(size_mib=SEQINC_MIB, rate_passes=SEQINC_PASSES_PER_S))
    probe = workloads.start(source, Probe(size_mib=scenario.probe_mib, seed=PROBE_SEED, rounds=PROBE_ROUNDS,
                                          raw_file=PROBE_RAW,
                                          start_delay_ms=int(PROBE_START_DELAY_S * 1000)))
    destination = testbed.incoming(source, name=f"destination-{label}")
    config = MigrationConfig(capabilities={"postcopy-ram": True, "postcopy-preempt": preempt,
                                           "postcopy-blocktime": True},
                             parameters={"max-bandwidth": PRECOPY_BANDWIDTH,
                                         "max-postcopy-bandwidth": scenario.postcopy_bandwidth})
    # The link RTT: both QEMUs up and the guest armed, so the host is as loaded as during the run; nothing of the
    # migration (and so of the preempt path) exists yet.
    samples = LINK_RTT_SAMPLES if scenario.host_page_bytes <= 64 * 1024 else LINK_RTT_SAMPLES // 10  # ≤ ~0.5 s
    link_rtt = LatencySummary.of(transport_round_trips_us(samples, reply_bytes=scenario.host_page_bytes))
    t_ready = time.monotonic()
    # seqinc pauses while the probe measures: on the single vCPU, whatever the guest scheduler runs in the middle
    # of a probe access brings its own remote faults into that access's time. It resumes (and is checked) after
    # the migration. (The probe is not reniced: at nice -20 it starves the SSH session that signalled it, whose
    # return the `stop` below waits for, and finishes all its rounds on the source.)
    # The probe starts PROBE_START_DELAY_S of guest time after its signal, and the guest is stopped at once: the
    # guest's clock stands still while it is stopped (TCG's ticks and KVM's clock pause with the VM), so the probe
    # starts on the destination with every page of its region still on the source. Started at once instead, it ran
    # its 5 rounds (~20 ms each) in the host's SSH-return-plus-stop gap whenever the host was loaded: one CI run met
    # 39 remote pages instead of 243–1 690, and its blocktime comparison was void.
    source.shell.run(f"kill -STOP {seq.pid} && kill -USR1 {probe.pid}")
    source.qmp.cmd("stop")
    t_signalled = time.monotonic()
    migration = testbed.migrate(source, destination, config, name=label)
    migration.start_postcopy()
    migration.wait_status({"postcopy-active"}, 60, side="destination")
    t_switched = time.monotonic()
    source_final = migration.wait_completed(COMPLETION_TIMEOUT)
    t_completed = time.monotonic()
    destination_final = destination.qmp.cmd("query-migrate")  # blocktime is reported once completed
    series = migration.finish()
    result = probe.wait_exit(destination, timeout=120)
    accesses = parse_probe_raw(read_guest_bytes(destination, PROBE_RAW))
    destination.shell.run(f"kill -CONT {seq.pid}")
    check = workloads.seqcheck(destination, seq)
    t_end = time.monotonic()
    destination.shutdown()
    source.shutdown()
    timeline = {"boot_and_arm_s": t_ready - t0, "signal_s": t_signalled - t_ready,
                "switch_s": t_switched - t_signalled, "postcopy_s": t_completed - t_switched,
                "collect_s": t_end - t_completed, "wall_s": time.monotonic() - t0}
    run = PostcopyRun(label, preempt, scenario.stall_floor_us, source.config.cpus, accesses, result, source_final,
                      destination_final, timeline, check, [status for _, status in series.status_changes()],
                      link_rtt)
    testbed.artefacts.write_json(f"run-{label}", run)
    testbed.artefacts.write_json(f"stalls-{label}", run.stall_records())
    return run


def check_run(testbed: Testbed, run: PostcopyRun, scenario: Scenario) -> list[oracles.Verdict]:
    """(e) and the scenario itself: completed through postcopy, probe finished on the destination with enough
    remote faults to measure, guest pattern intact."""
    verdicts: list[oracles.Verdict] = []
    verdicts.append(oracles.completed(run.source_final))
    verdicts.append(oracles.Verdict(f"{run.label}: went through postcopy-active",
                                    "postcopy-active" in run.statuses, run.statuses, "postcopy-active",
                                    "source status sequence"))
    rounds = run.probe_result.get("rounds_completed")
    verdicts.append(oracles.equals(f"{run.label}: probe completed its rounds", rounds, PROBE_ROUNDS,
                                   f"stopped by {run.probe_result.get('stopped_by')}"))
    verdicts.append(oracles.at_most(
        f"{run.label}: host time from the probe's signal command to the guest's stop", run.timeline["signal_s"],
        PROBE_START_DELAY_S, " s", anchor="the probe's start delay in guest time, which cannot run ahead of the "
        "host's: below it, the probe started on the destination"))
    verdicts.append(oracles.progressed(f"{run.label}: stalled accesses (the probe met remote pages)",
                                       0, run.stalls.count, scenario.min_stalls))
    verdicts.append(oracles.guest_invariant(run.seqcheck.passed, f"{run.label}: {run.seqcheck.line}"))
    return verdicts


def link_unit_us(rtt_us: float, scenario: Scenario) -> float:
    """The unit the stall bounds are counted in: the link RTT, but never below the scenario's stall floor. An access
    shorter than the floor is not a stall, so every recorded stall is at least the floor by construction: on a host
    whose unix-socket round trip is much faster than the floor (6 µs on the machine of session 10, 15–46 µs where
    the bounds were first calibrated) bounds counted in raw RTTs would shrink below what the probe can record, and
    the unchanged ~45–65 µs TCG fault path failed p50 ≤ 10 RTTs on the unmodified build (10.6 at RTT 6.1 µs)."""
    return max(rtt_us, scenario.stall_floor_us)


def judge_latency(testbed: Testbed, scenario: Scenario, on: PostcopyRun, off: PostcopyRun,
                  link: tuple[float, str] | None = None) -> list[oracles.Verdict]:
    """(a) p50/p99/max with preempt in link RTTs; (b) clearly below the tail without preempt. `link`: the link
    RTT (µs) and what it is, where the migration runs over a real link (tests/behaviour/test_link.py); by default
    the host unix-socket round trip measured before the preempt-on run."""
    verdicts: list[oracles.Verdict] = []
    rtt_us, definition = link or (on.link_rtt.p50_us, "median host unix-socket round trip, 8-byte request, "
                                  f"{scenario.host_page_bytes}-byte answer, measured before the preempt-on "
                                  "migration")
    link_us = link_unit_us(rtt_us, scenario)
    median_us = on.stalls.p50_us
    testbed.artefacts.write_json("latency-verdict-inputs", {
        "link_rtt_us": rtt_us, "link_rtt_definition": definition, "link_unit_us": link_us,
        "link_rtt_on": on.link_rtt, "link_rtt_off": off.link_rtt,
        "p50_in_link_rtts": ratio(median_us, link_us),
        "p99_in_link_rtts": ratio(on.stalls.p99_us, link_us),
        "max_in_link_rtts": ratio(on.stalls.max_us, link_us),
        "link_multiples": {"p50": scenario.p50_link_multiple, "p99": scenario.p99_link_multiple,
                           "max": scenario.max_link_multiple},
        "own_median_us": median_us, "p99_over_own_median": ratio(on.stalls.p99_us, median_us),
        "p99_ratio_bound": P99_RATIO, "preempt_on": on.stalls, "preempt_off": off.stalls,
        "p99_ratio": ratio(on.stalls.p99_us, off.stalls.p99_us)})
    plot_latency_distributions(
        testbed.artefacts.path("stalls.png"),
        f"B2 {scenario.name}: per-access stalls ≥ {scenario.stall_floor_us:g} µs in postcopy, "
        f"max-postcopy-bandwidth {scenario.postcopy_bandwidth // MiB} MiB/s",
        {"preempt on": on.stalls_us, "preempt off": off.stalls_us},
        {"link RTT": link_us, f"p50 bound {scenario.p50_link_multiple:g}×link": scenario.p50_link_multiple * link_us,
         f"p99 bound {scenario.p99_link_multiple:g}×link": scenario.p99_link_multiple * link_us})
    anchor = (f"link RTT {rtt_us:.1f} µs{' (the stall floor where larger)' if link_us > rtt_us else ''}, "
              f"{'host transport' if link is None else 'the link'} measured outside postcopy")
    for name, value, multiple in (("p50", median_us, scenario.p50_link_multiple),
                                  ("p99", on.stalls.p99_us, scenario.p99_link_multiple),
                                  ("max", on.stalls.max_us, scenario.max_link_multiple)):
        verdicts.append(oracles.at_most(f"preempt {name} stall in link RTTs",
                                        ratio(value, link_us), multiple, "×", anchor))
    verdicts.append(oracles.ratio_at_most("p99 stall with preempt vs without", on.stalls.p99_us,
                                          off.stalls.p99_us, P99_RATIO))
    return verdicts


def judge_blocktime(testbed: Testbed, run: PostcopyRun) -> list[oracles.Verdict]:
    """(c) the destination's per-vCPU blocktime agrees with the guest's summed stalls; the overlapped total
    (time all vCPUs were blocked at once) cannot exceed any vCPU's own."""
    verdicts: list[oracles.Verdict] = []
    guest_ms, vcpu_ms, total_ms = run.guest_stall_ms_per_vcpu, run.vcpu_blocktime_ms_per_vcpu, run.blocktime_ms
    testbed.artefacts.write_json(f"blocktime-{run.label}", {
        "guest_stall_ms_per_vcpu": guest_ms, "postcopy_vcpu_blocktime_ms_per_vcpu": vcpu_ms,
        "postcopy_blocktime_ms": total_ms,
        "postcopy_vcpu_blocktime": run.destination_final.get("postcopy-vcpu-blocktime"),
        "vcpu_ratio": ratio(vcpu_ms, guest_ms),
        "total_ratio": ratio(total_ms, guest_ms),
        "band": [BLOCKTIME_BELOW, BLOCKTIME_ABOVE]})
    verdicts.append(oracles.Verdict(f"{run.label}: blocktime reported", None not in (vcpu_ms, total_ms),
                                    {"postcopy-blocktime": total_ms, "per vCPU": vcpu_ms}, "numbers",
                                    "destination query-migrate after completion"))
    if vcpu_ms is None or total_ms is None:
        return verdicts
    verdicts.append(oracles.ratio_at_most(f"{run.label}: postcopy-vcpu-blocktime vs guest stalls per vCPU",
                                          vcpu_ms, guest_ms, BLOCKTIME_ABOVE, floor=1.0))
    verdicts.append(oracles.ratio_at_most(f"{run.label}: guest stalls per vCPU vs postcopy-vcpu-blocktime",
                                          guest_ms, vcpu_ms, 1 / BLOCKTIME_BELOW, floor=1.0))
    shortest_vcpu_ms = min(run.destination_final.get("postcopy-vcpu-blocktime") or [0])
    verdicts.append(oracles.at_most(
        f"{run.label}: postcopy-blocktime ≤ every vCPU's blocktime", total_ms, shortest_vcpu_ms + 1, " ms",
        anchor="all vCPUs blocked at once is no longer than any one vCPU blocked (+1 ms rounding)"))
    return verdicts


def compare_preempt(testbed: Testbed, scenario: Scenario) -> tuple[PostcopyRun, PostcopyRun]:
    on = postcopy_run(testbed, scenario, preempt=True)
    off = postcopy_run(testbed, scenario, preempt=False)
    testbed.artefacts.write_json("summary", {
        "scenario": scenario.__dict__,
        "runs": {run.label: {"stalls": run.stalls, "blocktime_ms": run.blocktime_ms,
                             "vcpu_blocktime_ms_per_vcpu": run.vcpu_blocktime_ms_per_vcpu,
                             "guest_stall_ms_per_vcpu": run.guest_stall_ms_per_vcpu,
                             "postcopy_requests": run.source_final.get("ram", {}).get("postcopy-requests"),
                             "total_time_ms": run.source_final.get("total-time"), "timeline": run.timeline}
                 for run in (on, off)}})
    return on, off


POSTCOPY_NEEDS = dict(capabilities=["postcopy-ram", "postcopy-preempt", "postcopy-blocktime"],
                      parameters=["max-postcopy-bandwidth"],
                      fields=["postcopy-blocktime", "postcopy-vcpu-blocktime", "ram.postcopy-requests"])


# Before QEMU 8.0 the source's migration thread, not the return-path thread, sends a requested page, after up to one
# rate-limit window: preempt cannot help there (harness.qemu.known_bugs), an expected failure rather than a false alarm.
@pytest.mark.known_bug("preempt-requests-wait-for-migration-thread")
@pytest.mark.needs_userfaultfd
@pytest.mark.needs(**POSTCOPY_NEEDS)
@pytest.mark.parametrize("scenario", [ANONYMOUS, pytest.param(HUGETLBFS, marks=pytest.mark.slow)],
                         ids=lambda s: s.name)
def test_preempt_serves_page_requests_promptly(testbed: Testbed, scenario: Scenario) -> None:
    on, off = compare_preempt(testbed, scenario)
    verdicts = [*check_run(testbed, on, scenario), *check_run(testbed, off, scenario)]
    verdicts += judge_latency(testbed, scenario, on, off)
    verdicts += [*judge_blocktime(testbed, on), *judge_blocktime(testbed, off)]
    testbed.artefacts.verdict(*verdicts)


def qemu_latency(run: PostcopyRun) -> dict[str, Any]:
    """The destination's 10.1+ latency figures, in µs."""
    info = run.destination_final
    per_vcpu = info.get("postcopy-vcpu-latency") or []
    dist = info.get("postcopy-latency-dist") or []
    return {"mean_us": info["postcopy-latency"] / 1e3 if info.get("postcopy-latency") is not None else None,
            "vcpu_mean_us": [v / 1e3 for v in per_vcpu], "dist": dist, "faults": sum(dist),
            "p99_upper_us": dist_percentile_upper_bound_us(dist, 0.99)}


@pytest.mark.needs_userfaultfd
@pytest.mark.needs(**{**POSTCOPY_NEEDS, "fields": POSTCOPY_NEEDS["fields"] + LATENCY_FIELDS})
def test_destination_latency_metrics_agree_with_guest(testbed: Testbed) -> None:
    """(d) QEMU's own remote-fault latency: its p99 bucket edge bounded in link RTTs with preempt (anchor: the host
    transport, outside the judged path, as in (a)); the same preempt/no-preempt contrast as the guest sees (anchor:
    the same-run control); its mean and per-vCPU means close to the guest's mean stall, and its overlapped
    blocktime close to the guest's stall sum (anchor: the guest's own view)."""
    on, off = compare_preempt(testbed, ANONYMOUS)
    testbed.artefacts.verdict(*check_run(testbed, on, ANONYMOUS), *check_run(testbed, off, ANONYMOUS))
    figures = {run.label: qemu_latency(run) for run in (on, off)}
    link_us = link_unit_us(on.link_rtt.p50_us, ANONYMOUS)
    testbed.artefacts.write_json("qemu-latency", {"link_rtt_us": on.link_rtt.p50_us, "link_unit_us": link_us,
                                                  **figures})
    mine = figures[on.label]
    for run in (on, off):
        testbed.artefacts.verdict(*judge_blocktime(testbed, run))
        # With the reworked accounting the overlapped total must agree with the guest too (one vCPU: it equals
        # the per-vCPU figure).
        total_ms = run.blocktime_ms or 0
        testbed.artefacts.verdict(oracles.ratio_at_most(f"{run.label}: postcopy-blocktime vs guest stalls per vCPU",
                                                        total_ms, run.guest_stall_ms_per_vcpu, BLOCKTIME_ABOVE,
                                                        floor=1.0))
        testbed.artefacts.verdict(oracles.ratio_at_most(f"{run.label}: guest stalls per vCPU vs postcopy-blocktime",
                                                        run.guest_stall_ms_per_vcpu, total_ms, 1 / BLOCKTIME_BELOW,
                                                        floor=1.0))
        reported = figures[run.label]
        testbed.artefacts.verdict(oracles.Verdict(f"{run.label}: destination latency figures reported",
                                                  reported["mean_us"] is not None and reported["faults"] > 0,
                                                  {"mean_us": reported["mean_us"], "faults": reported["faults"]},
                                                  "mean and ≥ 1 fault", "postcopy-latency, postcopy-latency-dist"))
    # With preempt the probe's faults are nearly all of the remote faults (~16 000 of ~19 000 requests), so QEMU's
    # mean and the guest's mean stall describe the same faults: the same band as for blocktime. (Without preempt
    # the probe sees only a few hundred of them; its mean is not comparable.)
    testbed.artefacts.verdict(oracles.ratio_at_most("preempt: QEMU mean fault latency vs guest mean stall",
                                                    mine["mean_us"], on.stalls.mean_us, BLOCKTIME_ABOVE))
    testbed.artefacts.verdict(oracles.ratio_at_most("preempt: guest mean stall vs QEMU mean fault latency",
                                                    on.stalls.mean_us, mine["mean_us"], 1 / BLOCKTIME_BELOW))
    for cpu, vcpu_us in enumerate(mine["vcpu_mean_us"]):
        testbed.artefacts.verdict(oracles.ratio_at_most(f"preempt: vCPU {cpu} mean fault latency vs guest mean",
                                                        vcpu_us, on.stalls.mean_us, BLOCKTIME_ABOVE))
    # The histogram's buckets are a factor 2 wide: its p99 is known only up to the bucket's upper edge. Anchored
    # to the link RTT (outside the judged path), as the guest's p99 in (a).
    testbed.artefacts.verdict(oracles.ratio_at_most("preempt: QEMU p99 fault latency (bucket edge) in link RTTs",
                                                    figures["preempt-on"]["p99_upper_us"] or 0, link_us,
                                                    2 * ANONYMOUS.p99_link_multiple))
    testbed.artefacts.verdict(oracles.ratio_at_most("QEMU mean fault latency with preempt vs without",
                                                    figures["preempt-on"]["mean_us"],
                                                    figures["preempt-off"]["mean_us"], P99_RATIO))
