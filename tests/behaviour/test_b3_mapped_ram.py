"""B3 — mapped-ram + multifd file migration syncs correctly (seeds/003; QEMU 9.0 mapped-ram series).

With `mapped-ram`, every RAM page has a fixed offset in a seekable file (`file:` URI): a re-dirtied page overwrites
its slot, so the file does not grow with the length of a live save. With multifd, the destination queues the
file's pages to the channels and must wait for them once, after parsing the RAM blocks — never for the per-section
sync packets socket multifd uses (`multifd-flush-after-each-section=on`), which a mapped-ram stream never carries.

Given a guest running seqinc and a dirtier, when it is saved to a file (live, or stopped first) and restored into a
fresh `-incoming defer` QEMU, then: both halves finish within a deadline (a hang fails with the stuck side's
query-migrate, and teardown kills it); the restored RAM equals the saved RAM (host hash: the source is paused after
a completed file save, the destination starts with -S) and the seqinc invariant holds after resume; the file's
allocated size stays within guest RAM plus a small overhead, where a plain (non-mapped-ram) save of the same
dirtying guest grows past guest RAM. mapped-ram with a socket URI is refused by QEMU, in one line, on both sides.

Oracles and what anchors each (#16 audit: none compares a treatment with a control only):
  - save and restore finish within SAVE_DEADLINE_S / RESTORE_DEADLINE_S — absolute deadlines, > 20× the measured
    times: only a hang or a collapse trips them (a uniformly slower build does not, by design);
  - restored RAM equals the saved RAM — an independent measurement outside the migration: host-side pmemsave
    hashes of both paused sides (harness.analysis.integrity), nothing QEMU's file format reports;
  - the seqinc invariant holds after resume — the guest's own view;
  - the file's allocation ≤ guest RAM (QEMU's ram.total) + FILE_OVERHEAD — a mechanism-derived absolute (one
    slot per page, plus headers and a bitmap, sized in FILE_OVERHEAD's comment); the plain-save control in
    test_mapped_ram_file_stays_bounded_while_plain_file_grows only proves the bound can fail;
  - a live save rewrote ≥ MIN_REWRITTEN bytes in place (bytes transferred beyond the allocation) — a floor that
    proves "live" provoked re-dirtied pages;
  - mapped-ram on a socket is refused with QEMU's own message (SEEKABLE_ERROR, from migration/migration.c), in
    one line, and the source keeps running.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from harness.analysis import oracles
from harness.hosts.capabilities import o_direct_refusal

from harness.vm import workloads
from harness.vm.ram import compare_guest_ram
from harness.vm.machine import Machine
from harness.migration.migrate import Migration, wait_runstate
from harness.migration.config import MigrationConfig
from harness.analysis.oracles import Verdict
from harness.qemu.qmp import ExecuteError
from harness.analysis.samples import Series, lookup
from harness.migration.testbed import Testbed
from harness.vm.workloads import Dirty, SeqInc
from harness.core.units import MiB

FLUSH_PROPERTY = "multifd-flush-after-each-section"
SEQINC_MIB = 32
SEQINC_PASSES_PER_S = 1
# Prefilled, so the file's page bitmap has long runs of set bits (a load bug per run of pages shows in the hash);
# re-dirtied at a rate the save converges against.
DIRTY_MIB = 128
DIRTY_RATE_MIBPS = 32
# Twice the guests' dirty rate (seqinc 32 + dirty 32 MiB/s): a live save converges, but over several passes
# (measured: 4–7 dirty syncs, 2–2.7 s), rewriting re-dirtied pages in place; a stopped source takes one pass.
SAVE_BANDWIDTH = 128 * MiB
SAVE_DOWNTIME_MS = 300
# Deadlines: measured on TCG here (2 cores, 512 MiB guest, all 34 configurations) saves take 1.4–2.8 s and
# restores 0.13–0.75 s; the deadlines are over 20× that, so only a hang (or a collapse) trips them.
SAVE_DEADLINE_S = 60.0
RESTORE_DEADLINE_S = 20.0
# Allocated bytes a mapped-ram file may hold beyond the RAM it maps: the file header, a header and page bitmap
# per RAMBlock (1 bit per page: 16 KiB for 512 MiB) and the device state at the end. Measured: a stopped
# source's file allocates 29 KiB more than the bytes the save reports transferred. Each block's page area starts
# 1 MiB-aligned, but the padding is a hole (the apparent size is 5.6 MiB above RAM, the allocation is not).
# 8 MiB leaves room for filesystem allocation granularity and is far below one extra pass over the dirtied set.
FILE_OVERHEAD = 8 * MiB
# A live save must have rewritten at least one pass of seqinc's region in place, or "live" tested nothing:
# bytes transferred beyond the file's allocation (measured 87–151 MiB here).
MIN_REWRITTEN = SEQINC_MIB * MiB


# -- the matrix --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SaveCase:
    channels: int | None          # None: mapped-ram over the main channel only (multifd off)
    live: bool                    # False: the source is stopped before the save
    flush_each_section: bool | None = None   # the -global, on both sides; None: not set (multifd off)
    direct_io: bool = False

    @property
    def id(self) -> str:
        parts = [f"multifd{self.channels}" if self.channels else "nomultifd", "live" if self.live else "paused"]
        if self.flush_each_section is not None:
            parts.append(f"flush{'On' if self.flush_each_section else 'Off'}")
        if self.direct_io:
            parts.append("directio")
        return "-".join(parts)

    def migration_config(self) -> MigrationConfig:
        capabilities = {"mapped-ram": True, **({"multifd": True} if self.channels else {})}
        parameters: dict[str, Any] = {"max-bandwidth": SAVE_BANDWIDTH, "downtime-limit": SAVE_DOWNTIME_MS}
        if self.channels:
            parameters["multifd-channels"] = self.channels
        if self.direct_io:
            parameters["direct-io"] = True
        return MigrationConfig(capabilities=capabilities, parameters=parameters, transport="file")

    def globals(self) -> tuple[str, ...]:
        if self.flush_each_section is None:
            return ()
        return (f"migration.{FLUSH_PROPERTY}={'on' if self.flush_each_section else 'off'}",)

    def needs(self) -> pytest.MarkDecorator:
        return pytest.mark.needs(
            capabilities=["mapped-ram", *(["multifd"] if self.channels else [])],
            parameters=[*(["multifd-channels"] if self.channels else []), *(["direct-io"] if self.direct_io else [])],
            migration_properties=[FLUSH_PROPERTY] if self.flush_each_section is not None else [])


# Representative: multifd with the per-section flush that must be ignored (live), the guard of all three B3 save
# patches. Everything else is the slow matrix — since #35 the single-channel path on a stopped source too.
REPRESENTATIVE = SaveCase(4, True, True)
CHANNELS = (1, 2, 4, 8)
# The multifd factors — channels × live × flush-after-each-section × direct-io — as a pairwise covering array: every
# value of each factor meets every value of each other factor in some case (8 cases instead of the 32 of the full
# product: 24 × ~7.5 s of `make test` on TCG, #35). Each factor reaches a different part of the mapped-ram path —
# the channel count the multifd send/recv threads and how pages are split among them, live the re-dirtied slots
# rewritten in place, the flush property the per-section sync a mapped-ram stream must not wait for, direct-io the
# O_DIRECT alignment of the page area — and no regression patch here needs three of them at once; the rows that the
# patches' `Tests:` name ([multifd4-live-flushOn], [nomultifd-paused]) are in. tests/unit/test_b3_covering.py checks
# the array covers every pair. Rows: channels, live, flush, direct-io.
MULTIFD_CASES = (
    SaveCase(1, True, True, False), SaveCase(1, False, False, True),
    SaveCase(2, True, False, True), SaveCase(2, False, True, False),
    REPRESENTATIVE, SaveCase(4, False, False, True),
    SaveCase(8, True, True, True), SaveCase(8, False, False, False),
)


def matrix() -> list[Any]:
    # flush-after-each-section and direct-io only change anything with multifd.
    cases = [SaveCase(None, live) for live in (True, False)] + list(MULTIFD_CASES)
    return [pytest.param(case, id=case.id,
                         marks=[case.needs()] + ([] if case == REPRESENTATIVE else [pytest.mark.slow]))
            for case in cases]


# -- measurements ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class FileSize:
    apparent: int      # st_size: mapped-ram files are sparse, so this is about the layout, not the disk use
    allocated: int     # st_blocks × 512: what the save really wrote

    @classmethod
    def of(cls, path: Path) -> "FileSize":
        st = path.stat()
        return cls(st.st_size, st.st_blocks * 512)


class FileGrowth:
    """The largest allocated size seen of a file that a running save writes (observed at each sample)."""

    def __init__(self, path: Path) -> None:
        self.path, self.max_allocated, self.observations = path, 0, 0

    def observe(self) -> None:
        if self.path.exists():
            self.max_allocated = max(self.max_allocated, FileSize.of(self.path).allocated)
            self.observations += 1


def first_time(series: Series, side: str, status: str) -> float | None:
    return next((t for t, s in series.status_changes(side) if s == status), None)


def mark_time(series: Series, what: str) -> float:
    return next(m["t"] for m in series.marks if m["what"] == what)


def ended(series: Series) -> str | None:
    """The terminal status this migration announced, if any. From MIGRATION events only: the sampler's first
    query-migrate answers may still show how the machine's previous migration ended (and arrive after this one's
    'setup' event), while the events it keeps are this migration's alone."""
    return next((e["data"].get("status") for e in series.events.get("source", [])
                 if e["event"] == "MIGRATION" and e["data"].get("status") in ("completed", "failed", "cancelled")),
                None)


