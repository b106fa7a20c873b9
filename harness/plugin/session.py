"""The session check: arch, binaries, image, artefacts dir, --hosts and --link-* resolved and checked once, on the
final selection, before any test runs; anything wrong is one line and exit status 4 (SessionUnusable). Also the
per-test skips that follow from it (`needs`, `needs_userfaultfd`) and the reaping of what dead runs left."""

from __future__ import annotations

import dataclasses
import logging
import os
import shlex
import shutil
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import pytest

from harness.core import workdirs
from harness.hosts import capabilities as host
from harness.hosts import netns
from harness.hosts import hugepages
from harness.hosts.hosts_file import HostsFile, HostsFileError, load_hosts
from harness.hosts.ssh import Connection, RemoteUnusable
from harness.plugin.xdist_roles import HOST_INPUT, UNUSABLE_OUTPUT
from harness.qemu.arch import ARCHES, ArchSpec, arch_spec, host_arch
from harness.qemu.binary import QemuBinary, QemuNotFound
from harness.qemu.compat import NoCommonPlatform, PlatformChoice, lacks_reason, missing_by_side, platform_for
from harness.qemu.image import GuestImage, ImageMissing
from harness.qemu.known_bugs import KNOWN_BUGS

log = logging.getLogger("harness")

SETUP_KEY = pytest.StashKey["SessionSetup"]()
HOSTS_KEY = pytest.StashKey[HostsFile]()         # --hosts, checked

# Fixtures through which a test boots or probes QEMU: a selected test that uses one of them (directly or through
# testbed, guest, pair, …) makes the session resolve and check binaries, arch and image before anything runs.
QEMU_FIXTURES = frozenset({"environment", "guest_image"})
ARTEFACT_FIXTURES = frozenset({"artefacts_root"})
LINK_FIXTURES = frozenset({"link"})


class SessionUnusable(pytest.UsageError):
    """A bad input found by the session check: pytest prints `ERROR: <line>` and exits 4."""


def pytest_sessionstart(session: pytest.Session) -> None:
    workerinput = getattr(session.config, "workerinput", None)
    if workerinput is not None and workerinput.get(HOST_INPUT) == socket.gethostname():
        return   # the controller reaped this host before it started the workers
    # Private temp dirs of runs that died (SIGKILL, power loss) are removed before this run makes its own. Only a
    # dead owner's: a live sibling worker's dirs and namespaces carry its live pid and start time.
    reaped = workdirs.reap_stale()
    if reaped:
        say(session.config, f"harness: reaped {len(reaped)} temp dir(s) left by dead runs: "
                             + " ".join(str(p) for p in reaped))
    # Likewise their network namespaces (--topology netns), with the veth and qdiscs inside them.
    namespaces = netns.reap_stale()
    if namespaces:
        say(session.config, f"harness: reaped {len(namespaces)} network namespace(s) left by dead runs: "
                             + " ".join(namespaces))
    # And the 2 MiB huge pages a killed run added to the host's pool for its test (harness.hosts.hugepages).
    pages = hugepages.reap_stale()
    if pages:
        say(session.config, f"harness: gave back {pages} 2 MiB hugepage(s) a dead run added to the host's pool")


def say(config: pytest.Config, line: str) -> None:
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line(line)
    else:
        log.warning("%s", line)


@dataclass(frozen=True)
class Binaries:
    source: QemuBinary
    destination: QemuBinary


@dataclass(frozen=True)
class SessionSetup:
    """What the whole session runs with, resolved and checked once before the first test."""
    arch: ArchSpec
    binaries: Binaries
    image: GuestImage
    platform: PlatformChoice     # for --accel kvm, else for tcg; `environment` redoes it if auto picks KVM
    wrappers: dict[str, tuple[str, ...]]   # --qemu-wrapper, per side it wraps ("source", "destination")


def _arch(config: pytest.Config) -> ArchSpec:
    name = config.getoption("--arch")
    if name not in ARCHES:
        raise SessionUnusable(f"harness: --arch {name}: unsupported guest arch; known: {', '.join(sorted(ARCHES))} "
                              f"(the default is this host's arch, {host_arch()})")
    return arch_spec(name)


