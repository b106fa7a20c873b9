"""B1 — iterative devices are not serialized (seeds/001, QEMU 4e1871c450a1).

In each iteration round QEMU must give every active iterative device its save_live_iterate call; a device that is
not finished must not hold back the devices after it until it finishes. Before the fix, qemu_savevm_state_iterate()
ended the round at the first device that returned "not finished", so a device registered after RAM (block dirty
bitmaps, s390 storage attributes, VFIO) only got its turn once RAM had nothing left.

Two iterative devices at once on any host: RAM plus block dirty bitmaps. With the `dirty-bitmaps` capability a named
dirty bitmap migrates in postcopy (it iterates only while the source is stopped), so after migrate-start-postcopy
both "ram" and "dirty-bitmap" are active. From the source's trace log we rebuild the rounds and count, among the
rounds where RAM was iterated and still unfinished, those that also iterated the bitmap.

Why max-postcopy-bandwidth is unlimited here: qemu_savevm_state_iterate() also skips the rest of a round once the
bandwidth budget is used up, in every QEMU (the starvation the upstream commit message concedes). Measured on this
host at 16 MiB/s, a correct QEMU iterated the bitmap in 0 of 81 RAM rounds, because RAM used each 100 ms window's
budget itself — such a run cannot tell the builds apart. Unlimited, RAM rounds end on ram_save_iterate()'s 50 ms
time slice with the bitmap's turn still due, and 512 MiB of non-zero guest RAM takes 15–20 of them. The oracle
(harness.analysis.iteration.coverage) still sets aside rounds that ended in a rate-limit wait, should there be any.

On an s390x guest the disk is virtio-blk-ccw (harness/qemu/arch.py) and the test runs unchanged. Where KVM runs the
guest, s390x has a second iterative device of its own: the storage attributes (CMMA, "s390-storage_attributes"),
active in precopy; test_storage_attributes_iterate_alongside_ram applies the same round oracle to RAM plus it.
On TCG QEMU keeps no storage attributes (CMMA needs KVM), so that test is skipped with that reason there, as it is
on other arches.

Oracles and what anchors each (#16 audit: no control arm is involved, so nothing can move a yardstick with them):
  - the dirty bitmap was iterated in ≥ MIN_FRACTION of the unfinished RAM rounds where it was due a turn — a
    mechanism-derived absolute (every active iterative device is called every round: 1.0 by construction, 1.0
    measured; a serialized build 0), counted from QEMU's trace events per round;
  - ≥ MIN_ELIGIBLE_ROUNDS such rounds — a floor: the run provoked overlap at all;
  - the source bitmap marks WRITES × GRANULARITY bytes — the test's own writes (what was put in), and the bitmap
    arrives with the same name, granularity, count (and bits' sha256 where QEMU offers it) — the destination
    compared with what the source held, read from the block layer rather than from the migration stream;
  - the migration completed through postcopy-active — the run tested what it claims.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import pytest
from tenacity import Retrying, retry_if_result, stop_after_delay, wait_fixed

from harness.analysis import iteration

from harness.analysis import oracles

from harness.vm import workloads
from harness.analysis.iteration import Coverage, IterationLog
from harness.vm.config import Disk
from harness.vm.machine import Machine
from harness.migration.config import MigrationConfig
from harness.analysis.oracles import Verdict
from harness.migration.testbed import Testbed
from harness.analysis.trace import parse_file
from harness.vm.workloads import Dirty
from harness.core.units import MiB

TiB = 1 << 40
NODE = "disk0"
BITMAP = "b1-bitmap"
GRANULARITY = 4096
# From the brief's "Measured": 2048 4 KiB writes 512 MiB apart over a 1 TiB disk, each in its own 32 MiB bitmap chunk:
# a 32 MiB bitmap streamed as 2048 data chunks plus ~30 000 all-zero chunk headers.
WRITES = 2048
WRITE_STRIDE = 512 * MiB
DISK = Disk(NODE, {"driver": "null-co", "node-name": NODE, "size": TiB, "read-zeroes": True},
            ",share-rw=on")   # share-rw: HMP qemu-io writes through its own BlockBackend while the device is attached
MEMORY_MIB = 1024
DIRTY_MIB = 512                 # non-zero guest RAM for the postcopy stream: 15–20 RAM rounds of 50 ms
DIRTY_RATE_MIBPS = 8            # keeps the destination's page faults light; prefill makes the pages non-zero
PRECOPY_BANDWIDTH = 64 * MiB    # precopy lasts one round: postcopy is requested as soon as migration is active
POSTCOPY_BANDWIDTH = 0          # unlimited (see the module docstring)
MIN_FRACTION = 0.8              # the bitmap gets ≥ 80 % of the turns it is due (1.0 measured; serialized: 0)
MIN_ELIGIBLE_ROUNDS = 5         # fewer unfinished RAM rounds with budget left: the run provoked nothing
COMPLETION_TIMEOUT = 180.0
BITMAP_SETTLE_TIMEOUT = 30.0
LEAD, OTHER = "ram", "dirty-bitmap"
STORAGE_ATTRIBUTES = "s390-storage_attributes"   # s390x CMMA: the section id QEMU registers (hw/s390x/s390-stattrib.c)
UNLIMITED = 1 << 40             # max-bandwidth in bytes/s that no 100 ms window reaches: rounds end on the time slice
TRACE_EVENTS = iteration.TRACE_EVENTS
SHA256_COMMAND = "x-debug-block-dirty-bitmap-sha256"


@dataclass(frozen=True)
class BitmapState:
    name: str
    granularity: int
    count: int
    busy: bool
    recording: bool
    sha256: str | None      # of the bits themselves, where QEMU offers the (unstable) debug command

    @classmethod
    def query(cls, machine: Machine, node: str = NODE, name: str = BITMAP) -> "BitmapState | None":
        for info in machine.qmp.cmd("query-named-block-nodes", flat=True):
            if info.get("node-name") != node:
                continue
            for bitmap in info.get("dirty-bitmaps", []):
                if bitmap.get("name") == name:
                    return cls(bitmap["name"], bitmap["granularity"], bitmap["count"], bitmap.get("busy", False),
                               bitmap.get("recording", True), bitmap_sha256(machine, node, name))
        return None

    def matches(self, other: "BitmapState") -> bool:
        """Same name, granularity and dirty byte count — and the same bits, when both sides could hash them."""
        same_hash = self.sha256 is None or other.sha256 is None or self.sha256 == other.sha256
        return (self.name, self.granularity, self.count) == (other.name, other.granularity, other.count) \
            and same_hash

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "granularity": self.granularity, "count": self.count, "busy": self.busy,
                "recording": self.recording, "sha256": self.sha256}


def bitmap_sha256(machine: Machine, node: str, name: str) -> str | None:
    if SHA256_COMMAND not in machine.binary.features.commands:
        return None
    return str(machine.qmp.cmd(SHA256_COMMAND, node=node, name=name)["sha256"])


def fill_bitmap(machine: Machine) -> BitmapState:
    """Add the bitmap, then dirty WRITES scattered granules through HMP qemu-io."""
    machine.qmp.cmd("block-dirty-bitmap-add", node=NODE, name=BITMAP, granularity=GRANULARITY)
    for k in range(WRITES):
        out = machine.qmp.hmp(f'qemu-io {NODE} "write -P 90 {k * WRITE_STRIDE} 4k"')
        # HMP qemu-io reports errors as text (its success report goes to QEMU's log, not the monitor).
        if out.strip() and "wrote" not in out:
            raise AssertionError(f"qemu-io write {k} failed: {out.strip()!r}")
    state = BitmapState.query(machine)
    assert state is not None, f"bitmap {BITMAP} not found on {NODE} after block-dirty-bitmap-add"
    return state


def settled_bitmap(machine: Machine, timeout: float = BITMAP_SETTLE_TIMEOUT) -> BitmapState | None:
    """The destination's bitmap once its load has finished (present, not busy); the last answer on timeout."""
    retrying = Retrying(stop=stop_after_delay(timeout), wait=wait_fixed(0.2),
                        retry=retry_if_result(lambda state: state is None or state.busy),
                        retry_error_callback=lambda attempt: attempt.outcome.result() if attempt.outcome else None)
    return retrying(BitmapState.query, machine)


