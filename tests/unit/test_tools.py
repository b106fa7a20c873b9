"""bench and flake: bench never deletes a directory it did not make and its bare QEMUs die with it; flake's
aggregation counts only runs that happened."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from harness.tools import bench, bench_parallel, bench_sampler

from harness.tools import flake

from harness.core import process
from harness.tools.flake import RunRecord, aggregate
from harness.tools.validate import Case

# Every session started here reaps stale qmh-* dirs: keep them in a temp root of their own.
from test_session import private_tmpdir  # noqa: E402,F401  (autouse fixture)

REPO = Path(__file__).resolve().parents[2]


# -- bench -------------------------------------------------------------------------------------------------------
def test_bench_refuses_to_delete_a_directory_it_did_not_make(tmp_path: Path, capsys) -> None:
    precious = tmp_path / "bench" / "thesis.tex"
    precious.parent.mkdir()
    precious.write_text("years of work")
    code = bench.main(["--out", str(tmp_path / "out.json"), "--image-dir", str(tmp_path / "no-image")])
    assert code == bench.COULD_NOT_RUN
    assert precious.read_text() == "years of work"
    assert "is a non-empty directory bench did not make" in capsys.readouterr().err


def test_bench_refuses_a_file_or_symlink_named_bench(tmp_path: Path) -> None:
    (tmp_path / "bench").write_text("not a dir")
    with pytest.raises(bench.BenchUnusable):
        bench.fresh_scratch(tmp_path / "bench")
    (tmp_path / "bench").unlink()
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "bench").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(bench.BenchUnusable):
        bench.fresh_scratch(tmp_path / "bench")


def test_bench_replaces_its_own_scratch_and_an_empty_dir(tmp_path: Path) -> None:
    scratch = bench.fresh_scratch(tmp_path / "bench")
    (scratch / "trial").mkdir()
    again = bench.fresh_scratch(tmp_path / "bench")
    assert not (again / "trial").exists() and (again / bench.SCRATCH_MARKER).is_file()
    empty = tmp_path / "empty" / "bench"
    empty.mkdir(parents=True)
    assert (bench.fresh_scratch(empty) / bench.SCRATCH_MARKER).is_file()


def test_bench_stops_with_one_line_on_a_bad_binary(tmp_path: Path, capsys) -> None:
    code = bench.main(["--out", str(tmp_path / "out.json"), "--qemu-binary", "/bin/true"])
    assert code == bench.COULD_NOT_RUN
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("bench: could not run: ") and "Traceback" not in "".join(err)


def test_bench_bare_qemus_die_with_the_harness(tmp_path: Path, monkeypatch) -> None:
    """The bare arm starts QEMU itself: it must ask for the parent-death signal exactly as Machine does."""
    seen: dict = {}

    def popen(argv, **kwargs):
        seen.update(kwargs)
        raise RuntimeError("stop before anything runs")

    monkeypatch.setattr(bench.subprocess, "Popen", popen)
    image = SimpleNamespace(kernel="k", initrd="i", cmdline="", ready_marker="M")
    env = SimpleNamespace(arch=SimpleNamespace(machine="q35", cpu_tcg="max", cpu_kvm="host", console_args=(),
                                               nic="virtio-net-pci", nic_options=""),
                          accel=SimpleNamespace(name="tcg"), image=image,
                          source_binary=SimpleNamespace(base_args=lambda: ["qemu"]))
    with pytest.raises(RuntimeError, match="stop before"):
        bench.bare_trial(env, tmp_path / "bare")
    assert seen["preexec_fn"] is process.die_with_parent


@pytest.mark.parametrize("arch", ["x86_64", "s390x"])
def test_measure_boot_boots_the_guest_the_harness_boots(arch: str) -> None:
    """images/measure-boot.py takes binary, machine, CPU, NIC and console from harness/qemu/arch.py, as Machine does."""
    spec = bench.arch_spec(arch)
    options = bench.load_measure_boot().BootOptions()
    cmd = bench.load_measure_boot().qemu_command(options, {"arch": arch, "kernel": "k", "initrd": "i"}, "/img",
                                                 "/c.log", 2222, "quiet")
    assert cmd[0] == spec.qemu_binary
    assert cmd[cmd.index("-machine") + 1] == spec.machine and cmd[cmd.index("-cpu") + 1] == spec.cpu_tcg
    assert [*spec.console_args] == cmd[cmd.index("file,id=console,path=/c.log") + 1:][:len(spec.console_args)]
    assert f"{spec.nic},netdev=n0{spec.nic_options}" in cmd


@pytest.mark.parametrize("arch, only, baseline, expected", [
    ("s390x", None, None, "x86_64"),          # another arch's guest: the host's is timed beside it
    ("s390x", ["boot"], "none", None),
    ("s390x", ["sampler"], None, None),       # no boot measured, no baseline
    ("x86_64", None, None, None),             # the host's own arch: nothing to compare with
    ("x86_64", None, "s390x", "s390x"),
])
def test_bench_boot_baseline_is_the_host_arch_for_another_arch(monkeypatch, arch, only, baseline, expected) -> None:
    monkeypatch.setattr(bench, "host_arch", lambda: "x86_64")
    args = SimpleNamespace(arch=arch, only=only, baseline_arch=baseline)
    assert bench.baseline_arch(args) == expected


# -- flake -------------------------------------------------------------------------------------------------------
def test_flake_aggregates_passes_failures_and_distinct_reasons() -> None:
    records = [
        RunRecord(1, 0, None, {"t::a": ("passed", ""), "t::b": ("passed", "")}),
        RunRecord(2, 1, None, {"t::a": ("failed", "downtime: 400 ms > 300 ms"), "t::b": ("skipped", "")}),
        RunRecord(3, 1, None, {"t::a": ("failed", "downtime: 400 ms > 300 ms"), "t::b": ("passed", "")}),
        RunRecord(4, 1, None, {"t::a": ("error", "TimeoutError: no SSH"), "t::b": ("passed", "")}),
        RunRecord(5, 3, "pytest exited 3 (internal error)", {"t::a": ("failed", "INTERNALERROR")}),
    ]
    tallies = aggregate(records)
    a, b = tallies["t::a"], tallies["t::b"]
    assert (a.passed, a.failed, a.judged) == (1, 3, 4)          # run 5 counts for nothing
    assert a.reasons == {"downtime: 400 ms > 300 ms": 2, "error: TimeoutError: no SSH": 1}
    assert (b.passed, b.skipped, b.failed) == (3, 1, 0)
    text = flake.table(tallies, records)
    assert "2× downtime: 400 ms > 300 ms" in text
    assert "run 5: could not run: pytest exited 3 (internal error) (not counted)" in text


def test_flake_reasons_prefer_failing_verdicts_over_the_crash_line(tmp_path: Path) -> None:
    (tmp_path / "results.json").write_text(json.dumps({"tests": [
        {"nodeid": "t::a", "outcome": "failed", "message": "AssertionError: x",
         "verdicts": [{"name": "completed", "passed": True, "why": "ok"},
                      {"name": "downtime", "passed": False, "why": "412 ms > 300 ms\nmore"}]},
        {"nodeid": "t::b", "outcome": "error", "message": "TimeoutError: guest\ntraceback", "verdicts": []}]}))
    reasons = flake.failure_reasons(tmp_path)
    assert reasons == {"t::a": "downtime: 412 ms > 300 ms", "t::b": "TimeoutError: guest"}
    record = flake.record_run(1, 1, {"t::a": Case("failed", "assert 0"), "t::c": Case("failed", "boom\nx"),
                                     "t::d": Case("passed")}, None, reasons)
    assert record.tests == {"t::a": ("failed", "downtime: 412 ms > 300 ms"), "t::c": ("failed", "boom"),
                            "t::d": ("passed", "")}


DUMMY = '''
import os
from pathlib import Path

def test_stable(artefacts):
    pass

def test_flaky(artefacts):
    counter = Path(os.environ["FLAKE_COUNTER"])
    n = int(counter.read_text()) if counter.exists() else 0
    counter.write_text(str(n + 1))
    assert n % 2 == 1, f"odd run {n + 1}"
'''


def test_flake_margins_say_how_close_each_bound_came(tmp_path: Path) -> None:
    """Per numeric verdict: the measured spread, the side of the bound passing is on (from the passing runs),
    and measured/bound of the run closest to failing; non-numeric verdicts and unreadable runs are left out."""
    def run(k: int, verdicts: list[dict[str, object]]) -> Path:
        root = tmp_path / f"run-{k}" / "latest"
        root.mkdir(parents=True)
        (root / "results.json").write_text(json.dumps({"tests": [{"nodeid": "t::a", "verdicts": verdicts}]}))
        return root
    def v(name: str, measured: object, bound: object, passed: bool = True) -> dict[str, object]:
        return {"name": name, "measured": measured, "bound": bound, "passed": passed}
    run(1, [v("p99 in RTTs", 12.0, 100), v("syncs/pass", 1.5, 1.0), v("status", "completed", "completed")])
    run(2, [v("p99 in RTTs", 41.0, 100), v("syncs/pass", 0.9, 1.0, passed=False), v("flag", True, True)])
    run(3, [v("p99 in RTTs", 20.0, 100), v("syncs/pass", 3.0, 1.0)])
    (tmp_path / "run-4").mkdir()                                   # a run that wrote no results.json
    margins = flake.verdict_margins(flake.run_roots(tmp_path))
    assert [(m.verdict, m.direction) for m in margins] == [("p99 in RTTs", "<="), ("syncs/pass", ">=")]
    p99, syncs = (m.to_json() for m in margins)
    assert (p99["min"], p99["median"], p99["max"], p99["worst_measured_over_bound"]) == (12.0, 20.0, 41.0, 0.41)
    assert (syncs["failed"], syncs["worst_measured_over_bound"]) == (1, 0.9)
    table = flake.margins_table(margins)
    assert "p99 in RTTs: 12 … 20 … 41 <= 100 (3 runs, worst 0.41)" in table
    assert "syncs/pass: 0.9 … 1.5 … 3 >= 1 (3 runs, worst 0.9, 1 failed)" in table


def test_flake_margins_of_a_band_say_how_near_the_nearer_edge_came(tmp_path: Path) -> None:
    for k, slope in enumerate((0.92, 1.07, 0.98), start=1):
        root = tmp_path / f"run-{k}" / "latest"
        root.mkdir(parents=True)
        verdict = {"name": "sleep slope", "measured": slope, "bound": [0.8, 1.2], "passed": True}
        (root / "results.json").write_text(json.dumps({"tests": [{"nodeid": "t::b", "verdicts": [verdict]}]}))
    (margin,) = flake.verdict_margins(flake.run_roots(tmp_path))
    assert margin.direction == "in"
    assert margin.to_json()["worst_measured_over_bound"] == round(min(0.92 / 0.8, 1.2 / 1.07), 3)
    assert "sleep slope: 0.92 … 0.98 … 1.07 in [0.8, 1.2] (3 runs, worst 1.121)" in flake.margins_table([margin])


def test_flake_margins_across_tests_pool_one_per_migration_check(tmp_path: Path) -> None:
    """A check every migration records is one oracle: pooled over tests and labels, from results.json found
    anywhere under the given directories (each counted once, whatever links reach it)."""
    def results(where: str, tests: dict[str, list[float]]) -> None:
        root = tmp_path / where
        root.mkdir(parents=True)
        (root / "results.json").write_text(json.dumps({"tests": [
            {"nodeid": nodeid, "verdicts": [{"name": f"total-time / host [{label}]", "measured": m,
                                             "bound": [0.9, 1.02], "passed": True}
                                            for label, m in zip(("migration", "again"), values)]}
            for nodeid, values in tests.items()]}))
    results("check/run-1", {"t::a": [0.99, 1.0], "t::b": [0.995]})
    results("matrix/pair/run-2", {"t::a": [0.98]})
    (tmp_path / "matrix" / "latest").symlink_to(tmp_path / "matrix" / "pair" / "run-2")
    assert flake.pooled_name("total-time / host [migration]") == "total-time / host"
    assert flake.pooled_name("p99 [ms] in RTTs") == "p99 [ms] in RTTs"
    (margin,) = flake.verdict_margins(flake.results_roots([tmp_path]), across_tests=True)
    assert (margin.test, margin.verdict, len(margin.pairs)) == (flake.ACROSS_TESTS, "total-time / host", 4)
    assert "total-time / host: 0.98 … 0.995 … 1 in [0.9, 1.02] (4 runs" in flake.margins_table([margin])


def test_flake_end_to_end_on_dummy_tests(tmp_path: Path) -> None:
    (tmp_path / "test_dummy.py").write_text(DUMMY)
    env = {**os.environ, "FLAKE_COUNTER": str(tmp_path / "counter"), "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-m", "harness.tools.flake", "--runs", "3", "--artefacts",
                           str(tmp_path / "art" / "flake"), "--", str(tmp_path / "test_dummy.py")],
                          cwd=REPO, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    data = json.loads((tmp_path / "art" / "flake.json").read_text())
    flaky = next(v for k, v in data["tests"].items() if k.endswith("test_flaky"))
    stable = next(v for k, v in data["tests"].items() if k.endswith("test_stable"))
    assert (flaky["passed"], flaky["failed"], stable["passed"]) == (1, 2, 3)
    assert sum(flaky["reasons"].values()) == 2 and all("odd run" in r for r in flaky["reasons"])
    assert len(list((tmp_path / "art" / "flake").glob("run-*"))) == 3


def test_flake_stops_and_counts_nothing_when_pytest_cannot_run(tmp_path: Path) -> None:
    (tmp_path / "test_dummy.py").write_text(DUMMY)
    proc = subprocess.run([sys.executable, "-m", "harness.tools.flake", "--runs", "5", "--artefacts",
                           str(tmp_path / "art" / "flake"), "--", str(tmp_path / "test_dummy.py"), "--bogus"],
                          cwd=REPO, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)},
                          timeout=300)
    assert proc.returncode == 4, proc.stdout + proc.stderr
    data = json.loads((tmp_path / "art" / "flake.json").read_text())
    assert len(data["runs"]) == 1 and data["runs"][0]["could_not_run"].startswith("pytest exited 4")
    assert data["tests"] == {}


def test_flake_lock_is_held_during_a_run_and_released_after(tmp_path: Path) -> None:
    import fcntl

    from harness.tools.flake import exclusive

    lock = tmp_path / "cpu.lock"
    with exclusive(lock):
        with open(lock) as other:
            with pytest.raises(BlockingIOError):
                fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
    with open(lock) as other:
        fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)   # free again
    with exclusive(None):
        pass


@pytest.mark.parametrize("module, code", [("validate", 4), ("flake", 4), ("matrix", 4), ("bisect", 128)])
def test_a_tool_outside_a_checkout_says_so_in_one_line(module: str, code: int, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    """Installed as a package (no qemu-build/, regressions/, tests/ beside harness/), each console script stops
    with one line, and with the exit its callers read as "could not run" (bisect: 128, abort)."""
    import importlib

    from harness.core import checkout
    monkeypatch.setattr(checkout, "ROOT", tmp_path)
    with pytest.raises(SystemExit) as stopped:
        importlib.import_module(f"harness.tools.{module}").main(["--help"])
    assert stopped.value.code == code
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "needs a checkout of the harness repository (qemu-build/ is not beside" in err[0]


def test_sampler_cost_is_one_minus_the_median_pair_ratio_judged_on_its_intervals_upper_end() -> None:
    """Pairs that agree within ±1 % give a verdict on either side of the 2 % target; pairs scattered by ±10 % whose
    interval straddles it give none (NOISY)."""
    steady = [(97.0 + (i % 3) * 0.5, 100.0) for i in range(20)]     # sampled arm 2.5–3 % slower in every pair
    cost = bench_sampler.sampler_cost(steady)
    assert cost["pairs"] == 20 and cost["verdict"] is False          # the interval's lower end is past 2 %
    assert 0.02 <= cost["interval"][0] <= cost["cost"] <= cost["interval"][1] <= 0.03
    cheap = [(99.0 + (i % 3) * 0.5, 100.0) for i in range(20)]       # 0–1 % slower: the upper end is below 2 %
    assert bench_sampler.sampler_cost(cheap)["verdict"] is True
    assert bench_sampler.sampler_cost(cheap, target=0.005)["verdict"] is None   # straddles a 0.5 % target
    noisy = [(100.0 + (10 if i % 2 else -10) + i * 0.3, 100.0) for i in range(20)]
    assert bench_sampler.sampler_cost(noisy)["verdict"] is None
    assert bench_sampler.sampler_cost([(1.0, 1.0), (1.0, 0.0)]) == {"pairs": 1, "cost": None, "interval": None,
                                                            "verdict": None}
    # Seeded: the same data, the same interval (a re-run of bench's analysis must not move its verdict).
    assert bench_sampler.bootstrap_interval([1.0, 2.0, 3.0, 4.0]) == bench_sampler.bootstrap_interval([1.0, 2.0, 3.0, 4.0])


def test_qemu_cpu_per_wall_second_splits_the_vcpu_thread_from_the_rest() -> None:
    start, end = (10.0, 5.0, 1.0, 8.0), (12.0, 6.6, 1.2, 10.2)       # 2 s: vCPU 1.6 s on CPU, process 2.2 s
    assert bench_sampler.QemuCpu.per_second(start, end) == {"vcpu_on_cpu": 0.8, "vcpu_runqueue": 0.1,
                                                             "other_threads": 0.3}


def test_bench_parallel_refuses_a_selection_run_that_ran_nothing(tmp_path: Path) -> None:
    """Two runs that collected nothing must not count as 'identical verdicts': could-not-run raises."""
    with pytest.raises(RuntimeError, match="no tests collected"):
        bench_parallel.run_selection(["tests/unit/test_tools.py", "-k", "no_such_test_anywhere"], [], tmp_path / "serial")


def test_bench_profile_sums_what_each_test_recorded(tmp_path: Path) -> None:
    """The profile adds up JUnit wall times per suite, and each test's cpus.json / timings.json found through the
    JUnit record's own artefacts property; the test bodies are what is left of the machine-booting suites."""
    from harness.tools.bench_profile import profile, rows
    test_dir = tmp_path / "run" / "t1"
    test_dir.mkdir(parents=True)
    (test_dir / "cpus.json").write_text('{"waited_s": 4.0}')
    (test_dir / "timings.json").write_text('{"boot_warm_s": 0.5, "boot_cold_s": 2.5, "close_s": 1.0, '
                                           '"ram_digest_s": 2.0}')
    junit = tmp_path / "junit.xml"
    junit.write_text(f"""<testsuites><testsuite time="31">
<testcase classname="tests.behaviour.test_basics" name="test_a[x]" time="20.0">
<properties><property name="artefacts" value="{test_dir}"/></properties></testcase>
<testcase classname="tests.unit.test_y.TestZ" name="test_b" time="1.0"/>
</testsuite></testsuites>""")
    log = tmp_path / "durations.log"
    log.write_text("5.00s setup    tests/behaviour/test_basics.py::test_a[x]\n14.00s call     tests/behaviour/"
                   "test_basics.py::test_a[x]\n1.00s teardown tests/behaviour/test_basics.py::test_a[x]\n")
    prof = profile(junit, None, log)
    assert prof["by_suite"] == {"behaviour": {"tests": 1, "seconds": 20.0}, "unit": {"tests": 1, "seconds": 1.0}}
    assert prof["cpu_wait_s"] == 4.0 and prof["fixed_costs_s"]["boot_warm_s"] == 0.5
    assert prof["test_bodies_s"] == 20.0 - 4.0 - 6.0
    assert prof["by_phase_s"] == {"setup": 5.0, "call": 14.0, "teardown": 1.0}
    assert prof["slowest"][0]["test"] == "tests/behaviour/test_basics.py::test_a[x]"
    assert any("warm restores" in row[0] for row in rows(prof))


def test_contended_pairs_counts_a_pair_once_when_an_arm_waited_for_a_cpu() -> None:
    def window(pair: int, sampled: bool, runqueue: float, phase: str = "migrating") -> bench_sampler.SamplerWindow:
        return bench_sampler.SamplerWindow(phase, pair, sampled, 0.0, 1.0, 0.0, qemu={"vcpu_runqueue": runqueue})
    windows = [window(0, True, 0.0), window(0, False, 0.0),
               window(1, True, 0.05), window(1, False, 0.02),      # both arms contended: one pair
               window(2, True, 0.0), window(2, False, 0.011),
               window(3, True, 0.5, phase="idle")]
    assert bench_sampler.contended_pairs(windows, "migrating") == 2
    assert bench_sampler.contended_pairs(windows, "idle") == 1
