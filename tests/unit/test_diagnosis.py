"""Failures that read as a diagnosis (#29): kernel crash lines on a console, the order of a failure's message, and
the switchover blackout measured from QMP event timestamps and the guest heartbeat."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.analysis import blackout, oracles
from harness.analysis.diagnosis import Reference, crash_headline, failure_message
from harness.analysis.samples import Series
from harness.vm.console import ConsoleWatcher, crash_kind, crash_lines

# The head of a real x86_64 oops, as the guest's console prints it (printk times on).
OOPS = """\
[   41.204613] BUG: unable to handle page fault for address: ffff9e5c86c00008
[   41.205102] #PF: supervisor read access in kernel mode
[   41.205522] Oops: 0000 [#1] PREEMPT SMP NOPTI
[   41.210377] Kernel panic - not syncing: Fatal exception
"""


def test_crash_lines_and_their_kind() -> None:
    crashes = crash_lines("HARNESS-GUEST-READY\n" + OOPS, "destination.console.log", t=5.0)
    assert [c.kind for c in crashes] == ["kernel BUG", "kernel Oops", "kernel panic"]
    assert crashes[0].line.endswith("BUG: unable to handle page fault for address: ffff9e5c86c00008")
    assert crashes[0].console == "destination.console.log" and crashes[0].t == 5.0
    assert crash_kind("general protection fault, probably for non-canonical address 0x1: 0000 [#1]") == "kernel Oops"
    assert crash_kind("kernel BUG at mm/slub.c:379!") == "kernel BUG"
    assert crash_kind("Unable to handle kernel pointer dereference in virtual kernel address space") == "kernel Oops"
    # Workload output and ordinary kernel lines are no crash.
    for line in ("SEQCHECK PASS pages=8192", "dirty: 128 MiB at 16 MiB/s", "virtio_net virtio0 eth0: renamed",
                 "Oopsie is not a word the kernel prints", "DEBUG: x"):
        assert crash_kind(line) is None, line


def test_console_watcher_stamps_crash_lines_as_they_appear(tmp_path: Path) -> None:
    console = tmp_path / "destination.console.log"
    console.write_text("booting\nHARNESS-GUEST-READY\n")
    watcher = ConsoleWatcher(console)
    watcher.poll()
    assert watcher.crashes == []
    with open(console, "a") as f:
        f.write(OOPS + "[   41.3] half a li")       # an unfinished line waits for its end
    watcher.poll()
    first = watcher.crashes
    assert len(first) == 3 and all(c.t is not None for c in first)
    with open(console, "a") as f:
        f.write("ne: BUG: soft lockup\n")
    watcher.poll()
    assert watcher.crashes[3].line == "[   41.3] half a line: BUG: soft lockup"


def test_a_crash_headline_says_which_guest_what_and_when() -> None:
    switchover = Reference("switchover", 100.0)
    assert crash_headline("destination", "kernel Oops", "Oops: 0000 [#1]", 112.4, switchover) == (
        "destination guest: kernel Oops 12 s after switchover: Oops: 0000 [#1]")
    assert crash_headline("source", "kernel panic", "Kernel panic", 97.0, switchover) == (
        "source guest: kernel panic 3 s before switchover: Kernel panic")
    assert crash_headline("source", "kernel BUG", "BUG: x", None, switchover) == "source guest: kernel BUG: BUG: x"


def test_the_failure_message_names_the_crash_first_then_exits_then_ram_then_the_rest() -> None:
    verdicts = [oracles.completed({"status": "completed"}),
                oracles.guest_invariant(False, "SEQCHECK FAIL"),
                oracles.Verdict("host RAM hashes equal", False, 3, 0, "guest RAM differs in 3 of 131072 pages")]
    message = failure_message(["destination guest: kernel Oops 12 s after switchover: Oops: 0000 [#1]"],
                              ["destination QEMU killed by SIGABRT"], verdicts,
                              "GuestUnreachable: guest at 127.0.0.1:2222 unreachable for 20s: No existing session",
                              ["SSH to the destination guest lost: its QEMU runs (runstate running); …"])
    lines = message.splitlines()
    assert lines[0].startswith("destination guest: kernel Oops 12 s after switchover")
    assert lines[1] == "destination QEMU killed by SIGABRT"
    assert lines[2].startswith("host RAM hashes equal: guest RAM differs in 3 of 131072 pages")
    assert lines[3].startswith("guest seqcheck invariant: SEQCHECK FAIL")
    assert lines[4] == ("the test stopped at: GuestUnreachable: guest at 127.0.0.1:2222 unreachable for 20s: "
                        "No existing session")
    assert lines[5].startswith("SSH to the destination guest lost")
    # Nothing but the error: the error's own first line leads.
    assert failure_message([], [], [], "QemuExited: source QEMU exit status 1\ntail").splitlines()[0] == (
        "QemuExited: source QEMU exit status 1")


def switchover_series() -> Series:
    """A migration whose source stopped at wall 1000.100, completed at 1000.110, and whose destination resumed at
    1000.115; the harness received the events 30 ms late (its clock: t0 = 50.0 ↔ wall 1000.0)."""
    series = Series(t0=50.0, hz=100, wall_t0=1000.0)
    series.marks.append({"t": 0.0, "what": "migrate"})
    series.events["source"] = [
        {"t": 0.130, "event": "STOP", "data": {}, "wall": 1000.100},
        {"t": 0.140, "event": "MIGRATION", "data": {"status": "completed"}, "wall": 1000.110}]
    series.events["destination"] = [{"t": 0.145, "event": "RESUME", "data": {}, "wall": 1000.115}]
    return series


def test_blackout_from_event_timestamps_and_heartbeat_arrivals() -> None:
    series = switchover_series()
    source = [(50.0 + i * 0.001, 1) for i in range(100)]                  # ticks up to 50.099
    destination = [(50.120 + i * 0.001, 1) for i in range(10)]
    observed = blackout.measure(series, source, destination, reported_ms=10)
    assert observed.source_ms == pytest.approx(10.0) and observed.events_ms == pytest.approx(15.0)
    assert observed.heartbeat_ms == pytest.approx(21.0)
    assert observed.source_tick_gap_max == pytest.approx(0.001)
    assert blackout.reported_vs_source_clock(observed, 0.5, 1.5).passed
    assert blackout.reported_within_lived(observed, 1.2).passed
    assert blackout.heartbeat_covers_events(observed, 0.8).passed
    assert blackout.blackout_within_limit(observed, 300, 250).passed
    # Downtime counted from after the stop-and-copy: far below the same interval on the host clock.
    under = blackout.measure(series, source, destination, reported_ms=0)
    low = blackout.reported_vs_source_clock(under, 0.5, 1.5)
    assert not low.passed and "reported 0 ms, STOP→completed 10 ms" in low.why
    # A heartbeat that never went silent did not hear the switchover.
    deaf = blackout.measure(series, [(50.0 + i * 0.001, 1) for i in range(200)], destination, 10)
    assert not blackout.heartbeat_covers_events(deaf, 0.8).passed