def source_rounds(source: Machine) -> tuple[IterationLog, float | None]:
    """The source's iteration rounds, and the trace-clock time the switch to postcopy began."""
    records = parse_file(source.files.trace).records   # one file per machine ("pid" in it is a thread id)
    switch = next((r.t for r in records if r.name == "postcopy_start"), None)
    return iteration.rounds_from_trace(records), switch


def coverage_verdicts(result: Coverage) -> list[Verdict]:
    lead, other = result.lead, result.other
    provoked = oracles.at_least(f"{lead} rounds in which {other} was due a turn", result.eligible,
                                MIN_ELIGIBLE_ROUNDS, anchor=f"floor: unfinished {lead} rounds with bandwidth budget "
                                                            f"left, or the run did not provoke overlap; {result.describe()}")
    shared = oracles.at_least(f"{other} iterated alongside {lead}", result.fraction or 0.0, MIN_FRACTION,
                              anchor=f"mechanism: every due round; {result.describe()}")
    return [provoked, shared]


def bitmap_verdict(sent: BitmapState, received: BitmapState | None) -> Verdict:
    ok = received is not None and received.matches(sent) and not received.busy
    return Verdict("dirty bitmap arrives intact on the destination", ok,
                   received.to_json() if received else None, sent.to_json(),
                   f"destination {received.to_json() if received else 'has no such bitmap'} vs source "
                   f"{sent.to_json()}: name, granularity, count (and bits' sha256 where available) must match")


