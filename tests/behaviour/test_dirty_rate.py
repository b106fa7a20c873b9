"""calc-dirty-rate reports the rate at which the guest dirties its memory (upstream /migration/dirty_ring and the
dirty-rate paths of tests/qtest/migration/misc-tests.c, which check only that a rate is reported; this test holds it
to the guest's own measurement, which no upstream test does).

What QEMU 10.0.2 does (migration/dirtyrate.c): `calc-dirty-rate` measures for `calc-time` in a thread and
`query-dirty-rate` then reports `dirty-rate` in MiB/s (an integer):
  page-sampling  hashes `sample-pages` random pages per GiB of each RAM block at the start and at the end; the rate is
                 (dirty samples / samples) × RAM MiB × 1000 / elapsed ms;
  dirty-bitmap   turns on the global dirty log for the window and counts the pages a log sync reports
                 (total_dirty_pages, counted only in cpu_physical_memory_set_dirty_lebitmap, which KVM's log sync
                 feeds; under TCG a write sets the dirty bitmap directly, so the count stays 0 — measured here:
                 "0 MiB/s" against the guest's 32.0 — and the case is skipped on TCG with that reason);
  dirty-ring     sums KVM's per-vCPU dirty rings (refused unless KVM runs with dirty-ring-size: skipped on TCG).
Each counts a page once however often it is written in the window, so the workload writes distinct pages: `dirty`
at RATE_MIBPS over a region larger than RATE_MIBPS × CALC_TIME_S, in a permutation per pass.

Oracles and what anchors each:
  (1) the measurement ends with status "measured" in the mode asked (QEMU's own state);
  (2) QEMU's rate / the guest's own rate over the same window (the `dirty` workload's byte counter over its own
      clock) within BAND: the reference is the guest's view, which a wrong formula in QEMU cannot move.
      regressions/dirty-rate-per-window-not-per-second.patch (the rate of the whole window, not per second) reports
      CALC_TIME_S × the rate: caught.
"""

from __future__ import annotations

import time

import pytest

from harness.analysis import oracles
from harness.vm import workloads
from harness.migration.testbed import Testbed
from harness.vm.machine import Machine
from harness.vm.workloads import Dirty

MEMORY_MIB = 1024
REGION_MIB = 512           # > RATE_MIBPS × CALC_TIME_S: every page written in the window is a new one
RATE_MIBPS = 32
CALC_TIME_S = 4
SAMPLE_PAGES = 4096        # per GiB (QEMU's maximum): ~12 % of RAM dirty gives ~500 dirty samples, σ ≈ 4.5 %
# QEMU's rate / the guest's. Measured (TCG, page-sampling, unmodified 10.0.2): 1.00, 1.00, 0.97, 1.00 in 4 runs;
# make flake N=10 (session 12, host shared with a make matrix): 10/10 passed, 0.938 … 1.00 … 1.06. The
# band is wider than that so that only a formula error (a factor: 4.22 with the regression) leaves it; page-sampling's
# own sampling error is σ ≈ 4.5 % (above).
BAND = (0.75, 1.33)
DIRTY_RING = ("dirty-ring-size=4096",)
KVM_ONLY = {
    "dirty-ring": "reads KVM's dirty ring (QEMU: \"mode dirty-ring is not enabled, use other method instead.\" "
                  "without -accel kvm,dirty-ring-size=N)",
    "dirty-bitmap": "counts only the dirty pages KVM's log sync reports (cpu_physical_memory_set_dirty_lebitmap): "
                    "under TCG it reports 0 MiB/s whatever the guest dirties",
}


def measure(machine: Machine, mode: str) -> dict[str, object]:
    """calc-dirty-rate over CALC_TIME_S in `mode`, then query-dirty-rate until it has measured."""
    arguments: dict[str, object] = {"calc-time": CALC_TIME_S, "mode": mode}
    if mode == "page-sampling":
        arguments["sample-pages"] = SAMPLE_PAGES
    machine.qmp.cmd("calc-dirty-rate", **arguments)
    time.sleep(CALC_TIME_S)   # the window itself: until then the status may still read "unstarted"
    deadline = time.monotonic() + 60
    while (info := machine.qmp.cmd("query-dirty-rate"))["status"] != "measured" and time.monotonic() < deadline:
        time.sleep(0.2)
    return info