@dataclass(frozen=True)
class SaveRestore:
    case: str
    save_s: float
    restore_s: float
    source_total_time_ms: int | None
    ram_total: int
    ram_transferred: int
    dirty_syncs: int
    file: FileSize


def timings(case: SaveCase, migration: Migration, final: dict[str, Any]) -> SaveRestore:
    series = migration.series
    saved, restored = first_time(series, "source", "completed"), first_time(series, "destination", "completed")
    assert saved is not None and restored is not None
    return SaveRestore(case.id, saved - mark_time(series, "migrate"),
                       restored - mark_time(series, "migrate-incoming"), final.get("total-time"),
                       int(lookup(final, "ram.total") or 0), int(lookup(final, "ram.transferred") or 0),
                       int(lookup(final, "ram.dirty-sync-count") or 0), FileSize.of(migration.file_path))


def file_bounded(name: str, allocated: int, ram_total: int) -> Verdict:
    bound = ram_total + FILE_OVERHEAD
    return Verdict(name, allocated <= bound, allocated, bound,
                   f"{allocated / MiB:.1f} MiB allocated {'≤' if allocated <= bound else '>'} guest RAM "
                   f"{ram_total / MiB:.1f} MiB + {FILE_OVERHEAD // MiB} MiB overhead")


# -- save, restore, check ----------------------------------------------------------------------------------------
def start_guest_workloads(source: Machine) -> workloads.RunningWorkload:
    seq = workloads.start(source, SeqInc(size_mib=SEQINC_MIB, rate_passes=SEQINC_PASSES_PER_S))
    workloads.start(source, Dirty(size_mib=DIRTY_MIB, rate_mibps=DIRTY_RATE_MIBPS, prefill=True))
    return seq


