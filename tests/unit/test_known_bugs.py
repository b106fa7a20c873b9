"""Unit tests of harness.qemu.known_bugs: which runs a known, fixed QEMU bug is expected to fail."""

from __future__ import annotations

from harness.qemu.known_bugs import KNOWN_BUGS, affecting, release

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
        assert bug.fix.split()[0].isalnum() and len(bug.fixed_in) == 2


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
