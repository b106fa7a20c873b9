"""Migration over a network link (#19): the source and destination QEMU each in a network namespace of its own,
joined by a veth pair (harness.hosts.netns; every test here has a `link` marker, so it runs over such a link whatever
--topology says). Each test's link is measured before its QEMUs start (ping RTT, iperf3 throughput) and recorded,
configured and measured, in link.json.

Oracles and what anchors each:
  - the migration crossed the link, and QEMU counted what it carried: bytes the source's veth end sent during the
    migration / ram.transferred within [1, wire.LINK_OVERHEAD_MAX] (headers on top) — the kernel's device
    counter, outside QEMU (harness.analysis.wire);
  - on a rate-limited link: the average migration throughput (ram.transferred over total-time) ≤ the link rate
    × (1 + RATE_TOLERANCE) — the tbf rate the test set (a mechanism bound: tbf lets no more through);
  - RAM identical, seqcheck invariant, completion, status sequence: as in test_basics (the same helpers);
  - a link cut in postcopy: both sides reach postcopy-paused (QEMU's status), then recovery over the restored
    link completes with the invariant intact — the cut is the scenario's action (marked in the series), never
    taken for the failure under test;
  - B2 over links of 0, 5 and 20 ms RTT: B2's own oracles with the stall counted in link round trips, the link
    round trip being the ping median over the link measured before the QEMUs start (outside the judged path).
    5 and 20 ms need netem (delay): on a kernel without it those cases skip, naming the missing kernel feature.
"""

from __future__ import annotations

from typing import Callable

import pytest

from harness.hosts import netns

from harness.analysis import oracles, wire
from harness.analysis.latency import StallPoint, stall_curves
from harness.migration.migrate import Migration
from harness.migration.config import MigrationConfig
from harness.report.plots import plot_stalls_vs_rtt
from harness.migration.testbed import Pair
from harness.migration.scenarios import postcopy_recovers, precopy_with_integrity
from harness.migration.testbed import Testbed
from harness.core.units import MiB

from test_b2_postcopy_preempt import (ANONYMOUS, P99_RATIO, POSTCOPY_NEEDS, check_run, compare_preempt,
                                      judge_latency)

# As in test_basics: RAM and the guest are checked after a live migration (harness.qemu.known_bugs).
DIRTY_TLB_BUG = pytest.mark.known_bug("tcg-dirty-tlb")
# A tbf-shaped link may pass a little more than its rate over a run: the bucket (tbf_burst_bytes) drains at
# start, and total-time includes set-up before the first byte (which only lowers the average). 5 %.
RATE_TOLERANCE = 0.05
# The source notices the cut when its TCP gives up on the unacknowledged stream: tcp_retries2=3 in both
# namespaces is ~3 s at the 200 ms minimum RTO (the default 15 would be ~15 min).
TCP_RETRIES = 3
PAUSE_AFTER_CUT_TIMEOUT = 60.0


def link_sent(link: netns.Link | None) -> netns.Link:
    assert link is not None, "a `link`-marked test always has a link"
    return link


@DIRTY_TLB_BUG
@pytest.mark.link()
def test_precopy_over_the_link_keeps_ram_identical(testbed: Testbed, paused_pair: Pair,
                                                   link: netns.Link | None) -> None:
    made = link_sent(link)
    before = made.sent_bytes("source")
    final = precopy_with_integrity(testbed, paused_pair, MigrationConfig(parameters={"max-bandwidth": 128 * MiB}),
                                   dirty_mibps=8)
    sent = made.sent_bytes("source") - before
    testbed.artefacts.verdict(wire.link_vs_transferred(sent, final.get("ram", {}).get("transferred")))


@pytest.mark.slow    # make check keeps the link by test_precopy_over_the_link_keeps_ram_identical
@DIRTY_TLB_BUG
# 400 Mbit/s (~48 MiB/s): twice what seqinc re-dirties (~23 MiB/s measured), so precopy converges; at 200 Mbit/s
# it held 190 Mbit/s (the cap works) but never converged.
@pytest.mark.link(rate="400mbit")
def test_precopy_over_a_rate_limited_link_is_held_to_its_rate(testbed: Testbed, paused_pair: Pair,
                                                             link: netns.Link | None) -> None:
    made = link_sent(link)
    # max-bandwidth far above the link's rate: the link, not QEMU, is what limits the stream.
    final = precopy_with_integrity(testbed, paused_pair, MigrationConfig(parameters={"max-bandwidth": 1024 * MiB}),
                                   dirty_mibps=0)
    transferred, total_ms = final.get("ram", {}).get("transferred"), final.get("total-time")
    average = transferred * 8 / (total_ms / 1e3) if transferred and total_ms else None
    rate = made.shaping.rate_bit or 0
    testbed.artefacts.write_json("rate", {"link_rate_bit_per_s": rate, "average_bit_per_s": average,
                                          "transferred": transferred, "total_time_ms": total_ms})
    testbed.artefacts.verdict(oracles.at_most("average migration throughput vs the link's tbf rate",
                                              average, rate * (1 + RATE_TOLERANCE), " bit/s",
                                              f"tbf rate {rate / 1e6:g} Mbit/s set on the link"))


