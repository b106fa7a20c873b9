"""harness.qemu.compat: the machine type and CPU model chosen for a pair of binaries, from their QMP lists (no QEMU).

The lists are shaped like the real answers (query-machines / query-cpu-definitions of Debian's 7.2 and 10.0 under
TCG: pc-q35-2.4 … pc-q35-X.Y with the alias on the newest, Westmere-v1 etc. with no unavailable features,
Haswell-v1 with some)."""

from __future__ import annotations

import pytest

from harness.qemu.arch import arch_spec
from harness.qemu.compat import NoCommonPlatform, Platforms, choose_platform, lacks_reason, missing_by_side
from harness.qemu.binary import Features

X86, S390 = arch_spec("x86_64"), arch_spec("s390x")
TCG_CPUS = [{"name": n, "unavailable-features": []} for n in
            ("max", "qemu64", "qemu64-v1", "Nehalem-v1", "Westmere-v1")] + [
            {"name": "Haswell-v1", "unavailable-features": ["avx2", "fma"]}]


def qmp_machines(family: str, alias: str, versions: list[str]) -> list[dict]:
    """One family's versioned types, the alias on the newest, plus another family and `none`."""
    machines = [{"name": f"{family}{v}", "deprecated": False} for v in versions]
    machines[-1]["alias"] = alias
    return machines + [{"name": "none"}, {"name": f"other-{versions[-1]}", "alias": "other", "is-default": True}]


def x86(versions: list[str], cpus: list[dict] = TCG_CPUS) -> Platforms:
    return Platforms.from_qmp(qmp_machines("pc-q35-", "q35", versions), cpus)


QEMU_72 = x86(["2.4", "4.0.1", "6.2", "7.0", "7.1", "7.2"])
QEMU_100 = x86(["2.4", "4.0.1", "6.2", "7.0", "7.1", "7.2", "8.0", "9.2", "10.0"])


@pytest.mark.parametrize("source, destination", [(QEMU_72, QEMU_100), (QEMU_100, QEMU_72)], ids=["fwd", "back"])
def test_7_2_and_10_0_share_pc_q35_7_2_and_a_named_cpu_both_ways(source: Platforms, destination: Platforms) -> None:
    choice = choose_platform(X86, "tcg", source, destination)
    assert (choice.machine, choice.cpu) == ("pc-q35-7.2", "Westmere-v1")
    assert "newest pc-q35-X.Y both binaries support" in choice.reason and "query-machines" in choice.reason
    assert "query-cpu-definitions" in choice.reason and "under tcg" in choice.reason


def test_versions_compare_as_numbers_not_strings() -> None:
    # "10.0" < "9.2" as strings; 4.0.1 is a three-part version of the same family.
    choice = choose_platform(X86, "tcg", QEMU_100, x86(["4.0.1", "9.2", "10.0"]))
    assert choice.machine == "pc-q35-10.0"


def test_one_binary_on_both_sides_keeps_the_alias_and_default_cpu_without_probing() -> None:
    tcg = choose_platform(X86, "tcg", None, None, same_binary=True)
    assert (tcg.machine, tcg.cpu) == ("q35", "max") and "alias q35" in tcg.reason
    assert choose_platform(X86, "kvm", None, None, same_binary=True).cpu == "host"


def test_two_binaries_of_the_same_version_still_get_a_versioned_type() -> None:
    choice = choose_platform(X86, "tcg", QEMU_100, QEMU_100)
    assert (choice.machine, choice.cpu) == ("pc-q35-10.0", "Westmere-v1")


def test_s390_ccw_virtio_pair() -> None:
    cpus = [{"name": "qemu", "unavailable-features": []}, {"name": "z14-base", "unavailable-features": ["vx"]}]
    old = Platforms.from_qmp(qmp_machines("s390-ccw-virtio-", "s390-ccw-virtio", ["7.1", "7.2"]), cpus)
    new = Platforms.from_qmp(qmp_machines("s390-ccw-virtio-", "s390-ccw-virtio", ["7.2", "9.2", "10.0"]), cpus)
    choice = choose_platform(S390, "tcg", new, old)
    assert (choice.machine, choice.cpu) == ("s390-ccw-virtio-7.2", "qemu")


