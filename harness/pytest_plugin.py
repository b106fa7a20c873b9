"""pytest plugin: command-line options, markers, fixtures, per-test artefacts, skip reasons from the QMP schema.

Markers
  needs(capabilities=[…], parameters=[…], fields=[…], commands=[…], migration_properties=[…], trace_events=[…])
      skip (with the reason) unless both the source and destination binaries have all of these
  needs_userfaultfd   skip unless postcopy can run here (root or vm.unprivileged_userfaultfd=1)
  guest(**overrides)  MachineConfig overrides for the `guest`/`pair` fixtures (memory_mib=…, cpus=…)
  slow                long matrices: run by `make test`, deselected by `make check`
"""

from __future__ import annotations

import datetime
import logging
import os
import signal
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, Iterator

import pytest

from . import host
from .accel import choose_accel
from .arch import arch_spec, host_arch
from .guest import GuestShell
from .image import GuestImage, ImageMissing
from .machine import Machine
from .qemu import QemuBinary, QemuNotFound
from .report import Artefacts, safe_name
from .testbed import Environment, Testbed

log = logging.getLogger("harness")
ARTEFACTS_KEY = pytest.StashKey[Artefacts]()
REPORTS_KEY = pytest.StashKey[dict[str, pytest.TestReport]]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("qemu-migration", "QEMU migration harness")
    group.addoption("--qemu-binary", default=os.environ.get("QEMU_BINARY"),
                    help="QEMU binary or build tree for both sides (default: qemu-system-ARCH on PATH)")
    group.addoption("--qemu-src", default=None, help="QEMU binary or build tree for the source (cross-version)")
    group.addoption("--qemu-dst", default=None, help="QEMU binary or build tree for the destination")
    group.addoption("--accel", default=os.environ.get("HARNESS_ACCEL", "auto"), choices=["auto", "kvm", "tcg"],
                    help="auto = KVM only if a probe guest boots under it, else TCG")
    group.addoption("--arch", default=os.environ.get("HARNESS_ARCH", host_arch()), help="guest architecture")
    group.addoption("--image-dir", default=None, help="guest image directory (default: build/images/ARCH)")
    group.addoption("--artefacts", default=os.environ.get("HARNESS_ARTEFACTS", "artefacts"),
                    help="where each run writes its per-test artefacts (a run-* subdir, 'latest' links to it)")


def pytest_configure(config: pytest.Config) -> None:
    for line in [
        "needs(**requirements): skip unless the QEMU binaries have these capabilities/parameters/fields/…",
        "needs_userfaultfd: skip unless postcopy can use userfaultfd here",
        "guest(**overrides): MachineConfig overrides for the guest and pair fixtures",
        "slow: long matrix; run by `make test`, not by `make check`",
    ]:
        config.addinivalue_line("markers", line)
    # SIGTERM (CI timeout, kill) must unwind like Ctrl-C so every fixture cleans up its QEMU.
    if hasattr(signal, "SIGTERM"):
        signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)


def _raise_keyboard_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


@dataclass(frozen=True)
class Binaries:
    source: QemuBinary
    destination: QemuBinary


@cache
def _binaries(src: str | None, dst: str | None, default: str | None, arch: str) -> Binaries:
    name = arch_spec(arch).qemu_binary
    return Binaries(QemuBinary.locate(src or default, name), QemuBinary.locate(dst or default, name))


def binaries(config: pytest.Config) -> Binaries:
    return _binaries(config.getoption("--qemu-src"), config.getoption("--qemu-dst"),
                     config.getoption("--qemu-binary"), config.getoption("--arch"))


def pytest_report_header(config: pytest.Config) -> list[str]:
    try:
        b = binaries(config)
    except QemuNotFound as exc:
        return [f"harness: {exc}"]
    lines = [f"harness: arch {config.getoption('--arch')}, source QEMU {b.source}"]
    if b.destination != b.source:
        lines.append(f"harness: destination QEMU {b.destination}")
    lines.append(f"harness: {host.userfaultfd().reason}")
    return lines


