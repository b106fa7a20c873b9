"""Warm boots: a guest booted once per session per (binary, guest configuration), saved booted and SSH-ready, and
every later test's guest restored from that save with `-incoming` instead of booting (#35: boot-to-SSH is ~2.4 s
on TCG). A configuration's first boot is cold; its second makes the save (a cold boot, a stop, the save), so a
configuration booted once costs nothing extra.

What is saved: a cold-booted guest, idle at its ready marker, no SSH session open, stopped and migrated to a file
(`exec:cat > FILE`, which every QEMU this suite drives can write and read: 7.2 has no `file:` URI). Nothing a test
measures runs in it: workloads and the heartbeat workload start later, over a fresh SSH session, in every test;
the host's heartbeat reader and console watcher are the new QEMU's own. What a restored guest shares with every
other restored from the same file, and a cold-booted one would not: its kernel's RNG state and its boot history; its
clock resumes where the save stopped it (seconds to minutes behind the host — oracles read guest time as deltas or
fit it to the host's clock, harness.analysis.series.ClockMap). A test that needs a cold boot says so with the
`cold_boot` marker (the fault files that break boots and launches on purpose, run child sessions or wrap QEMU are
all marked: tests/faults/conftest.py); `--cold-boot` turns warm boots off for a run.

Only a plain local source is warm-booted: no remote host, no disks or memory backend (their state is outside the
save), no extra arguments, no -S or -incoming of its own, no --qemu-wrapper. A restore that fails (the QEMU under
test cannot load its own save, or the guest does not answer SSH) is logged, recorded and followed by a cold boot:
the test then runs exactly as it would have, and its own oracles judge that QEMU.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import shlex
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from harness.core import workdirs
from harness.qemu.binary import QemuBinary
from harness.vm.config import MachineConfig
from harness.vm.machine import Machine

log = logging.getLogger(__name__)

SAVE_TIMEOUT_S = 60.0
RESTORE_TIMEOUT_S = 30.0
# SSH after a restore: dropbear was listening when the guest was saved, so it answers at once or not at all.
RESTORED_SSH_TIMEOUT_S = 15.0
# MachineConfig fields that say where and how a QEMU runs, not what the guest is: a save serves every value.
PLACEMENT_FIELDS = ("wrapper", "netns", "trace_events", "qmp_timeout")


class RestoreFailed(RuntimeError):
    """A warm boot could not be restored (the caller cold-boots instead)."""


def warm_key(binary: QemuBinary, config: MachineConfig) -> str | None:
    """The save a guest of `config` on `binary` can be restored from, or None when it must boot cold (see the
    module docstring for which configurations qualify)."""
    if (config.remote is not None or config.incoming or config.start_paused or not config.network or config.disks
            or config.memory_backend or config.extra_args):
        return None
    guest = dataclasses.replace(config, **{name: MachineConfig.__dataclass_fields__[name].default
                                           for name in PLACEMENT_FIELDS})
    return hashlib.sha256(f"{binary.path}\0{binary.version}\0{guest!r}".encode()).hexdigest()[:16]


@dataclass
class WarmBoots:
    """The session's saves, one per key, in a private directory removed at close(); what each boot took."""
    enabled: bool = True
    directory: Path | None = None
    saves: dict[str, Path] = field(default_factory=dict)
    unusable: dict[str, str] = field(default_factory=dict)    # key → why its restore failed (cold from then on)
    # Keys booted cold once so far: a save (a cold boot, a stop and a save, ~2.5 s on TCG) pays off only from the
    # second boot of a configuration on, so the first boots cold and the second makes the save.
    seen: set[str] = field(default_factory=set)
    boots: list[dict[str, Any]] = field(default_factory=list)  # one per boot: kind (cold/warm/save), seconds

    def worth_restoring(self, key: str) -> bool:
        """Whether this boot of `key` should be warm (else it boots cold, and the next one will be warm)."""
        if key in self.unusable:
            return False
        if key in self.saves or key in self.seen:
            return True
        self.seen.add(key)
        return False

    def save_path(self, key: str) -> Path:
        if self.directory is None:
            self.directory = workdirs.private_dir("warm-boots")
        return self.directory / f"{key}.vmstate"

    def record(self, kind: str, seconds: float, **more: Any) -> dict[str, Any]:
        entry = {"kind": kind, "seconds": round(seconds, 3), **more}
        self.boots.append(entry)
        return entry

    def close(self) -> None:
        if self.directory is not None:
            workdirs.remove(self.directory)
            self.directory = None
        self.saves.clear()


