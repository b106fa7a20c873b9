"""A QEMU that dies mid-migration ends the wait at once with QemuExited naming the side and the signal — not a
"stall" reported when the whole deadline (minutes) has run out. Likewise a monitor connection lost under the
sampler (MonitorLost), and a deliberate kill declared with expect_exit is not mistaken for a fault."""

from __future__ import annotations

import signal
import time

import pytest

from harness.vm import workloads
from harness.vm.exits import QemuExited
from harness.vm.machine import Machine
from harness.migration.migrate import Migration
from harness.migration.config import MigrationConfig, MonitorLost
from harness.migration.testbed import Pair
from harness.migration.testbed import Testbed
from harness.vm.workloads import Dirty
from harness.core.units import MiB

# The wait's own deadline: a harness that only notices at the deadline fails REPORTED_WITHIN_S by far.
WAIT_DEADLINE_S = 120.0
REPORTED_WITHIN_S = 3.0

pytestmark = pytest.mark.guest(memory_mib=256)


def slow_precopy(testbed: Testbed, pair: Pair, **capabilities: bool) -> Migration:
    """A precopy kept active: 4 MiB/s against 256 MiB and a 16 MiB/s dirtier."""
    workloads.start(pair.source, Dirty(size_mib=32, rate_mibps=16))
    config = MigrationConfig(capabilities=capabilities,
                             parameters={"max-bandwidth": 4 * MiB, "max-postcopy-bandwidth": 2 * MiB})
    migration = testbed.migrate(pair.source, pair.destination, config)
    migration.wait(lambda s: (s.latest().get("ram", {}).get("transferred", 0)) > 2 * MiB, 60, "2 MiB transferred")
    return migration


def killed_during_wait(testbed: Testbed, migration: Migration, victim: Machine) -> tuple[QemuExited, float]:
    killed_at = time.monotonic()
    victim.send_signal(signal.SIGKILL)
    with pytest.raises(QemuExited) as caught:
        migration.wait_completed(WAIT_DEADLINE_S)
    took = time.monotonic() - killed_at
    testbed.artefacts.write_json("fault-report", {"seconds_to_verdict": took, "verdict": str(caught.value)})
    return caught.value, took


@pytest.mark.timeout(120)
def test_source_killed_mid_precopy_is_reported_at_once(testbed: Testbed, pair: Pair) -> None:
    migration = slow_precopy(testbed, pair)
    exc, took = killed_during_wait(testbed, migration, pair.source)
    assert took < REPORTED_WITHIN_S, f"noticed after {took:.1f}s"
    assert exc.side == "source" and exc.signal_name == "SIGKILL", str(exc)
    assert "source QEMU" in str(exc) and "killed by SIGKILL" in str(exc)


def in_postcopy(testbed: Testbed, pair: Pair) -> Migration:
    migration = slow_precopy(testbed, pair, **{"postcopy-ram": True})
    migration.start_postcopy()
    migration.wait_status({"postcopy-active"}, 30, "destination")  # both sides are in postcopy from here
    return migration


@pytest.mark.timeout(150)
@pytest.mark.needs_userfaultfd
@pytest.mark.needs(capabilities=["postcopy-ram"], commands=["migrate-start-postcopy"])
@pytest.mark.parametrize("side", ["source", "destination"])
def test_side_killed_mid_postcopy_is_reported_at_once(testbed: Testbed, pair: Pair, side: str) -> None:
    migration = in_postcopy(testbed, pair)
    exc, took = killed_during_wait(testbed, migration, getattr(pair, side))
    if side == "source":
        # Its source gone, the destination waits in postcopy-paused for a recovery nobody will start, and cannot
        # quit there (its vCPUs wait for pages only the source had): teardown would give `quit` 15 s before its
        # SIGKILL. The harness kills it now instead (a harness kill is never an abnormal exit).
        pair.destination.kill()
    assert took < REPORTED_WITHIN_S, f"noticed after {took:.1f}s"
    assert exc.side == side and exc.signal_name == "SIGKILL", str(exc)


@pytest.mark.timeout(150)
@pytest.mark.needs_userfaultfd
@pytest.mark.needs(capabilities=["postcopy-ram"], commands=["migrate-start-postcopy"])
def test_declared_kill_of_destination_is_not_a_fault(testbed: Testbed, pair: Pair) -> None:
    """A scenario that kills the destination on purpose sees the source's reaction (postcopy-paused), not a
    QemuExited for the kill it asked for."""
    migration = in_postcopy(testbed, pair)
    pair.destination.expect_exit("the scenario kills the destination")
    pair.destination.send_signal(signal.SIGKILL)
    migration.wait_status({"postcopy-paused"}, 30, "source")
    assert pair.destination.exit_info is not None and pair.destination.abnormal_exit() is None


@pytest.mark.timeout(90)
def test_qmp_closed_under_the_sampler_is_a_clear_error(testbed: Testbed, pair: Pair) -> None:
    migration = slow_precopy(testbed, pair)
    closed_at = time.monotonic()
    pair.source.qmp.close()
    with pytest.raises(MonitorLost) as caught:
        migration.wait_completed(WAIT_DEADLINE_S)
    took = time.monotonic() - closed_at
    testbed.artefacts.write_json("fault-report", {"seconds_to_verdict": took, "verdict": str(caught.value)})
    assert took < REPORTED_WITHIN_S, f"noticed after {took:.1f}s"
    assert "lost the source QMP connection" in str(caught.value) and "still runs" in str(caught.value)
