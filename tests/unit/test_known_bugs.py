"""Unit tests of harness.qemu.known_bugs: which runs have a known, fixed QEMU bug, and what they do about it."""

from __future__ import annotations

import dataclasses

from harness.qemu.arch import arch_spec
import pytest

from harness.analysis.oracles import CARRIED_VS_REPORTED
from harness.analysis.timing import MBPS_VS_HOST
from harness.qemu.known_bugs import KNOWN_BUGS, KnownBug, Workaround, affecting, describe, release
from harness.vm.machine import MachineConfig

DEBIAN_72 = "7.2.22 (Debian 1:7.2+dfsg-7+deb12u18)"
BACKPORTS_100 = "10.0.2 (Debian 1:10.0.2+ds-2+deb13u1~bpo12+1)"


def test_release_reads_major_minor_of_the_version_line() -> None:
    assert release(DEBIAN_72) == (7, 2)
    assert release("10.0.50 (v10.0.0-1234-gdeadbeef)") == (10, 0)
    assert release("") is None and release("unknown") is None


def test_the_tcg_dirty_tlb_bug_is_expected_only_of_an_old_source_on_tcg() -> None:
    keys = ["tcg-dirty-tlb"]
    ((bug, reason),) = affecting(keys, {"source": DEBIAN_72, "destination": BACKPORTS_100}, "tcg", frozenset())
    assert not bug.deterministic            # a race: a run that passes is not news
    assert reason.startswith("known QEMU bug on the source (7.2.22 < 9.0, TCG): ")
    assert "03bfc2188f06" in reason and "--assume-fixed tcg-dirty-tlb" in reason
    # the destination's version does not matter; KVM keeps its own dirty log; a backport is honoured
    assert affecting(keys, {"source": BACKPORTS_100, "destination": DEBIAN_72}, "tcg", frozenset()) == []
    assert affecting(keys, {"source": DEBIAN_72, "destination": BACKPORTS_100}, "kvm", frozenset()) == []
    assert affecting(keys, {"source": DEBIAN_72, "destination": DEBIAN_72}, "tcg",
                     frozenset({"tcg-dirty-tlb"})) == []
    # a version the harness cannot read is not assumed to be old
    assert affecting(keys, {"source": "custom build", "destination": "custom build"}, "tcg", frozenset()) == []


def test_every_known_bug_names_its_side_fix_and_release() -> None:
    for key, bug in KNOWN_BUGS.items():
        assert bug.key == key and bug.side in ("source", "destination")
        # the fix by commit hash, or by its quoted subject where the exact commit is not known here
        assert (bug.fix.split()[0].isalnum() or bug.fix.startswith('"')) and len(bug.fixed_in) == 2


def test_a_deterministic_bug_is_expected_on_any_accelerator_and_strictly() -> None:
    ((bug, reason),) = affecting(["serialized-iterative-devices"], {"source": DEBIAN_72, "destination": DEBIAN_72},
                                 "kvm", frozenset())
    assert bug.deterministic and "4e1871c450a1" in reason
    assert affecting(["serialized-iterative-devices"], {"source": BACKPORTS_100, "destination": DEBIAN_72},
                     "kvm", frozenset()) == []


def test_preempt_before_8_0_is_expected_of_an_old_source_on_any_accelerator() -> None:
    keys = ["preempt-requests-wait-for-migration-thread"]
    ((bug, reason),) = affecting(keys, {"source": DEBIAN_72, "destination": BACKPORTS_100}, "kvm", frozenset())
    assert not bug.deterministic and "93589827443e" in reason and "(7.2.22 < 8.0)" in reason
    # a 7.2 destination is no reason: the requested page is sent by the source
    assert affecting(keys, {"source": BACKPORTS_100, "destination": DEBIAN_72}, "tcg", frozenset()) == []