def save_and_restore(testbed: Testbed, case: SaveCase) -> None:
    if case.direct_io and (reason := o_direct_refusal(testbed.workdir)):
        pytest.skip(reason)
    source = testbed.boot(globals=case.globals())
    seq = start_guest_workloads(source)
    if not case.live:
        source.qmp.cmd("stop")
    migration = testbed.prepare_migration(source, None, case.migration_config(), name="save-restore")
    migration.start()
    final = migration.wait_status({"completed"}, SAVE_DEADLINE_S, "source")
    # A completed file save leaves the source stopped: its RAM is the saved RAM.
    wait_runstate(source, {"postmigrate", "paused"}, 10)

    destination = testbed.incoming(source, paused=True)
    migration.restore_into(destination)
    migration.wait_status({"completed"}, RESTORE_DEADLINE_S, "destination")
    migration.finish()
    result = timings(case, migration, final)
    testbed.artefacts.write_json("save-restore", result)
    testbed.artefacts.verdict(oracles.completed(final))
    if case.live:
        testbed.artefacts.verdict(oracles.progressed(
            "live save rewrote re-dirtied pages in place (bytes transferred beyond the file's allocation)",
            result.file.allocated, result.ram_transferred, MIN_REWRITTEN))
    testbed.artefacts.verdict(file_bounded("mapped-ram file within guest RAM + overhead", result.file.allocated,
                                           result.ram_total))

    comparison = compare_guest_ram(source, destination, source.config.ram_bytes, testbed.workdir)
    testbed.artefacts.write_json("ram-comparison", comparison)
    testbed.artefacts.verdict(oracles.ram_identical(comparison))

    destination.qmp.cmd("cont")
    check = workloads.seqcheck(destination, seq)
    testbed.artefacts.verdict(oracles.guest_invariant(check.passed, check.line))