def _binary(option: str, spec: str | None, arch: ArchSpec) -> QemuBinary:
    try:
        binary = QemuBinary.locate(spec, arch.qemu_binary)
        binary.identify(arch.name)
    except QemuNotFound as exc:
        raise SessionUnusable(f"harness: {option}: {exc}" if spec else f"harness: {exc}") from None
    return binary


# Where a side's binary comes from when no option names it: the variables QEMU's own tests read.
BINARY_ENV = {"source": ("QTEST_QEMU_BINARY_SRC",), "destination": ("QTEST_QEMU_BINARY_DST",),
              "both": ("QEMU_BINARY", "QTEST_QEMU_BINARY")}


def binary_specs(both: str | None, source: str | None, destination: str | None,
                 environ: Mapping[str, str]) -> dict[str, tuple[str, str | None]]:
    """Each side's binary spec and where it came from (for the one-line error): the side's option, then
    --qemu-binary, then the side's variable ($QTEST_QEMU_BINARY_SRC/_DST), then $QEMU_BINARY / $QTEST_QEMU_BINARY;
    None (qemu-system-ARCH on PATH) when nothing names one. Options always beat the environment."""
    def pick(side: str, option: str, value: str | None) -> tuple[str, str | None]:
        if value:
            return option, value
        if both:
            return "--qemu-binary", both
        for var in BINARY_ENV[side] + BINARY_ENV["both"]:
            if environ.get(var):
                return f"${var}", environ[var]
        return "--qemu-binary", None
    return {"source": pick("source", "--qemu-src", source),
            "destination": pick("destination", "--qemu-dst", destination)}


def resolve_session(config: pytest.Config, probe_features: bool = False) -> SessionSetup:
    """Arch, both binaries and the image, each checked; SessionUnusable (one line) on the first problem."""
    arch = _arch(config)
    _check_accel(config)
    unknown = sorted(set(config.getoption("--assume-fixed")) - KNOWN_BUGS.keys())
    if unknown:
        raise SessionUnusable(f"harness: --assume-fixed {unknown[0]}: no such known QEMU bug; known: "
                              f"{', '.join(sorted(KNOWN_BUGS))} (harness/qemu/known_bugs.py)")
    specs = binary_specs(config.getoption("--qemu-binary"), config.getoption("--qemu-src"),
                         config.getoption("--qemu-dst"), os.environ)
    (source_from, source_spec), (destination_from, destination_spec) = specs["source"], specs["destination"]
    source = _binary(source_from, source_spec, arch)
    destination = source if destination_spec == source_spec else _binary(destination_from, destination_spec, arch)
    wrappers = _wrappers(config)
    if probe_features:
        # `needs` reads the schema of both binaries; a probe that fails must stop the session here, not turn
        # into a skip or an error of each marked test.
        for binary in {source, destination}:
            try:
                binary.features
            except Exception as exc:
                detail = (str(exc).strip().splitlines() or [type(exc).__name__])[-1]
                raise SessionUnusable(f"harness: QMP schema probe of {binary.path} failed: {detail[:200]}") from None
    directory = Path(config.getoption("--image-dir") or Path(config.rootpath) / "build" / "images" / arch.name)
    try:
        image = GuestImage.load(directory, hold=True, current=True)
    except ImageMissing as exc:
        raise SessionUnusable(f"harness: {exc}") from None
    if image.arch != arch.name:
        raise SessionUnusable(f"harness: guest image {directory} is for {image.arch}, not {arch.name} (--arch)")
    accel = "kvm" if config.getoption("--accel") == "kvm" else "tcg"
    return SessionSetup(arch, Binaries(source, destination), image,
                        platform_choice(config, arch, accel, source, destination), wrappers)


def _wrappers(config: pytest.Config) -> dict[str, tuple[str, ...]]:
    """--qemu-wrapper split into words, for each side --qemu-wrapper-side names; SessionUnusable (one line) when
    its program is not on PATH."""
    wrapper, side = config.getoption("--qemu-wrapper"), config.getoption("--qemu-wrapper-side")
    if wrapper is None:
        return {}
    words = tuple(shlex.split(wrapper))
    if not words or shutil.which(words[0]) is None:
        raise SessionUnusable(f"harness: --qemu-wrapper: {words[0] if words else repr(wrapper)}: no such "
                              "program on PATH")
    return {s: words for s in ("source", "destination") if side in (s, "both")}


