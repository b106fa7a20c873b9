"""A guest suspended to RAM (ACPI S3) migrates suspended and wakes on the destination (upstream
/migration/precopy/unix/suspend/live, /notlive and /migration/postcopy/suspend, tests/qtest/migration/framework.c:
a boot sector that suspends itself, then system_wakeup on the destination).

What QEMU 10.0.2 does: the guest's write to the PM1 control register stops its vCPUs in runstate "suspended"; the
global state section carries the runstate and vm_was_suspended (migration/global_state.c); a destination started
with -S ends "paused" and `cont` takes it back to "suspended" (vm_prepare_start), one without -S (postcopy) goes
straight to "suspended"; system_wakeup is refused unless the runstate is "suspended", and wakes it through
SeaBIOS's resume vector. Not live: the source is also stopped (`stop`) while suspended, so the stream carries
"paused" with vm_was_suspended = 1. The guest is this suite's Linux (`echo mem > /sys/power/state`), booted from its
bzImage: a PVH-booted kernel is reset by SeaBIOS on wakeup (measured: the ready marker twice on the console).

Oracles and what anchors each:
  (1) completed (postcopy: through postcopy-active); precopy: host RAM hashes equal, both sides paused;
  (2) the destination's runstate is "suspended" before any wakeup — QEMU's own state, set by the guest's write on the
      source and nothing the test did on the destination; system_wakeup is accepted there;
  (3) the guest's own view: its kernel counted one more completed suspend (/sys/power/suspend_stats/success) and its
      CLOCK_BOOTTIME gained on CLOCK_MONOTONIC about the time it spent suspended on the host's clock (the RTC the
      kernel reads on resume): ≥ SLEPT_FLOOR of it — a guest that was rebooted or never slept gains nothing;
  (4) seqcheck: the seqinc invariant across suspend, migration and wakeup.
      regressions/suspended-state-not-migrated.patch (the destination forgets vm_was_suspended) runs the guest on
      from its sleep instruction instead: (2) fails with QEMU's refusal of system_wakeup.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import pytest

from harness.analysis import oracles
from harness.core.units import MiB
from harness.migration.config import MigrationConfig
from harness.migration.migrate import wait_runstate
from harness.migration.testbed import Testbed
from harness.qemu.qmp import ExecuteError
from harness.vm import workloads
from harness.vm.machine import Machine
from harness.vm.ram import compare_guest_ram
from harness.vm.workloads import SeqInc

# The guest's own time asleep / the host's suspended interval. The kernel reads the RTC (1 s resolution) on resume,
# so the guest is held suspended ≥ MIN_ASLEEP_S (a postcopy of the idle guest took 0.3 s: too short to tell from 0).
# Measured (TCG): precopy-live 0.83, 0.78, 0.99, 1.01 (make flake, 4 of 10 runs by the session's end) and 0.82 for
# 2.7 s asleep; not live 0.85; postcopy 0.84. Session 12, make flake N=10 of precopy-live (host shared with a make
# matrix): 10/10, 0.696 … 0.977 … 0.995 (the RTC's 1 s resolution is 0.25 of MIN_ASLEEP_S: the low runs lost a
# second to it). A rebooted or never-slept guest gains 0.
SLEPT_FLOOR = 0.5
MIN_ASLEEP_S = 4.0
TIMEOUT = 120.0
POSTCOPY = MigrationConfig(capabilities={"postcopy-ram": True},
                           parameters={"max-bandwidth": 4 * MiB, "max-postcopy-bandwidth": 0})


@dataclass(frozen=True)
class SuspendCase:
    live: bool        # False: the source is also stopped before migrating (upstream "notlive")
    postcopy: bool    # the destination runs (no -S): switched to postcopy after the first dirty sync


def guest_sleep_record(guest: Machine) -> tuple[int, float]:
    """(completed suspends, CLOCK_BOOTTIME − CLOCK_MONOTONIC in s) as the guest's kernel counts them."""
    out = guest.shell.run("cat /sys/power/suspend_stats/success; cat /proc/uptime; "
                          "grep -m1 'now at' /proc/timer_list").stdout.split()
    return int(out[0]), float(out[1]) - int(out[-2]) / 1e9


