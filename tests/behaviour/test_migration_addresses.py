"""Ways of telling QEMU where the stream goes: fd: URIs (getfd; a socket pair or a file), add-fd fdsets (with
direct-io: an O_DIRECT member beside the plain one), file: with an offset, the QAPI `channels` argument instead of a
URI, and exec: commands on both sides (upstream /precopy/fd/{tcp,file}, /precopy/file/offset{,/fdset,/bad},
/multifd/file/mapped-ram/fdset{,/dio}, /multifd/tcp/channels/plain/none, /validate_uri/channels/{both_set,none_set},
functional test_migration_with_exec; harness.migration.endpoints hands the address over, and says what the exec:
commands are and why they are safe to run).

Each address is a scenario (data) run by one skeleton, with the declared outcome "completes":
  sockets  precopy with seqinc on a paused pair (scenarios.precopy_with_integrity);
  files    saved and restored into a paused destination (scenarios.saved_and_restored).
Oracles and what anchors each:
  (1) completed, host RAM hashes equal, seqinc invariant on the destination — the guest's memory itself;
  (2) a file with an offset: the OFFSET bytes before it hold the pattern the test wrote there before the
      migration (the test's own bytes), and the stream's first bytes at the offset are QEMU's file magic "QEVM"
      (QEMU_VM_FILE_MAGIC, the format's fixed constant); a file without one has the magic at byte 0;
  (3) fd: the named descriptor was taken by the migration on both sides (closefd then answers "File descriptor
      named 'fd-mig' not found", upstream's end hook); fdset: after remove-fd the source lists no fdset, so QEMU
      closed every descriptor it dup'ed from it (upstream's end hook);
  (4) refusals: `migrate`/`migrate-incoming` with both `uri` and `channels`, or neither, and a bad file offset,
      are refused with QEMU's own error text, no migration starts (the source's query-migrate has no status), the
      source guest runs on and the destination still waits for its stream (runstate inmigrate);
  (5) exec: what the commands moved, counted outside QEMU — the saved file's size on the host's file system, or
      `wc -c` on the source's pipe — equals QEMU's ram.transferred within WIRE_SLACK (QEMU counts every byte it
      writes to the stream: measured equal to the byte, see WIRE_SLACK). Recorded under the relay's verdict name
      (oracles.CARRIED_VS_REPORTED), which the known bug ram-transferred-miscount of QEMU < 8.2 names; the pipe's
      count also stands in for the relay in the mbps self-report check.
direct-io needs O_DIRECT on the work dir's filesystem: without it the case skips, naming the filesystem's refusal.
Regressions: file-offset-ignored-on-write (2), channels-accepted-with-uri (4).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from harness.analysis import oracles
from harness.migration.config import MigrationConfig
from harness.hosts.capabilities import o_direct_refusal
from harness.migration.endpoints import CHANNELS, EXEC, FD, FD_NAME, FDSET, FDSET_ID, channels_for
from harness.migration.migrate import Migration
from harness.migration.scenarios import precopy_with_integrity, saved_and_restored
from harness.migration.testbed import Pair, Testbed
from harness.qemu.qmp import ExecuteError
from harness.vm.machine import Machine

OFFSET = 0x1000             # upstream's FILE_TEST_OFFSET
MAGIC = b"QEVM"             # QEMU_VM_FILE_MAGIC 0x5145564d, big-endian at the stream's start
MULTIFD = {"capabilities": {"multifd": True}, "parameters": {"multifd-channels": 2}}
CHANNELS_ARGUMENT = {"command_arguments": ["migrate.channels", "migrate-incoming.channels"]}
# file: URIs (and fd: of a file) came with the channels argument (QEMU 8.2, whose MigrationAddress has the 'file'
# transport); no schema entry names the URI scheme itself, so the argument stands for both.
FILE_URI = CHANNELS_ARGUMENT
MAPPED_RAM = {"capabilities": {"mapped-ram": True, "multifd": True}, "parameters": {"multifd-channels": 2}}
MAPPED_RAM_DIO = {"capabilities": MAPPED_RAM["capabilities"],
                  "parameters": {**MAPPED_RAM["parameters"], "direct-io": True}}
# exec: bytes the commands moved − ram.transferred. QEMU counts each write to the stream (qemu_fflush); measured
# on the unmodified 10.0.2 (TCG here): 0 to the byte in 5 runs of each case (114.9–115.5 MB: wc -c on the pipe, the
# saved file's size). The same slack as test_page_lifecycle's relay.
WIRE_SLACK = 4096


@dataclass(frozen=True)
class Address:
    id: str
    config: MigrationConfig
    fast: bool = False           # in `make check`; the others are `slow`
    needs: dict[str, Any] = field(default_factory=dict)

    def param(self) -> Any:
        return pytest.param(self, id=self.id,
                            marks=[pytest.mark.needs(**self.needs)] + ([] if self.fast else [pytest.mark.slow]))


def config(transport: str = "unix", **fields: Any) -> MigrationConfig:
    return MigrationConfig(transport=transport, **fields)


SOCKETS = [
    Address("fd-socketpair", config(address=FD), fast=True),                     # /precopy/fd/tcp
    Address("channels-unix", config(address=CHANNELS), needs=CHANNELS_ARGUMENT),
    Address("channels-tcp-multifd", config("tcp", address=CHANNELS, **MULTIFD),   # /multifd/tcp/channels/plain/none
            needs={"capabilities": ["multifd"], **CHANNELS_ARGUMENT}),
    Address("exec-pipe", config(address=EXEC)),    # functional test_migration_with_exec (a FIFO, not nc)
]
FILES = [
    Address("file-offset", config("file", file_offset=OFFSET), needs=FILE_URI),  # /precopy/file/offset (140 s)
    Address("fd-file", config("file", address=FD), needs=FILE_URI),                         # /precopy/fd/file
    Address("fdset-offset", config("file", address=FDSET, file_offset=OFFSET), needs=FILE_URI),
                                                                                 # /precopy/file/offset/fdset
    Address("fdset-mapped-ram", config("file", address=FDSET, file_offset=OFFSET, **MAPPED_RAM),
            needs={"capabilities": ["mapped-ram"]}),                             # /multifd/file/mapped-ram/fdset
    Address("channels-file-offset", config("file", address=CHANNELS, file_offset=OFFSET), needs=FILE_URI),
    Address("fdset-mapped-ram-dio", config("file", address=FDSET, file_offset=OFFSET, **MAPPED_RAM_DIO),
            needs={"capabilities": ["mapped-ram"], "parameters": ["direct-io"]}),
                                                                                 # /multifd/file/mapped-ram/fdset/dio
    Address("exec-file", config("file", address=EXEC)),            # exec:cat > FILE (upstream's analyze-script)
]


def prefix_pattern(length: int) -> bytes:
    """What the test writes before the offset: no run of it looks like a stream header."""
    return bytes((i * 7 + 13) % 251 for i in range(length))


def descriptor_taken(machine: Machine) -> oracles.Verdict:
    """(3) fd: the migration took the named descriptor (closefd no longer finds it)."""
    try:
        machine.qmp.cmd("closefd", fdname=FD_NAME)
        answer = "closefd succeeded: the descriptor was still there"
    except ExecuteError as exc:
        answer = str(exc)
    expected = f"File descriptor named '{FD_NAME}' not found"
    return oracles.equals(f"{machine.name}: the migration took descriptor {FD_NAME!r}", answer, expected,
                          "closefd's answer after the migration")


def exec_bytes_match(moved: int | None, final: dict[str, Any], counted_by: str) -> oracles.Verdict:
    """(5) what the exec: commands moved (counted outside QEMU) against QEMU's ram.transferred."""
    reported = final.get("ram", {}).get("transferred", 0)
    if moved is None:
        return oracles.Verdict(oracles.CARRIED_VS_REPORTED, False, None, [-WIRE_SLACK, WIRE_SLACK],
                               f"no count from {counted_by}")
    return oracles.carried_matches_reported(moved, reported, WIRE_SLACK, f"counted by {counted_by}")


