"""Only meaningful across QEMU versions (docs/BEHAVIOURS.md, "Basics": cross-version source and destination binaries).

Given a guest running under the source QEMU version with the machine type and CPU model both versions support
(harness.qemu.compat: e.g. pc-q35-7.2 and Westmere-v1 for 7.2 ↔ 10.0), when its migration stream is loaded by the other
version and that version's stream is loaded back by the first one, then nothing was lost either way:

  - RAM identical after each hop — host-side pmemsave hashes of the paused sides (outside the stream);
  - the vCPU state round-trips — `info registers` of the original source and of the guest back on the same version
    are the same text (the intermediate side never ran: it started with -S, so nothing legitimately changed);
  - the guest is intact after the round trip — it resumes, answers SSH through its virtio-net device (device state
    the other version re-encoded), and its seqinc invariant holds.

The source is stopped (after its workloads have filled RAM) before the first hop, so every page goes over in one
pass after the stop: this judges the stream format and device state across versions, not live dirty tracking (the
basics judge that, on every pair — and catch Debian 7.2's TCG source losing a few pages dirtied just before the
stop, on 7.2 → 7.2 as much as on 7.2 → 10.0).

With one QEMU version on both sides the test cannot say anything: it is skipped with "needs two different QEMU
versions". That is a usage-level reason, not the commit's: a `qmh-bisect-step` (one binary) that selects this test
aborts with 128 naming the skip instead of marking commits 125 — select it only for --qemu-src/--qemu-dst runs
(`make matrix`).
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from harness.analysis import oracles

from harness.vm import workloads
from harness.vm.ram import compare_guest_ram
from harness.vm.machine import Machine
from harness.migration.config import MigrationConfig
from harness.migration.testbed import Testbed
from harness.vm.workloads import Dirty, SeqInc
from harness.core.units import MiB

COMPLETION_TIMEOUT = 120.0
CONFIG = MigrationConfig(parameters={"max-bandwidth": 128 * MiB, "downtime-limit": 300})


def registers(machine: Machine) -> str:
    return machine.qmp.hmp("info registers")


def hop(testbed: Testbed, source: Machine, destination: Machine, name: str) -> None:
    """Migrate source → destination (paused, -S) and check both paused sides hold the same RAM."""
    migration = testbed.migrate(source, destination, CONFIG, name=name)
    final = migration.wait_completed(COMPLETION_TIMEOUT)
    migration.finish()
    testbed.artefacts.write_json(f"{name}-final-query-migrate", final)
    testbed.artefacts.verdict(oracles.completed(final))
    comparison = compare_guest_ram(source, destination, source.config.ram_bytes, testbed.workdir)
    testbed.artefacts.write_json(f"{name}-ram-comparison", comparison)
    testbed.artefacts.verdict(replace(oracles.ram_identical(comparison), name=f"{name}: host RAM hashes equal"))


def test_stream_loads_on_the_other_version_and_round_trips_back(testbed: Testbed) -> None:
    env = testbed.env
    if env.source_binary.version == env.destination_binary.version:
        pytest.skip(f"needs two different QEMU versions: source and destination are both "
                    f"{env.source_binary.version} (pass --qemu-src and --qemu-dst)")
    source = testbed.boot("source")
    seq = workloads.start(source, SeqInc(size_mib=32, rate_passes=1))
    workloads.start(source, Dirty(size_mib=64, rate_mibps=16))
    source.qmp.cmd("stop")
    other = testbed.incoming(source, name="other-version", paused=True)
    hop(testbed, source, other, "there")
    before = registers(source)

    back = testbed.incoming(other, name="back", paused=True, binary=env.source_binary)
    hop(testbed, other, back, "back")
    after = registers(back)
    testbed.artefacts.write_json("registers", {"source": before, "back": after})
    differing = [f"{a!r} ≠ {b!r}" for a, b in zip(before.splitlines(), after.splitlines()) if a != b]
    testbed.artefacts.verdict(oracles.Verdict(
        "vCPU state round-trips through the other version's stream", before == after, len(differing), 0,
        f"`info registers` on {env.source_binary.version} before and after the round trip: "
        + ("identical" if before == after else f"{len(differing)} line(s) differ, first {differing[:1]}")))

    back.qmp.cmd("cont")
    check = workloads.seqcheck(back, seq)
    testbed.artefacts.verdict(oracles.guest_invariant(check.passed, check.line))
