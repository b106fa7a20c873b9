"""Unit tests of the harness's process lifecycle and verdict classification (no QEMU: plain processes and
recorded series)."""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from harness.qemu.arch import arch_spec
from harness.vm.exits import ExitInfo, QemuExited
from harness.vm.config import MachineConfig
from harness.vm.machine import Machine
from harness.analysis.cancel import classify_cancel, is_channel_error
from harness.analysis.progress import convergence_note
from harness.migration.config import CancelNotHonoured
from harness.analysis.samples import Series
from harness.core.units import MiB


# -- cancel classification ---------------------------------------------------------------------------------------
def recorded(final_status: str, error: str | None = None, t_cancel: float = 10.0,
             dt: float = 0.003) -> Series:
    """A series as the sampler records it: active samples, the migrate_cancel mark, the terminal MIGRATION event
    ~3 ms later, then a reply (asked after the event) carrying error-desc — the shape of B0's false alarms."""
    series = Series(t0=0.0, hz=100.0)
    for i in range(5):
        t = t_cancel - 0.05 * (5 - i)
        series.samples["source"].append({"t": t, "asked": t - 0.001,
                                         "info": {"status": "active", "ram": {"transferred": i * MiB}}})
    series.marks.append({"t": t_cancel, "what": "migrate_cancel"})
    series.events["source"].append({"t": t_cancel + 0.001, "event": "MIGRATION", "data": {"status": "cancelling"}})
    series.events["source"].append({"t": t_cancel + dt, "event": "MIGRATION", "data": {"status": final_status}})
    info: dict[str, Any] = {"status": final_status}
    if error is not None:
        info["error-desc"] = error
    series.samples["source"].append({"t": t_cancel + 0.02, "asked": t_cancel + 0.01, "info": info})
    return series


def test_clean_cancel_is_cancelled() -> None:
    outcome = classify_cancel(recorded("cancelled"))
    assert (outcome.kind, outcome.accepted, outcome.channel_error_race) == ("cancelled", True, False)
    assert outcome.seconds_after_cancel == pytest.approx(0.003)


@pytest.mark.parametrize("error", ["Channel error: Input/output error", "Unable to write to socket: Broken pipe"])
def test_channel_error_after_cancel_is_the_cancels_outcome(error: str) -> None:
    """B0 lost 2 of 9 runs on unmodified 10.0.2 to exactly these: accepted, and flagged as a possible race."""
    outcome = classify_cancel(recorded("failed", error))
    assert outcome.accepted and outcome.kind == "failed-channel-error" and outcome.channel_error_race
    assert outcome.error_desc == error and outcome.to_json()["seconds_after_cancel"] == pytest.approx(0.003)


def test_other_failure_after_cancel_is_not_accepted() -> None:
    outcome = classify_cancel(recorded("failed", "Failed to load device state"))
    assert not outcome.accepted and outcome.kind == "failed-other"


def test_completion_after_cancel_is_not_accepted() -> None:
    outcome = classify_cancel(recorded("completed"))
    assert not outcome.accepted and outcome.kind == "completed"


def test_still_cancelling_is_not_an_outcome() -> None:
    series = recorded("cancelled")
    series.events["source"].pop()
    series.samples["source"].pop()
    assert classify_cancel(series).kind == "not-ended"


def test_series_without_a_cancel_cannot_be_classified() -> None:
    series = recorded("cancelled")
    series.marks.clear()
    with pytest.raises(ValueError):
        classify_cancel(series)


def test_classification_survives_the_json_round_trip() -> None:
    series = Series.from_json(recorded("failed", "Channel error: Input/output error").to_json())
    assert classify_cancel(series).kind == "failed-channel-error"


def test_channel_error_markers() -> None:
    assert is_channel_error("Unable to write to socket: Connection reset by peer")
    assert not is_channel_error("No space left on device")
    assert not is_channel_error(None)
    assert issubclass(CancelNotHonoured, AssertionError)


# -- stall message --------------------------------------------------------------------------------------------
def sampled(left_per_pass: list[float]) -> Series:
    """A precopy sampled at 10 Hz, one pass per second: remaining falls to 0, then each sync leaves the set
    re-dirtied in that pass (`left_per_pass`, MiB)."""
    series = Series(t0=0.0, hz=10.0)
    t = 0.0
    for count, left in enumerate(left_per_pass, start=1):
        for i in range(10):
            series.samples["source"].append({"t": t, "info": {"status": "active", "ram": {
                "remaining": left * MiB * (10 - i) / 10, "dirty-sync-count": count, "page-size": 4096,
                "dirty-pages-rate": 639, "mbps": 20.97}}})
            t += 0.1
    return series


def test_convergence_note_says_not_converging() -> None:
    note = convergence_note(sampled([256, 30, 29, 30]))
    assert "still 'active'" in note, note
    assert "left after the last two dirty syncs: 29.0 → 30.0 MiB (not converging: the re-dirtied set did not " \
           "shrink), dirty-sync-count 4" in note, note
    assert "dirty-pages-rate 2.5 MiB/s, throughput 2.5 MiB/s" in note, note


def test_convergence_note_says_converging() -> None:
    assert "(converging)" in convergence_note(sampled([256, 30, 12, 4]))
    assert "too early to tell" in convergence_note(sampled([256, 30]))
    assert "no query-migrate sample" in convergence_note(Series(t0=0.0, hz=10.0))