@pytest.mark.parametrize("case", matrix())
def test_mapped_ram_save_restore_keeps_ram_and_guest(testbed: Testbed, case: SaveCase) -> None:
    save_and_restore(testbed, case)


# -- the file does not grow with a long live save ----------------------------------------------------------------
HOT_SET_MIB = 64             # re-dirtied flat out: far faster than GROWTH_BANDWIDTH, so no pass converges
GROWTH_BANDWIDTH = 128 * MiB
GROWTH_DOWNTIME_MS = 100     # threshold 12.8 MiB ≪ hot set
GROWTH_FACTOR = 1.5          # run until the save has written 1.5 × guest RAM: a plain file must outgrow RAM
COMPLETION_DOWNTIME_MS = 2000


@dataclass(frozen=True)
class LongSave:
    label: str
    ram_total: int
    transferred: int              # when the window closed (a cancelled migration's query-migrate has no "ram")
    seconds: float
    max_allocated: int
    observations: int
    final: FileSize


def long_live_save(testbed: Testbed, source: Machine, label: str, capabilities: dict[str, bool],
                   complete: bool) -> LongSave:
    """A bandwidth-limited live save of the dirtying guest until it has written GROWTH_FACTOR × guest RAM; then
    let it complete (bandwidth and downtime lifted) or cancel it. Tracks the file's allocated size meanwhile."""
    config = MigrationConfig(capabilities=capabilities, transport="file",
                             parameters={"max-bandwidth": GROWTH_BANDWIDTH, "downtime-limit": GROWTH_DOWNTIME_MS})
    migration = testbed.prepare_migration(source, None, config, name=label)
    growth = FileGrowth(migration.file_path)
    migration.start()

    def written_enough(series: Series) -> bool:
        growth.observe()  # called on every new sample: the file's size is followed at the sampling rate
        info = series.latest()
        total = lookup(info, "ram.total") or 0
        return (ended(series) is not None
                or (total > 0 and (lookup(info, "ram.transferred") or 0) >= GROWTH_FACTOR * total))

    def completed(series: Series) -> bool:
        growth.observe()
        return ended(series) == "completed"

    series = migration.wait(written_enough, SAVE_DEADLINE_S * 2, f"{GROWTH_FACTOR} × guest RAM written")
    info = series.latest()
    if ended(series) is not None:
        raise AssertionError(f"{label}: the save ended ({ended(series)}) before writing {GROWTH_FACTOR} × "
                             f"guest RAM: the dirtying did not keep it live, so the scenario measured nothing")
    window_s = series.samples["source"][-1]["t"] - mark_time(series, "migrate")
    if complete:
        # Lift the limits: the hot set fits in one downtime, so the save converges and writes its last pass.
        source.qmp.cmd("migrate-set-parameters", **{"max-bandwidth": 0, "downtime-limit": COMPLETION_DOWNTIME_MS})
        migration.wait(completed, SAVE_DEADLINE_S, "completion after lifting the bandwidth limit")
    else:
        migration.cancel()
        migration.wait_status({"cancelled"}, SAVE_DEADLINE_S)
    growth.observe()
    migration.finish()
    result = LongSave(label, int(lookup(info, "ram.total")), int(lookup(info, "ram.transferred")), window_s,
                      growth.max_allocated, growth.observations, FileSize.of(migration.file_path))
    testbed.artefacts.write_json(f"long-save-{label}", result)
    return result


