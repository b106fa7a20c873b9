"""Unit tests of harness.analysis.iteration: iteration rounds rebuilt from trace logs, and device coverage across them."""

from __future__ import annotations

import json

from harness.analysis.iteration import coverage, rounds_from_trace
from harness.analysis.trace import parse_lines

T0 = 1795436775.0


def line(t: float, event: str, args: str = "", tid: int = 4242) -> str:
    return f"{tid}@{T0 + t:.6f}:{event} {args}"


def section(t: float, device: str, section_id: int, ret: int) -> list[str]:
    return [line(t, "savevm_section_start", f"{device}, section_id {section_id}"),
            line(t + 0.001, "savevm_section_end", f"{device}, section_id {section_id} -> {ret}")]


def iterate_round(t: float, *sections: tuple[str, int, int]) -> list[str]:
    out = [line(t, "savevm_state_iterate")]
    for i, (device, section_id, ret) in enumerate(sections):
        out += section(t + 0.002 * (i + 1), device, section_id, ret)
    return out


def switchover(t: float) -> list[str]:
    """postcopy_start, then full device state sections that belong to no round."""
    return [line(t, "postcopy_start"), line(t, "migration_completion_vm_stop", "ret 0"),
            *section(t + 0.001, "timer", 0, 0), *section(t + 0.002, "cpu", 5, 0)]


def completion(t: float) -> list[str]:
    return [line(t, "migration_completion_postcopy_end"), *section(t + 0.001, "ram", 2, 0),
            *section(t + 0.002, "dirty-bitmap", 3, 0), line(t + 0.01, "migration_thread_after_loop")]


def parse(lines: list[str]):  # type: ignore[no-untyped-def]
    return rounds_from_trace(parse_lines(lines).records)


PRECOPY = [line(0.0, "savevm_state_setup"), line(0.0, "migration_thread_setup_complete"),
           *iterate_round(0.01, ("ram", 2, 0)), line(0.05, "migration_rate_limit_pre", "75 ms")]


def test_rounds_interleaved_devices_cover_every_unfinished_lead_round() -> None:
    lines = [*PRECOPY, *switchover(0.1)]
    for k in range(5):
        lines += iterate_round(0.2 + 0.05 * k, ("ram", 2, 0), ("dirty-bitmap", 3, 1))
    lines += iterate_round(0.5, ("ram", 2, 1), ("dirty-bitmap", 3, 1)) + completion(0.6)
    log = parse(lines)
    assert len(log.rounds) == 7
    assert log.rounds[0].devices == ["ram"] and log.rounds[0].budget_exhausted
    assert log.section_counts() == {"ram": 7, "dirty-bitmap": 6}
    # timer, cpu at the switch; ram, dirty-bitmap at completion: outside every round
    assert log.other_sections == 4 and log.unmatched == 0
    result = coverage(log, "ram", "dirty-bitmap", since=T0 + 0.1)
    # the precopy round is before `since`; ram's finishing round (ret 1) is not an unfinished one
    assert (result.lead_rounds, result.with_other, result.skipped, result.budget_exhausted) == (5, 5, 0, 0)
    assert result.fraction == 1.0 and result.other_first_round == 1 and result.lead_last_round == 6
    assert "dirty-bitmap iterated in 5/5 ram rounds" in result.describe()


def test_serialized_rounds_hold_the_second_device_back_until_the_lead_finishes() -> None:
    lines = [*PRECOPY, *switchover(0.1)]
    for k in range(37):
        lines += iterate_round(0.2 + 0.05 * k, ("ram", 2, 0))
    lines += iterate_round(2.2, ("ram", 2, 1), ("dirty-bitmap", 3, 1)) + completion(2.4)
    result = coverage(parse(lines), "ram", "dirty-bitmap", since=T0 + 0.1)
    assert (result.lead_rounds, result.with_other, result.skipped) == (37, 0, 37)
    assert result.fraction == 0.0
    assert result.other_first_round == result.lead_last_round == 38
    assert result.describe().startswith("dirty-bitmap iterated in 0/37 ram rounds")