# -- exits ----------------------------------------------------------------------------------------------------
class _NoBinary:
    def base_args(self) -> list[str]:
        return []


@pytest.fixture
def machine(tmp_path: Path) -> Any:
    """A Machine whose 'QEMU' is a plain shell command: the watcher, listeners and exit judgement are the code
    under test, not QEMU."""
    m = Machine(_NoBinary(), None, MachineConfig(arch=arch_spec("x86_64")), "source", tmp_path)  # type: ignore[arg-type]
    yield m
    m.kill()


def start(machine: Machine, script: str) -> None:
    machine._start(["sh", "-c", script])


def test_exit_is_noticed_at_once_and_listeners_hear_of_it(machine: Machine) -> None:
    heard = threading.Event()
    machine.on_exit(lambda _m: heard.set())
    t0 = time.monotonic()
    start(machine, "sleep 0.2; kill -ABRT $$")
    assert heard.wait(5)
    assert time.monotonic() - t0 < 1.5
    assert machine.exit_info is not None and machine.exit_info.signal == signal.SIGABRT
    assert machine.unexpected_exit()
    abnormal = machine.abnormal_exit()
    assert isinstance(abnormal, QemuExited) and abnormal.signal_name == "SIGABRT"
    assert "killed by SIGABRT" in str(abnormal) and "not asked to" in str(abnormal)


def test_listener_registered_after_the_exit_is_called_at_once(machine: Machine) -> None:
    start(machine, "exit 3")
    assert machine.wait_exit(5) is not None
    heard = []
    machine.on_exit(heard.append)
    assert heard == [machine]
    assert machine.abnormal_exit() is not None and "exit status 3" in str(machine.abnormal_exit())


def test_harness_kill_is_not_abnormal(machine: Machine) -> None:
    start(machine, "sleep 30")
    machine.kill()
    assert machine.exit_info is not None and machine.exit_info.signal == signal.SIGKILL
    assert not machine.unexpected_exit() and machine.abnormal_exit() is None


def test_sigkill_not_from_the_harness_is_abnormal_unless_declared(machine: Machine) -> None:
    start(machine, "sleep 30")
    machine.send_signal(signal.SIGKILL)
    machine.wait_exit(5)
    assert machine.unexpected_exit() and machine.abnormal_exit() is not None
    machine.expect_exit("the test killed it")
    assert not machine.unexpected_exit() and machine.abnormal_exit() is None


def test_declared_exit_never_covers_a_crash(machine: Machine) -> None:
    machine.expect_exit("the test will kill it", signals=(signal.SIGKILL, signal.SIGABRT))
    start(machine, "kill -ABRT $$")
    machine.wait_exit(5)
    assert machine.unexpected_exit() and machine.abnormal_exit() is not None


def test_expectation_is_withdrawn_after_its_block(machine: Machine) -> None:
    start(machine, "sleep 0.5; exit 1")
    with machine.expect_exit("not now"):
        pass
    machine.wait_exit(5)
    assert machine.unexpected_exit()


def test_status_1_on_quit_is_abnormal(machine: Machine) -> None:
    """What shutdown() sees when QEMU fails on `quit`: harness asked for an exit, but not for exit status 1."""
    start(machine, "exit 1")
    machine._harness_ended = "quit"
    machine.wait_exit(5)
    abnormal = machine.abnormal_exit()
    assert abnormal is not None and "on quit" in str(abnormal) and "exit status 1" in str(abnormal)


def test_exit_describe() -> None:
    assert ExitInfo(-9, 0.0).describe() == "killed by SIGKILL"
    assert ExitInfo(0, 0.0).describe() == "exit status 0"
    error = QemuExited("destination-x", ExitInfo(-6, 0.0), "qemu: assertion failed", side="destination")
    assert str(error).startswith("destination QEMU (destination-x) killed by SIGABRT")


# -- the non-converging window's reading of one arm ------------------------------------------------------------------
def test_arm_window_counts_the_syncs_after_the_first_pass_and_optionally_the_one_that_opened_it() -> None:
    """ArmWindow (scenarios.non_converging_window's result): increments in (t_start, t_end] by default — B4's gaps
    start at the sync that opened the window — and in [t_start, t_end] with include_start; counters over the
    window."""
    from harness.migration.scenarios import ArmWindow
    series = sampled([256, 30, 29, 30, 31])          # dirty-sync-count goes up at t = 1.0, 2.0, 3.0, 4.0
    for i, sample in enumerate(series.samples["source"]):
        sample["info"]["ram"]["transferred"] = i * MiB
    opened = series.samples["source"][10]["t"]       # the sample that saw dirty-sync-count reach 2
    window = ArmWindow("arm", t_start=opened, t_end=opened + 2.05, status="active", trace_times={}, series=series)
    assert [round(t, 1) for t in window.increments("ram.dirty-sync-count")] == [2.0, 3.0]
    assert [round(t, 1) for t in window.increments("ram.dirty-sync-count", include_start=True)] == [1.0, 2.0, 3.0]
    assert window.counters.syncs == 2 and window.counters.transferred_bytes == 20 * MiB
    assert window.to_json()["counters"] == window.counters
