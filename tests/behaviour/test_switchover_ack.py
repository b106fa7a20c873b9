"""switchover-ack — with the return path, the source does not switch over before the destination's ACK (QEMU 8.1;
upstream has no qtest of its own: vfio is the one device that asks for an ack, and this guest has none).

What QEMU 10.0.2 does (migration/savevm.c, migration/migration.c): the destination counts the devices whose
switchover_ack_needed() says yes (trace loadvm_state_switchover_ack_needed "pending num=N"); with none it sends the
ACK at once when the return path opens (MIG_CMD_OPEN_RETURN_PATH); the source's return-path thread takes it
(trace source_return_path_thread_switchover_acked), and migration_can_switchover() keeps a running guest's
precopy iterating until then.

Oracles and what anchors each (the declared outcome: completes):
  (1) completed, host RAM hashes equal, seqinc invariant on the destination (scenarios.precopy_with_integrity);
  (2) the destination's own count of devices needing an ack is 0 (its trace: what makes the immediate ACK the
      expected path), and the source received exactly one ACK (its trace);
  (3) the ACK reached the source before the source stopped its vCPUs for the switchover: the trace record's
      wall-clock time against QEMU's own STOP event stamp (both the host's wall clock, read by the source QEMU).
What this guest cannot show: a source that ignores the ACK (no device delays it, so it comes before the first
pass ends either way). regressions/switchover-ack-never-sent-without-devices.patch (the destination never sends
the ACK when no device asks for one) leaves the source iterating: the migration never completes — caught by (1).
"""

from __future__ import annotations

import re

import pytest

from harness.analysis import oracles
from harness.analysis.trace import parse_file
from harness.migration.config import MigrationConfig
from harness.migration.scenarios import precopy_with_integrity
from harness.migration.testbed import Pair, Testbed

ACKED = "source_return_path_thread_switchover_acked"
NEEDED = "loadvm_state_switchover_ack_needed"
TRACE_EVENTS = (ACKED, NEEDED)
# Without the ACK the source iterates with nothing left to send, a dirty sync each time round: ~870 000 passes in
# 120 s here under the regression, whose MIGRATION_PASS events once took the harness past 13 GB; the QMP session
# now keeps at most harness.qemu.qmp.MAX_EVENTS_PER_NAME of one event and counts the rest, so events stay on (the
# host-clock timing checks of every completed migration read them).
SWITCHOVER_ACK = MigrationConfig(capabilities={"return-path": True, "switchover-ack": True})


@pytest.mark.needs(capabilities=["switchover-ack", "return-path"], trace_events=TRACE_EVENTS)
def test_source_switches_over_after_the_destinations_ack(testbed: Testbed) -> None:
    source = testbed.boot(trace_events=TRACE_EVENTS)
    pair = Pair(source, testbed.incoming(source, paused=True))
    precopy_with_integrity(testbed, pair, SWITCHOVER_ACK, dirty_mibps=0)            # (1)

    pending = [int(m[1]) for r in parse_file(pair.destination.files.trace).named(NEEDED)
               if (m := re.search(r"num=(\d+)", r.args))]
    acks = [r.t for r in parse_file(source.files.trace).named(ACKED)]
    stops = [e.wall for e in source.qmp.events if e.name == "STOP" and e.wall is not None]
    testbed.artefacts.write_json("switchover-ack", {"pending": pending, "acks": acks, "stops": stops})
    testbed.artefacts.verdict(                                                       # (2)
        oracles.equals("destination: devices needing a switchover ack", pending, [0],
                       f"its {NEEDED} trace (no vfio device in this guest)"),
        oracles.equals("source: switchover ACKs received", len(acks), 1, f"its {ACKED} trace"))
    first_stop = min(stops) if stops else None
    ack = acks[0] if acks and acks[0] is not None else None
    before = ack is not None and first_stop is not None and ack <= first_stop
    testbed.artefacts.verdict(oracles.Verdict(                                       # (3)
        "source: the ACK came before it stopped the vCPUs for the switchover", before,
        None if ack is None or first_stop is None else round(first_stop - ack, 6), "> 0 s",
        f"ACK at {ack}, first STOP event at {first_stop} (host wall clock, both read by the source QEMU)"))
