"""Pure pieces of the failure-path tests: which status a cancel interrupted, and what a process holds."""

from __future__ import annotations

import os
from pathlib import Path

from harness.analysis import oracles
from harness.analysis.cancel import announced_statuses, interrupted_status
from harness.migration.sampler import Series
from harness.vm.footprint import Footprint


def announced(*statuses: str) -> Series:
    series = Series(t0=0.0, hz=50)
    series.events["source"] = [{"t": float(i), "event": "MIGRATION", "data": {"status": s}}
                               for i, s in enumerate(statuses)]
    series.events["source"].insert(1, {"t": 0.5, "event": "MIGRATION_PASS", "data": {"pass": 1}})
    return series


def test_interrupted_status_is_the_one_announced_before_cancelling() -> None:
    series = announced("setup", "active", "pre-switchover", "device", "cancelling", "cancelled")
    assert announced_statuses(series) == ["setup", "active", "pre-switchover", "device", "cancelling", "cancelled"]
    assert interrupted_status(series) == "device"
    assert interrupted_status(announced("setup", "cancelling", "cancelled")) == "setup"


def test_no_cancelling_means_nothing_was_interrupted() -> None:
    assert interrupted_status(announced("setup", "active", "completed")) is None
    assert interrupted_status(announced("cancelling", "cancelled")) is None
    assert interrupted_status(Series(t0=0.0, hz=50), "destination") is None


def fake_proc(root: Path, pid: int, fds: dict[int, str], threads: dict[int, str]) -> Path:
    (root / str(pid) / "fd").mkdir(parents=True)
    for fd, target in fds.items():
        os.symlink(target, root / str(pid) / "fd" / str(fd))
    for tid, name in threads.items():
        (root / str(pid) / "task" / str(tid)).mkdir(parents=True)
        (root / str(pid) / "task" / str(tid) / "comm").write_text(name + "\n")
    return root


def test_footprint_reads_fds_and_threads_and_names_what_was_added(tmp_path: Path) -> None:
    before = Footprint.of(7, fake_proc(tmp_path / "a", 7, {0: "/dev/null", 3: "pipe:[11]"},
                                       {7: "qemu-system-x86", 8: "CPU 0/TCG"}))
    after = Footprint.of(7, fake_proc(tmp_path / "b", 7, {0: "/dev/null", 4: "pipe:[12]", 5: "pipe:[13]"},
                                      {7: "qemu-system-x86", 8: "CPU 0/TCG", 9: "live_migration"}))
    assert len(before.fds) == 2 and before.threads[8] == "CPU 0/TCG"
    # A pipe reopened under another number and inode is the same holding; the extra one is the leak.
    assert after.added_since(before) == {"fds": ["pipe"], "threads": ["live_migration"]}
    assert before.added_since(after) == {"fds": [], "threads": []}
    assert Footprint.of(99, tmp_path / "a") == Footprint({}, {})   # a gone process holds nothing


def test_footprint_names_sockets_by_kind_and_leaves_out_the_ssh_forward(tmp_path: Path) -> None:
    proc = fake_proc(tmp_path, 7, {3: "socket:[11]", 4: "socket:[12]", 5: "socket:[13]", 6: "socket:[14]"}, {})
    (proc / "7" / "net").mkdir()
    (proc / "7" / "net" / "unix").write_text("Num RefCount Protocol Flags Type St Inode Path\n"
                                             "0000: 00000002 00000000 00010000 0001 01 11 /tmp/qmp.sock\n"
                                             "0000: 00000002 00000000 00000000 0001 01 12\n")
    header = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n"
    (proc / "7" / "net" / "tcp").write_text(
        header + "   0: 0100007F:C350 00000000:0000 0A 00000000:00000000 00:00000000 00000000 0 0 13 1\n"
                 "   1: 0100007F:1F90 0100007F:C351 01 00000000:00000000 00:00000000 00000000 0 0 14 1\n")
    footprint = Footprint.of(7, proc, ignore_tcp_ports={0xC350})
    assert footprint.fds == {3: "socket:unix:[11]", 4: "socket:unix:[12]", 6: "socket:tcp:8080:[14]"}
    assert Footprint({}, {}).added_since(footprint) == {"fds": [], "threads": []}
    assert Footprint({9: "socket:[99]"}, {}).added_since(Footprint({}, {}))["fds"] == []   # in no table: not ours
    assert footprint.added_since(Footprint({}, {})) == {"fds": ["socket:tcp:8080", "socket:unix", "socket:unix"],
                                                       "threads": []}


def test_holds_no_more_names_the_additions() -> None:
    assert oracles.holds_no_more("fds", 10, 10, []).passed
    leak = oracles.holds_no_more("fds", 10, 10, ["socket:unix"])    # same count: another fd closed meanwhile
    assert not leak.passed and "socket:unix" in leak.why and leak.measured == ["socket:unix"]