def test_no_common_versioned_type_is_one_clear_error() -> None:
    with pytest.raises(NoCommonPlatform, match=r"no pc-q35-X\.Y machine type both binaries support \(source has "
                                               r"2\.4–3\.1, destination has 9\.2–10\.0.*pass --machine"):
        choose_platform(X86, "tcg", x86(["2.4", "3.1"]), x86(["9.2", "10.0"]))


def test_kvm_takes_a_named_model_the_host_supports_on_both_never_host() -> None:
    # Probed under -accel kvm: this host lacks a Westmere feature on the destination's view.
    host_cpus = [{"name": "Westmere-v1", "unavailable-features": ["aes"]}, {"name": "Nehalem-v1"},
                 {"name": "host"}, {"name": "qemu64-v1"}]
    choice = choose_platform(X86, "kvm", QEMU_100, x86(["7.2"], host_cpus))
    assert choice.cpu == "Nehalem-v1" and "this host supports" in choice.reason


def test_no_common_cpu_model_is_one_clear_error() -> None:
    with pytest.raises(NoCommonPlatform, match="no CPU model of Westmere-v1, Nehalem-v1, qemu64-v1 is usable"):
        choose_platform(X86, "tcg", QEMU_100, x86(["7.2"], [{"name": "max"}]))


def test_overrides_are_checked_against_each_side() -> None:
    choice = choose_platform(X86, "tcg", QEMU_72, QEMU_100, machine="pc-q35-7.1", cpu="qemu64")
    assert (choice.machine, choice.cpu, choice.reason) == ("pc-q35-7.1", "qemu64", "machine: --machine; cpu: --cpu")
    with pytest.raises(NoCommonPlatform, match="--machine pc-q35-10.0: the source QEMU does not support it"):
        choose_platform(X86, "tcg", QEMU_72, QEMU_100, machine="pc-q35-10.0")
    with pytest.raises(NoCommonPlatform, match="--cpu Haswell-v1: the source QEMU does not support it"):
        choose_platform(X86, "tcg", QEMU_72, QEMU_100, cpu="Haswell-v1")
    same = choose_platform(X86, "tcg", QEMU_100, QEMU_100, same_binary=True, cpu="Nehalem-v1")
    assert (same.machine, same.cpu) == ("q35", "Nehalem-v1")


def test_the_lacks_skip_names_the_side_and_keeps_the_prefix_bisect_reads() -> None:
    two = lacks_reason({"capability 'mapped-ram'": ["destination"], "parameter 'x'": ["source", "destination"]},
                       same_binary=False)
    assert two == ("QEMU lacks capability 'mapped-ram' on the destination, parameter 'x' on the source and "
                   "destination")
    assert lacks_reason({"capability 'mapped-ram'": ["source", "destination"]}, same_binary=True) == \
        "QEMU lacks capability 'mapped-ram'"


def test_a_destination_without_the_source_trace_events_is_no_reason_to_skip() -> None:
    # The tests read the source's trace; Testbed.incoming has the destination trace only what its binary has.
    none: frozenset[str] = frozenset()
    new = Features(none, none, frozenset({"postcopy-ram"}), none, none, none, frozenset({"migrate_pending_exact"}))
    old = Features(none, none, frozenset({"postcopy-ram"}), none, none, none)
    needs = {"capabilities": ["postcopy-ram"], "trace_events": ["migrate_pending_exact"]}
    assert missing_by_side(needs, new, old) == {}
    assert missing_by_side(needs, old, new) == {"trace event 'migrate_pending_exact'": ["source"]}
    assert missing_by_side({"capabilities": ["mapped-ram"]}, new, old) == {
        "capability 'mapped-ram'": ["source", "destination"]}