def suspend(guest: Machine) -> float:
    """Suspend the guest to RAM from inside; returns the host time at which QEMU reported it suspended."""
    if "mem" not in guest.shell.run("cat /sys/power/state").stdout.split():
        pytest.skip("the guest kernel offers no suspend to RAM (/sys/power/state lacks 'mem')")
    guest.shell.run("(sleep 0.5; echo mem > /sys/power/state) </dev/null >/dev/null 2>&1 &")
    wait_runstate(guest, {"suspended"}, 60)
    return time.monotonic()


@pytest.mark.known_bug("suspended-runstate-not-migrated", "suspended-guest-not-woken")
@pytest.mark.parametrize("case", [
    pytest.param(SuspendCase(live=True, postcopy=False), id="precopy-live"),
    pytest.param(SuspendCase(live=False, postcopy=False), id="precopy-notlive", marks=pytest.mark.slow),
    pytest.param(SuspendCase(live=True, postcopy=True), id="postcopy", marks=pytest.mark.slow),
])
def test_a_suspended_guest_migrates_and_wakes_on_the_destination(testbed: Testbed, case: SuspendCase) -> None:
    if testbed.env.arch.name != "x86_64":
        pytest.skip(f"suspend to RAM here is x86's ACPI S3 (upstream: x86 only); the guest arch is "
                    f"{testbed.env.arch.name}")
    source = testbed.boot(bzimage=True)
    if not source.qmp.cmd("query-current-machine").get("wakeup-suspend-support"):
        pytest.skip(f"QEMU's machine {source.config.machine_type or source.config.arch.machine} cannot wake a "
                    "suspended guest (query-current-machine: wakeup-suspend-support false)")
    seq = workloads.start(source, SeqInc(size_mib=32, rate_passes=1))
    suspends, slept = guest_sleep_record(source)
    suspended_at = suspend(source)
    if not case.live:
        source.qmp.cmd("stop")
    destination = testbed.incoming(source, paused=not case.postcopy)
    migration = testbed.migrate(source, destination, POSTCOPY if case.postcopy else MigrationConfig())
    if case.postcopy:
        migration.wait_dirty_syncs(1, TIMEOUT)
        migration.start_postcopy()
    final = migration.wait_completed(TIMEOUT)
    migration.finish()
    testbed.artefacts.write_json("final-query-migrate", final)
    testbed.artefacts.verdict(oracles.completed(final))
    if case.postcopy:
        testbed.artefacts.verdict(oracles.went_through(migration.series, ["postcopy-active"]))
    else:
        comparison = compare_guest_ram(source, destination, source.config.ram_bytes, testbed.workdir)
        testbed.artefacts.write_json("ram-comparison", comparison)
        testbed.artefacts.verdict(oracles.ram_identical(comparison))
        destination.qmp.cmd("cont")
    state = destination.runstate()
    testbed.artefacts.verdict(oracles.equals("destination runstate before wakeup", state, "suspended",
                                             why="the source's suspended state, migrated"))
    time.sleep(max(0.0, MIN_ASLEEP_S - (time.monotonic() - suspended_at)))
    try:
        destination.qmp.cmd("system_wakeup")
        woken = "accepted"
    except ExecuteError as exc:
        woken = f"refused: {exc}"
    asleep_s = time.monotonic() - suspended_at
    testbed.artefacts.verdict(oracles.equals("system_wakeup on the destination", woken, "accepted",
                                             why="QEMU wakes only a suspended guest"))
    wait_runstate(destination, {"running"}, 30)
    suspends_after, slept_after = guest_sleep_record(destination)
    check = workloads.seqcheck(destination, seq)
    testbed.artefacts.write_json("guest-sleep", {"suspends": [suspends, suspends_after], "slept_s": [slept, slept_after],
                                                 "host_suspended_s": asleep_s, "runstate": state, "wakeup": woken})
    testbed.artefacts.verdict(
        oracles.equals("suspends the guest's kernel completed", suspends_after - suspends, 1,
                       why="/sys/power/suspend_stats/success, the guest's own count"),
        oracles.at_least("guest's own time asleep / host's suspended interval", (slept_after - slept) / asleep_s,
                         SLEPT_FLOOR, anchor=f"host clock: {asleep_s:.1f} s from suspended to system_wakeup"),
        oracles.guest_invariant(check.passed, check.line))
