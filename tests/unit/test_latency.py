"""Unit tests of harness.analysis.latency: probe raw records, nearest-rank statistics (as the probe's own), histograms."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from harness.analysis.latency import RAW_RECORD, Access, LatencySummary, dist_percentile_upper_bound_us, parse_probe_raw
from harness.hosts.round_trips import transport_round_trips_us
from harness.report.plots import plot_latency_distributions
from harness.core.stats import log2_histogram, nearest_rank

REPO = Path(__file__).resolve().parents[2]


def test_parse_probe_raw_reads_little_endian_records() -> None:
    data = RAW_RECORD.pack(10, 3, 1500) + RAW_RECORD.pack(2**40, 0, 2**32 - 1)
    assert parse_probe_raw(data) == [Access(10, 3, 1500), Access(2**40, 0, 2**32 - 1)]
    assert parse_probe_raw(b"") == []


def test_parse_probe_raw_rejects_a_torn_record() -> None:
    with pytest.raises(ValueError, match="not a multiple of 16"):
        parse_probe_raw(RAW_RECORD.pack(1, 2, 3)[:-1])


def test_nearest_rank_is_the_smallest_value_covering_the_fraction() -> None:
    values = list(range(1, 101))
    assert nearest_rank(values, 0.5) == 50
    assert nearest_rank(values, 0.99) == 99
    assert nearest_rank(values, 1.0) == 100
    assert nearest_rank([7.0], 0.99) == 7.0
    assert nearest_rank([1, 2, 3], 0.0) == 1      # rank is at least 1
    with pytest.raises(ValueError):
        nearest_rank([], 0.5)


def test_summary_of_latencies() -> None:
    summary = LatencySummary.of([4.0, 1.0, 3.0, 2.0])
    assert (summary.count, summary.p50_us, summary.p99_us, summary.max_us) == (4, 2.0, 4.0, 4.0)
    assert summary.mean_us == pytest.approx(2.5) and summary.sum_us == pytest.approx(10.0)
    assert LatencySummary.of([]).count == 0


def test_log2_histogram_uses_the_probes_bucket_edges() -> None:
    # latstats.c: bucket 0 is [0, 1] µs, bucket b is (2^(b-1), 2^b] µs
    assert log2_histogram([0.5, 1.0, 1.5, 2.0, 2.01, 64.0, 65.0]) == [
        (1.0, 2), (2.0, 2), (4.0, 1), (8.0, 0), (16.0, 0), (32.0, 0), (64.0, 1), (128.0, 1)]
    assert log2_histogram([]) == []


def test_dist_percentile_upper_bound_reads_qemu_latency_buckets() -> None:
    # QEMU postcopy-latency-dist: bucket N counts faults in [2^N, 2^(N+1)) µs
    dist = [0] * 6 + [90, 9, 0, 1]      # 90 in [64,128) µs, 9 in [128,256), 1 in [512,1024)
    assert dist_percentile_upper_bound_us(dist, 0.5) == 128.0
    assert dist_percentile_upper_bound_us(dist, 0.99) == 256.0
    assert dist_percentile_upper_bound_us(dist, 1.0) == 1024.0
    assert dist_percentile_upper_bound_us([0, 0], 0.99) is None


def test_plot_latency_distributions_writes_a_png(tmp_path: Path) -> None:
    path = tmp_path / "stalls.png"
    plot_latency_distributions(path, "t", {"a": [50.0, 60.0, 900.0], "b": [], "c": [1e5]}, {"bound": 1000.0})
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def probe_binary(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("workloads")
    r = subprocess.run(["make", "-s", "-C", str(REPO / "guest-workloads"), f"OUT={out}", f"{out}/probe"],
                       capture_output=True, text=True)
    assert r.returncode == 0, "build failed:\n" + r.stdout + r.stderr
    return out / "probe"


def test_probe_raw_output_parses_and_matches_its_own_statistics(probe_binary: Path, tmp_path: Path) -> None:
    """The real probe's --raw file: one record per access, each round a permutation of the region's pages, and
    the nearest-rank statistics computed here equal the probe's own."""
    raw, out = tmp_path / "probe.raw", tmp_path / "probe.json"
    subprocess.run([str(probe_binary), "--size-mib", "1", "--rounds", "3", "--seed", "7", "--prefill",
                    "--raw", str(raw), "--out", str(out)], check=True, timeout=60)
    accesses = parse_probe_raw(raw.read_bytes())
    result = json.loads(out.read_text())
    pages = result["pages"]
    assert len(accesses) == 3 * pages == result["count"]
    for r in range(3):
        assert sorted(a.page for a in accesses[r * pages:(r + 1) * pages]) == list(range(pages))
    assert all(b.t_ns >= a.t_ns for a, b in zip(accesses, accesses[1:]))
    summary = LatencySummary.of(a.latency_ns / 1e3 for a in accesses)
    assert (summary.p50_us, summary.p99_us, summary.max_us) == pytest.approx(
        (result["p50_us"], result["p99_us"], result["max_us"]), abs=1e-3)


