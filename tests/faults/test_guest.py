"""Guest-side faults: a kernel panic during migration, an SSH session dropped mid-command."""

from __future__ import annotations

import threading
import time

import pytest

from harness.vm import workloads
from harness.vm.guest import GuestConnectionLost, GuestPanicked
from harness.vm.machine import Machine
from harness.migration.config import MigrationConfig
from harness.migration.testbed import Pair
from harness.migration.testbed import Testbed
from harness.vm.workloads import Dirty
from harness.core.units import MiB

COUNT_FILE = "/run/ssh-fault.count"


@pytest.mark.timeout(150)
@pytest.mark.guest(memory_mib=256)
def test_guest_panic_during_migration_is_reported_with_the_console_tail(testbed: Testbed, pair: Pair) -> None:
    workloads.start(pair.source, Dirty(size_mib=16, rate_mibps=8))
    config = MigrationConfig(parameters={"max-bandwidth": 32 * MiB})
    migration = testbed.migrate(pair.source, pair.destination, config)
    migration.wait(lambda s: (s.latest().get("ram", {}).get("transferred", 0)) > 4 * MiB, 60, "4 MiB transferred")
    # Detached, so the SSH command returns before the kernel dies. /proc/sysrq-trigger ignores kernel.sysrq.
    pair.source.shell.run("setsid sh -c 'sleep 0.3; echo c > /proc/sysrq-trigger' </dev/null >/dev/null 2>&1 &")
    deadline = time.monotonic() + 30
    while pair.source.guest_panic() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert pair.source.guest_panic() is not None, pair.source.console_tail()
    # A panicked guest's RAM still migrates: QEMU reports the migration's own outcome...
    final = migration.wait_completed(120)
    assert final["status"] == "completed"
    # ...and the guest on the destination is known dead at once, with the console of its earlier life.
    start = time.monotonic()
    with pytest.raises(GuestPanicked) as caught:
        pair.destination.shell.run("true", idempotent=True)
    assert time.monotonic() - start < 2.0
    assert "Kernel panic - not syncing: sysrq triggered crash" in str(caught.value), str(caught.value)
    assert "source.console.log" in str(caught.value)


def count(machine: Machine) -> int:
    return int(machine.shell.run(f"wc -l < {COUNT_FILE}", idempotent=True).stdout.strip())


# The command counts its own runs, then kills the dropbear process serving its session ($PPID of the shell
# dropbear starts): the connection drops while the command is running.
DROPPING_COMMAND = f"echo run >> {COUNT_FILE}; kill -KILL $PPID; sleep 5"


@pytest.mark.timeout(90)
@pytest.mark.guest(memory_mib=256)
def test_ssh_dropped_mid_command_is_not_rerun(testbed: Testbed, guest: Machine) -> None:
    guest.shell.run(f"rm -f {COUNT_FILE}; touch {COUNT_FILE}", idempotent=True)
    with pytest.raises(GuestConnectionLost) as caught:
        guest.shell.run(DROPPING_COMMAND, timeout=20)
    assert "not re-run" in str(caught.value) and "may or may not have run" in str(caught.value)
    assert count(guest) == 1, "a non-idempotent command was re-run after the connection dropped"
    # Said idempotent, the same command is re-run on a fresh connection (and drops again each time).
    with pytest.raises(GuestConnectionLost):
        guest.shell.run(DROPPING_COMMAND, timeout=20, retry_for=3, idempotent=True)
    assert count(guest) > 2


@pytest.mark.timeout(90)
@pytest.mark.guest(memory_mib=256)
def test_link_down_mid_command_is_reported_not_rerun(testbed: Testbed, guest: Machine) -> None:
    guest.shell.run(f"rm -f {COUNT_FILE}; touch {COUNT_FILE}", idempotent=True)
    # The guest's NIC goes down 1 s into the command: the session goes silent, the command's timeout ends it.
    guest.qmp.cmd("set_link", name="net0", up=True)
    result = {}
    timer = threading.Timer(1.0, lambda: result.setdefault("down", guest.qmp.cmd("set_link", name="net0", up=False)))
    timer.start()
    start = time.monotonic()
    try:
        with pytest.raises(GuestConnectionLost) as caught:
            guest.shell.run(f"echo run >> {COUNT_FILE}; sleep 3; echo done", timeout=5)
    finally:
        timer.join()
        guest.qmp.cmd("set_link", name="net0", up=True)
    assert time.monotonic() - start < 15
    assert "not re-run" in str(caught.value)
    assert count(guest) == 1