@pytest.mark.needs(commands=["calc-dirty-rate", "query-dirty-rate"])
@pytest.mark.cpus(1)
@pytest.mark.parametrize("mode", [
    "page-sampling",
    "dirty-bitmap",
    "dirty-ring",
])
def test_calc_dirty_rate_matches_the_guests_own_rate(testbed: Testbed, mode: str) -> None:
    ring = mode == "dirty-ring"
    if mode in KVM_ONLY and testbed.env.accel.name != "kvm":
        pytest.skip(f"{mode} mode {KVM_ONLY[mode]}; this run's accelerator is {testbed.env.accel.name}")
    guest = testbed.boot(memory_mib=MEMORY_MIB, accel_properties=DIRTY_RING if ring else ())
    dirty = workloads.start(guest, Dirty(size_mib=REGION_MIB, rate_mibps=RATE_MIBPS))
    dirty.wait_progress(guest)
    before = dirty.status(guest)
    info = measure(guest, mode)
    after = dirty.status(guest)
    elapsed = float(after["elapsed_s"]) - float(before["elapsed_s"])
    own = (float(after["bytes_dirtied"]) - float(before["bytes_dirtied"])) / 2**20 / elapsed if elapsed > 0 else 0.0
    testbed.artefacts.write_json("dirty-rate", {"query-dirty-rate": info, "guest_mibps": own, "before": before,
                                                "after": after})
    reported = info.get("dirty-rate")
    testbed.artefacts.verdict(
        oracles.equals("dirty-rate measurement", [info["status"], info.get("mode")], ["measured", mode],
                       why="query-dirty-rate"),
        oracles.within_band("QEMU's dirty rate / the guest's own rate",
                            None if reported is None or own <= 0 else reported / own, *BAND,
                            anchor=f"guest's own counter and clock: {own:.1f} MiB/s; QEMU: {reported} MiB/s"))


VCPU_LIMIT_MIBPS = 8
LIMIT_TOLERANCE = 1.5      # as test_dirty_limit.py: the mechanism's intent with a margin for the ring-full estimate's
                           # lag; not calibrated (no KVM host here)
UNLIMITED_FACTOR = 2.0     # after cancel-vcpu-dirty-limit the guest dirties ≥ 2× the limit again


@pytest.mark.needs(commands=["set-vcpu-dirty-limit", "cancel-vcpu-dirty-limit", "query-vcpu-dirty-limit"])
@pytest.mark.cpus(1)
def test_set_vcpu_dirty_limit_holds_the_guest_outside_migration(testbed: Testbed) -> None:
    """Upstream /migration/vcpu_dirty_limit: set-vcpu-dirty-limit throttles each vCPU through KVM's dirty ring with
    no migration running; cancel-vcpu-dirty-limit lifts it. Oracles: query-vcpu-dirty-limit reports the limit; the
    guest's own dirty rate (its counter and clock) ≤ LIMIT_TOLERANCE × the limit while set (the parameter), and
    ≥ UNLIMITED_FACTOR × the limit before and after (a floor: the limit is provoked, and lifted)."""
    if testbed.env.accel.name != "kvm":
        pytest.skip("set-vcpu-dirty-limit throttles through KVM's dirty ring (QEMU: \"dirty page limit feature requires KVM with accelerator property 'dirty-ring-size' set'\" without "
                    f"-accel kvm,dirty-ring-size=N); this run's accelerator is {testbed.env.accel.name}")
    guest = testbed.boot(memory_mib=MEMORY_MIB, accel_properties=DIRTY_RING)
    dirty = workloads.start(guest, Dirty(size_mib=REGION_MIB, rate_mibps=0))
    before = dirty.dirty_rate_over(guest, CALC_TIME_S)
    guest.qmp.cmd("set-vcpu-dirty-limit", **{"dirty-rate": VCPU_LIMIT_MIBPS})
    time.sleep(2)   # the throttle settles over a few of its 1 s periods
    limited = dirty.dirty_rate_over(guest, CALC_TIME_S)
    quotas = guest.qmp.cmd("query-vcpu-dirty-limit")
    guest.qmp.cmd("cancel-vcpu-dirty-limit")
    after = dirty.dirty_rate_over(guest, CALC_TIME_S)
    testbed.artefacts.write_json("vcpu-dirty-limit", {"before": before, "limited": limited, "after": after,
                                                      "quotas": quotas})
    testbed.artefacts.verdict(
        oracles.equals("vCPU quotas (MiB/s)", sorted({q.get("limit-rate") for q in quotas}), [VCPU_LIMIT_MIBPS],
                       why="query-vcpu-dirty-limit"),
        oracles.at_least("guest dirty rate before the limit / limit", before / VCPU_LIMIT_MIBPS, UNLIMITED_FACTOR,
                         anchor="a floor: the workload outruns the limit"),
        oracles.at_most("guest dirty rate under the limit / limit", limited / VCPU_LIMIT_MIBPS, LIMIT_TOLERANCE,
                        anchor=f"set-vcpu-dirty-limit {VCPU_LIMIT_MIBPS} MiB/s, the guest's own counter and clock"),
        oracles.at_least("guest dirty rate after cancel / limit", after / VCPU_LIMIT_MIBPS, UNLIMITED_FACTOR,
                         anchor="cancel-vcpu-dirty-limit lifts it"))
