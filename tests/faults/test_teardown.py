"""Teardown fails the test on a QEMU that exited abnormally — killed by a signal the harness did not send, or a
non-zero exit status — after cleaning everything up. Before, nobody looked at QEMU's exit status."""

from __future__ import annotations

import signal
import socket
import time
from pathlib import Path

import pytest

from harness.vm.exits import QemuExited
from harness.vm.machine import Machine
from harness.migration.migrate import wait_runstate
from harness.report.artefacts import Artefacts
from harness.migration.testbed import AbnormalExits, Testbed


def own_testbed(testbed: Testbed, tmp_path: Path) -> Testbed:
    """A second testbed, closed by the test itself so it can catch what close() raises."""
    return Testbed(testbed.env, Artefacts(tmp_path / "artefacts", "inner"))


def assert_cleaned_up(bed: Testbed, machines: list[Machine]) -> None:
    assert not bed.workdir.exists()
    for machine in machines:
        assert machine.tmpdir is None and not machine.is_running()


@pytest.mark.timeout(60)
def test_qemu_killed_by_a_signal_not_from_the_harness_fails_teardown(testbed: Testbed, tmp_path: Path) -> None:
    bed = own_testbed(testbed, tmp_path)
    seen = bed.launch("crashing-seen", bed.config(memory_mib=128))
    unseen = bed.launch("crashing-unseen", bed.config(memory_mib=128))
    tmpdirs = [seen.tmpdir, unseen.tmpdir]
    for machine in (seen, unseen):
        machine.send_signal(signal.SIGABRT)  # what an assertion failure in QEMU looks like from outside
    # Every wait on it ends at once with the exit, not at its deadline...
    for wait in (lambda: seen.wait_booted(60), lambda: wait_runstate(seen, {"running"}, 60),
                 lambda: seen.shell.run("true", retry_for=60, idempotent=True)):
        start = time.monotonic()
        with pytest.raises(QemuExited) as exited:
            wait()
        assert time.monotonic() - start < 2.0 and exited.value.signal_name == "SIGABRT", str(exited.value)
    unseen.wait_exit(10)
    # ...and teardown fails on the one no wait reported to the test (the other already failed it, once).
    with pytest.raises(AbnormalExits) as caught:
        bed.close()
    message = str(caught.value)
    assert "crashing-unseen QEMU killed by SIGABRT" in message and "1 QEMU process(es)" in message, message
    assert_cleaned_up(bed, [seen, unseen])
    assert not [d for d in tmpdirs if d is None or d.exists()]


@pytest.mark.timeout(60)
def test_destination_exiting_1_unasked_fails_teardown(testbed: Testbed, tmp_path: Path) -> None:
    bed = own_testbed(testbed, tmp_path)
    source = bed.launch("source", bed.config(memory_mib=128))
    destination = bed.launch("destination", bed.config(memory_mib=128, incoming="defer"))
    uri = bed.workdir / "garbage.sock"
    destination.qmp.cmd("migrate-incoming", uri=f"unix:{uri}")
    # Not a migration stream: the destination fails to load it and exits 1, which no one asked for.
    with socket.socket(socket.AF_UNIX) as sock:
        sock.connect(str(uri))
        sock.sendall(b"this is not a migration stream" * 100)
    assert destination.wait_exit(20) is not None
    with pytest.raises(AbnormalExits) as caught:
        bed.close()
    message = str(caught.value)
    assert "destination QEMU exit status 1" in message and "1 QEMU process(es)" in message, message
    assert_cleaned_up(bed, [source, destination])


@pytest.mark.timeout(60)
def test_orderly_quit_and_declared_kill_pass_teardown(testbed: Testbed, tmp_path: Path) -> None:
    """The converse, so the two tests above can fail: quit (status 0) and a declared SIGKILL are not abnormal."""
    bed = own_testbed(testbed, tmp_path)
    bed.launch("quits", bed.config(memory_mib=128))
    killed = bed.launch("killed", bed.config(memory_mib=128))
    with killed.expect_exit("this test kills it"):
        killed.send_signal(signal.SIGKILL)
        killed.wait_exit(10)
    start = time.monotonic()
    bed.close()
    assert time.monotonic() - start < 10