def test_multifd_counting_uncompressed_bytes_spoils_one_verdict_of_a_source_before_8_2() -> None:
    """7.2 adds pages × page size to ram.transferred before compressing; 8.1 counts what it wrote but not the
    packet headers; 8.2 counts both. Only the verdict that compares QEMU's count with the relay's is expected to
    fail, and strictly: the miscount is deterministic, so a pass means the build carries the fix."""
    keys = ["ram-transferred-miscount"]
    ((bug, reason),) = affecting(keys, {"source": DEBIAN_72, "destination": BACKPORTS_100}, "tcg", frozenset())
    assert bug.handling == "verdict" and bug.verdict == CARRIED_VS_REPORTED and bug.deterministic
    assert "cbec7eb76879" in reason and "(7.2.22 < 8.2)" in reason
    assert affecting(keys, {"source": DEBIAN_72, "destination": DEBIAN_72}, "kvm", frozenset()) != []
    for fixed in ("8.2.0 (v8.2.0)", BACKPORTS_100):
        assert affecting(keys, {"source": fixed, "destination": DEBIAN_72}, "tcg", frozenset()) == []
    assert affecting(keys, {"source": DEBIAN_72, "destination": DEBIAN_72}, "tcg", frozenset(keys)) == []
    assert bug.also_spoils == (MBPS_VS_HOST,)   # QEMU's mbps is that count over time: off by compression's ratio
    assert bug.every_test   # every completed migration records that mbps verdict, marked or not
    assert describe(bug, reason) == ("ram-transferred-miscount on the source (7.2.22 < 8.2): its verdict "
                                     f"'{CARRIED_VS_REPORTED}' is an expected failure, '{MBPS_VS_HOST}' may fail, "
                                     "every other verdict of its tests is judged")


def test_a_known_bug_has_a_workaround_or_an_expected_verdict_not_both() -> None:
    both = dict(key="k", side="source", fixed_in=(9, 0), accel=None, fix="0123abcd (x)", effect="e",
                workaround=Workaround("w"), verdict="v")
    with pytest.raises(ValueError, match="not both"):
        KnownBug(**both)    # type: ignore[arg-type]
    assert {bug.handling for bug in KNOWN_BUGS.values()} == {"workaround", "verdict", "xfail", "not-run"}
    with pytest.raises(ValueError, match="whole test"):
        KnownBug(**{**both, "verdict": None, "hangs": True})    # type: ignore[arg-type]


def test_a_tls_source_only_multifd_run_against_a_destination_before_8_0_is_not_run() -> None:
    """10.0 -> 7.2 hangs the source's monitor in the TLS handshake; 10.0 -> 10.0 and 7.2 -> 10.0 fail as declared."""
    key = "plain-multifd-destination-ignores-tls-main-channel"
    ((bug, reason),) = affecting([key], {"source": BACKPORTS_100, "destination": DEBIAN_72}, "tcg", frozenset())
    assert bug.hangs and bug.handling == "not-run" and bug.side == "destination"
    assert reason.startswith("known QEMU bug on the destination (7.2.22 < 8.0): ") and "6720c2b32725" in reason
    assert describe(bug, reason).endswith("its tests are expected failures, not run (a QEMU would hang until the "
                                          "deadline)")
    assert affecting([key], {"source": DEBIAN_72, "destination": BACKPORTS_100}, "tcg", frozenset()) == []
    assert affecting([key], {"source": BACKPORTS_100, "destination": DEBIAN_72}, "tcg", frozenset({key})) == []


def test_the_table_says_which_bugs_have_a_workaround_and_the_header_line_what_the_run_does() -> None:
    with_workaround = {key for key, bug in KNOWN_BUGS.items() if bug.workaround is not None}
    assert with_workaround == {"tcg-dirty-tlb"}
    versions = {"source": DEBIAN_72, "destination": BACKPORTS_100}
    lines = [describe(bug, reason) for bug, reason in affecting(KNOWN_BUGS, versions, "tcg", frozenset())]
    assert lines[0].startswith("tcg-dirty-tlb on the source (7.2.22 < 9.0, TCG): its tests run with a workaround "
                               "and are judged — guest RAM 8 KiB short")
    assert lines[1] == ("serialized-iterative-devices on the source (7.2.22 < 9.0): its tests are expected failures "
                        "(no workaround)")
    assert all(";" not in line for line in lines)   # the run header joins them with "; "


def test_the_dirty_tlb_workaround_makes_ram_no_multiple_of_256_kib_and_dumps_follow() -> None:
    """7.2's fast path needs the RAM block to be a multiple of 64 pages: 8 KiB short of any MiB size is not, stays a
    multiple of QEMU's 8 KiB rounding of -m and of the 4 KiB page the dumps are compared by."""
    workaround = KNOWN_BUGS["tcg-dirty-tlb"].workaround
    assert workaround is not None
    for mib in (256, 512, 768, 1024):
        config = dataclasses.replace(MachineConfig(arch=arch_spec("x86_64"), memory_mib=mib), **workaround.machine)
        assert config.ram_bytes % (256 * 1024) != 0
        assert config.ram_bytes % 8192 == 0 and config.ram_bytes % 4096 == 0
        assert config.ram_size == f"{mib * 1024 - 8}K"
    config = MachineConfig(arch=arch_spec("x86_64"), memory_mib=512)
    assert (config.ram_size, config.ram_bytes) == ("512M", 512 * 1024 * 1024)
    assert "-m 524280K" in workaround.summary
