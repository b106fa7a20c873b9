"""QEMU's timing figures held to the series' own clock (harness.analysis.timing): pure comparisons on a recorded
series, each shown to pass on consistent figures and to fail on the misreport it exists for."""

from __future__ import annotations

import pytest

from harness.analysis import oracles, timing
from harness.analysis.samples import Series

MiB = 1 << 20


def completed_series() -> Series:
    """`migrate` sent at series 0.000 (t0 = 50.0 ↔ wall 1000.0); QEMU's events stamped active at wall 1000.020
    and completed at wall 2000 ms later, each received 30 ms late."""
    series = Series(t0=50.0, hz=100, wall_t0=1000.0)
    series.marks.append({"t": 0.0, "what": "migrate"})
    series.events["source"] = [
        {"t": 0.005, "event": "MIGRATION", "data": {"status": "setup"}, "wall": 1000.001},
        {"t": 0.050, "event": "MIGRATION", "data": {"status": "active"}, "wall": 1000.020},
        {"t": 2.030, "event": "MIGRATION", "data": {"status": "completed"}, "wall": 1002.000}]
    return series


# 250 MB in the 1980 ms between 'active' and 'completed': 1010.1 Mbit/s, as migration_completion_end computes it.
BYTES = 250_000_000
FINAL = {"status": "completed", "total-time": 1999, "setup-time": 19,
         "ram": {"transferred": BYTES, "mbps": BYTES * 8 / 1980 / 1e3}}


def test_milestones_from_qemu_timestamps_or_arrival() -> None:
    clock = timing.host_clock(completed_series())
    assert clock.total_ms == pytest.approx(2000) and clock.setup_ms == pytest.approx(20)
    assert clock.transfer_ms == pytest.approx(1980)
    late = timing.host_clock(completed_series(), qemu_timestamps=False)   # a QEMU on another host
    assert late.total_ms == pytest.approx(2030) and late.setup_ms == pytest.approx(50)
    assert late.event_clock == "arrival"
    assert timing.host_clock(Series(t0=0.0, hz=100)).total_ms is None


def test_consistent_figures_pass() -> None:
    clock = timing.host_clock(completed_series())
    assert timing.total_time_vs_host(clock, FINAL, 0.9, 1.02).passed
    assert timing.setup_time_vs_host(clock, FINAL, 10).passed
    verdict = timing.mbps_vs_host(clock, FINAL, BYTES, 0.8, 1.25)
    assert verdict.passed and verdict.measured == pytest.approx(1.0) and "bytes the relay carried" in verdict.why
    assert "ram.transferred" in timing.mbps_vs_host(clock, FINAL, None, 0.8, 1.25).why


def test_misreported_figures_fail() -> None:
    clock = timing.host_clock(completed_series())
    # total-time from the last iteration rather than from `migrate`.
    assert not timing.total_time_vs_host(clock, {**FINAL, "total-time": 120}, 0.9, 1.02).passed
    # A clock that kept running past completion.
    assert not timing.total_time_vs_host(clock, {**FINAL, "total-time": 2600}, 0.9, 1.02).passed
    assert not timing.total_time_vs_host(clock, {}, 0.9, 1.02).passed
    # Set-up longer than the host saw between `migrate` and 'active'.
    late_setup = timing.setup_time_vs_host(clock, {**FINAL, "setup-time": 400}, 10)
    assert not late_setup.passed and late_setup.bound == pytest.approx(30.0)
    assert not timing.setup_time_vs_host(timing.host_clock(Series(t0=0.0, hz=100)), FINAL, 10).passed
    # Throughput in bytes rather than bits: an eighth.
    in_bytes = {**FINAL, "ram": {**FINAL["ram"], "mbps": FINAL["ram"]["mbps"] / 8}}
    verdict = timing.mbps_vs_host(clock, in_bytes, BYTES, 0.8, 1.25)
    assert not verdict.passed and verdict.measured == pytest.approx(0.125)
    # A transport that carried more than QEMU's bytes say (a counter that misses bytes) shows too.
    assert not timing.mbps_vs_host(clock, FINAL, 2 * BYTES, 0.8, 1.25).passed


def short_migration(migrate_t: float, active: tuple[float, float], completed: tuple[float, float]) -> Series:
    """A series of one migration of a few ms: `migrate` at migrate_t, then the source's 'active' and 'completed'
    events, each (series time, QEMU's wall-clock timestamp)."""
    series = Series(t0=50.0, hz=100, wall_t0=1000.0)
    series.marks.append({"t": migrate_t, "what": "migrate"})
    series.events["source"] = [{"t": t, "event": "MIGRATION", "data": {"status": status}, "wall": wall}
                               for status, (t, wall) in (("active", active), ("completed", completed))]
    return series