@pytest.mark.slow    # make check keeps B3 by the multifd4-live-flushOn save/restore and the refusal
@pytest.mark.needs(capabilities=["mapped-ram"])
def test_mapped_ram_file_stays_bounded_while_plain_file_grows(testbed: Testbed) -> None:
    source = testbed.boot()
    workloads.start(source, Dirty(size_mib=HOT_SET_MIB, rate_mibps=0, order="random", prefill=True))
    plain = long_live_save(testbed, source, "plain", {}, complete=False)
    mapped = long_live_save(testbed, source, "mapped-ram", {"mapped-ram": True}, complete=True)
    # The control: under this dirtying, a stream file does outgrow the bound — so the bound can fail.
    testbed.artefacts.verdict(Verdict(
        "plain file outgrows guest RAM + overhead", plain.max_allocated > plain.ram_total + FILE_OVERHEAD,
        plain.max_allocated, plain.ram_total + FILE_OVERHEAD,
        f"plain save wrote {plain.transferred / MiB:.0f} MiB in {plain.seconds:.1f}s; file "
        f"{plain.max_allocated / MiB:.1f} MiB vs guest RAM {plain.ram_total / MiB:.1f} MiB"))
    testbed.artefacts.verdict(file_bounded(
        f"mapped-ram file bounded after writing {GROWTH_FACTOR} × guest RAM",
        max(mapped.max_allocated, mapped.final.allocated), mapped.ram_total))


# -- refused on a socket -----------------------------------------------------------------------------------------
SEEKABLE_ERROR = "Migration requires seekable transport (e.g. file)"   # migration/migration.c


def refusal(action: Any) -> ExecuteError:
    try:
        action()
    except ExecuteError as exc:
        return exc
    raise AssertionError("QEMU accepted mapped-ram over a unix: socket")


def refusal_verdict(side: str, exc: ExecuteError) -> Verdict:
    message = str(exc)   # what the harness shows for a refused command
    ok = message == SEEKABLE_ERROR and "\n" not in message
    return Verdict(f"{side} refuses mapped-ram on unix: in one line", ok, message, SEEKABLE_ERROR,
                   f"{exc.error_class}: {message!r}")


@pytest.mark.needs(capabilities=["mapped-ram"])
def test_mapped_ram_refused_on_socket_uri(testbed: Testbed) -> None:
    source = testbed.boot()
    destination = testbed.incoming(source, paused=True)
    socket_config = MigrationConfig(capabilities={"mapped-ram": True}, transport="unix")
    # Not registered with the testbed: it never gets as far as sampling. start() configures the destination and
    # issues migrate-incoming first, which must refuse.
    incoming = Migration(source, destination, socket_config, testbed.workdir, name="refused-incoming")
    refused_in = refusal(incoming.start)
    refused_out = refusal(testbed.prepare_migration(source, None, socket_config, name="refused").start)
    testbed.artefacts.write_json("refusals", {"incoming": [refused_in.error_class, str(refused_in)],
                                              "outgoing": [refused_out.error_class, str(refused_out)]})
    testbed.artefacts.verdict(refusal_verdict("destination", refused_in))
    testbed.artefacts.verdict(refusal_verdict("source", refused_out))

    # Cleanly: neither side is left half-started — the same two QEMUs then save and restore through a file.
    testbed.artefacts.verdict(source.still_running("the refused migrate",
                                         name="source still running after the refusal"))
    file_config = MigrationConfig(capabilities={"mapped-ram": True}, transport="file")
    migration = testbed.migrate(source, None, file_config, name="after-refusal")
    testbed.artefacts.verdict(oracles.completed(migration.wait_status({"completed"}, SAVE_DEADLINE_S)))
    migration.restore_into(destination)
    migration.wait_status({"completed"}, RESTORE_DEADLINE_S, "destination")
