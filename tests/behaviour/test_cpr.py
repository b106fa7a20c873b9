"""CPR — the guest handed to a new QEMU: cpr-reboot through a file, cpr-transfer with its RAM kept in place
(upstream /migration/mode/reboot, /migration/mode/transfer and /transfer/defer, tests/qtest/migration/cpr-tests.c).

What QEMU 10.0.2 does (qapi/migration.json MigMode, migration/cpr*.c):
  cpr-reboot    `migrate` stops the VM itself and saves its state (RAM included unless shared and x-ignore-shared)
                to the URI, a file; a new QEMU with -incoming loads it and the guest continues;
  cpr-transfer  the new QEMU starts with a second `-incoming` of channel type "cpr" (a unix socket) and reads it
                before it opens its monitor; the old QEMU's `migrate` names a main and a cpr channel, sends the
                memory backends' fds over the cpr channel (SCM_RIGHTS), waits for the new QEMU to close it (it is
                listening then), and sends device state only on the main channel: migrate_ram_is_ignored() is
                true for every RAM block in this mode, whose RAM is memory-backend-memfd share=on plus
                `-machine aux-ram-share=on`. A binary without the mode refuses `mode=cpr-transfer`: skipped, naming it.

Oracles and what anchors each:
  (1) cpr-reboot: the source is stopped by the migrate command itself (runstate postmigrate, nothing the test
      did); completed; host RAM hashes equal (both paused); seqcheck on the new QEMU; the stream file's size on the
      host's file system (outside QEMU): ≤ RAM / MAIN_CHANNEL_RAM_FRACTION when RAM is a shared file both QEMUs
      map with x-ignore-shared (upstream's configuration), ≥ SEQINC_MIB when RAM goes in the file;
  (2) cpr-transfer: completed on both sides; bytes on the main channel, counted by the byte-counting relay (the
      transport, outside QEMU) ≤ RAM / MAIN_CHANNEL_RAM_FRACTION — a mechanism-derived absolute: device state is
      kilobytes, while the guest holds ≥ SEQINC_MIB of non-zero pages that any copy of RAM must carry; seqcheck and
      seqinc still advancing on the new QEMU (the guest's memory, in place).
      regressions/cpr-transfer-copies-ram.patch (RAM blocks no longer ignored in cpr-transfer) sends RAM on the main
      channel: (2)'s bytes exceed the bound.
"""

from __future__ import annotations

import dataclasses
import socket
import time

import pytest

from harness.analysis import oracles
from harness.core.units import MiB
from harness.migration.config import MigrationConfig
from harness.migration.relay import StreamRelay
from harness.migration.scenarios import compare_then_check
from harness.migration.testbed import Testbed
from harness.qemu.qmp import ExecuteError
from harness.vm import workloads
from harness.vm.machine import Machine
from harness.vm.workloads import Dirty, SeqInc

SEQINC_MIB = 32
MAIN_CHANNEL_RAM_FRACTION = 64        # main-channel bytes ≤ RAM / 64 (8 MiB for 512 MiB; device state measured:
                                      # see docs/BEHAVIOURS.md "CPR")
TIMEOUT = 120.0
SHARED_RAM = "memory-backend-memfd,share=on"
AUX_RAM_SHARE = ("-machine", "aux-ram-share=on")


def unix_channel(kind: str, path: str) -> dict[str, object]:
    return {"channel-type": kind, "addr": {"transport": "socket", "type": "unix", "path": path}}


def wait_migration(machine: Machine, timeout: float) -> dict[str, object]:
    """query-migrate on `machine` until completed or failed (a QEMU that exits raises at once)."""
    deadline = time.monotonic() + timeout
    while (info := machine.qmp.cmd("query-migrate")).get("status") not in ("completed", "failed"):
        if time.monotonic() > deadline:
            break
        time.sleep(0.1)
    return info


