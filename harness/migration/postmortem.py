"""When a test fails: compute every oracle that still can be, then name what broke first.

The plugin calls `postmortem` once a test body has ended with an error or with failing verdicts. It
  - compares host RAM where a migration completed to a destination that never ran (both sides paused) and the
    test had not compared it (say the body stopped at an error before it could), recording `host RAM hashes
    equal` with the number of differing pages;
  - reads every guest console for kernel crashes (harness.vm.console), timed against the switchover;
  - for a lost SSH session, finds out whether the guest's QEMU still runs and what its console shows;
and returns the failure to raise, worded by harness.analysis.diagnosis — or None when there is nothing to add
to the failure the test already has (one failing verdict or one error on its own keep their exact message, so
validate and flake records still compare).
"""

from __future__ import annotations

import logging
import re
from typing import Any

from harness.analysis import oracles
from harness.analysis.diagnosis import RAM_VERDICT, Reference, crash_headline, failure_message
from harness.vm.ram import compare_guest_ram
from harness.migration.migrate import Migration
from harness.report.artefacts import Artefacts
from harness.vm.guest import GuestPanicked, GuestUnreachable
from harness.vm.exits import QemuExited
from harness.vm.machine import Machine

log = logging.getLogger(__name__)


class Diagnosed(AssertionError):
    """A failed test's message with what broke first in its first line (the original error is its cause)."""


def postmortem(testbed: Any, artefacts: Artefacts, error: BaseException | None) -> Diagnosed | None:
    """The failure to raise for a test whose body ended with `error` (None: it returned), or None to keep the
    test's own failure (or pass, when nothing failed)."""
    if error is None and not artefacts.failed():
        return None
    machines: list[Machine] = list(testbed.machines) if testbed is not None else []
    if testbed is not None:
        salvage_ram_comparisons(testbed)
    crashes = [headline for _, headline in sorted(crash_headlines(testbed, machines), key=lambda c: c[0])]
    exits = [f"{m.name} QEMU {m.exit_info.describe()}" for m in machines
             if m.exit_info is not None and m.unexpected_exit()]
    context = ssh_context(error, machines) if isinstance(error, GuestUnreachable) else []
    verdicts = artefacts.verdicts
    if not crashes and not exits and not context and (
            error is None or not artefacts.failed()):
        return None   # one failing verdict, or one error, on its own: its own message says it
    text = error_text(error) if error is not None else None
    return Diagnosed(failure_message(crashes, exits, verdicts, text, context))


def error_text(error: BaseException) -> str:
    text = str(error)
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


# -- RAM -----------------------------------------------------------------------------------------------------------
def salvage_ram_comparisons(testbed: Any) -> None:
    """For each migration that completed to a destination still paused and never resumed, with both QEMUs
    alive: the host RAM comparison, unless the test already recorded one."""
    artefacts: Artefacts = testbed.artefacts
    if any(v.name.endswith(RAM_VERDICT) for v in artefacts.verdicts):
        return
    for migration in testbed.migrations:
        if not comparable(migration):
            continue
        source, destination = migration.source, migration.destination
        assert destination is not None
        try:
            comparison = compare_guest_ram(source, destination, source.config.ram_bytes, testbed.workdir)
        except Exception as exc:  # a QEMU that dies now: its exit is reported with the rest
            log.warning("post-mortem RAM comparison of %s failed: %r", migration.name, exc)
            continue
        artefacts.write_json(f"ram-comparison-{migration.name}", comparison)
        artefacts.verdict(oracles.ram_identical(comparison))


def comparable(migration: Migration) -> bool:
    """Both sides hold the RAM of one moment: the source completed (and stopped there), the destination loaded
    it and never ran (started -S, no RESUME), and both QEMUs still answer."""
    source, destination = migration.source, migration.destination
    if destination is None or not migration.started or source.exited or destination.exited:
        return False
    if migration.series.status("source") != "completed":
        return False
    if any(event.name == "RESUME" for event in destination.qmp.events):
        return False
    try:
        return source.runstate() in ("postmigrate", "paused") and destination.runstate() == "paused"
    except Exception:
        return False


# -- guest crashes -------------------------------------------------------------------------------------------------
def crash_headlines(testbed: Any, machines: list[Machine]) -> list[tuple[float, str]]:
    """Per machine whose console shows a kernel crash: (when seen, headline), the first crash line with its kind
    (and that a panic followed, when one did)."""
    found = []
    for machine in machines:
        crashes = machine.console_crashes()
        if not crashes:
            continue
        first = crashes[0]
        kind = first.kind
        if kind != "kernel panic" and any(c.kind == "kernel panic" for c in crashes[1:]):
            kind += " (then a kernel panic)"
        reference = reference_for(testbed, machine)
        found.append((first.t if first.t is not None else float("inf"),
                      crash_headline(machine.name, kind, first.line, first.t, reference)))
    return found


def reference_for(testbed: Any, machine: Machine) -> Reference | None:
    """The instant a crash on `machine` is best told against: the switchover into it, else the start of the
    migration out of it, else its boot."""
    for migration in reversed(testbed.migrations if testbed is not None else []):
        if not migration.started:
            continue
        series = migration.series
        if migration.destination is machine:
            stop = next(iter(series.event_times("STOP", "source")), None)
            if stop is not None:
                return Reference("switchover", series.t0 + stop)
            return Reference("the start of the migration", series.t0)
        if migration.source is machine:
            return Reference("the start of the migration", series.t0)
    return Reference("boot", machine.launched_at) if machine.launched_at is not None else None


# -- SSH -----------------------------------------------------------------------------------------------------------
def ssh_context(error: GuestUnreachable, machines: list[Machine]) -> list[str]:
    """Whether the guest or its QEMU died, for an SSH session that was lost or never made."""
    if isinstance(error, GuestPanicked):
        return []      # the crash headline says it
    port = re.search(r"guest at [\w.]+:(\d+)", str(error))
    machine = next((m for m in machines if port and m.ssh_port == int(port.group(1))), None)
    if machine is None:
        return []
    if machine.exit_info is not None:
        return [f"SSH to the {machine.name} guest: its QEMU {machine.exit_info.describe()}"]
    try:
        state = f"its QEMU runs (runstate {machine.runstate()})"
    except QemuExited as exc:
        state = f"its QEMU {exc.info.describe()}"
    except Exception as exc:
        state = f"its QEMU does not answer QMP ({type(exc).__name__})"
    crashes = machine.console_crashes()
    console = (f"its console shows {crashes[0].kind}: {crashes[0].line}" if crashes
               else "no kernel crash on its console: the guest's userspace or network stopped answering")
    return [f"SSH to the {machine.name} guest lost: {state}; {console}"]
