"""Unit tests of the report code (plots, histograms, run index, progress lines) on synthetic Series — no QEMU."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.analysis import oracles
from harness.analysis.oracles import Verdict
from harness.report.index import TestResult, write_index
from harness.report.plots import draw_missing, _panels, header_lines, plot_series, status_segments, verdict_lines
from harness.report.artefacts import Artefacts, progress_line
from harness.core.stats import Histogram
from harness.analysis.samples import Series
from harness.core.units import MiB

pytest_plugins = ["pytester"]


def recorded_migration(syncs_per_second: float = 0.5, seconds: float = 6.0, postcopy_at: float | None = 3.0) -> Series:
    """A plausible 50 Hz recording: setup → active → (postcopy-active) → completed, with passes, marks, a stall."""
    series = Series(t0=0.0, hz=50)
    steps = int(seconds * 50)
    for i in range(steps + 1):
        t = i / 50
        status = "setup" if t < 0.05 else "active"
        if postcopy_at is not None and t >= postcopy_at:
            status = "postcopy-active"
        if i == steps:
            status = "completed"
        series.samples["source"].append({"t": t, "info": {"status": status, "expected-downtime": 300, "ram": {
            "transferred": int(t * 32 * MiB), "remaining": max(0, int((seconds - t) * 16 * MiB)),
            "dirty-sync-count": 1 + int(t * syncs_per_second), "dirty-pages-rate": 4096, "page-size": 4096,
            "mbps": 268.4, "postcopy-requests": int(max(0.0, t - (postcopy_at or seconds)) * 10),
            "postcopy-bytes": int(max(0.0, t - (postcopy_at or seconds)) * 8 * MiB)}}})
        series.samples["destination"].append({"t": t + 0.01, "info": {"status": "completed" if i == steps
                                                                        else "active"}})
    series.events["source"] = [{"t": p / 2, "event": "MIGRATION_PASS", "data": {"pass": p}} for p in range(1, 4)]
    series.events["destination"] = [{"t": seconds, "event": "MIGRATION", "data": {"status": "completed"}}]
    series.marks = [{"t": 0.0, "what": "migrate"}]
    if postcopy_at is not None:
        series.marks.append({"t": postcopy_at - 0.02, "what": "migrate-start-postcopy"})
    series.stalls = [{"side": "destination", "t": 4.0, "seconds": 1.2}]
    return series


def storm_verdict() -> Verdict:
    return oracles.ratio_at_most("dirty syncs/s with postcopy-ram on vs off", 10, 0.5, 1.5).with_hints(
        oracles.window(1.0, 5.0, "measured window"), oracles.threshold("ram.remaining", 32 * MiB, "threshold"),
        oracles.threshold("ram.postcopy-bytes", 16 * MiB, "postcopy bytes bound", series="on"),
        oracles.instant(2.5, "only on 'off'", series="off"))


def png_size(path: Path) -> tuple[int, int]:
    header = path.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n"
    return int.from_bytes(header[16:20], "big"), int.from_bytes(header[20:24], "big")


def test_verdict_keeps_its_positional_constructor_and_carries_plot_hints() -> None:
    plain = Verdict("x", True, 1, 2, "why")
    assert plain.hints == () and json.loads(json.dumps(plain.to_json()))["hints"] == []
    hinted = plain.with_hints(oracles.threshold("ram.remaining", 5, "bound"))
    assert plain.hints == () and hinted.hints[0].key == "ram.remaining" and hinted.check() is hinted
    assert hinted.to_json()["hints"][0] == {"kind": "hline", "value": 5.0, "end": None, "key": "ram.remaining",
                                           "label": "bound", "series": None}


def test_title_says_failed_and_why_from_the_failing_verdicts_or_the_error() -> None:
    passed = oracles.completed({"status": "completed"})
    lines = header_lines("FAILED", "tests/t.py::test_x", [passed, storm_verdict()], None)
    assert lines[0].startswith("FAILED: dirty syncs/s with postcopy-ram on vs off: 10 vs baseline 0.5: ratio 20.00")
    assert lines[-1] == "tests/t.py::test_x"
    stalled = header_lines("FAILED", "t", [passed], "MigrationStalled: postcopy-paused did not happen within 30s")
    assert stalled[0] == "FAILED: MigrationStalled: postcopy-paused did not happen within 30s"
    assert header_lines("passed", "t", [passed], None)[0] == "PASSED: 1 verdict(s) passed"
    assert header_lines(None, "just a title", [], None) == ["just a title"]
    expected = oracles.carried_matches_reported(1, 9_999_999, 4096).expected_to_fail("known bug X", strict=True)
    assert header_lines("passed", "t", [passed, expected], None)[0] == (
        "PASSED: 1 verdict(s) passed, 1 failed as a known QEMU bug says it does")
    footer = [text for text, ok in verdict_lines([passed, expected], None) if ok]
    assert footer[-2].startswith("✗ (expected: known QEMU bug) bytes the relay carried − ram.transferred")


def test_footer_lists_failing_verdicts_first_with_measured_and_bound() -> None:
    lines = verdict_lines([oracles.completed({"status": "completed"}), storm_verdict()], None)
    assert lines[0] == ("✗ dirty syncs/s with postcopy-ram on vs off: 10 vs baseline 0.5: ratio 20.00 > 1.5  "
                        "[measured 20.0, bound 1.5]", False)
    assert lines[-1] == ("✓ migration completed: status is completed", True)
    assert verdict_lines([], "boom\nline two") == [("✗ error: boom line two", False)]


def test_panels_follow_the_data_and_the_hints() -> None:
    series = recorded_migration()
    keys = [p.key for p in _panels([series], set())]
    assert keys[:3] == ["ram.dirty-sync-count", "ram.transferred", "ram.remaining"]
    assert "ram.postcopy-requests" in keys          # non-zero after the switch
    assert "expected-downtime" not in keys          # only when a verdict points at it
    assert "ram.postcopy-bytes" not in keys
    hinted = [p.key for p in _panels([series], {"expected-downtime", "ram.postcopy-bytes", "no.such-key"})]
    assert "expected-downtime" in hinted and hinted[-1] == "ram.postcopy-bytes"   # own panel; absent keys none
    precopy = recorded_migration(postcopy_at=None)
    assert "ram.postcopy-requests" not in [p.key for p in _panels([precopy], set())]


def test_status_segments_cover_the_series_on_both_sides() -> None:
    series = recorded_migration()
    source = status_segments(series, "source")
    assert [s for _, _, s in source] == ["setup", "active", "postcopy-active", "completed"]
    assert source[0][0] == 0.0 and source[1][0] == source[0][1] and source[-1][1] == pytest.approx(6.01)
    assert [s for _, _, s in status_segments(series, "destination")] == ["active", "completed"]


def test_plot_of_one_migration_draws_statuses_events_and_hints(tmp_path: Path) -> None:
    path = tmp_path / "on.png"
    plot_series(recorded_migration(), path, "tests/t.py::test_x", [storm_verdict()], name="on", failure=None,
                outcome="FAILED")
    width, height = png_size(path)
    assert width == 990 and height > 1000     # status strip + 7 panels (incl. the hinted postcopy-bytes)
    plot_series(recorded_migration(), tmp_path / "off.png", "t", [storm_verdict()], name="off", outcome="passed")
    assert png_size(tmp_path / "off.png")[1] < height   # the postcopy-bytes hint targets "on" only


def test_finalize_adds_a_comparison_of_several_migrations(tmp_path: Path) -> None:
    record = Artefacts(tmp_path / "t", "tests/t.py::test_storm")
    record.add_series("off", recorded_migration(0.5, postcopy_at=None))
    record.add_series("on", recorded_migration(10, postcopy_at=None))
    record.verdict(storm_verdict())
    with pytest.raises(AssertionError):
        record.raise_first_failure()
    record.finalize("FAILED", failure="AssertionError: dirty syncs/s …")
    assert sorted(p.name for p in record.directory.glob("*.png")) == ["comparison.png", "off.png", "on.png"]
    assert json.loads((record.directory / "verdicts.json").read_text())[0]["hints"][0]["kind"] == "span"


def test_a_passing_test_under_plots_failed_keeps_its_series_and_draws_them_on_demand(tmp_path: Path) -> None:
    """`make check` (--plots failed) draws no passing migration; its series JSON stays and draw_missing draws it."""
    record = Artefacts(tmp_path / "t", "tests/t.py::test_ok")
    record.add_series("migration", recorded_migration(0.5, postcopy_at=None))
    record.finalize("passed", plots=False)
    assert not list(record.directory.glob("*.png")) and (record.directory / "migration.series.json").is_file()
    assert draw_missing(tmp_path) == [record.directory / "migration.png"]
    assert png_size(record.directory / "migration.png")[0] > 0 and draw_missing(tmp_path) == []


def test_histograms_from_samples_and_from_probe_buckets(tmp_path: Path) -> None:
    samples = Histogram.from_samples([float(v) for v in range(1, 101)])
    assert sum(samples.counts) == 100 and samples.summary["p50"] == 50 and samples.summary["p99"] == 99
    assert samples.edges[0] == 1 and samples.edges[-1] >= 100
    buckets = Histogram.from_buckets([[1, 5], [2, 0], [4, 90], [8, 5]])
    assert buckets.edges == (0.0, 1.0, 2.0, 4.0, 8.0) and buckets.counts == (5, 0, 90, 5)
    assert buckets.summary["p50"] == 4 and buckets.summary["p99"] == 8 and buckets.summary["max"] == 8
    probe = Histogram.from_data({"count": 100, "p50_us": 3.1, "p99_us": 7.5, "max_us": 7.9,
                                 "histogram": [[1, 5], [4, 90], [8, 5]]})
    assert probe.summary == {"count": 100, "p50": 3.1, "p99": 7.5, "max": 7.9}
    assert Histogram.from_data([]).counts == () and Histogram.from_data([3.0, 3.0]).counts == (2,)

    record = Artefacts(tmp_path / "h")
    path = record.add_histogram("stalls", {"preempt off": [100.0, 2000.0, 50000.0], "preempt on": [[1, 5], [64, 3]]},
                                thresholds={"p99 bound": 10000})
    assert png_size(path)[0] > 0 and record.figures == ["stalls.png"]
    written = json.loads((tmp_path / "h" / "stalls.json").read_text())
    assert written["unit"] == "µs" and written["histograms"]["preempt off"]["summary"]["max"] == 50000
    with pytest.raises(ValueError):
        Histogram.from_data({"nothing": 1})


def test_progress_line_reads_the_latest_source_sample() -> None:
    series = recorded_migration()
    assert progress_line("postcopy-ram-on", series, 12.3) == (
        "migration postcopy-ram-on: completed after 12 s, transferred 192 MiB, remaining 0 MiB, syncs 4, "
        "dirty 16 MiB/s")
    assert progress_line("migration", Series(t0=0, hz=1), 0) == "migration: starting after 0 s"


def test_index_links_every_test_its_verdicts_plots_and_files(tmp_path: Path) -> None:
    base = tmp_path / "artefacts"
    earlier = base / "run-20260101-000000-000000"
    earlier.mkdir(parents=True)
    (earlier / "results.json").write_text(json.dumps({"counts": {"passed": 3}}))
    run = base / "run-20260102-000000-000000"
    failing = Artefacts(run / "t_storm", "tests/t.py::test_storm")
    failing.add_series("on", recorded_migration(10))
    failing.verdict(storm_verdict())
    failing.finalize("FAILED")
    stalled = Artefacts(run / "t_stall", "tests/t.py::test_stall")
    stalled.verdict(oracles.completed({"status": "completed"}))
    junit = base / "junit.xml"
    junit.write_text("<testsuites/>")
    results = [TestResult("tests/t.py::test_storm", "failed", 12.5, "AssertionError: dirty syncs", run / "t_storm"),
               TestResult("tests/t.py::test_stall", "error", 40.0, "MigrationStalled: <no postcopy-paused>",
                          run / "t_stall"),
               TestResult("tests/t.py::test_skip", "skipped", 0.1, "QEMU lacks capability 'mapped-ram'",
                          run / "t_skip"),
               TestResult("tests/unit/test_u.py::test_ok", "passed", 0.01)]
    page = write_index(run, results, {"source QEMU": "/usr/bin/qemu", "JUnit XML": str(junit)})
    text = page.read_text()
    assert "1 error" in text and "1 failed" in text and "1 passed" in text and "1 skipped" in text
    assert "ratio 20.00 &gt; 1.5" in text                               # the failing verdict's reason
    assert "MigrationStalled: &lt;no postcopy-paused&gt;" in text      # an error without a failing verdict
    assert "QEMU lacks capability" in text
    assert "href='t_storm/on.png'" in text and "href='t_storm/on.series.json'" in text
    assert "1 test(s) without artefacts (1 passed)" in text
    assert "href='../junit.xml'" in text
    latest = (base / "index.html").read_text()
    assert "href='run-20260102-000000-000000/t_storm/on.png'" in latest and "href='junit.xml'" in latest
    assert "run-20260101-000000-000000/index.html" in latest and "3 passed" in latest
    saved = json.loads((run / "results.json").read_text())
    assert saved["counts"] == {"failed": 1, "error": 1, "skipped": 1, "passed": 1}
    assert saved["tests"][0]["verdicts"][0]["passed"] is False


def test_plugin_writes_the_index_at_session_end(pytester: pytest.Pytester) -> None:
    """A real pytest session with the plugin: per-test artefacts and plots, then index.html — no QEMU involved."""
    pytester.makepyfile(test_inner="""
        from harness.analysis import oracles
        from harness.analysis.samples import Series

        def test_fails_a_verdict(artefacts):
            series = Series(t0=0, hz=10)
            for i in range(20):
                series.samples["source"].append({"t": i / 10, "info": {"status": "active",
                                                                        "ram": {"dirty-sync-count": i}}})
            artefacts.add_series("migration", series)
            artefacts.verdict(oracles.progressed("syncs stay few", 0, 19, 100))

        def test_passes(artefacts):
            artefacts.verdict(oracles.completed({"status": "completed"}))

        def test_without_artefacts():
            pass

        def test_reaches_its_artefacts_inside_the_body(request):
            # a failing verdict fails the test even when its artefacts came by getfixturevalue in the body
            request.getfixturevalue("artefacts").verdict(oracles.completed({"status": "failed"}))
    """)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--artefacts", "out", "-q",
                                           "--junitxml", "out/junit.xml")
    result.assert_outcomes(passed=2, failed=2)
    result.stdout.fnmatch_lines(["harness: report */out/run-*/index.html*"])
    index = (pytester.path / "out" / "index.html").read_text()
    assert "syncs stay few" in index and "advanced by 19" in index and "migration.png" in index
    assert "junit.xml" in index
    [run] = list((pytester.path / "out").glob("run-*"))
    tests = {t["nodeid"].split("::")[1]: t for t in json.loads((run / "results.json").read_text())["tests"]}
    assert tests["test_fails_a_verdict"]["outcome"] == "failed"
    assert tests["test_without_artefacts"]["directory"] is None
    assert (run / tests["test_fails_a_verdict"]["directory"] / "migration.png").is_file()


def test_bench_reads_the_suite_wall_time_from_junit_and_prints_targets(tmp_path: Path) -> None:
    from harness.tools.bench import table
    from harness.tools.bench_parallel import suite_wall_time
    assert suite_wall_time(tmp_path / "missing.xml") is None
    junit = tmp_path / "junit.xml"
    junit.write_text('<testsuites><testsuite name="pytest" time="181.5">'
                     '<testcase classname="tests.behaviour.test_basics" name="a" time="100.25"/>'
                     '<testcase classname="tests.behaviour.test_b0_sync_storm" name="b" time="60"/>'
                     '<testcase classname="tests.unit.test_report" name="c" time="1.5"/></testsuite></testsuites>')
    suite = suite_wall_time(junit)
    assert suite is not None and (suite["total_s"], suite["behaviour_tests_s"], suite["tests"]) == (181.5, 160.2, 3)
    printed = table({"boot": {"accel": "tcg", "median": 3.4, "p90": 3.9, "pass": False}, "suite": None,
                     "errors": {"sampler": "TimeoutError: x"}})
    assert "median 3.40 s, p90 3.90 s" in printed and "| MISS" in printed and "null (no artefacts/junit.xml)" in printed
    assert "ERROR: TimeoutError: x" in printed
    printed = table({"arch": "s390x", "suite": None, "errors": {}, "boot": {
        "arch": "s390x", "accel": "tcg", "median": 7.54, "p90": 7.82, "pass": False, "ratio_median": 1.61,
        "ratio_p90": 1.63, "baseline": {"arch": "x86_64", "median": 4.68, "p90": 4.79, "samples": []}}})
    assert "boot-to-SSH (s390x, tcg)" in printed and "vs x86_64 in the same run" in printed
    assert "median 4.68 s, p90 4.79 s: ×1.61 (median), ×1.63 (p90)" in printed


def test_measurement_records_are_written_as_json_without_their_own_to_json(tmp_path: Path) -> None:
    from dataclasses import dataclass

    @dataclass(frozen=True)
    class Size:
        apparent: int
        allocated: int

    @dataclass(frozen=True)
    class Save:
        label: str
        final: Size
        where: Path

    path = Artefacts(tmp_path / "t").write_json("save", Save("live", Size(6, 7), Path("/x")))
    assert json.loads(path.read_text()) == {"label": "live", "final": {"apparent": 6, "allocated": 7}, "where": "/x"}


def test_records_serialise_their_fields_and_named_derived_figures(tmp_path: Path) -> None:
    """A measurement dataclass needs no to_json: its fields (nested records likewise) plus JSON_DERIVED."""
    from dataclasses import dataclass

    @dataclass(frozen=True)
    class Inner:
        seconds: float

    @dataclass(frozen=True)
    class Window:
        JSON_DERIVED = ("per_second", "doubled")
        bytes_sent: int
        inner: Inner

        @property
        def per_second(self) -> float:
            return self.bytes_sent / self.inner.seconds

        def doubled(self) -> int:
            return 2 * self.bytes_sent

    path = Artefacts(tmp_path).write_json("window", Window(10, Inner(2.0)))
    assert json.loads(path.read_text()) == {"bytes_sent": 10, "inner": {"seconds": 2.0}, "per_second": 5.0,
                                            "doubled": 20}



def test_the_index_shows_an_expected_verdict_failure_apart_from_failures_and_passes() -> None:
    from harness.report.index import _verdict_html
    spoiled = oracles.carried_matches_reported(1, 9_999_999, 4096).expected_to_fail("known bug X", strict=True)
    fixed = oracles.carried_matches_reported(5, 5, 4096).expected_to_fail("known bug X", strict=True)
    page = _verdict_html([oracles.completed({"status": "completed"}).to_json(), spoiled.to_json(), fixed.to_json()])
    assert "<div class=muted>✗ expected failure, <b>bytes the relay carried − ram.transferred</b>" in page
    assert "— known bug X</div>" in page
    # a strict expected failure that passed fails the test, and says why
    assert ("<div class=fail>✗ <b>bytes the relay carried − ram.transferred</b>: passed, but it is an expected "
            "failure of this build (known bug X)") in page
    assert "1 verdict(s) passed" in page