@pytest.mark.needs(parameters=["mode"], capabilities=["x-ignore-shared"])
@pytest.mark.parametrize("shared", [
    pytest.param(False, id="ram-in-file", marks=pytest.mark.slow),   # make check: transfer[defer] stands for CPR
    pytest.param(True, id="shared-ram", marks=pytest.mark.slow),     # upstream's configuration
])
def test_cpr_reboot_continues_the_guest_from_a_file(testbed: Testbed, shared: bool) -> None:
    """shared: RAM in a shared file both QEMUs map, with x-ignore-shared: the stream file holds no RAM (its size, on
    the host's file system, ≤ RAM / MAIN_CHANNEL_RAM_FRACTION); else RAM goes in the file (≥ SEQINC_MIB of it)."""
    backend = f"memory-backend-file,mem-path={testbed.workdir / 'guest-ram'},share=on" if shared else None
    source = testbed.boot(memory_backend=backend)
    seq = workloads.start(source, SeqInc(size_mib=SEQINC_MIB, rate_passes=1))
    config = MigrationConfig(transport="file", parameters={"mode": "cpr-reboot"},
                             capabilities={"x-ignore-shared": shared})
    migration = testbed.migrate(source, None, config)
    migration.wait_status({"completed"}, TIMEOUT)
    stopped_by_migrate = source.runstate()
    size, ram = migration.file_path.stat().st_size, source.config.ram_bytes
    testbed.artefacts.verdict(
        oracles.at_most("stream file size / guest RAM", size / ram, 1 / MAIN_CHANNEL_RAM_FRACTION,
                        anchor=f"x-ignore-shared: RAM stays in the shared file ({size} bytes for {ram})") if shared
        else oracles.at_least("stream file size / seqinc's non-zero pages", size / (SEQINC_MIB * MiB), 1,
                              anchor=f"RAM is in the file ({size} bytes)"))
    destination = testbed.incoming(source, paused=True)
    migration.restore_into(destination)
    final = migration.wait_completed(TIMEOUT)
    testbed.artefacts.write_json("final-query-migrate", final)
    testbed.artefacts.verdict(
        oracles.equals("source runstate after migrate", stopped_by_migrate, "postmigrate",
                       why="cpr-reboot's migrate stops the VM itself"),
        oracles.completed(final))
    _, check = compare_then_check(testbed, source, destination, seq)
    testbed.artefacts.verdict(oracles.guest_invariant(check.passed, check.line))


@pytest.mark.needs(parameters=["mode"])
@pytest.mark.parametrize("defer", [
    pytest.param(True, id="defer"),                                     # upstream /migration/mode/transfer/defer
    pytest.param(False, id="cmdline", marks=pytest.mark.slow),          # upstream /migration/mode/transfer
])
def test_cpr_transfer_keeps_ram_in_place(testbed: Testbed, defer: bool) -> None:
    """defer: the main channel given by migrate-incoming once the monitor is up; else on the command line."""
    source = testbed.boot(memory_backend=SHARED_RAM, extra_args=AUX_RAM_SHARE)
    try:
        source.qmp.cmd("migrate-set-parameters", mode="cpr-transfer")
    except ExecuteError as exc:
        pytest.skip(f"QEMU lacks migration mode 'cpr-transfer' on the source: {exc}")
    seq = workloads.start(source, SeqInc(size_mib=SEQINC_MIB, rate_passes=1))
    cpr_socket, main_socket = testbed.workdir / "cpr.sock", testbed.workdir / "main.sock"
    destination = testbed.incoming(source, connect=False, incoming="defer" if defer else f"unix:{main_socket}",
                                   extra_args=(*AUX_RAM_SHARE, "-incoming",
                                               f"cpr,addr.transport=socket,addr.type=unix,addr.path={cpr_socket}"))
    deadline = time.monotonic() + 30
    while not cpr_socket.exists() and time.monotonic() < deadline:
        destination.raise_if_exited("before listening on the cpr channel")
        time.sleep(0.05)
    relay = StreamRelay(f"unix:{main_socket}", testbed.workdir, "cpr-main")
    try:
        source.qmp.cmd("migrate", channels=[unix_channel("main", relay.uri.removeprefix("unix:")),
                                            unix_channel("cpr", str(cpr_socket))])
        destination.connect(60)   # its monitor opens once it has read the cpr channel
        if defer:
            destination.qmp.cmd("migrate-incoming", channels=[unix_channel("main", str(main_socket))])
        final = wait_migration(source, TIMEOUT)
        incoming = wait_migration(destination, TIMEOUT)
        counts = relay.drain(30)
    finally:
        relay.close()
    testbed.artefacts.write_json("cpr-transfer", {"source": final, "destination": incoming,
                                                  "relay": counts.to_json()})
    ram = source.config.ram_bytes
    testbed.artefacts.verdict(
        oracles.completed(final),
        dataclasses.replace(oracles.completed(incoming), name="incoming migration completed (the new QEMU)"),
        oracles.at_most("main-channel bytes (relay) / guest RAM", counts.sent / ram, 1 / MAIN_CHANNEL_RAM_FRACTION,
                        anchor=f"RAM stays in place: {counts.sent} bytes carried for {ram} of RAM, of which "
                               f"≥ {SEQINC_MIB} MiB non-zero; QEMU's ram.transferred "
                               f"{final.get('ram', {}).get('transferred')}"))
    before, after = workloads.wait_seqinc_advances(destination, seq)
    check = workloads.seqcheck(destination, seq)
    testbed.artefacts.verdict(oracles.progressed("seqinc passes on the new QEMU", before, after, 1),
                              oracles.guest_invariant(check.passed, check.line))


