"""The machine type and CPU model a source and destination QEMU can both run, and why.

Across QEMU versions the unversioned machine alias (`q35`, `s390-ccw-virtio`) names a different machine on each
side (pc-q35-7.2 on 7.2, pc-q35-10.0 on 10.0): the destination refuses the stream ("Machine type received is …").
`-cpu max` / `-cpu host` are not stable across versions either (upstream's migration-test dropped them from
cross-version runs). So when the two sides run different binaries, both get:

  - the newest versioned machine type of the alias's family (pc-q35-X.Y, s390-ccw-virtio-X.Y) that both binaries
    list in QMP `query-machines`;
  - the first CPU model of the arch's list (ArchSpec.cpu_models: named, versioned models such as Westmere-v1) that
    both list in QMP `query-cpu-definitions` with no unavailable features under the accelerator in use. Under KVM
    the probe runs with `-accel kvm`, so "no unavailable features" means this host's CPU can provide it: a named
    model both versions define and the host supports, never `-cpu host`.

One binary on both sides keeps the alias and the arch's default CPU (max under TCG, host under KVM): the same
binary resolves them identically. `--machine` / `--cpu` override either way, checked against both lists.

`choose_platform` is pure (given both binaries' lists, return the choice and its reason); `probe_platforms` asks a
binary (a machine-less QEMU over QMP, as qemu.Features does) and caches the answer per binary file and accelerator.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterable

from harness.qemu.arch import ArchSpec
from harness.qemu.binary import Features, QemuBinary, _qmp_stdio, binary_key
from harness.core.files import atomic_write_text

log = logging.getLogger(__name__)

_VERSION = re.compile(r"-(\d+(?:\.\d+)+)$")


class NoCommonPlatform(ValueError):
    """The two binaries share no usable machine type or CPU model (or an override is unknown to one side)."""


@dataclass(frozen=True)
class MachineType:
    name: str
    alias: str | None = None
    deprecated: bool = False


@dataclass(frozen=True)
class CpuModel:
    name: str
    unavailable: tuple[str, ...] = ()     # features the accelerator (and, under KVM, the host) cannot provide


@dataclass(frozen=True)
class Platforms:
    """What one binary can run under one accelerator: its machine types and CPU models."""
    machines: tuple[MachineType, ...]
    cpus: tuple[CpuModel, ...]

    @classmethod
    def from_qmp(cls, machines: Any, cpus: Any) -> "Platforms":
        if not isinstance(machines, list) or not isinstance(cpus, list):
            raise RuntimeError(f"query-machines / query-cpu-definitions failed: {machines!r:.200} {cpus!r:.200}")
        return cls(tuple(MachineType(m["name"], m.get("alias"), bool(m.get("deprecated"))) for m in machines),
                   tuple(CpuModel(c["name"], tuple(c.get("unavailable-features") or ())) for c in cpus))

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "Platforms":
        return cls(tuple(MachineType(**m) for m in data["machines"]),
                   tuple(CpuModel(c["name"], tuple(c["unavailable"])) for c in data["cpus"]))

    def resolve(self, machine: str) -> str | None:
        """The machine type `machine` names here (itself, or what the alias stands for), None if unknown."""
        for m in self.machines:
            if machine in (m.name, m.alias):
                return m.name
        return None

    def versioned(self, family: str) -> dict[tuple[int, ...], str]:
        """{version: name} of this family's versioned types (`pc-q35-` → pc-q35-7.2 as (7, 2), …)."""
        found = {}
        for m in self.machines:
            match = _VERSION.search(m.name)
            if match and m.name[:match.start() + 1] == family:
                found[tuple(int(p) for p in match.group(1).split("."))] = m.name
        return found

    def usable_cpu(self, name: str) -> bool:
        return any(c.name == name and not c.unavailable for c in self.cpus)


@dataclass(frozen=True)
class PlatformChoice:
    machine: str
    cpu: str
    reason: str

    def describe(self) -> str:
        return f"machine {self.machine}, cpu {self.cpu} ({self.reason})"

    def to_json(self) -> dict[str, str]:
        return asdict(self)


def _family(arch: ArchSpec, side: str, platforms: Platforms) -> str:
    """`pc-q35-` from the machine the arch's alias stands for on this side (q35 → pc-q35-10.0)."""
    name = platforms.resolve(arch.machine)
    match = _VERSION.search(name or "")
    if name is None or match is None:
        raise NoCommonPlatform(f"the {side} QEMU has no versioned machine type behind '{arch.machine}' "
                               f"(QMP query-machines)")
    return name[:match.start() + 1]


def _span(versions: Iterable[tuple[int, ...]]) -> str:
    ordered = sorted(versions)
    text = lambda v: ".".join(map(str, v))  # noqa: E731
    return f"{text(ordered[0])}–{text(ordered[-1])}" if ordered else "none"


def _choose_machine(arch: ArchSpec, source: Platforms, destination: Platforms) -> tuple[str, str]:
    family = _family(arch, "source", source)
    if _family(arch, "destination", destination) != family:
        raise NoCommonPlatform(f"'{arch.machine}' is {source.resolve(arch.machine)} on the source but "
                               f"{destination.resolve(arch.machine)} on the destination: different families")
    src, dst = source.versioned(family), destination.versioned(family)
    common = set(src) & set(dst)
    if not common:
        raise NoCommonPlatform(f"no {family}X.Y machine type both binaries support (source has {_span(src)}, "
                               f"destination has {_span(dst)}; QMP query-machines): pass --machine")
    newest = max(common)
    return src[newest], (f"the newest {family}X.Y both binaries support (source up to {src[max(src)]}, "
                         f"destination up to {dst[max(dst)]}; QMP query-machines)")