def save_booted(machine: Machine, path: Path) -> None:
    """Stop a booted guest and migrate it into `path` (GuestShell opens a connection per command and closes it
    after, so none is saved open); the QEMU is left stopped, for the caller to shut down."""
    machine.qmp.cmd("stop")
    machine.qmp.cmd("migrate", uri=f"exec:cat > {shlex.quote(str(path))}")
    wait_status(machine, "completed", SAVE_TIMEOUT_S, "saving the booted guest")


def restore_uri(path: Path) -> str:
    return f"exec:cat {shlex.quote(str(path))}"


def wait_restored(machine: Machine, timeout: float = RESTORE_TIMEOUT_S) -> None:
    """A QEMU started with `-incoming restore_uri(…)`: wait for the load to complete, resume the guest (it was saved
    stopped, so QEMU leaves it paused), then wait for a command over a fresh SSH session. RestoreFailed if any of
    that does not happen."""
    wait_status(machine, "completed", timeout, "restoring the booted guest")
    status = machine.qmp.cmd("query-status", timeout=10)["status"]
    if status != "running":
        machine.qmp.cmd("cont")
    try:
        machine.shell.wait_ready(RESTORED_SSH_TIMEOUT_S)
    except Exception as exc:
        raise RestoreFailed(f"{machine.name}: restored guest does not answer SSH: {exc!r}") from exc


def wait_status(machine: Machine, wanted: str, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while True:
        machine.raise_if_exited(what)
        info = machine.qmp.cmd("query-migrate", timeout=10)
        status = info.get("status")
        if status == wanted:
            return
        if status in ("failed", "cancelled") or time.monotonic() > deadline:
            raise RestoreFailed(f"{machine.name}: {what}: migration {status} ({info.get('error-desc', '')})")
        time.sleep(0.01)


def boot_warm(warm: WarmBoots, key: str, config: MachineConfig, name: str,
              launch: Callable[[str, MachineConfig], Machine], cold_boot: Callable[[str, MachineConfig], Machine],
              retire: Callable[[Machine], None]) -> Machine:
    """`name` restored from `key`'s save, made first (by a cold boot named `<name>-warm-save`, whose files stay in
    the test's artefacts) if this session has none. `launch` starts a QEMU, `cold_boot` starts and boots one,
    `retire` shuts a QEMU down for good (all the testbed's, so each is cleaned up and judged like any other)."""
    started = time.monotonic()
    if key not in warm.saves:
        path = warm.save_path(key)
        saver = cold_boot(f"{name}-warm-save", dataclasses.replace(config, wrapper=(), netns=None, trace_events=()))
        try:
            save_booted(saver, path)
        except Exception as exc:
            raise RestoreFailed(f"saving the booted guest: {exc!r}") from exc
        finally:
            retire(saver)
        warm.saves[key] = path
        warm.record("save", time.monotonic() - started, key=key)
        started = time.monotonic()
    machine = launch(name, dataclasses.replace(config, incoming=restore_uri(warm.saves[key])))
    try:
        with machine.expect_exit("a warm-boot restore that fails is followed by a cold boot"):
            wait_restored(machine)
    except Exception as exc:
        retire(machine)
        raise RestoreFailed(f"restoring: {exc!r}") from exc
    machine.config = config   # what the guest is from now on: a running source, not an incoming destination
    warm.record("warm", time.monotonic() - started, key=key)
    return machine