def fdset_released(machine: Machine) -> oracles.Verdict:
    """(3) fdset: after remove-fd no fdset is left, so QEMU closed each descriptor it dup'ed from the set."""
    machine.qmp.cmd("remove-fd", **{"fdset-id": FDSET_ID})
    left = machine.qmp.cmd("query-fdsets")
    return oracles.equals(f"{machine.name}: no fdset left after remove-fd", left, [], "query-fdsets")


@pytest.mark.parametrize("address", [a.param() for a in SOCKETS])
def test_precopy_over_each_socket_address_keeps_ram_identical(testbed: Testbed, paused_pair: Pair,
                                                              address: Address) -> None:
    final = precopy_with_integrity(testbed, paused_pair, address.config, dirty_mibps=0)      # (1)
    if address.config.address == EXEC:
        moved = testbed.migrations[-1].handoff.piped_bytes()
        testbed.artefacts.verdict(exec_bytes_match(moved, final, "wc -c on the source's pipe"))
    if address.config.address == FD:
        testbed.artefacts.verdict(descriptor_taken(paused_pair.source), descriptor_taken(paused_pair.destination))


@pytest.mark.parametrize("address", [a.param() for a in FILES])
def test_file_save_restore_over_each_address_keeps_ram_and_prefix(testbed: Testbed, guest: Machine,
                                                                  address: Address) -> None:
    if address.config.parameters.get("direct-io") and (refusal := o_direct_refusal(testbed.workdir)):
        pytest.skip(refusal)
    offset = address.config.file_offset
    pattern = prefix_pattern(offset)

    def write_prefix(migration: Migration) -> None:
        migration.file_path.write_bytes(pattern)

    def judge_file(migration: Migration) -> None:                  # (2), before a restore that may fail on it
        with migration.file_path.open("rb") as stream:
            prefix, magic = stream.read(offset), stream.read(len(MAGIC))
        differs = next((i for i, (a, b) in enumerate(zip(prefix, pattern)) if a != b), None)
        testbed.artefacts.verdict(
            oracles.equals(f"the {offset} bytes before the offset are the test's pattern", prefix == pattern, True,
                           f"{len(prefix)} bytes read, first differing byte: {differs}"),
            oracles.equals(f"QEMU's file magic at byte {offset}", magic.decode("latin-1"), MAGIC.decode(),
                           "QEMU_VM_FILE_MAGIC"))

    migration, final = saved_and_restored(testbed, guest, address.config, before_start=write_prefix,
                                          after_save=judge_file)                                    # (1)
    if address.config.address == EXEC:
        testbed.artefacts.verdict(exec_bytes_match(migration.file_path.stat().st_size, final,
                                                   "the saved file's size"))
    if address.config.address == FD:
        testbed.artefacts.verdict(descriptor_taken(guest))
    if address.config.address == FDSET:
        testbed.artefacts.verdict(fdset_released(guest))