def test_rounds_that_ran_out_of_budget_are_set_aside_not_blamed() -> None:
    lines = [*iterate_round(-0.2, ("ram", 2, 0)), *switchover(-0.1),
             line(-0.05, "migration_rate_limit_pre", "20 ms")]   # after a boundary: belongs to no round
    for k in range(4):   # lead used the whole budget: the round ends in a rate-limit wait, other skipped by design
        lines += iterate_round(0.1 * k, ("ram", 2, 0)) + [line(0.1 * k + 0.05, "migration_rate_limit_pre", "40 ms")]
        # woken early by an urgent request while still over budget: rounds with no section at all
        lines += [line(0.1 * k + 0.06, "savevm_state_iterate"), line(0.1 * k + 0.061, "migration_rate_limit_pre",
                                                                     "39 ms")]
    lines += iterate_round(0.5, ("ram", 2, 0), ("dirty-bitmap", 3, 0))
    lines += iterate_round(0.6, ("ram", 2, 0))       # budget left, yet no turn for dirty-bitmap
    log = parse(lines)
    assert len(log.rounds) == 11 and sum(r.budget_exhausted for r in log.rounds) == 8
    assert not log.rounds[0].budget_exhausted
    result = coverage(log, "ram", "dirty-bitmap", since=T0 - 0.1)
    assert (result.lead_rounds, result.with_other, result.budget_exhausted, result.skipped) == (6, 1, 4, 1)
    assert result.eligible == 2 and result.fraction == 0.5


def test_robust_to_foreign_lines_inner_events_torn_and_unmatched_sections() -> None:
    lines = [
        *iterate_round(0.0, ("ram", 2, 0), ("dirty-bitmap", 3, 1)),
        "qemu-system-x86_64: warning: something unrelated",
        "wrote 4096/4096 bytes at offset 0",
        line(0.10, "savevm_state_iterate"),
        line(0.11, "savevm_section_start", "ram, section_id 2"),
        line(0.12, "ram_save_iterate_big_wait", "big wait: 51 milliseconds, 64 iterations"),  # inside: ignored
        line(0.13, "savevm_section_end", "ram, section_id 2 -> 0"),
        line(0.14, "savevm_section_start", "dirty-bitmap, section_id 3"),
        line(0.15, "savevm_section_end", "ram, section_id 2 -> 0"),          # does not match its start
        line(0.20, "savevm_state_iterate"),
        line(0.21, "savevm_section_start", "ram, section_id 2"),
        f"4242@{T0 + 0.22:.6f}:savevm_section_end ram, sect",                # torn last line of a killed QEMU
    ]
    log = parse(lines)
    assert [r.devices for r in log.rounds] == [["ram", "dirty-bitmap"], ["ram"], []]
    assert log.unmatched == 3   # the mismatched pair (2) and the start whose end was torn off
    assert log.section_counts() == {"ram": 2, "dirty-bitmap": 1}


def test_a_device_seen_twice_without_a_round_marker_ends_the_round() -> None:
    lines = [*iterate_round(0.0, ("ram", 2, 0), ("dirty-bitmap", 3, 0)),
             *section(0.05, "ram", 2, 0), *section(0.06, "dirty-bitmap", 3, 0)]
    log = parse(lines)
    assert [r.devices for r in log.rounds] == [["ram", "dirty-bitmap"]] and log.other_sections == 2


def test_device_ids_are_inputs_and_empty_logs_are_inconclusive() -> None:
    lines = [*iterate_round(0.0, ("ram", 2, 0), ("s390-storage_attributes", 4, 0)),
             *iterate_round(0.1, ("ram", 2, 0), ("s390-storage_attributes", 4, 1))]
    cmma = coverage(parse(lines), "ram", "s390-storage_attributes")
    assert cmma.fraction == 1.0 and cmma.eligible == 2
    empty = coverage(parse([]), "ram", "0000:00:05.0/vfio")
    assert empty.fraction is None and empty.eligible == 0 and empty.other_first_round is None
    # rounds without trace timestamps are excluded once a start time is asked for
    untimed = rounds_from_trace(parse_lines(["savevm_state_iterate", "savevm_section_start ram, section_id 2",
                                             "savevm_section_end ram, section_id 2 -> 0"]).records)
    assert coverage(untimed, "ram", "x").lead_rounds == 1 and coverage(untimed, "ram", "x", since=0).lead_rounds == 0


def test_json_carries_counts_and_round_structure() -> None:
    log = parse([*iterate_round(0.0, ("ram", 2, 0), ("dirty-bitmap", 3, 1)),
                 line(0.05, "migration_rate_limit_pre", "50 ms")])
    data = json.loads(json.dumps(log.to_json()))
    assert data["section_counts"] == {"ram": 1, "dirty-bitmap": 1}
    assert data["round_list"] == [{"index": 0, "t": T0 + 0.0, "budget_exhausted": True,
                                   "sections": [["ram", 0], ["dirty-bitmap", 1]]}]
    result = coverage(log, "ram", "dirty-bitmap").to_json()
    assert result["fraction"] == 1.0 and result["eligible"] == 1
