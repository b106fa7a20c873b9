"""QEMU bugs, fixed upstream, that an older binary under test still has: the one place a verdict depends on a version.

Features are read from the QMP schema (harness.qemu.binary.Features), never from the version. A bug fix leaves no such
footprint, so a test that an old binary fails because of a *known, fixed* QEMU bug would otherwise be a plain
failure in every cross-version run with that binary. A test names the bugs it is exposed to with
`@pytest.mark.known_bug("key")`; when the side the bug lives on runs a version below the fix, under the accelerator
the bug needs, the test becomes an expected failure whose reason names the bug, the side and the fix: non-strict for a race (a
run that happens to pass is not news), strict for a deterministic bug (a pass means the build has the fix). `--assume-fixed KEY` turns an
entry off for a build that carries the fix as a backport (a distribution's stable branch).

A bug with a `workaround` — a guest configuration the buggy code path does not take — is not an expected failure:
its tests run with the workaround applied to every QEMU they start (harness.migration.testbed) and are judged as on
a fixed build; the run header, each such test's platform.json and `make matrix`'s cell say so. A bug with a
`verdict` — one figure QEMU reports wrongly, e.g. about its own stream — makes only the verdicts of that name an
expected failure (harness.report.artefacts.Artefacts.expect_failure): every other verdict of the test, including the
one that measures the same thing independently, is still judged, and the test passes or fails on them. An XFAIL of
the whole test is left only for a bug no configuration avoids and that spoils more than one verdict. A bug that
`hangs` (a QEMU's main loop blocks until the test's deadline, so its monitor answers nothing) makes an affected test
an expected failure before it boots anything: run, it would only show the hang again a minute later.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

from harness.analysis.oracles import CARRIED_VS_REPORTED
from harness.analysis.timing import MBPS_VS_HOST
from harness.qemu.binary import version_numbers


@dataclass(frozen=True)
class Workaround:
    """A guest configuration that keeps the bug's code path out of the run, so a test exposed to it still judges."""
    summary: str                   # one line for the run header, platform.json and the matrix cell
    # MachineConfig overrides (harness.vm.machine) applied to every QEMU of an affected test, on both sides.
    machine: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"summary": self.summary, "machine": dict(self.machine)}


@dataclass(frozen=True)
class KnownBug:
    key: str
    side: str                     # "source" or "destination": where the bug acts
    fixed_in: tuple[int, int]     # first QEMU release (major, minor) with the fix
    accel: str | None             # the accelerator the bug needs ("tcg"), None for any
    fix: str                      # upstream commit and subject
    effect: str                   # what a test sees
    # A race shows in some runs only: a pass is no news (non-strict). A deterministic bug fails every run: a pass
    # means this build has the fix after all (a backport), and says so by failing (strict: --assume-fixed KEY).
    deterministic: bool = False
    workaround: Workaround | None = None
    # The name (its start) of the one verdict the bug makes fail: that verdict alone is an expected failure,
    # strict when the bug is deterministic; the test is judged on the rest (never with a workaround too).
    verdict: str | None = None
    # Verdicts (their names' start) the bug spoils in only some of its tests — a figure derived from the wrong
    # one, wrong enough to fail only where the test makes the error large: expected failures, never strict.
    also_spoils: tuple[str, ...] = ()
    # The verdicts it spoils are recorded by every test (the host-clock checks of every completed migration,
    # harness.migration.self_report): it applies to every test, marked `known_bug` or not.
    every_test: bool = False
    # The bug blocks a QEMU's main loop until the test gives up (its QMP answers nothing): an affected test is an
    # expected failure at once, not run — never strict, since nothing runs to show a build that has the fix.
    hangs: bool = False

    def __post_init__(self) -> None:
        if self.workaround is not None and self.verdict is not None:
            raise ValueError(f"{self.key}: a known bug has a workaround or an expected verdict, not both")
        if self.hangs and (self.workaround is not None or self.verdict is not None):
            raise ValueError(f"{self.key}: a bug that hangs a QEMU spoils the whole test: no workaround or verdict")

    @property
    def handling(self) -> str:
        """What a run with this bug does about it: "workaround", "verdict" (one expected verdict failure), "xfail"
        (the whole test is an expected failure) or "not-run" (an expected failure without running: it would hang)."""
        return ("workaround" if self.workaround else "verdict" if self.verdict else "not-run" if self.hangs
                else "xfail")

    def reason(self, version: str) -> str:
        accel = f", {self.accel.upper()}" if self.accel else ""
        return (f"known QEMU bug on the {self.side} ({version.split()[0]} < {self.fixed_in[0]}.{self.fixed_in[1]}"
                f"{accel}): {self.effect}; fixed by {self.fix} (--assume-fixed {self.key} if this build has it)")


