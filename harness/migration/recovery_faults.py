"""A postcopy recovery that fails again, as QEMU's /postcopy/recovery/double-failures/{handshake,reconnect}: after the
first break (both sides postcopy-paused), each side is given a channel that leads nowhere, the recovery is tried on
it and fails, and both sides must come back to postcopy-paused, ready for a recovery that works.

The channels are the unpaired ends of two socket pairs made here (passed to each QEMU with `getfd`, used as the URI
`fd:NAME`): each side's peer is an end this process holds, so neither can reach the other. The destination's peer
writes one byte, QEMU_VM_COMMAND, the first byte of a real recovery, so its incoming side starts loading and enters
postcopy-recover; then, by stage:

  handshake  the source's peer stays open and silent: the source connects, enters postcopy-recover and waits for
             the destination's answer to its bitmap request; migrate-pause kicks it back to postcopy-paused;
  reconnect  the source's peer is closed first: its resume fails on its own and it goes back to postcopy-paused
             without being kicked (the event libvirt relies on). Upstream's comment expects that before
             postcopy-recover; 10.0.2 enters postcopy-recover and fails there, writing its bitmap request
             ("resume_prepare() failure detected" in its output).

The destination, on a channel no one will speak on, is kicked back with migrate-pause. Local QEMUs only (fd passing
over the monitor's unix socket).
"""

from __future__ import annotations

import socket

from harness.migration.migrate import Migration

STAGES = ("handshake", "reconnect")
QEMU_VM_COMMAND = b"\x08"
FD_NAME = "fd-recover-fails"


def fail_recovery(migration: Migration, stage: str, timeout: float = 30.0) -> None:
    """Try to recover paused `migration` over dead-end channels so that it fails at `stage`; return once both sides
    are postcopy-paused again (the series carries every status on the way: the test judges them)."""
    if stage not in STAGES:
        raise ValueError(f"stage must be one of {STAGES}, not {stage!r}")
    assert migration.destination is not None
    source_end, source_peer = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    destination_end, destination_peer = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        migration.source.qmp.cmd_with_fd("getfd", source_end.fileno(), fdname=FD_NAME)
        migration.destination.qmp.cmd_with_fd("getfd", destination_end.fileno(), fdname=FD_NAME)
        destination_peer.send(QEMU_VM_COMMAND)
        if stage == "reconnect":
            source_peer.close()
        migration.series.mark(f"recovery bound to fail ({stage})")
        before = len(migration.series.status_changes("source"))

        def source_since() -> list[str]:
            return [status for _, status in migration.series.status_changes("source")[before:]]

        migration.destination.qmp.cmd("migrate-recover", oob=True, uri=f"fd:{FD_NAME}", timeout=timeout)
        migration.source.qmp.cmd("migrate", uri=f"fd:{FD_NAME}", resume=True)
        if stage == "handshake":
            migration.wait(lambda _s: "postcopy-recover" in source_since(), timeout,
                           "the source in postcopy-recover on a channel no one answers")
            migration.series.mark("migrate-pause (source, in its failing recovery)")
            migration.source.qmp.cmd("migrate-pause", oob=True)
        migration.wait(lambda s: "postcopy-recover-setup" in source_since() and s.status("source") == "postcopy-paused",
                       timeout, "the source back in postcopy-paused after its failed recovery")
        migration.wait_status({"postcopy-recover"}, timeout, "destination")
        migration.series.mark("migrate-pause (destination, in its failing recovery)")
        migration.destination.qmp.cmd("migrate-pause", oob=True)
        migration.wait_status({"postcopy-paused"}, timeout, "destination")
    finally:
        for end in (source_end, source_peer, destination_end, destination_peer):
            end.close()