def test_mbps_of_a_migration_shorter_than_its_set_up_allows_for_the_thread_start() -> None:
    """QEMU divides by total-time − setup-time, which also holds migrate → the migration thread's start: a 3 ms
    transfer after 7 ms of set-up may be divided by up to 10 ms (ignore-shared's 340 KB: mbps 0.34 of the host's
    rate), and a rate in bytes instead of bits still fails once the transfer outlasts its set-up."""
    clock = timing.host_clock(short_migration(0.0, (0.008, 1000.007), (0.011, 1000.010)))
    tiny = {"status": "completed", "total-time": 10, "setup-time": 1,
            "ram": {"transferred": 339_660, "mbps": 339_660 * 8 / 9 / 1e3}}
    assert timing.mbps_vs_host(clock, tiny, 339_660, 0.8, 1.25, rounding_ms=3.0).passed
    in_bytes = {**FINAL, "ram": {**FINAL["ram"], "mbps": FINAL["ram"]["mbps"] / 8}}
    assert not timing.mbps_vs_host(timing.host_clock(completed_series()), in_bytes, BYTES, 0.8, 1.25,
                                   rounding_ms=3.0).passed


def test_mbps_of_a_span_shorter_than_the_rounding_allows_qemus_whole_ms() -> None:
    """Session 14's clean-clone CI, ignore-shared on the unmodified 10.0.2: 339 660 bytes, active → completed 2.6 ms
    on the host, QEMU's total-time 3 − setup-time 1 = 2 ms: mbps 1358.6 against the host's 1043 Mbit/s, 1.30. QEMU's
    span may read short down to 1 ms, not to nothing; a rate in bytes stays far below the band."""
    clock = timing.host_clock(short_migration(0.0005, (0.0028, 1000.0028), (0.0054, 1000.0054)))
    short = {"status": "completed", "total-time": 3, "setup-time": 1,
             "ram": {"transferred": 339_660, "mbps": 339_660 * 8 / 2 / 1e3}}
    assert timing.mbps_vs_host(clock, short, 339_660, 0.8, 1.25, rounding_ms=3.0).passed
    in_bytes = {**short, "ram": {**short["ram"], "mbps": short["ram"]["mbps"] / 8}}
    assert not timing.mbps_vs_host(clock, in_bytes, 339_660, 0.8, 1.25, rounding_ms=3.0).passed


def test_not_measured_is_recorded_and_passes() -> None:
    verdict = oracles.not_measured("bytes carried", "the relay cannot reach a remote host")
    assert verdict.passed and verdict.measured is None and verdict.why.startswith("not measured: ")


def test_link_counter_against_transferred() -> None:
    from harness.analysis import wire
    assert wire.link_vs_transferred(104_000_000, 100_000_000).passed            # headers on top
    assert not wire.link_vs_transferred(95_000_000, 100_000_000).passed         # counted what the link never carried
    assert not wire.link_vs_transferred(120_000_000, 100_000_000).passed        # carried more than it counted
    assert not wire.link_vs_transferred(None, 100_000_000).passed


def test_page_counts_against_carried_bytes() -> None:
    from harness.analysis import wire
    normal, duplicate = 116_760, 98_596                      # a real precopy run: 9.05 bytes per page left over
    carried = normal * 4096 + 1_949_121
    assert wire.bytes_per_page_beyond_data(carried, normal, duplicate, 4096, 32).measured == pytest.approx(9.05, 0.01)
    assert wire.bytes_per_page_beyond_data(carried, normal, duplicate, 4096, 32).passed
    # One normal page in a hundred counted as a zero page though sent whole.
    assert not wire.bytes_per_page_beyond_data(carried, normal - 2_150, duplicate + 2_150, 4096, 32).passed
    # Normal pages counted that never crossed.
    assert not wire.bytes_per_page_beyond_data(carried, normal + 1_000, duplicate, 4096, 32).passed