KNOWN_BUGS = {bug.key: bug for bug in [
    KnownBug(
        key="tcg-dirty-tlb",
        side="source", fixed_in=(9, 0), accel="tcg",
        fix="03bfc2188f06 (physmem: Fix migration dirty bitmap coherency with TCG memory access)",
        # Found with the 7.2 → 10.0 matrix: the pages that differ hold older jiffies, timekeeper and hrtimer data
        # and kernel stacks; with guest RAM not a multiple of 256 KiB (the slow path, which does reset the TLB)
        # the same runs keep RAM identical.
        effect="the dirty-bitmap sync's 64-page fast path clears dirty bits without resetting TCG's TLB "
               "write-notdirty state, so later guest stores to those pages are never logged or re-sent: RAM "
               "differs after a live migration and the guest may crash on the destination",
        # The fast path needs the RAM block's length to be a multiple of 64 pages (256 KiB); 8 KiB short of the
        # test's size (QEMU rounds -m to 8 KiB) every sync takes the per-page slow path, which does reset the TLB.
        # Measured: 7.2 -> 10.0 precopy, multifd and cancel-then-migrate keep RAM identical and the guest intact;
        # B5's hot set stays logged (without it the migration converged at once, dirty-pages-rate 0).
        workaround=Workaround(
            "guest RAM 8 KiB short of its size (e.g. -m 524280K for 512 MiB): not a multiple of 256 KiB, so the "
            "dirty-bitmap sync takes its slow path, which resets the TLB", {"ram_short_kib": 8})),
    KnownBug(
        key="serialized-iterative-devices",
        side="source", fixed_in=(9, 0), accel=None, deterministic=True,
        # B1's seed. Distributions have backported it to older versions (e.g. a 7.2 el9 build): --assume-fixed.
        fix="4e1871c450a1 (migration: Don't serialize devices in qemu_savevm_state_iterate())",
        effect="a round ends at the first iterative device that is not finished, so devices after RAM (dirty "
               "bitmaps, VFIO, s390x storage attributes) iterate only once RAM is done"),
    KnownBug(
        key="preempt-requests-wait-for-migration-thread",
        side="source", fixed_in=(8, 0), accel=None,
        # B2 on a 7.2 source (7.2 -> 10.0 and 7.2 -> 7.2; a 10.0 source passes against a 7.2 destination). Source
        # trace (ram_save_queue_pages -> get_queued_page): a request waits p50 0.24 ms, p90 96 ms, p99 98 ms with
        # preempt, the same as without (0.28 / 97 / 98 ms); the guest's stalls follow (p90 95-99 ms). In 8.0 the
        # "preempt-full" series made the return-path thread send a requested page itself
        # (ram_save_host_page_urgent); not bisected inside 7.2..8.0, so the fix named is that series' key commit.
        fix="93589827443e (migration: Send requested page directly in rp-return thread)",
        effect="with postcopy-preempt a requested page still waits in the source's queue for the migration "
               "thread, up to one 100 ms rate-limit window, as without preempt: preempt does not shorten the "
               "guest's stalls"),
    KnownBug(
        key="suspended-runstate-not-migrated",
        side="source", fixed_in=(9, 0), accel=None, deterministic=True,
        # Found with the 7.2 -> 10.0 matrix (test_suspend, every case): the guest suspended itself on the source,
        # the destination came up 'running' and refused system_wakeup ("guest is not in suspended state"). Steve
        # Sistare's series (QEMU 9.0) carries the suspended runstate through migration and wakes into it; not
        # bisected, so the fix is named by that series' subject.
        fix="\"migration: preserve suspended runstate\" (Steve Sistare, QEMU 9.0)",
        effect="a guest suspended to RAM arrives running: the destination is not 'suspended' and refuses "
               "system_wakeup"),
    KnownBug(
        key="suspended-guest-not-woken",
        side="destination", fixed_in=(9, 0), accel=None,
        # Found with the 10.0 -> 7.2 matrix (test_suspend, 3 of 3 cases): migrated live, the 7.2 destination
        # comes up 'suspended' and accepts system_wakeup, but the guest never answers again (SSH unreachable,
        # nothing on its console); stopped first or through postcopy, it comes up 'running' and refuses the
        # wakeup. Not root-caused: the 9.0 series that carries the suspended runstate also reworked how a
        # destination resumes into it, so it is named here, as a hypothesis; non-strict until bisected.
        fix="\"migration: preserve suspended runstate\" (Steve Sistare, QEMU 9.0; the destination side, unbisected)",
        effect="a guest migrated suspended does not resume on the destination: it arrives running (not live, "
               "postcopy) or, woken (live), never runs again"),
    KnownBug(
        key="ram-transferred-miscount",
        side="source", fixed_in=(8, 2), accel=None, deterministic=True,
        # Found with the 7.2 -> 10.0 matrix (multifd compression, zlib and zstd: QEMU's bytes per page 1.01, the
        # relay's 0.02). In 7.2 ram.transferred is ram_counters.transferred: RAM pages and their headers only (the
        # device state and multifd's handshake, ~126 KB here, are written but not counted), and multifd_send_pages
        # adds pages * page size + packet_len when it queues a packet, before the channel compresses it (the rate
        # limit counts the same). cbec7eb76879 (8.1) counts what each channel wrote, without the packet header;
        # 8.2 counts the headers again ("multifd: fix counters in multifd_send_thread", Elena Ufimtseva) and makes
        # ram.transferred every byte written ("migration: Use migration_transferred_bytes()", Juan Quintela).
        fix="cbec7eb76879 (migration/multifd: Compute transferred bytes correctly), completed in 8.2 by "
            "\"migration: Use migration_transferred_bytes()\" and \"multifd: fix counters in multifd_send_thread\"",
        effect="ram.transferred is not what the source wrote: it leaves out what is not RAM (device state, "
               "multifd's handshake) and, with multifd compression, counts every page at full size instead of "
               "the compressed bytes; its final mbps follows (and after a postcopy recovery counts only the new "
               "stream's bytes)",
        verdict=CARRIED_VS_REPORTED,
        # QEMU's mbps divides the bytes it counted by the transfer time: off by the compression ratio (181.5
        # reported against the relay's 10.7 Mbit/s with zlib on 7.2), and after a postcopy recovery 7.2 counts only
        # what the new stream carried (qemu_file_total_transferred of the new to_dst_file: 0.41 of the rate
        # ram.transferred gives); near 1 otherwise.
        also_spoils=(MBPS_VS_HOST,), every_test=True),
    KnownBug(
        key="plain-multifd-destination-ignores-tls-main-channel",
        side="destination", fixed_in=(8, 0), accel=None, deterministic=True, hangs=True,
        # Found with the 10.0 -> 7.2 matrix (test_tls_cases tls-source-only-multifd; 10.0 -> 10.0 passes: the
        # destination quits at once). Evidence, 60 s into 'setup': the 10.0 source's main thread was in
        # recvmsg(fd 18) under gnutls_handshake <- qcrypto_tls_session_handshake <- migration_channel_connect <-
        # qio_task_complete <- main_loop_wait (gdb), its socket blocking, so QMP timed out; the 7.2 destination's
        # main thread idled in ppoll with the 373-byte ClientHello unread in its Recv-Q (ss -tnpi). 7.2's
        # migration_ioc_process_incoming takes the first connection as the main channel and, with multifd
        # (start_migration = !migration_needs_multiple_sockets()), reads nothing on it until every multifd channel
        # has connected; the source opens those only after the main channel's handshake: neither moves. From 8.0
        # the destination peeks the first 4 bytes of every channel (migration_channel_read_peek) to tell main from
        # multifd, so a ClientHello fails that channel at once and the source's handshake ends 'failed' as
        # declared. (The source doing the handshake's blocking read on its main thread is 10.0's own and not
        # fixed there; it only shows when the peer never answers.)
        fix="6720c2b32725 (migration: check magic value for deciding the mapping of channels)",
        effect="with TLS on the source only and multifd, the plain destination never reads the main channel "
               "(it waits for the multifd channels, which the source opens only after that channel's TLS "
               "handshake) and the source's main loop blocks in the handshake's read: its QMP answers nothing "
               "and the migration stays in 'setup' until the destination is killed"),
]}