def platform_choice(config: pytest.Config, arch: ArchSpec, accel: str, source: QemuBinary,
              destination: QemuBinary) -> PlatformChoice:
    """Machine type and CPU both binaries support (harness.qemu.compat); SessionUnusable (one line) if there is none."""
    try:
        return platform_for(arch, accel, source, destination, Path(config.rootpath) / "build" / "cache",
                            config.getoption("--machine"), config.getoption("--cpu"))
    except NoCommonPlatform as exc:
        raise SessionUnusable(f"harness: {exc}") from None
    except Exception as exc:  # the probe itself failed (timeout, no QMP): as the schema probe's failure
        detail = (str(exc).strip().splitlines() or [type(exc).__name__])[-1]
        raise SessionUnusable(f"harness: QMP machine/CPU probe failed: {detail[:200]}") from None


def _check_accel(config: pytest.Config) -> None:
    # --accel kvm is taken as asked (no probe boot): without /dev/kvm every boot would fail, test by test.
    if config.getoption("--accel") == "kvm" and not os.access("/dev/kvm", os.R_OK | os.W_OK):
        raise SessionUnusable("harness: --accel kvm: /dev/kvm is missing or not accessible (use --accel auto or tcg)")


def _check_artefacts_dir(config: pytest.Config) -> None:
    base = Path(config.getoption("--artefacts")).expanduser()
    try:
        base.mkdir(parents=True, exist_ok=True)
        probe = base / f".write-probe-{os.getpid()}"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise SessionUnusable(f"harness: --artefacts {base}: cannot create or write it "
                              f"({exc.strerror or exc})") from None


def _uses(item: pytest.Item, fixtures: frozenset[str]) -> bool:
    return bool(fixtures.intersection(getattr(item, "fixturenames", ())))


@pytest.hookimpl(trylast=True)
def pytest_collection_finish(session: pytest.Session) -> None:
    """The session check, on the final selection (after -k/-m): only what the selected tests use is required."""
    if not hasattr(session.config, "workerinput"):
        session_check(session)


def session_check(session: pytest.Session) -> None:
    config = session.config
    # --collect-only and --fixtures (--setup-plan too) run no test: nothing to check, no QEMU or image needed.
    if config.option.collectonly or config.option.showfixtures or config.option.setupplan or not session.items:
        return
    if any(_uses(item, ARTEFACT_FIXTURES) for item in session.items):
        _check_artefacts_dir(config)
    if any(_uses(item, LINK_FIXTURES) for item in session.items):
        # Only an explicit --topology netns makes namespaces a requirement of the session; a test's own `link`
        # marker, where they cannot be made (not root), is a skip of that test.
        link_options(config, needs_netns=config.getoption("--topology") == "netns")
    needs = any(item.get_closest_marker("needs") for item in session.items)
    if needs or any(_uses(item, QEMU_FIXTURES) for item in session.items):
        setup = config.stash[SETUP_KEY] = resolve_session(config, probe_features=needs)
        if config.get_verbosity() >= 0:
            b = setup.binaries
            say(config, f"harness: arch {setup.arch.name}, source QEMU {b.source}")
            if b.destination != b.source:
                say(config, f"harness: destination QEMU {b.destination}")
            say(config, f"harness: guest image {setup.image.directory}")
            say(config, f"harness: {setup.platform.describe()}")
        if config.getoption("--hosts"):
            hosts = config.stash[HOSTS_KEY] = check_hosts(config, setup.image)
            for found in hosts.remotes.values():
                say(config, f"harness: {found.describe()}")


