"""validate-uuid — the source sends its -uuid and the destination refuses the stream of another VM (QEMU 4.2;
upstream /migration/validate_uuid, _error, _src_not_set, _dst_not_set in tests/qtest/migration/misc-tests.c).

What QEMU 10.0.2 does (migration/savevm.c: the configuration section's "configuration/uuid" subsection is sent
only when the source has a UUID and validate-uuid is on; vmstate_uuid_post_load judges it on the destination):
  same UUID            the migration completes;
  another UUID         the destination fails the load with "UUID received is SRC and local is DST" (error_report)
                       and exits 1; the source fails and its guest runs on;
  source's UUID unset  nothing is sent: it completes and the destination says nothing about UUIDs;
  destination's unset  it accepts with a warning "UUID is received SRC, but local uuid isn't set": it completes.

Oracles and what anchors each:
  (1) the completing cases: completed, host RAM hashes equal, seqinc invariant on the destination
      (scenarios.precopy_with_integrity: the guest's memory itself), and the destination's own output holds exactly
      the UUID lines QEMU documents for the case (none, or the unset warning);
  (2) a mismatch: the refusal is the declared outcome (Outcome.DESTINATION_QUITS: the source fails, the
      destination exits 1); the destination's output holds QEMU's message naming both UUIDs (its own words, not
      the source's channel error); the source still runs and its guest's own dirty counter advances after it.
      regressions/validate-uuid-not-checked.patch (no comparison) completes instead: caught.
"""

from __future__ import annotations

import pytest

from harness.analysis import oracles
from harness.migration.config import MigrationConfig, Outcome
from harness.migration.scenarios import precopy_with_integrity
from harness.migration.testbed import Testbed
from harness.migration.testbed import Pair
from harness.vm import workloads
from harness.vm.machine import Machine
from harness.vm.workloads import Dirty

SOURCE_UUID = "11111111-1111-1111-1111-111111111111"
OTHER_UUID = "22222222-2222-2222-2222-222222222222"
VALIDATE = MigrationConfig(capabilities={"validate-uuid": True})


def uuid_args(uuid: str | None) -> tuple[str, ...]:
    return ("-uuid", uuid) if uuid else ()


def uuid_lines(machine: Machine) -> list[str]:
    """What a QEMU said about UUIDs on its stderr (error_report / warn_report lines)."""
    return [line for line in machine.files.output.read_text(errors="replace").splitlines() if "UUID" in line]


def said(machine: Machine, expected: list[str]) -> oracles.Verdict:
    """The destination's UUID lines are the `expected` messages, in order (each line contains its message)."""
    lines = uuid_lines(machine)
    ok = len(lines) == len(expected) and all(message in line for message, line in zip(expected, lines))
    return oracles.Verdict(f"{machine.name} says about UUIDs what QEMU documents", ok, lines, expected,
                           f"its output's UUID lines: {lines or 'none'}")


@pytest.mark.needs(capabilities=["validate-uuid"])
@pytest.mark.parametrize("source_uuid, destination_uuid, expected", [
    pytest.param(SOURCE_UUID, SOURCE_UUID, [], id="same", marks=pytest.mark.slow),
    pytest.param(None, OTHER_UUID, [], id="source-unset", marks=pytest.mark.slow),
    pytest.param(SOURCE_UUID, None, [f"UUID is received {SOURCE_UUID}, but local uuid isn't set"],
                 id="destination-unset", marks=pytest.mark.slow),
])
def test_validate_uuid_lets_the_same_vm_or_an_unset_side_through(testbed: Testbed, source_uuid: str | None,
                                                                 destination_uuid: str | None,
                                                                 expected: list[str]) -> None:
    source = testbed.boot(extra_args=uuid_args(source_uuid))
    pair = Pair(source, testbed.incoming(source, paused=True, extra_args=uuid_args(destination_uuid)))
    precopy_with_integrity(testbed, pair, VALIDATE, dirty_mibps=0, expected_reports=expected)   # (1), recorded there
    testbed.artefacts.verdict(said(pair.destination, expected))


@pytest.mark.needs(capabilities=["validate-uuid"])
def test_a_mismatched_uuid_is_refused_by_the_destination(testbed: Testbed) -> None:
    source = testbed.boot(extra_args=uuid_args(SOURCE_UUID))
    dirty = workloads.start(source, Dirty(size_mib=32, rate_mibps=8))
    destination = testbed.incoming(source, extra_args=uuid_args(OTHER_UUID))
    config = MigrationConfig(capabilities=VALIDATE.capabilities, expect=Outcome.DESTINATION_QUITS)
    migration = testbed.migrate(source, destination, config, name="mismatched")
    final = migration.wait_outcome(60)                                  # (2): the declared refusal, or raises
    migration.finish()
    testbed.artefacts.write_json("final-query-migrate", final)
    before, after = dirty.wait_progress(source)
    testbed.artefacts.verdict(
        said(destination, [f"UUID received is {SOURCE_UUID} and local is {OTHER_UUID}"]),
        source.still_running("the destination's refusal"),
        oracles.progressed("source guest's own dirty counter advances after the refusal", before, after, 1))