def listening_unix(path: str) -> socket.socket:
    """A unix socket the test itself listens on (never accepting): a connection QEMU makes stays in its backlog,
    where accept() finds it afterwards — the host's view of whether a channel was opened."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(4)
    listener.setblocking(False)
    return listener


def connections(listener: socket.socket) -> int:
    count = 0
    while True:
        try:
            peer, _ = listener.accept()
        except BlockingIOError:
            return count
        peer.close()
        count += 1


@pytest.mark.needs(parameters=["mode"])
def test_cpr_transfer_refuses_ram_it_cannot_keep_in_place(testbed: Testbed) -> None:
    """A guest whose RAM is private (anonymous, no memory-backend share=on, no aux-ram-share) has no fd to hand
    over: QEMU registers a CPR blocker for each such RAM block, for mode cpr-transfer only
    (system/physmem.c ram_block_add_cpr_blocker → migrate_add_blocker_modes(…, MIG_MODE_CPR_TRANSFER, -1)), and
    `migrate` in that mode must refuse — else the new QEMU would start on fresh, empty RAM.

    Oracles and what anchors each (the reference is the configuration: private RAM cannot stay in place):
      - `migrate` in cpr-transfer is refused with QEMU's CPR text (the command's own answer);
      - neither the cpr nor the main channel was opened: sockets the test listens on, counted on the host (no
        QEMU figure);
      - the source runs on and its guest's own dirty counter advances after the refusal;
      - query-migrate's blocked-reasons (QEMU's self-report, beside the above) name the blocker in cpr-transfer and
        not in normal mode — the blocker is the mode's, not the guest's.
    regressions/cpr-blocker-registered-for-wrong-mode.patch (the blocker registered for cpr-reboot instead) lets
    the migration start: caught. (Written after `make mutate`'s survivor migration.c:1825 showed that nothing here
    asked cpr-transfer to refuse; that mutant itself is equivalent — `mode < -1` on the unsigned MigMode is
    `mode != -1` — and is triaged so.)
    """
    source = testbed.boot()
    dirty = workloads.start(source, Dirty(size_mib=16, rate_mibps=4))
    normal = source.qmp.cmd("query-migrate").get("blocked-reasons", [])
    try:
        source.qmp.cmd("migrate-set-parameters", mode="cpr-transfer")
    except ExecuteError as exc:
        pytest.skip(f"QEMU lacks migration mode 'cpr-transfer' on the source: {exc}")
    in_mode = source.qmp.cmd("query-migrate").get("blocked-reasons", [])
    cpr_path, main_path = str(testbed.workdir / "cpr.sock"), str(testbed.workdir / "main.sock")
    with listening_unix(cpr_path) as cpr, listening_unix(main_path) as main:
        refusal = ""
        try:
            source.qmp.cmd("migrate", channels=[unix_channel("main", main_path), unix_channel("cpr", cpr_path)])
        except ExecuteError as exc:
            refusal = str(exc)
        time.sleep(0.5)        # a migration that did start opens its cpr channel at once
        opened = connections(cpr) + connections(main)
        after = source.qmp.cmd("query-migrate")
        if not refusal:
            source.qmp.cmd("migrate_cancel")     # the failure is recorded below; leave no migration running
    source.qmp.cmd("migrate-set-parameters", mode="normal")
    testbed.artefacts.write_json("cpr-blocker", {"refusal": refusal, "opened": opened, "query-migrate": after,
                                                 "blocked-reasons": {"normal": normal, "cpr-transfer": in_mode}})
    before, progressed = dirty.wait_progress(source)
    cpr_reason = "is not compatible with CPR"
    testbed.artefacts.verdict(
        oracles.Verdict("migrate in cpr-transfer refused with QEMU's CPR blocker", cpr_reason in refusal,
                        refusal or "accepted", cpr_reason, "private RAM has no fd to hand over"),
        oracles.equals("channels opened (host sockets)", opened, 0, "a refused migrate connects nowhere"),
        source.still_running("the refused migrate"),
        oracles.progressed("source guest's own dirty counter advances after the refusal", before, progressed, 1),
        oracles.Verdict("blocked-reasons name the CPR blocker in cpr-transfer mode only",
                        any(cpr_reason in r for r in in_mode) and not any(cpr_reason in r for r in normal),
                        {"cpr-transfer": in_mode[:2], "normal": normal[:2]}, cpr_reason,
                        "QEMU's own list for the current mode"))