def release(version: str) -> tuple[int, int] | None:
    """(major, minor) of a QemuBinary.version string ("7.2.22 (Debian 1:7.2+dfsg-7+deb12u18)"), None if unknown.
    A development build (10.0.50 …) counts as its major.minor, which already has every fix of the release before."""
    numbers = version_numbers(version)
    return numbers[:2] if numbers else None


def affecting(keys: Iterable[str], versions: Mapping[str, str], accel: str,
              assume_fixed: frozenset[str]) -> list[tuple[KnownBug, str]]:
    """The named bugs this run has, each with its xfail reason: the bug's side runs a release below the fix
    (versions: side → QemuBinary.version), under the accelerator it needs. An unknown key is a programming error."""
    reasons = []
    for key in keys:
        bug = KNOWN_BUGS[key]
        version = versions[bug.side]
        have = release(version)
        if key in assume_fixed or have is None or have >= bug.fixed_in:
            continue
        if bug.accel is not None and bug.accel != accel:
            continue
        reasons.append((bug, bug.reason(version)))
    return reasons


def describe(bug: KnownBug, reason: str) -> str:
    """One line for the run header: the bug, why this run has it, and what the run does about it."""
    has = reason.split(":", 1)[0].removeprefix("known QEMU bug ")
    if bug.workaround is not None:
        return f"{bug.key} {has}: its tests run with a workaround and are judged — {bug.workaround.summary}"
    if bug.verdict is not None:
        also = "".join(f", '{name}' may fail" for name in bug.also_spoils)
        return (f"{bug.key} {has}: its verdict '{bug.verdict}' is an expected failure{also}, every other verdict "
                f"of its tests is judged")
    if bug.hangs:
        return f"{bug.key} {has}: its tests are expected failures, not run (a QEMU would hang until the deadline)"
    return f"{bug.key} {has}: its tests are expected failures (no workaround)"
