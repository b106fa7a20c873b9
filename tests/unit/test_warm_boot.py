"""Which guests warm boots serve (harness.migration.warm_boot): the key ignores where and how a QEMU runs, not what
the guest is; configurations whose state is outside the save boot cold; a configuration's first boot is cold."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from types import SimpleNamespace

from harness.migration.warm_boot import WarmBoots, warm_key
from harness.qemu.arch import arch_spec
from harness.vm.config import Disk, MachineConfig

BINARY = SimpleNamespace(path=Path("/usr/bin/qemu-system-x86_64"), version="10.0.2")


def test_placement_does_not_change_the_key_but_the_guest_does() -> None:
    base = MachineConfig(arch=arch_spec("x86_64"))
    key = warm_key(BINARY, base)  # type: ignore[arg-type]
    assert key is not None
    placed = dataclasses.replace(base, netns="qmh-x", wrapper=("ip", "netns", "exec", "qmh-x"), trace_events=("a",))
    assert warm_key(BINARY, placed) == key  # type: ignore[arg-type]
    for other in (dataclasses.replace(base, memory_mib=1024), dataclasses.replace(base, heartbeat=True),
                  dataclasses.replace(base, ram_short_kib=8), dataclasses.replace(base, cpus=2)):
        assert warm_key(BINARY, other) not in (None, key)  # type: ignore[arg-type]
    assert warm_key(SimpleNamespace(path=Path("/other/qemu"), version="7.2"), base) != key  # type: ignore[arg-type]


def test_state_outside_the_save_boots_cold() -> None:
    base = MachineConfig(arch=arch_spec("x86_64"))
    for cold in (dict(remote=object()), dict(incoming="defer"), dict(start_paused=True), dict(network=False),
                 dict(disks=(Disk("d0", {"driver": "null-co"}),)), dict(memory_backend="memory-backend-memfd"),
                 dict(extra_args=("-device", "x"))):
        assert warm_key(BINARY, dataclasses.replace(base, **cold)) is None, cold  # type: ignore[arg-type]


def test_first_boot_of_a_configuration_is_cold_and_a_failed_one_stays_cold() -> None:
    warm = WarmBoots()
    assert not warm.worth_restoring("k") and warm.worth_restoring("k")
    warm.unusable["k"] = "restore failed"
    assert not warm.worth_restoring("k")
