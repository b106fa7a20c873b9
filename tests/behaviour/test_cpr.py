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
from harness.vm.workloads import SeqInc

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
