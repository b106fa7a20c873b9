"""Unit tests of the harness's pure code: schema walking, series, oracles, RAM comparison."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

from harness.analysis import oracles
from harness.analysis.integrity import compare_dumps, digest_dump
from harness.core.stats import covered_seconds
from harness.core.units import PAGE
from harness.analysis.progress import summarize
from harness.migration.config import MigrationConfig, Outcome
from harness.qemu.binary import Features
from harness.report.plots import plot_series
from harness.report.artefacts import Artefacts, safe_name
from harness.analysis.samples import Series, lookup
from harness.vm.machine import Machine
from harness.vm.ram import compare_guest_ram

SCHEMA = [
    {"name": "query-migrate", "meta-type": "command", "ret-type": "MigrationInfo", "arg-type": "0"},
    {"name": "migrate-start-postcopy", "meta-type": "command", "ret-type": "0", "arg-type": "0"},
    {"name": "migrate-set-parameters", "meta-type": "command", "ret-type": "0", "arg-type": "7"},
    {"name": "7", "meta-type": "object", "members": [{"name": "multifd-compression", "type": "8"},
                                                     {"name": "max-bandwidth", "type": "int"}]},
    {"name": "8", "meta-type": "enum", "values": ["none", "zlib", "zstd"]},
    {"name": "9", "meta-type": "enum", "values": ["active", "postcopy-active", "postcopy-recover"]},
    {"name": "MIGRATION", "meta-type": "event", "arg-type": "0"},
    {"name": "MigrationInfo", "meta-type": "object", "members": [
        {"name": "status", "type": "9"}, {"name": "ram", "type": "MigrationStats"},
        {"name": "postcopy-blocktime", "type": "int"}]},
    {"name": "MigrationStats", "meta-type": "object", "members": [
        {"name": "dirty-sync-count", "type": "int"}, {"name": "transferred", "type": "int"}]},
]


def test_features_from_schema_walk_nested_query_migrate_fields() -> None:
    features = Features.from_schema(SCHEMA, [{"capability": "postcopy-ram", "state": False}],
                                    {"max-bandwidth": 1}, [{"name": "multifd-flush-after-each-section"}],
                                    ["savevm_section_start"])
    assert {"status", "ram", "ram.dirty-sync-count", "ram.transferred", "postcopy-blocktime"} == \
        set(features.migrate_fields)
    assert "migrate-start-postcopy" in features.commands and "MIGRATION" in features.events
    assert features.missing(capabilities=["postcopy-ram"], fields=["ram.dirty-sync-count"]) == []
    assert features.missing(capabilities=["mapped-ram"], fields=["postcopy-latency"],
                            migration_properties=["multifd-flush-after-each-section"],
                            trace_events=["migrate_pending_exact"]) == [
        "capability 'mapped-ram'", "query-migrate field 'postcopy-latency'", "trace event 'migrate_pending_exact'"]
    assert features.parameter_values == {"multifd-compression=none", "multifd-compression=zlib",
                                         "multifd-compression=zstd"}
    assert features.missing(parameter_values={"multifd-compression": ["zstd", "qpl"]}) == [
        "parameter value 'multifd-compression=qpl'"]
    assert "migrate-set-parameters.max-bandwidth" in features.command_arguments
    assert features.missing(command_arguments=["migrate-set-parameters.multifd-compression", "migrate.channels"]) == [
        "command argument 'migrate.channels'"]
    assert features.migration_statuses == {"active", "postcopy-active", "postcopy-recover"}
    assert features.missing(migration_statuses=["postcopy-recover", "postcopy-recover-setup"]) == [
        "migration status 'postcopy-recover-setup'"]


def _series() -> Series:
    series = Series(t0=100.0, hz=50)
    for i, status in enumerate(["setup", "active", "active", "postcopy-active", "completed"]):
        series.samples["source"].append({"t": i * 0.02, "info": {"status": status, "ram": {"dirty-sync-count": i}}})
    series.events["source"].append({"t": 0.03, "event": "MIGRATION_PASS", "data": {"pass": 2}})
    return series


def test_series_tracks_nested_values_and_status_changes() -> None:
    series = _series()
    assert series.track("ram.dirty-sync-count") == [(0.0, 0), (0.02, 1), (0.04, 2), (0.06, 3), (0.08, 4)]
    assert [s for _, s in series.status_changes()] == ["setup", "active", "postcopy-active", "completed"]
    assert series.event_times("MIGRATION_PASS") == [0.03]
    assert series.achieved_hz() == pytest.approx(50.0)
    assert lookup({"a": {"b": 1}}, "a.c") is None


def test_status_prefers_an_event_received_while_the_query_was_in_flight() -> None:
    series = Series(t0=0.0, hz=50)
    series.samples["source"].append({"t": 1.0, "asked": 0.9, "info": {"status": "active"}})
    series.events["source"].append({"t": 0.95, "event": "MIGRATION", "data": {"status": "completed"}})
    assert series.status() == "completed"   # the reply may predate the event: QEMU computed it first
    assert not series.reply_is_current()     # so Migration.wait_status waits for a reply asked after it
    series.samples["source"].append({"t": 1.1, "asked": 1.05, "info": {"status": "completed"}})
    series.events["source"].append({"t": 0.99, "event": "MIGRATION", "data": {"status": "active"}})
    assert series.status() == "completed"   # asked after the last event: the reply is newer
    assert series.reply_is_current()
    legacy = Series(t0=0.0, hz=50)            # series saved before samples recorded "asked"
    legacy.samples["source"].append({"t": 1.0, "info": {"status": "active"}})
    legacy.events["source"].append({"t": 0.5, "event": "MIGRATION", "data": {"status": "setup"}})
    assert legacy.status() == "active"


def test_series_round_trips_through_json(tmp_path: Path) -> None:
    series = _series()
    series.mark("migrate-start-postcopy")
    path = tmp_path / "s.json"
    path.write_text(json.dumps(series.to_json()))
    loaded = Series.load(path)
    assert loaded.samples == series.samples and loaded.marks == series.marks


def test_oracles_report_measured_value_and_bound() -> None:
    assert oracles.downtime_within(250, 300, 100).passed
    failing = oracles.downtime_within(2500, 300, 100)
    assert not failing.passed and failing.bound == 400
    with pytest.raises(AssertionError, match="downtime 2500 ms > downtime-limit 300 ms"):
        failing.check()
    assert oracles.downtime_within(None, 300, 100).passed is False
    # 48 MiB/s × 300 ms = 14.4 MiB: the unmodified 10.0.2 sent 13.2 MiB while stopped, the ×1000 threshold 72.5 MiB
    assert oracles.stop_copy_data_within(13_826_376, 48 * 2**20, 300, 0.5).passed
    too_much = oracles.stop_copy_data_within(76_067_780, 48 * 2**20, 300, 0.5)
    assert not too_much.passed and "72.5 MiB sent while stopped > 14.4 MiB" in too_much.why
    assert oracles.stop_copy_data_within(None, 48 * 2**20, 300, 0.5).passed is False
    assert oracles.went_through(_series(), ["postcopy-active"]).passed
    assert not oracles.went_through(_series(), ["postcopy-paused"]).passed
    assert oracles.completed({"status": "failed", "error-desc": "boom"}).why == "status failed: boom"
    assert oracles.ratio_at_most("syncs", 3, 2, 1.5).passed
    assert not oracles.ratio_at_most("syncs", 151, 1, 1.5).passed
    assert oracles.ratio_at_most("syncs", 1, 0, 1.5, floor=1).passed
    assert oracles.progressed("counter", 10, 20, 5).passed and not oracles.progressed("counter", 10, 12, 5).passed


def test_compare_dumps_finds_each_differing_page(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    data = bytearray(b"\x5a" * (PAGE * 600))
    a.write_bytes(data)
    data[PAGE * 3 + 17] ^= 1
    data[PAGE * 512] ^= 0xFF
    b.write_bytes(data)
    result = compare_dumps(a, b)
    assert not result.equal and result.differing_pages == 2 and result.first_differing == [3, 512]
    assert "differs in 2 of 600 pages" in result.describe()
    assert compare_dumps(a, a).equal


class DumpingSide:
    """A paused side whose dump + digest takes DUMP_S (a Machine's ram_digests, without QEMU)."""
    DUMP_S = 0.4

    def __init__(self, name: str, data: bytes) -> None:
        self.name, self.data, self.threads = name, data, set()

    def ram_digests(self, path: Path, size_bytes: int) -> tuple[int, str, bytes]:
        self.threads.add(threading.get_ident())
        time.sleep(self.DUMP_S)
        path.write_bytes(self.data[:size_bytes])
        return digest_dump(path)


def test_both_sides_of_a_ram_comparison_are_dumped_at_once(tmp_path: Path) -> None:
    data = bytes(PAGE * 8)
    source, destination = DumpingSide("source", data), DumpingSide("destination", data[:-1] + b"\x01")
    started = time.monotonic()
    result = compare_guest_ram(source, destination, len(data), tmp_path)  # type: ignore[arg-type]
    took = time.monotonic() - started
    assert result.differing_pages == 1 and result.first_differing == [7]   # source, destination kept in order
    assert took < 2 * DumpingSide.DUMP_S, f"{took:.2f}s: the two dumps ran one after the other"
    assert source.threads.isdisjoint(destination.threads)


def test_covered_seconds_counts_overlapping_spans_once() -> None:
    assert covered_seconds([]) == 0.0
    assert covered_seconds([(0.0, 2.0), (1.0, 3.0)]) == 3.0            # two sides dumped at once
    assert covered_seconds([(5.0, 6.0), (0.0, 1.0), (0.5, 0.75)]) == 2.0


def test_migration_config_and_summary() -> None:
    declared = MigrationConfig(transport="file", expect=Outcome.FAILED).with_capabilities(mapped_ram=True)
    assert declared.expect is Outcome.FAILED and declared.transport == "file"   # with_* keep every other field
    config = MigrationConfig().with_capabilities(postcopy_ram=True).with_parameters(max_bandwidth=1 << 20)
    assert config.capabilities == {"postcopy-ram": True} and config.parameters == {"max-bandwidth": 1 << 20}
    assert summarize({"status": "active", "ram": {"remaining": 5}}) == "status=active, ram.remaining=5"


def test_artefacts_record_verdicts_and_plot(tmp_path: Path) -> None:
    record = Artefacts(tmp_path / safe_name("tests/x.py::test_a[1-2]"))
    record.add_series("migration", _series())
    record.verdict(oracles.completed({"status": "completed"}))
    record.verdict(oracles.downtime_within(900, 300, 100))
    with pytest.raises(AssertionError):
        record.raise_first_failure()
    record.finalize("FAILED")
    names = sorted(p.name for p in record.directory.iterdir())
    assert names == ["migration.png", "migration.series.json", "verdicts.json"]
    assert [v["passed"] for v in json.loads((record.directory / "verdicts.json").read_text())] == [True, False]
    plot_series(Series(t0=0, hz=1), tmp_path / "empty.png", "nothing")  # no panels: no file, no crash
    assert not (tmp_path / "empty.png").exists()


def test_analysis_windows_increments_and_gaps() -> None:
    from harness.analysis.series import count_between, counter_window, gaps, increment_times, value_at
    series = Series(t0=0, hz=10)
    for i in range(21):  # syncs at t=0.5, 1.0, 1.5 … ; 1 MiB per sample
        series.samples["source"].append({"t": i * 0.1, "info": {"ram": {"dirty-sync-count": 1 + i // 5,
                                                                        "transferred": i << 20}}})
    assert value_at(series, "ram.dirty-sync-count", 0.95) == 2 and value_at(series, "ram.transferred", -1) is None
    assert increment_times(series, "ram.dirty-sync-count") == pytest.approx([0.5, 1.0, 1.5, 2.0])
    assert gaps([0.5, 1.0, 2.5]) == [0.5, 1.5]
    window = counter_window(series, 0.5, 1.5)
    assert window.syncs == 2 and window.transferred_bytes == 10 << 20
    assert window.syncs_per_second == pytest.approx(2.0) and window.bytes_per_sync == 5 << 20
    assert window.bytes_per_second == pytest.approx(10 << 20)   # 10 MiB over 1 s
    assert count_between([0.1, 0.6, 1.4, 2.0], 0.5, 1.5) == 2


def test_absolute_and_band_oracles_name_their_anchor() -> None:
    ok = oracles.at_most("syncs per pass", 1.2, 3.0, anchor="mechanism")
    assert ok.passed and ok.bound == 3.0 and "mechanism" in ok.why
    storm = oracles.at_most("syncs per pass", 19.6, 3.0)
    assert not storm.passed and storm.measured == 19.6
    assert not oracles.at_most("nothing", None, 3.0).passed
    assert oracles.within_band("slope", 0.9, 0.5, 1.5).passed
    assert not oracles.within_band("slope", 0.02, 0.5, 1.5).passed
    assert not oracles.within_band("slope", None, 0.5, 1.5).passed
    floor = oracles.at_least("due rounds", 20, 5, anchor="floor")
    assert floor.passed and floor.bound == 5 and "floor" in floor.why and "≥" in floor.why
    assert not oracles.at_least("due rounds", 4, 5).passed and not oracles.at_least("due rounds", None, 5).passed


def test_exact_and_runstate_oracles() -> None:
    assert oracles.equals("rounds", 5, 5).passed
    wrong = oracles.equals("max-bandwidth", 33554432, 8388608, "what the test set")
    assert not wrong.passed and "≠" in wrong.why and "what the test set" in wrong.why

    class Paused:
        def runstate(self) -> str:
            return "paused"
    stopped = Machine.still_running(Paused(), "migrate_cancel")  # type: ignore[arg-type]
    assert not stopped.passed and stopped.name == "source still running" and "migrate_cancel" in stopped.why


def test_every_verdict_is_recorded_before_the_first_failing_one_raises(tmp_path: Path) -> None:
    record = Artefacts(tmp_path / "t")
    record.verdict(oracles.at_most("first", 2, 1), oracles.at_most("second", 0, 1))
    record.verdict(oracles.at_most("third", 5, 1))      # recorded although "first" failed before it
    assert [v.name for v in record.failed()] == ["first", "third"] and record.recorded("second")
    with pytest.raises(AssertionError, match="^first: "):
        record.raise_first_failure()
    assert [v["name"] for v in json.loads((tmp_path / "t" / "verdicts.json").read_text())] == [
        "first", "second", "third"]


def test_an_expected_verdict_failure_is_recorded_as_measured_and_judged_only_as_a_known_bug_says(
        tmp_path: Path) -> None:
    """Artefacts.expect_failure (a known bug with a `verdict`): that verdict, by name, is recorded as measured with
    the bug's reason; failing, it does not fail the test (the others still do); passing, it fails a strict one."""
    record = Artefacts(tmp_path / "t")
    record.expect_failure(oracles.CARRIED_VS_REPORTED, "known QEMU bug X", strict=True)
    spoiled = oracles.carried_matches_reported(1_000, 300_000_000, 4096, "the whole migration")
    judged = oracles.at_most("bytes the relay carried per page sent / page size (zlib)", 0.015, 0.25)
    record.verdict(spoiled, judged)
    assert record.verdicts[0].expected_failure == "known QEMU bug X" and not record.verdicts[0].passed
    assert record.failed() == [] and not record.verdicts[0].fails_test
    record.raise_first_failure()                      # nothing fails the test
    saved = json.loads((tmp_path / "t" / "verdicts.json").read_text())
    assert saved[0]["expected_failure"] == "known QEMU bug X" and saved[0]["measured"] == 1_000 - 300_000_000
    assert not oracles.fails_test(saved[0]) and oracles.fails_test({"name": "old record", "passed": False})
    # an unexpected failure still fails the test, the expected one beside it does not
    record.verdict(oracles.at_most("bytes the relay carried per page sent / page size (zstd)", 1.0, 0.25))
    with pytest.raises(AssertionError, match=r"^bytes the relay carried per page sent / page size \(zstd\): "):
        record.raise_first_failure()
    # a strict expected failure that passes is news: the build has the fix (a backport)
    fixed = Artefacts(tmp_path / "fixed")
    fixed.expect_failure(oracles.CARRIED_VS_REPORTED, "known QEMU bug X", strict=True)
    fixed.verdict(oracles.carried_matches_reported(5_000, 5_000, 4096))
    with pytest.raises(AssertionError, match="passed, but it is an expected failure of this build"):
        fixed.raise_first_failure()
    lenient = Artefacts(tmp_path / "lenient")
    lenient.expect_failure(oracles.CARRIED_VS_REPORTED, "a race", strict=False)
    lenient.verdict(oracles.carried_matches_reported(5_000, 5_000, 4096))
    assert lenient.failed() == []


def test_rate_log_clock_map_and_throttle_effect() -> None:
    from harness.analysis.series import (ClockMap, interpolate, parse_rate_log, rate_between, slowdown_slope,
                                  throttle_levels)
    text = "1000000000 0\n1100000000 50\n1200000000 100\n12000"   # torn last line
    assert parse_rate_log(text) == [(1.0, 0), (1.1, 50), (1.2, 100)]
    clock = ClockMap.fit([(100.0, 5000.0), (200.0, 5100.1)])      # guest clock 0.1 % slow
    assert clock.scale == pytest.approx(1.001) and clock.host(100.0) == pytest.approx(5000.0)
    assert ClockMap.fit([(10.0, 25.0)]).host(11.0) == pytest.approx(26.0)
    assert interpolate([(0, 0), (2, 10)], 1) == 5 and interpolate([(0, 0)], 1) is None
    # 100 units/s unthrottled; 20 % throttle from t=10, 40 % from t=20, window ends at 30: the guest really slowed
    points, value = [], 0.0
    for i in range(301):
        t = i / 10
        points.append((t, value))
        value += 10 * (1.0 if t < 10 else 0.8 if t < 20 else 0.6)
    assert rate_between(points, 2, 8) == pytest.approx(100)
    levels = throttle_levels(points, {20: 10.0, 40: 20.0}, 30.0, 100.0, settle_s=0.5, min_s=2.0)
    assert [lv.percent for lv in levels] == [20, 40]
    assert [lv.ratio for lv in levels] == pytest.approx([0.8, 0.6], abs=0.01)
    assert slowdown_slope(levels) == pytest.approx(1.0, abs=0.03)
    # a build that reports the throttle but never sleeps the vCPUs: no slowdown at all
    flat = [(i / 10, 10.0 * i) for i in range(301)]
    assert slowdown_slope(throttle_levels(flat, {20: 10.0, 40: 20.0}, 30.0, 100.0, 0.5, 2.0)) == \
        pytest.approx(0.0, abs=0.01)
    # too short a level is left out
    assert [lv.percent for lv in throttle_levels(points, {20: 10.0, 40: 28.5}, 30.0, 100.0, 0.5, 2.0)] == [20]
    assert slowdown_slope([]) is None


# -- bisect voting and validate's patch headers -----------------------------------------------------------------
def test_vcpu_sleep_share_follows_the_throttle_whatever_the_host_load() -> None:
    """B4 (5): a thread that sleeps p of the time on top of a baseline sleep s0 gives share (s − s0)/(1 − s0) = p,
    also when host load turns part of its awake time into run-queue wait; one that never sleeps gives 0."""
    from harness.analysis.series import ThreadTimes, sleep_fraction, sleep_slope, throttle_sleeps

    def thread(phases: list[tuple[float, float, float]]) -> list[ThreadTimes]:
        """phases of (seconds, share on a CPU, share waiting for one), sampled every 0.1 s."""
        samples, t, cpu, wait = [ThreadTimes(0.0, 0.0, 0.0)], 0.0, 0.0, 0.0
        for seconds, on, queued in phases:
            for _ in range(round(seconds * 10)):
                t, cpu, wait = t + 0.1, cpu + 0.1 * on, wait + 0.1 * queued
                samples.append(ThreadTimes(round(t, 6), cpu, wait))
        return samples
    s0 = 0.1
    # baseline 10 s; 20 % for 10 s; 40 % for 10 s — busy (on CPU or queued) = (1 − p)(1 − s0), split 1:1 by load
    busy = [(1 - p) * (1 - s0) for p in (0.0, 0.2, 0.4)]
    loaded = thread([(10, b / 2, b / 2) for b in busy])
    windows = [(20, 10.5, 19.5), (40, 20.5, 29.5)]
    base, levels = throttle_sleeps(loaded, windows, (0.5, 9.5))
    assert base == pytest.approx(s0)
    assert [lv.share for lv in levels] == [pytest.approx(0.2), pytest.approx(0.4)]
    assert sleep_slope(levels) == pytest.approx(1.0)
    never = thread([(30, 1 - s0, 0.0)])
    assert sleep_slope(throttle_sleeps(never, windows, (0.5, 9.5))[1]) == pytest.approx(0.0, abs=1e-9)
    assert sleep_fraction(loaded, 25.0, 40.0) is None          # a window the samples do not cover
    assert sleep_slope([]) is None


from harness.tools.bisect import BAD, GOOD, SKIP, Votes, classify  # noqa: E402
from harness.tools.validate import Case, parse_header  # noqa: E402


def vote(outcomes: list[str], repeats: int = 3, budget: int = 2) -> tuple[int | None, int]:
    votes = Votes(repeats, budget)
    for outcome in outcomes:
        votes.add(outcome)
        if (decision := votes.decision()) is not None:
            return decision, votes.runs
    return None, votes.runs


def test_unanimous_votes_stop_at_a_strict_majority() -> None:
    assert vote(["good"] * 5) == (GOOD, 2)
    assert vote(["bad"] * 5) == (BAD, 2)


def test_split_votes_use_the_retry_budget_then_need_two_thirds() -> None:
    assert vote(["good", "bad", "good", "good", "good"]) == (GOOD, 5)
    assert vote(["bad", "good", "bad", "bad", "bad"]) == (BAD, 5)
    assert vote(["good", "bad", "good", "bad", "good"]) == (SKIP, 5)   # 3:2 is not a verdict: flaky


def test_commits_whose_tests_all_skip_are_skipped() -> None:
    assert vote(["inconclusive"] * 3) == (SKIP, 2)


def test_classify_reads_junit_outcomes_and_refuses_a_broken_run() -> None:
    lacks = Case("skipped", "QEMU lacks capability 'x'")
    assert classify({"a": Case("passed"), "b": lacks}, 0) == "good"
    assert classify({"a": Case("passed"), "b": Case("failed")}, 1) == "bad"
    assert classify({"a": lacks}, 0) == "inconclusive"
    assert classify({}, 4) == "broken"
    assert classify({"a": Case("passed")}, 3) == "broken"


def test_patch_header_names_its_guarding_tests(tmp_path) -> None:
    patch = tmp_path / "X-thing.patch"
    patch.write_text("Description: breaks a thing\nGuards: B9\nMimics: nothing\nTests: t.py::a t.py::b\n"
                     "Tests: t.py::c\nfree text: not a header: ignored\n\ndiff --git a/x b/x\nTests: t.py::no\n")
    regression = parse_header(patch)
    assert (regression.variant, regression.guards, regression.tests) == ("X-thing", "B9", ("t.py::a", "t.py::b",
                                                                                          "t.py::c"))


def test_exploratory_patches_are_marked_in_their_header(tmp_path) -> None:
    patch = tmp_path / "Y.patch"
    patch.write_text("Description: d\nGuards: B3\nExploratory: yes (a race nothing observes)\nTests: t.py::a\n")
    assert parse_header(patch).exploratory
    patch.write_text("Description: d\nGuards: B3\nTests: t.py::a\n")
    assert not parse_header(patch).exploratory


def test_options_beat_the_qtest_variables_and_each_side_names_its_source() -> None:
    from harness.plugin.session import binary_specs
    env = {"QTEST_QEMU_BINARY": "/q", "QTEST_QEMU_BINARY_SRC": "/src", "QTEST_QEMU_BINARY_DST": "/dst"}
    assert binary_specs(None, None, None, env) == {"source": ("$QTEST_QEMU_BINARY_SRC", "/src"),
                                                   "destination": ("$QTEST_QEMU_BINARY_DST", "/dst")}
    assert binary_specs(None, None, None, {"QTEST_QEMU_BINARY": "/q"}) == {
        "source": ("$QTEST_QEMU_BINARY", "/q"), "destination": ("$QTEST_QEMU_BINARY", "/q")}
    assert binary_specs("/both", None, "/d", env) == {"source": ("--qemu-binary", "/both"),
                                                      "destination": ("--qemu-dst", "/d")}
    assert binary_specs(None, None, None, {}) == {"source": ("--qemu-binary", None),
                                                  "destination": ("--qemu-binary", None)}
    assert binary_specs(None, None, None, {"QEMU_BINARY": "/a", "QTEST_QEMU_BINARY": "/b"})["source"] == \
        ("$QEMU_BINARY", "/a")


def test_guest_rate_per_runnable_time_gives_back_host_load_but_not_the_throttle() -> None:
    """B4 (4): a guest slowed only by run-queue wait (host load) shows no throttle effect once each window is
    divided by the share of its runnable time the vCPU ran; one slowed by the throttle's sleep still does."""
    from harness.analysis.series import ThreadTimes, ran_share_of_runnable, slowdown_slope, throttle_levels
    # 0–10 s unthrottled but queued half its runnable time; 10–20 s throttled 20 % on an idle host.
    samples = [ThreadTimes(t / 10, (t / 10) * 0.5 if t <= 100 else 5.0 + (t / 10 - 10) * 0.8,
                           (t / 10) * 0.5 if t <= 100 else 5.0) for t in range(201)]
    assert ran_share_of_runnable(samples, 1.0, 9.0) == pytest.approx(0.5)
    assert ran_share_of_runnable(samples, 11.0, 19.0) == pytest.approx(1.0)
    assert ran_share_of_runnable(samples, 30.0, 40.0) is None
    # The guest's progress follows its CPU time (100 units per CPU-second): 50/s unthrottled, 80/s at 20 %.
    points = [(s.t, 100 * s.on_cpu_s) for s in samples]
    raw = throttle_levels(points, {20: 10.0}, 20.0, 50.0, 0.5, 2.0)
    assert raw[0].ratio == pytest.approx(1.6)          # uncorrected: "faster when throttled"
    corrected = throttle_levels(points, {20: 10.0}, 20.0, 100.0, 0.5, 2.0,
                                lambda a, b: ran_share_of_runnable(samples, a, b))
    assert corrected[0].ratio == pytest.approx(0.8) and corrected[0].ran_of_runnable == pytest.approx(1.0)
    assert slowdown_slope(corrected) == pytest.approx(1.0)


def test_ratio_leaves_an_unmeasurable_figure_unmeasured() -> None:
    """units.ratio: None for a missing figure or a zero denominator (never a ZeroDivisionError, 0 or inf)."""
    from harness.core.units import ratio
    assert ratio(3, 4) == 0.75 and ratio(0, 4) == 0.0
    assert ratio(3, 0) is None and ratio(None, 4) is None and ratio(3, None) is None


def test_page_digests_cross_the_wire_and_find_the_same_pages(tmp_path: Path) -> None:
    """What a remote host sends back (page_digests run as a script there) decodes to what is computed here, and a
    comparison of digests finds the same pages as one of the dumps: zero MiBs (the fast path) and partial chunks."""
    from harness.analysis import page_digests
    from harness.analysis.integrity import compare_digests, digest_dump
    from harness.core.units import PAGE as UNITS_PAGE
    assert page_digests.PAGE == UNITS_PAGE
    a, b = tmp_path / "a", tmp_path / "b"
    data = bytearray((1 << 20) * 2 + PAGE * 3)          # two zero MiBs, then a partial chunk
    data[-PAGE:] = b"\x01" * PAGE
    a.write_bytes(data)
    data[PAGE * 300] = 7                                 # inside the first (zero) MiB
    b.write_bytes(data)
    wire = page_digests.decode(page_digests.encode(*digest_dump(a)))
    assert wire == digest_dump(a)
    result = compare_digests(wire, digest_dump(b))
    assert not result.equal and result.differing_pages == 1 and result.first_differing == [300]
    assert result.source_sha256 != result.destination_sha256
    import subprocess, sys
    script = subprocess.run([sys.executable, page_digests.__file__, str(b)], capture_output=True, text=True,
                            check=True, cwd=tmp_path)   # as the remote runs it: stand-alone, no harness import
    assert page_digests.decode(script.stdout) == digest_dump(b)
