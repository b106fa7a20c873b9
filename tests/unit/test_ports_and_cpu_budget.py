"""harness.hosts.parallel without QEMU: port reservations, the CPU need a test derives, the CPU budget's tokens (two
holders in one process stand for two processes: flock locks belong to the open file, not the process), the runtime
directory's checks; and the plugin's run-directory pieces that xdist relies on."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from harness.hosts import parallel

from harness.core import workdirs
from harness.hosts.parallel import BudgetTimeout, CpuBudget, cpus_needed, reserve_port, runtime_dir
from harness.plugin.results import point_latest, run_name


# -- ports ---------------------------------------------------------------------------------------------------------
def test_a_reserved_port_is_not_handed_out_again_until_released(tmp_path: Path) -> None:
    probes = iter([5000, 5000, 5001])
    first = reserve_port(tmp_path, probe=lambda: next(probes))
    second = reserve_port(tmp_path, probe=lambda: next(probes))   # 5000 is held: the next probe is taken
    assert (first.port, second.port) == (5000, 5001)
    first.release()
    again = reserve_port(tmp_path, probe=lambda: 5000)
    assert again.port == 5000
    for r in (second, again):
        r.release()


def test_reserving_gives_up_when_every_probe_is_reserved(tmp_path: Path) -> None:
    held = reserve_port(tmp_path, probe=lambda: 6000)
    with pytest.raises(OSError, match="no unreserved free port after 3 tries"):
        reserve_port(tmp_path, probe=lambda: 6000, attempts=3)
    held.release()


def test_a_dead_holders_reservation_is_free(tmp_path: Path) -> None:
    # A process that reserved and died (SIGKILL included) holds nothing: the kernel drops its flock.
    code = ("import sys; from pathlib import Path; from harness.hosts.parallel import reserve_port; "
            "r = reserve_port(Path(sys.argv[1]), probe=lambda: 7000); print(r.port)")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[2])
    assert out.stdout.strip() == "7000"
    reserve_port(tmp_path, probe=lambda: 7000).release()


def test_the_real_probe_gives_distinct_reserved_ports_to_concurrent_reservers(tmp_path: Path) -> None:
    held = [reserve_port(tmp_path) for _ in range(20)]
    assert len({r.port for r in held}) == 20
    for r in held:
        r.release()


# -- the CPU need --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("requested, closure, overrides, marker, budget, need", [
    (["paused_pair"], ["paused_pair", "guest", "testbed"], {}, None, 8, 2),        # source + destination
    (["testbed", "pair"], ["pair", "guest", "testbed"], {}, None, 8, 2),
    (["testbed"], ["testbed", "environment"], {}, None, 8, 2),                       # boots its own QEMUs
    (["ssh"], ["ssh", "guest", "testbed"], {}, None, 8, 1),                          # one guest only
    (["guest"], ["guest", "testbed"], {"cpus": 2}, None, 8, 2),                      # a 2-vCPU guest
    (["pair"], ["pair", "guest", "testbed"], {"cpus": 2}, None, 8, 4),
    (["pair"], ["pair", "guest", "testbed"], {"cpus": 2}, None, 2, 2),               # capped at the budget
    (["artefacts"], ["artefacts"], {}, None, 8, 0),                                  # no QEMU
    (["pair"], ["pair", "guest", "testbed"], {}, 1, 8, 1),                           # the marker decides
    (["guest"], ["guest", "testbed"], {}, 3, 8, 3),
])
def test_the_cpus_a_test_needs_follow_from_what_it_boots(requested: list[str], closure: list[str],
                                                         overrides: dict, marker: int | None, budget: int,
                                                         need: int) -> None:
    assert cpus_needed(requested, closure, overrides, marker, budget).cpus == need


def test_the_need_says_why() -> None:
    assert cpus_needed(["pair"], ["pair"], {}, None, 8).why == ("a source + destination pair of 1 vCPU(s), one busy "
                                                               "host core each")
    assert "capped at the budget of 2" in cpus_needed(["pair"], ["pair"], {"cpus": 4}, None, 2).why
    assert cpus_needed(["guest"], ["guest"], {}, 2, 8).why == "@pytest.mark.cpus"
    with pytest.raises(ValueError):
        cpus_needed([], [], {}, -1, 8)


# -- the CPU budget ------------------------------------------------------------------------------------------------
def test_tokens_are_shared_out_until_none_is_left(tmp_path: Path) -> None:
    budget = CpuBudget(tmp_path, size=2)
    one = budget.acquire(1, timeout=0.2)
    two = budget.acquire(1, timeout=0.2)
    assert sorted(one.tokens + two.tokens) == [0, 1] and one.waited_s < 0.2
    with pytest.raises(BudgetTimeout, match="1 of 2 CPU tokens"):
        budget.acquire(1, timeout=0.2)
    one.release()
    three = budget.acquire(1, timeout=0.2)
    assert three.tokens == one.tokens
    for grant in (two, three):
        grant.release()
    assert list(budget.holders()) == []


def test_a_timed_out_wait_gives_back_what_it_had_taken(tmp_path: Path) -> None:
    budget = CpuBudget(tmp_path, size=3)
    held = budget.acquire(2, timeout=0.2)
    with pytest.raises(BudgetTimeout):
        budget.acquire(2, timeout=0.2)        # takes the third token, waits for a fourth, gives up
    assert list(budget.holders()) == held.tokens
    held.release()


def test_an_interrupted_wait_gives_back_what_it_had_taken(tmp_path: Path) -> None:
    budget = CpuBudget(tmp_path, size=2)
    held = budget.acquire(1)

    def ctrl_c(_: float) -> None:
        raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        budget.acquire(2, sleep=ctrl_c)
    assert list(budget.holders()) == held.tokens
    # and the gate is free again: another waiter gets through
    held.release()
    budget.acquire(2, timeout=0.2).release()


def test_a_waiter_gets_its_cpus_when_a_holder_releases_them(tmp_path: Path) -> None:
    budget = CpuBudget(tmp_path, size=2)
    held = budget.acquire(2)
    threading.Timer(0.3, held.release).start()
    grant = budget.acquire(2, timeout=10)
    assert grant.tokens == [0, 1] and 0.2 < grant.waited_s < 5
    grant.release()


def test_two_waiters_needing_all_cpus_never_deadlock_on_half_each(tmp_path: Path) -> None:
    """The gate: only one waiter collects at a time, so two that need both tokens take turns."""
    budget = CpuBudget(tmp_path, size=2)
    done: list[float] = []

    def worker() -> None:
        for _ in range(5):
            with budget.acquire(2, timeout=20):
                time.sleep(0.01)
        done.append(time.monotonic())
    threads = [threading.Thread(target=worker) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(done) == 3


def test_asking_for_more_than_the_budget_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="3 CPUs asked of a budget of 2"):
        CpuBudget(tmp_path, size=2).acquire(3)
    assert CpuBudget(tmp_path, size=2).acquire(0).tokens == []


def test_the_default_budget_is_the_cpus_this_process_may_run_on(tmp_path: Path) -> None:
    assert CpuBudget(tmp_path).size == len(os.sched_getaffinity(0)) == parallel.host_cpus()


# -- the runtime directory -----------------------------------------------------------------------------------------
def test_the_runtime_directory_is_private_and_never_a_reaped_temp_dir(tmp_path: Path) -> None:
    assert runtime_dir({"QMH_RUNTIME_DIR": str(tmp_path / "rt")}) == tmp_path / "rt"
    assert (tmp_path / "rt").stat().st_mode & 0o777 == 0o700
    assert runtime_dir({"XDG_RUNTIME_DIR": str(tmp_path)}) == tmp_path / "qmh"
    # Without either: /run/qmh for root, else a dot-name in /tmp that workdirs.reap_stale never globs.
    name = parallel.Path(f"/tmp/.qmh-runtime-{os.getuid()}").name
    assert not name.startswith(workdirs.PREFIX)
    (tmp_path / "open").mkdir(mode=0o755)
    (tmp_path / "open").chmod(0o755)
    with pytest.raises(PermissionError, match="not a private directory"):
        runtime_dir({"QMH_RUNTIME_DIR": str(tmp_path / "open")})


# -- run directories under xdist -----------------------------------------------------------------------------------
def test_run_names_carry_the_pid_and_latest_is_moved_atomically(tmp_path: Path) -> None:
    name = run_name()
    assert name.startswith("run-") and name.endswith(f"-p{os.getpid()}")
    for run in (tmp_path / "run-a", tmp_path / "run-b"):
        run.mkdir()
        point_latest(run)
        assert os.readlink(tmp_path / "latest") == run.name
    (tmp_path / "latest").unlink()
    (tmp_path / "latest").mkdir()                        # a real directory named latest is never replaced
    point_latest(tmp_path / "run-a")
    assert (tmp_path / "latest").is_dir() and not (tmp_path / "latest").is_symlink()


def test_session_start_reaping_spares_a_live_sibling_workers_dirs(tmp_path: Path) -> None:
    """What a worker (or the controller) reaps at its start: the dirs of a dead process, never those of a live
    sibling, whose owner record names its live pid and start time (namespaces: test_netns's owner test)."""
    repo = Path(__file__).resolve().parents[2]
    make = ("import sys, tempfile; tempfile.tempdir = sys.argv[1]; from harness.core import workdirs; "
            "print(workdirs.private_dir('test'), flush=True); sys.stdin.read()")
    sibling = subprocess.Popen([sys.executable, "-c", make, str(tmp_path)], cwd=repo, text=True,
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    dead = subprocess.run([sys.executable, "-c", make, str(tmp_path)], cwd=repo, text=True, input="",
                          capture_output=True, check=True)
    try:
        live_dir = Path(sibling.stdout.readline().strip())
        dead_dir = Path(dead.stdout.strip())
        assert workdirs.reap_stale(tmp_path) == [dead_dir]
        assert live_dir.is_dir()
    finally:
        sibling.communicate("")
    assert workdirs.reap_stale(tmp_path) == [live_dir]   # once it is gone, it is stale like any other


# -- bench's parallel figure ---------------------------------------------------------------------------------------
def test_bench_reports_the_speedup_and_any_verdict_that_differs() -> None:
    from harness.tools.bench import table
    from harness.tools.bench_parallel import SelectionRun, parallel_efficiency
    serial = SelectionRun(60.0, 0, {"t::a": "passed", "t::b": "skipped", "t::c": "passed"})
    same = parallel_efficiency(serial, SelectionRun(40.0, 0, dict(serial.verdicts)), 2)
    assert (same["speedup"], same["efficiency"], same["wall_time_ratio"]) == (1.5, 0.75, 0.667)
    assert same["verdicts_identical"] and same["pass"] and same["tests"] == 3
    text = table({"parallel": same})
    assert "serial 60 s, -n 2 40 s: ×1.50 (75% of 2)" in text and "identical" in text
    differ = parallel_efficiency(serial, SelectionRun(30.0, 1, {"t::a": "passed", "t::b": "skipped",
                                                                "t::c": "failed"}), 2)
    assert differ["differences"] == {"t::c": {"serial": "passed", "parallel": "failed"}} and differ["pass"] is False
    assert "DIFFER: c passed/failed" in table({"parallel": differ})