def test_probe_spec_asks_for_raw_records_only_when_named() -> None:
    from harness.vm.workloads import Probe
    assert "--raw" not in Probe(size_mib=8).argv()
    assert "--start-delay-ms" not in Probe(size_mib=8).argv()
    assert Probe(size_mib=8, start_delay_ms=500).argv()[-3:] == ["--start-delay-ms", "500", "--wait-signal"]
    argv = Probe(size_mib=8, seed=3, rounds=5, raw_file="/run/wl/probe.raw").argv()
    assert argv[argv.index("--raw") + 1] == "/run/wl/probe.raw"
    assert argv[argv.index("--rounds") + 1] == "5" and "--wait-signal" in argv


class _FakeShell:
    """Records guest commands; answers with a canned result."""

    def __init__(self, stdout: str, exit_status: int = 0) -> None:
        self.commands: list[str] = []
        self.stdout, self.exit_status = stdout, exit_status

    def run(self, command: str, timeout: float = 60.0, check: bool = True, **_: object) -> object:
        from harness.vm.guest import CommandResult, GuestCommandError
        self.commands.append(command)
        result = CommandResult(command, self.exit_status, self.stdout, "")
        if check and not result.ok:
            raise GuestCommandError(result)
        return result


class _FakeMachine:
    def __init__(self, shell: _FakeShell) -> None:
        self.shell = shell


def test_wait_exit_polls_without_signalling_and_returns_the_result() -> None:
    from harness.vm.workloads import Probe, RunningWorkload
    shell = _FakeShell('{"count": 3, "stopped_by": "rounds"}')
    result = RunningWorkload("probe", Probe(size_mib=1), 42).wait_exit(_FakeMachine(shell), timeout=5)
    assert result == {"count": 3, "stopped_by": "rounds"}
    assert "kill -0 42" in shell.commands[0] and "-TERM" not in shell.commands[0]
    assert "/run/wl/probe.json" in shell.commands[0]


def test_wait_exit_reports_a_workload_that_does_not_end() -> None:
    from harness.vm.guest import GuestCommandError
    from harness.vm.workloads import Probe, RunningWorkload
    with pytest.raises(GuestCommandError):
        RunningWorkload("probe", Probe(size_mib=1), 42).wait_exit(_FakeMachine(_FakeShell("", exit_status=1)), 1)


def test_transport_round_trips_are_a_host_link_reference() -> None:
    trips = transport_round_trips_us(count=200, reply_bytes=4096, warmup=20)
    assert len(trips) == 200 and all(t > 0 for t in trips)
    # a host unix-socket round trip is microseconds to a millisecond, never the ~100 ms of a queued page request
    assert LatencySummary.of(trips).p50_us < 5000