# Before the fix (QEMU 9.0) the behaviour is absent: an expected failure there, naming the fix (harness.qemu.known_bugs).
SERIALIZED = pytest.mark.known_bug("serialized-iterative-devices")


@SERIALIZED
@pytest.mark.needs_userfaultfd
@pytest.mark.needs(capabilities=["postcopy-ram", "dirty-bitmaps"], parameters=["max-postcopy-bandwidth"],
                   commands=["migrate-start-postcopy", "block-dirty-bitmap-add", "query-named-block-nodes",
                             "human-monitor-command"],
                   trace_events=TRACE_EVENTS)
def test_dirty_bitmap_iterates_alongside_ram_in_postcopy(testbed: Testbed) -> None:
    source = testbed.boot(disks=(DISK,), memory_mib=MEMORY_MIB, trace_events=TRACE_EVENTS)
    sent = fill_bitmap(source)
    testbed.artefacts.write_json("bitmap-source", sent)
    testbed.artefacts.verdict(oracles.equals("source bitmap marks every write", sent.count, WRITES * GRANULARITY,
                                             f"{WRITES} writes of one {GRANULARITY}-byte granule each"))
    workloads.start(source, Dirty(size_mib=DIRTY_MIB, rate_mibps=DIRTY_RATE_MIBPS, prefill=True))

    destination = testbed.incoming(source)
    config = MigrationConfig(capabilities={"postcopy-ram": True, "dirty-bitmaps": True},
                             parameters={"max-bandwidth": PRECOPY_BANDWIDTH,
                                         "max-postcopy-bandwidth": POSTCOPY_BANDWIDTH})
    started = time.monotonic()
    migration = testbed.migrate(source, destination, config)
    migration.wait_status({"active"}, 30)
    migration.start_postcopy()
    final = migration.wait_completed(COMPLETION_TIMEOUT)
    migration_seconds = time.monotonic() - started
    migration.finish()
    testbed.artefacts.write_json("final-query-migrate", final)
    received = settled_bitmap(destination)
    testbed.artefacts.write_json("bitmap-destination", received)

    log, switch = source_rounds(source)
    result = iteration.coverage(log, LEAD, OTHER, since=switch)
    testbed.artefacts.write_json("iteration-rounds", {
        "postcopy_start_t": switch, "migration_seconds": migration_seconds, "coverage": result,
        "section_counts": log.section_counts(), "log": log})

    testbed.artefacts.verdict(oracles.completed(final), oracles.went_through(migration.series, ["postcopy-active"]),
                               *coverage_verdicts(result), bitmap_verdict(sent, received))


@SERIALIZED
@pytest.mark.needs(trace_events=TRACE_EVENTS)
def test_storage_attributes_iterate_alongside_ram(testbed: Testbed) -> None:
    """s390x under KVM: RAM and the storage attributes (CMMA) both iterate in precopy; every unfinished RAM round
    must give the storage attributes their turn too. Precopy with no bandwidth limit: RAM rounds end on the 50 ms
    time slice (not on a spent budget, which would skip the later device by design), and 512 MiB of non-zero
    guest RAM takes a dozen or more of them."""
    if testbed.env.arch.name != "s390x":
        pytest.skip(f"storage attributes (CMMA) are an s390x device; the guest is {testbed.env.arch.name}")
    if testbed.env.accel.name != "kvm":
        pytest.skip(f"storage attributes need CMMA, which only KVM provides: on {testbed.env.accel.name} QEMU "
                    f"keeps none, so the device never iterates (run on an s390x KVM host, --accel kvm)")
    source = testbed.boot(memory_mib=MEMORY_MIB, trace_events=TRACE_EVENTS)
    workloads.start(source, Dirty(size_mib=DIRTY_MIB, rate_mibps=DIRTY_RATE_MIBPS, prefill=True))
    destination = testbed.incoming(source)
    migration = testbed.migrate(source, destination, MigrationConfig(parameters={"max-bandwidth": UNLIMITED}))
    final = migration.wait_completed(COMPLETION_TIMEOUT)
    migration.finish()
    testbed.artefacts.write_json("final-query-migrate", final)

    log, _ = source_rounds(source)
    result = iteration.coverage(log, LEAD, STORAGE_ATTRIBUTES)
    testbed.artefacts.write_json("iteration-rounds", {"coverage": result, "section_counts": log.section_counts(),
                                                      "log": log})
    testbed.artefacts.verdict(oracles.completed(final), *coverage_verdicts(result))