def check_hosts(config: pytest.Config, image: GuestImage) -> HostsFile:
    """--hosts read and every remote side checked over SSH (reachable with the key, the host key as given, its
    QEMU binary a QEMU, its image dir holding the image's files, its work dir writable): SessionUnusable (one
    line) on the first problem. Each side's description then carries the remote QEMU's version."""
    path = Path(config.getoption("--hosts")).expanduser()
    if config.getoption("--topology") == "netns":
        raise SessionUnusable(f"harness: --hosts {path}: a remote host is not in this host's network namespaces; "
                              "use --topology loopback (the default)")
    try:
        hosts = load_hosts(path)
        checked = {}
        for side, found in hosts.remotes.items():
            connection = Connection(found)
            try:
                version = connection.check([image.kernel.name, image.initrd.name])
            finally:
                connection.close()
            checked[side] = dataclasses.replace(found, version=version)
    except (HostsFileError, RemoteUnusable) as exc:
        raise SessionUnusable(f"harness: --hosts {path}: {exc}") from None
    return dataclasses.replace(hosts, remotes=checked)


def link_options(config: pytest.Config, needs_netns: bool) -> netns.Shaping:
    """--link-rate/--link-delay/--link-loss as a Shaping, checked with --topology: SessionUnusable (one line) for
    a malformed value, a --link-* option without a netns link to apply it to, or namespaces this host cannot make
    when a selected test needs them (`needs_netns`)."""
    given = {name: config.getoption(f"--link-{name}") for name in netns.PARSERS}
    for name, value in given.items():
        try:
            if value is not None:
                netns.PARSERS[name](value)
        except ValueError as exc:
            raise SessionUnusable(f"harness: --link-{name} {exc}") from None
    shaping = netns.shaping_from(**given)
    named = [f"--link-{n}" for n, v in given.items() if v is not None]
    if named and config.getoption("--topology") != "netns":
        raise SessionUnusable(f"harness: {named[0]} shapes the netns link: add --topology netns")
    if needs_netns:
        usable = netns.usable()
        if not usable.available:
            raise SessionUnusable(f"harness: {usable.reason}")
    return shaping


def wants_link(item: pytest.Item) -> bool:
    """The test runs over a netns link: --topology netns, or its own `link` marker."""
    return item.config.getoption("--topology") == "netns" or item.get_closest_marker("link") is not None


def session_setup(config: pytest.Config) -> SessionSetup:
    """The checked setup; resolved now if the session check did not (a fixture asked for dynamically)."""
    setup = config.stash.get(SETUP_KEY, None)
    if setup is None:
        setup = config.stash[SETUP_KEY] = resolve_session(config, probe_features=True)
    return setup


def binaries(config: pytest.Config) -> Binaries:
    return session_setup(config).binaries


def pytest_report_header(config: pytest.Config) -> list[str]:
    # Nothing is probed here: the binaries are checked (and named) once the selection is known.
    return [f"harness: {host.userfaultfd().reason}"]


def pytest_runtest_setup(item: pytest.Item) -> None:
    for marker in item.iter_markers("needs"):
        b = binaries(item.config)
        missing = missing_by_side(marker.kwargs, b.source.features, b.destination.features)
        if missing:
            pytest.skip(lacks_reason(missing, same_binary=b.source == b.destination))
    if item.get_closest_marker("needs_userfaultfd"):
        uffd = host.userfaultfd()
        if not uffd.available:
            pytest.skip(uffd.reason)


def pytest_configure(config: pytest.Config) -> None:
    """An xdist worker checks its session on its own (_WorkerSessionCheck)."""
    if hasattr(config, "workerinput"):
        config.pluginmanager.register(_WorkerSessionCheck(), "qemu_migration_worker_check")


class _WorkerSessionCheck:
    """An xdist worker's session check, before xdist sends the controller its collection (tryfirst): on a bad input
    the worker ends with exit 4 and hands the one line to the controller (workeroutput), which stops the whole run
    with it (pytest_testnodedown) — the same line and status as a serial run, not a crashed worker."""

    @pytest.hookimpl(tryfirst=True)
    def pytest_collection_finish(self, session: pytest.Session) -> None:
        try:
            session_check(session)
        except SessionUnusable as exc:
            session.config.workeroutput[UNUSABLE_OUTPUT] = str(exc)   # type: ignore[attr-defined]
            pytest.exit(str(exc), returncode=pytest.ExitCode.USAGE_ERROR)


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: Any) -> None:
    line = getattr(node, "workeroutput", {}).get(UNUSABLE_OUTPUT)
    if line:
        raise SessionUnusable(line)