def pytest_runtest_setup(item: pytest.Item) -> None:
    for marker in item.iter_markers("needs"):
        try:
            b = binaries(item.config)
        except QemuNotFound as exc:
            pytest.skip(str(exc))
        missing = sorted({m for binary in {b.source, b.destination}
                          for m in binary.features.missing(**marker.kwargs)})
        if missing:
            pytest.skip("QEMU lacks " + ", ".join(missing))
    if item.get_closest_marker("needs_userfaultfd"):
        uffd = host.userfaultfd()
        if not uffd.available:
            pytest.skip(uffd.reason)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    report: pytest.TestReport = yield
    item.stash.setdefault(REPORTS_KEY, {})[report.when] = report
    artefacts = item.stash.get(ARTEFACTS_KEY, None)
    if artefacts is not None and report.failed:
        report.sections.append(("harness artefacts", str(artefacts.directory)))
        with open(artefacts.path("failure.txt"), "a") as failure:
            failure.write(f"== {report.when} ==\n{report.longreprtext}\n")
    return report  # type: ignore[return-value]


# -- session fixtures ------------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def artefacts_root(pytestconfig: pytest.Config) -> Path:
    base = Path(pytestconfig.getoption("--artefacts")).resolve()
    run = base / datetime.datetime.now().strftime("run-%Y%m%d-%H%M%S-%f")
    run.mkdir(parents=True)
    latest = base / "latest"
    if latest.is_symlink() or not latest.exists():
        latest.unlink(missing_ok=True)
        latest.symlink_to(run.name)
    return run


@pytest.fixture(scope="session")
def guest_image(pytestconfig: pytest.Config) -> GuestImage:
    arch = pytestconfig.getoption("--arch")
    directory = pytestconfig.getoption("--image-dir") or Path(pytestconfig.rootpath) / "build" / "images" / arch
    try:
        return GuestImage.load(Path(directory))
    except ImageMissing as exc:
        pytest.exit(str(exc), returncode=3)


@pytest.fixture(scope="session")
def environment(pytestconfig: pytest.Config, guest_image: GuestImage, artefacts_root: Path) -> Environment:
    try:
        b = binaries(pytestconfig)
    except QemuNotFound as exc:
        pytest.exit(str(exc), returncode=3)
    accel = choose_accel(pytestconfig.getoption("--accel"), b.source, guest_image, artefacts_root / "accel-probe",
                         cache_dir=Path(pytestconfig.rootpath) / "build" / "cache")
    reporter = pytestconfig.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line(f"harness: {accel.describe()}")
    log.warning("%s", accel.describe())
    return Environment(b.source, b.destination, guest_image, arch_spec(pytestconfig.getoption("--arch")), accel)


# -- per-test fixtures -----------------------------------------------------------------------------------------
@pytest.fixture
def artefacts(request: pytest.FixtureRequest, artefacts_root: Path) -> Iterator[Artefacts]:
    record = Artefacts(artefacts_root / safe_name(request.node.nodeid))
    request.node.stash[ARTEFACTS_KEY] = record
    yield record
    reports = request.node.stash.get(REPORTS_KEY, {})
    outcome = "FAILED" if any(r.failed for r in reports.values()) else "passed"
    record.finalize(outcome)


@pytest.fixture
def testbed(environment: Environment, artefacts: Artefacts) -> Iterator[Testbed]:
    bed = Testbed(environment, artefacts)
    try:
        yield bed
    finally:
        bed.close()


def _guest_overrides(request: pytest.FixtureRequest) -> dict[str, Any]:
    overrides: dict[str, Any] = {}
    for marker in reversed(list(request.node.iter_markers("guest"))):
        overrides.update(marker.kwargs)
    return overrides


@pytest.fixture
def guest(testbed: Testbed, request: pytest.FixtureRequest) -> Machine:
    """A booted source guest, reachable over SSH."""
    return testbed.boot("source", **_guest_overrides(request))


@pytest.fixture
def ssh(guest: Machine) -> GuestShell:
    return guest.shell


@dataclass(frozen=True)
class Pair:
    source: Machine
    destination: Machine


@pytest.fixture
def pair(testbed: Testbed, guest: Machine) -> Pair:
    """The booted source plus a destination waiting with `-incoming defer` (running after migration)."""
    return Pair(guest, testbed.incoming(guest))


@pytest.fixture
def paused_pair(testbed: Testbed, guest: Machine) -> Pair:
    """Like `pair`, but the destination starts with -S: both sides end paused, so their RAM can be compared."""
    return Pair(guest, testbed.incoming(guest, paused=True))