def test_a_short_migration_is_not_failed_by_ms_rounding() -> None:
    series = Series(t0=0.0, hz=100, wall_t0=1000.0)
    series.marks.append({"t": 0.0, "what": "migrate"})
    series.events["source"] = [
        {"t": 0.01, "event": "MIGRATION", "data": {"status": "active"}, "wall": 1000.0014},
        {"t": 0.05, "event": "MIGRATION", "data": {"status": "completed"}, "wall": 1000.0386}]
    clock = timing.host_clock(series)                       # 38.6 ms in all, 37.2 ms active
    # QEMU's ms: 40 − 0 (both rounded), against the host's 37.2 (38.6 with the set-up QEMU may count as transfer).
    final = {"total-time": 40, "setup-time": 0, "ram": {"transferred": 1_000_000, "mbps": 1e6 * 8 / 40 / 1e3}}
    assert not timing.total_time_vs_host(clock, final, 0.9, 1.02).passed
    assert timing.total_time_vs_host(clock, final, 0.9, 1.02, rounding_ms=3).passed
    assert timing.mbps_vs_host(clock, final, None, 0.99, 1.01, rounding_ms=3).passed
    assert not timing.mbps_vs_host(clock, final, None, 0.99, 1.01).passed


def test_ram_differing_only_where_the_source_discarded(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from harness.analysis.integrity import compare_dumps
    page = 4096
    source = bytearray(b"\x11" * page * 4)
    destination = bytearray(source)
    source[page:2 * page] = bytes(page)                 # discarded on the source after it was sent: zero there
    (tmp_path / "s").write_bytes(source)
    (tmp_path / "d").write_bytes(destination)
    comparison = compare_dumps(tmp_path / "s", tmp_path / "d")
    assert comparison.differing_pages == 1 and comparison.source_zero_pages == 1
    assert not oracles.ram_identical(comparison).passed
    assert oracles.ram_identical_but_discarded(comparison).passed
    destination[3 * page] ^= 0xFF                       # real damage besides
    (tmp_path / "d").write_bytes(destination)
    damaged = oracles.ram_identical_but_discarded(compare_dumps(tmp_path / "s", tmp_path / "d"))
    assert not damaged.passed and damaged.measured == 1


def test_a_discard_past_the_reported_block_is_named_where_the_ram_comparison_cannot_see_it() -> None:
    """Free page reporting: the guest reports whole blocks (2 MiB on x86_64); a discard one page longer took a page
    the guest still used, which then reads zero on both sides — only the discards' lengths show it
    (regression page-lifecycle-free-page-report-discards-too-much: 0x401000 each)."""
    block = 2 * 1024 * 1024
    assert oracles.discards_whole_blocks([0x400000, 0x200000, 0x600000], block).passed
    assert oracles.discards_whole_blocks([], block).passed          # none at all is the provoked check's to judge
    overrun = oracles.discards_whole_blocks([0x400000, 0x401000, 0x401000], block)
    assert not overrun.passed and overrun.measured == 2
    assert "2 of 3 discards" in overrun.why and "0x401000" in overrun.why


def test_a_migration_without_events_records_its_timing_as_not_measured() -> None:
    """A test that turned MIGRATION events off has no host milestones: the timing checks say so and pass, instead
    of failing a migration on what could not be measured (harness.migration.self_report)."""
    from types import SimpleNamespace

    from harness.migration import self_report
    from harness.migration.config import MigrationConfig
    series = completed_series()
    series.samples["source"].append({"t": 2.1, "info": FINAL})
    migration = SimpleNamespace(series=series, name="m", config=MigrationConfig(capabilities={"events": False}))
    _, [verdict] = self_report.timing_verdicts(migration)   # type: ignore[arg-type]
    assert verdict.passed and verdict.measured is None and "events off" in verdict.why


def test_total_time_allows_for_a_migrate_command_qemu_read_late() -> None:
    """The exec-pipe case of session 13's CI clone (a host loaded by other runs): `migrate` sent at 0, its reply
    back at 0.225 s, completed at 1.009 s; QEMU's clock started when it read the command: total-time 787 ms."""
    clock = timing.HostClock(0.0, 0.228, 1.009, "QEMU timestamps", returned_t=0.225)
    assert not timing.total_time_vs_host(timing.HostClock(0.0, 0.228, 1.009, "QEMU timestamps"),
                                         {"total-time": 787}, 0.9, 1.02).passed
    assert timing.total_time_vs_host(clock, {"total-time": 787}, 0.9, 1.02, rounding_ms=3).passed
    # basic-total-time-misreported (counted from the last iteration) stays far below the scaled low end
    assert not timing.total_time_vs_host(clock, {"total-time": 20}, 0.9, 1.02, rounding_ms=3).passed
