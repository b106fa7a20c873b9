"""multifd and postcopy-ram together: refused where the binary cannot combine them, else postcopy with integrity.

What QEMU 10.0.2 does (migration/options.c, migrate_caps_check): setting postcopy-ram with multifd fails with
"Postcopy is not yet compatible with multifd", on either side (the check is the same for a source and for a
destination in -incoming defer), and leaves both capabilities as they were. QEMU 10.1 lifted the restriction
(multifd for the precopy phase, postcopy's page requests on the main channel).

Oracles and what anchors each:
  (1) refused: each side's migrate-set-capabilities fails with QEMU's own message (its words, naming neither side's
      channel), the side that refused is named in the verdict, and afterwards neither capability is on there
      (query-migrate-capabilities) — the refusal changed nothing; a side that accepted while the other refused
      (a 7.2 source: no check) is recorded as not measured, since no migration can follow;
  (2) accepted (a binary that combines them): postcopy_with_integrity with 2 multifd channels: completed through
      postcopy-active, pages faulted in by request, seqcheck on the destination.
No regression patch: a 10.0.2 without the check has no implementation behind it to judge; (1)'s message and (2)'s
integrity are the suite's existing oracle kinds (refusal text, seqcheck) caught elsewhere.
"""

from __future__ import annotations

import pytest

from harness.analysis import oracles
from harness.core.units import MiB
from harness.migration.scenarios import postcopy_with_integrity
from harness.migration.testbed import Pair, Testbed
from harness.qemu.qmp import ExecuteError
from harness.vm.machine import Machine

REFUSAL = "Postcopy is not yet compatible with multifd"
BOTH = {"multifd": True, "postcopy-ram": True}


def set_both(machine: Machine) -> str | None:
    """QEMU's error when `machine` refuses multifd + postcopy-ram in one migrate-set-capabilities, else None."""
    try:
        machine.qmp.cmd("migrate-set-capabilities",
                        capabilities=[{"capability": k, "state": v} for k, v in BOTH.items()])
    except ExecuteError as exc:
        return str(exc)
    return None


def capabilities_on(machine: Machine) -> list[str]:
    return sorted(c["capability"] for c in machine.qmp.cmd("query-migrate-capabilities")
                  if c["state"] and c["capability"] in BOTH)


@pytest.mark.needs(capabilities=["multifd", "postcopy-ram"])
def test_multifd_with_postcopy_is_refused_or_keeps_the_guest(testbed: Testbed, pair: Pair) -> None:
    refusals = {side: set_both(machine) for side, machine in (("source", pair.source),
                                                             ("destination", pair.destination))}
    testbed.artefacts.write_json("multifd-postcopy", {"refusals": refusals})
    if all(error is None for error in refusals.values()):
        postcopy_with_integrity(testbed, pair, postcopy_bandwidth=64 * MiB)     # (2), recorded there
        return
    for side, error in refusals.items():
        machine = getattr(pair, side)
        if error is None:
            # This binary has no check (7.2 accepts the pair, 8.0+ refuses it until 10.1 combines them); with the
            # other side refusing, no migration can show whether it really combines them.
            testbed.artefacts.verdict(oracles.not_measured(
                f"{side} refuses multifd + postcopy-ram with QEMU's message",
                f"the {side} accepted both; the other side refused, so no migration can judge the {side}"))
            continue
        testbed.artefacts.verdict(
            oracles.Verdict(f"{side} refuses multifd + postcopy-ram with QEMU's message",
                            error is not None and REFUSAL in error, error, REFUSAL,
                            f"the {side}'s migrate-set-capabilities: {error or 'accepted'}"),
            oracles.equals(f"{side}'s capabilities after the refusal", capabilities_on(machine), [],
                           why="a refused migrate-set-capabilities changes nothing"))