def cut_the_link(link: netns.Link) -> Callable[[Migration], None]:
    """The interruption for postcopy_recovers: cut the link; the source must notice on its own (postcopy-paused);
    the destination is paused with migrate-pause, the way QEMU's postcopy documentation tells an operator to pause
    a side that cannot notice a silent link; then the link is restored. The cut, the destination's pause and the
    restore are marked in the series as the scenario's own actions."""
    def interrupt(migration: Migration) -> None:
        assert migration.destination is not None
        migration.series.mark("link-cut", namespace=link.source_ns, device=netns.DEVICE)
        link.cut()
        try:
            # The source sends all the time (the throttled postcopy stream): its TCP gives up within seconds.
            migration.wait_status({"postcopy-paused"}, PAUSE_AFTER_CUT_TIMEOUT, "source")
            # The destination only waits for pages: a silent link tells it nothing (QEMU sets no TCP keepalive,
            # and a vCPU blocked on a requested page asks for no other). exec-oob: its main loop may be blocked
            # on that page.
            migration.series.mark("migrate-pause", side="destination")
            migration.destination.qmp.cmd("migrate-pause", oob=True)
            migration.wait_status({"postcopy-paused"}, PAUSE_AFTER_CUT_TIMEOUT, "destination")
        finally:
            link.restore()
            migration.series.mark("link-restored")
    return interrupt


# slow (~50 s on TCG): postcopy recovery is in `make check` as
# test_postcopy_recovery.py::test_postcopy_recovers_after_its_recovery_fails[handshake], the link as
# test_precopy_over_the_link_keeps_ram_identical.
@pytest.mark.slow
@DIRTY_TLB_BUG
@pytest.mark.needs_userfaultfd
@pytest.mark.needs(capabilities=["postcopy-ram"], commands=["migrate-pause", "migrate-recover"])
@pytest.mark.link()
def test_postcopy_recovers_after_the_link_is_cut(testbed: Testbed, pair: Pair, link: netns.Link | None) -> None:
    made = link_sent(link)
    made.set_tcp_retries(TCP_RETRIES)
    postcopy_recovers(testbed, pair, cut_the_link(made))
    testbed.artefacts.write_json("link-cuts", {"cuts": made.cut_count, "tcp_retries2": TCP_RETRIES})


# -- B2 over links of several round trips -------------------------------------------------------------------------
RTTS_MS = [0, 5, 20]


@pytest.fixture(scope="module")
def stall_points() -> list[StallPoint]:
    """The B2-over-link runs of this module so far, for the stall-vs-RTT plot each of them redraws."""
    return []


# `slow` (make test, not make check): B2's bounds were calibrated on the unix socket; over the veth two runs gave a
# preempt p99 of 20.5 and 83 link round trips against the bound of 160 (< 2× margin), not yet the ≥ 10 runs a
# timing bound needs before it may judge every `make check`.
@pytest.mark.slow
@pytest.mark.known_bug("preempt-requests-wait-for-migration-thread")
@pytest.mark.needs_userfaultfd
@pytest.mark.needs(**POSTCOPY_NEEDS)
@pytest.mark.parametrize("rtt_ms", [pytest.param(rtt, marks=pytest.mark.link(delay=f"{rtt / 2:g}ms"),
                                                 id=f"rtt{rtt}ms") for rtt in RTTS_MS])
def test_preempt_serves_page_requests_promptly_over_a_link(testbed: Testbed, link: netns.Link | None,
                                                           rtt_ms: float, stall_points: list[StallPoint]) -> None:
    made = link_sent(link)
    assert made.measured is not None
    ping_us = made.measured.ping.rtt.p50_us
    on, off = compare_preempt(testbed, ANONYMOUS)
    verdicts = [*check_run(testbed, on, ANONYMOUS), *check_run(testbed, off, ANONYMOUS)]
    verdicts += judge_latency(testbed, ANONYMOUS, on, off, link=(
        ping_us, f"median ping round trip over the link (configured +{rtt_ms:g} ms), before the QEMUs started"))
    stall_points += [StallPoint(rtt_ms, ping_us, run.preempt, run.stalls) for run in (on, off)]
    curves = stall_curves(stall_points)
    testbed.artefacts.write_json("stalls-vs-rtt", {"points": stall_points, "curves": curves,
                                                   "p99_ratio_bound": P99_RATIO})
    plot_stalls_vs_rtt(testbed.artefacts.path("stalls-vs-rtt.png"),
                       "B2 over a link: guest stall p50/p99 in link round trips, preempt on and off "
                       f"(runs of this session so far: {sorted({p.configured_rtt_ms for p in stall_points})} ms)",
                       curves)
    testbed.artefacts.verdict(*verdicts)