def _choose_cpu(arch: ArchSpec, accel: str, source: Platforms, destination: Platforms) -> tuple[str, str]:
    for name in arch.cpu_models:
        if source.usable_cpu(name) and destination.usable_cpu(name):
            host = " and this host supports" if accel == "kvm" else ""
            return name, (f"the first of {', '.join(arch.cpu_models)} both binaries define{host} with no "
                          f"unavailable features under {accel} (QMP query-cpu-definitions)")
    raise NoCommonPlatform(f"no CPU model of {', '.join(arch.cpu_models)} is usable under {accel} on both sides "
                           f"(QMP query-cpu-definitions): pass --cpu")


def _check_override(what: str, value: str, ok: dict[str, bool]) -> None:
    for side, known in ok.items():
        if not known:
            raise NoCommonPlatform(f"--{what} {value}: the {side + ' ' if side else ''}QEMU does not support it "
                                   f"(QMP {'query-machines' if what == 'machine' else 'query-cpu-definitions'})")


def choose_platform(arch: ArchSpec, accel: str, source: Platforms | None, destination: Platforms | None, *,
                    same_binary: bool = False, machine: str | None = None,
                    cpu: str | None = None) -> PlatformChoice:
    """The machine type and CPU model for both sides, from both binaries' lists. One binary on both sides
    (`same_binary`) keeps the alias and the arch's default CPU for whatever is not overridden; its lists may then
    be None (nothing probed, nothing overridden). Raises NoCommonPlatform with one line naming the side."""
    sides = {"": source} if same_binary else {"source": source, "destination": destination}
    reasons = []
    if machine:
        _check_override("machine", machine, {s: p.resolve(machine) is not None for s, p in sides.items() if p})
        reasons.append("machine: --machine")
    elif same_binary:
        machine = arch.machine
        reasons.append(f"machine: alias {arch.machine}, which one binary on both sides resolves identically")
    else:
        assert source is not None and destination is not None
        machine, why = _choose_machine(arch, source, destination)
        reasons.append(f"machine: {why}")
    if cpu:
        _check_override("cpu", cpu, {s: p.usable_cpu(cpu) for s, p in sides.items() if p})
        reasons.append("cpu: --cpu")
    elif same_binary:
        cpu = arch.cpu_kvm if accel == "kvm" else arch.cpu_tcg
        reasons.append(f"cpu: {cpu}, which one binary on both sides resolves identically")
    else:
        assert source is not None and destination is not None
        cpu, why = _choose_cpu(arch, accel, source, destination)
        reasons.append(f"cpu: {why}")
    return PlatformChoice(machine, cpu, "; ".join(reasons))


# Needs only the source must meet: tests read the source's trace, and Testbed.incoming has the destination trace
# only the events its binary has, so an older destination is not a reason to skip.
SOURCE_SIDE_NEEDS = frozenset({"trace_events"})


def missing_by_side(needs: dict[str, Any], source: Features, destination: Features) -> dict[str, list[str]]:
    """What a `needs(**needs)` marker asks for and a side lacks: feature → the sides ("source", "destination")."""
    missing: dict[str, list[str]] = {}
    for side, features in (("source", source), ("destination", destination)):
        wanted = {key: value for key, value in needs.items() if side == "source" or key not in SOURCE_SIDE_NEEDS}
        for feature in features.missing(**wanted):
            missing.setdefault(feature, []).append(side)
    return missing


def lacks_reason(missing: dict[str, list[str]], same_binary: bool) -> str:
    """The `needs` skip line: "QEMU lacks …" (harness.tools.bisect reads that prefix as the commit's own 125), with the
    side named when the two sides run different binaries."""
    if same_binary:
        return "QEMU lacks " + ", ".join(sorted(missing))
    return "QEMU lacks " + ", ".join(f"{feature} on the {' and '.join(sides)}"
                                     for feature, sides in sorted(missing.items()))


# -- probing a binary ------------------------------------------------------------------------------------------
def probe_platforms(binary: QemuBinary, accel: str, cache_dir: Path | None = None) -> Platforms:
    """query-machines + query-cpu-definitions of a machine-less QEMU under `accel`, cached per binary file."""
    cache = cache_dir / f"platforms-{binary_key(binary, accel)}.json" if cache_dir else None
    if cache is not None and cache.exists():
        try:
            return Platforms.from_json(json.loads(cache.read_text()))
        except (OSError, ValueError, KeyError, TypeError):
            log.warning("ignoring unreadable platform cache %s; probing again", cache)
    machines, cpus = _qmp_stdio(binary, [{"execute": "query-machines"}, {"execute": "query-cpu-definitions"}],
                                accel=accel)
    platforms = Platforms.from_qmp(machines, cpus)
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(cache, json.dumps({"machines": [asdict(m) for m in platforms.machines],
                                             "cpus": [asdict(c) for c in platforms.cpus]}))
    return platforms


def platform_for(arch: ArchSpec, accel: str, source: QemuBinary, destination: QemuBinary,
                 cache_dir: Path | None = None, machine: str | None = None,
                 cpu: str | None = None) -> PlatformChoice:
    """choose_platform for these two binaries: probed when they differ or an override must be checked."""
    same = source == destination
    if same and not (machine or cpu):
        return choose_platform(arch, accel, None, None, same_binary=True)
    src = probe_platforms(source, accel, cache_dir)
    dst = src if same else probe_platforms(destination, accel, cache_dir)
    return choose_platform(arch, accel, src, dst, same_binary=same, machine=machine, cpu=cpu)