@dataclass(frozen=True)
class Refusal:
    id: str
    side: str                 # "source" (migrate) or "destination" (migrate-incoming)
    arguments: str            # "both" (uri and channels), "none", or "bad-offset"
    expected: str             # QEMU's error text (migration/migration.c, migration/file.c)


NEED_ONE = "need either 'uri' or 'channels' argument"
REFUSALS = [
    Refusal("migrate-both-set", "source", "both", NEED_ONE),                  # /validate_uri/channels/both_set
    Refusal("migrate-none-set", "source", "none", NEED_ONE),                  # /validate_uri/channels/none_set
    Refusal("incoming-both-set", "destination", "both", NEED_ONE),
    Refusal("incoming-none-set", "destination", "none", NEED_ONE),
    Refusal("bad-offset", "source", "bad-offset", "file URI has bad offset 0x20M"),   # /precopy/file/offset/bad
]


def refused_arguments(refusal: Refusal, uri: str) -> dict[str, Any]:
    if refusal.arguments == "both":
        return {"uri": uri, "channels": channels_for(uri)}
    if refusal.arguments == "bad-offset":
        return {"uri": f"file:{uri.removeprefix('unix:')}.img,offset=0x20M"}   # not a size qemu_strtosz reads
    return {}


@pytest.mark.needs(**CHANNELS_ARGUMENT)
def test_contradictory_or_missing_addresses_are_refused(testbed: Testbed, pair: Pair) -> None:
    """(4), every refusal on one pair: each leaves both QEMUs as they were, so the next one means the same."""
    uri = f"unix:{testbed.workdir / 'refused.sock'}"
    # What query-migrate says before any refusal: nothing, or (a source restored from the session's warm boot) its
    # own incoming restore's 'completed'. A refused migrate must leave it so.
    status_before = pair.source.qmp.cmd("query-migrate").get("status")
    for refusal in REFUSALS:
        machine = pair.source if refusal.side == "source" else pair.destination
        command = "migrate" if refusal.side == "source" else "migrate-incoming"
        try:
            machine.qmp.cmd(command, **refused_arguments(refusal, uri))
            answer = f"{command} accepted"
        except ExecuteError as exc:
            answer = str(exc)
        testbed.artefacts.verdict(oracles.Verdict(
            f"{refusal.id}: {command} refused with QEMU's text", refusal.expected in answer, answer,
            refusal.expected, f"QEMU answered: {answer}"))
    status = pair.source.qmp.cmd("query-migrate").get("status")
    testbed.artefacts.verdict(
        oracles.equals("no migration started on the source", status, status_before,
                       "the source's query-migrate status, as before the refused commands"),
        pair.source.still_running("the refused commands"),
        oracles.equals("the destination still waits for a stream", pair.destination.runstate(), "inmigrate",
                       "its runstate after the refused migrate-incoming"))
