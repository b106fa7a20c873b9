"""pytest plugin: command-line options, markers, fixtures, per-test artefacts, skip reasons from the QMP schema.

Markers
  needs(capabilities=[…], parameters=[…], fields=[…], commands=[…], migration_properties=[…], trace_events=[…],
        parameter_values={parameter: [value, …]})
      skip (with the reason) unless both the source and destination binaries have all of these (trace events:
      the source only, harness.qemu.compat.SOURCE_SIDE_NEEDS; parameter_values: values of an enum parameter such as
      multifd-compression, present only in a QEMU built with them)
  needs_userfaultfd   skip unless postcopy can run here (root or vm.unprivileged_userfaultfd=1)
  known_bug(key, …)   the test is exposed to a known QEMU bug fixed upstream (harness.qemu.known_bugs): an xfail
                      naming the bug when a binary of this run predates the fix (--assume-fixed KEY: it has it)
  guest(**overrides)  MachineConfig overrides for the `guest`/`pair` fixtures (memory_mib=…, cpus=…)
  slow                long matrices: run by `make test`, deselected by `make check`
  smoke               boot, precopy and postcopy with integrity: what `make check` also runs on the other guest arch
  link(rate=…, delay=…, loss=…)
                      run over a network-namespace link (harness.hosts.netns) whatever --topology says, shaped so (tc
                      units: rate "100mbit", one-way delay "5ms", loss "1%"; each overrides its --link-* option);
                      delay or loss skip with the reason on a kernel without netem
  cpus(n)             the host CPUs the test needs while it runs (harness.hosts.parallel's budget), instead of the count
                      derived from what it boots

Session check: once collection is done (so a run of unit tests alone never needs QEMU), the arch, the source and
destination binaries (each must be a QEMU system emulator of that arch: `-version` and QMP query-target), the guest
image (complete, private keys not readable by others) and the artefacts directory are resolved once for the whole
session. Anything wrong stops the session before any test runs, with one line and exit status 4 (pytest's usage
error): a test can then never be skipped, failed or passed because of a bad input.

Parallel runs (pytest-xdist `-n N`, `--dist load --tx …`): the controller names the run directory and hands the
name to every worker, which makes it (mkdir is race-free) and its tests' directories in it; the controller alone
points `latest` at it, writes the index and results.json (from the reports the workers send) and the JUnit file.
Every process reaps what dead runs left at its session start, except a worker on the controller's own host (the
controller already did, before starting it); live siblings are never reaped, their dirs and namespaces being owned
by live pids. Ports and host CPUs are shared through harness.hosts.parallel: each test waits for the CPUs it needs.

Reports: every test's artefacts directory gets its plots at teardown (harness.report.artefacts, drawn by harness.report.plots); at
session end the run directory gets index.html + results.json and ARTEFACTS/index.html shows that run. A test still
running when the session is interrupted (Ctrl-C, SIGTERM) is recorded as "interrupted", and the run header says so.
A migration running longer than --progress-interval seconds prints one line per interval to the terminal.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import logging
import os
import shlex
import shutil
import signal
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping

import pytest

from harness.hosts import capabilities as host

from harness.hosts import netns

from harness.hosts import parallel

from harness.hosts import remote

from harness.core import workdirs
from harness.vm.accel import choose_accel
from harness.qemu.arch import ARCHES, ArchSpec, arch_spec, host_arch
from harness.qemu.compat import NoCommonPlatform, PlatformChoice, lacks_reason, missing_by_side, platform_for
from harness.vm.guest import GuestShell
from harness.qemu.image import GuestImage, ImageMissing
from harness.qemu.known_bugs import KNOWN_BUGS, affecting
from harness.vm.machine import Machine
from harness.qemu.binary import QemuBinary, QemuNotFound
from harness.migration.migrate import TERMINAL_STATUSES
from harness.migration.postmortem import postmortem
from harness.report.index import TestResult, write_index
from harness.core.files import atomic_write_text
from harness.report.artefacts import Artefacts, progress_line, safe_name
from harness.migration.testbed import Environment, Testbed

log = logging.getLogger("harness")
ARTEFACTS_KEY = pytest.StashKey[Artefacts]()
REPORTS_KEY = pytest.StashKey[dict[str, pytest.TestReport]]()
# Session-wide, for the index written at session end.
RUN_ROOT_KEY = pytest.StashKey[Path]()
RUN_HEADER_KEY = pytest.StashKey[dict[str, str]]()
RESULTS_KEY = pytest.StashKey[dict[str, TestResult]]()
TEST_DIRS_KEY = pytest.StashKey[dict[str, Path]]()
PROGRESS_FD_KEY = pytest.StashKey[int]()
INDEX_KEY = pytest.StashKey[Path]()
SETUP_KEY = pytest.StashKey["SessionSetup"]()
HOSTS_KEY = pytest.StashKey[remote.HostsFile]()         # --hosts, checked
PHASES_KEY = pytest.StashKey[dict[str, set[str]]]()     # nodeid → the phases that reported

# Fixtures through which a test boots or probes QEMU: a selected test that uses one of them (directly or through
# testbed, guest, pair, …) makes the session resolve and check binaries, arch and image before anything runs.
QEMU_FIXTURES = frozenset({"environment", "guest_image"})
ARTEFACT_FIXTURES = frozenset({"artefacts_root"})
LINK_FIXTURES = frozenset({"link"})
# What a controller hands its xdist workers (node.workerinput): the run directory's name, and its host.
RUN_NAME_INPUT = "qmh_run_name"
HOST_INPUT = "qmh_controller_host"
UNUSABLE_OUTPUT = "qmh_session_unusable"     # a worker's session check's one line, back to the controller
RUN_NAME_KEY = pytest.StashKey[str]()
LINKED_KEY = pytest.StashKey[bool]()
BUDGET_KEY = pytest.StashKey["parallel.CpuBudget | None"]()
# Waiting for CPUs longer than this is an error of the test (the wait does not count against its pytest-timeout).
CPU_WAIT_TIMEOUT_S = 3600.0


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("qemu-migration", "QEMU migration harness")
    group.addoption("--qemu-binary", default=None,
                    help="QEMU binary or build tree for both sides (default: $QEMU_BINARY, $QTEST_QEMU_BINARY, "
                         "else qemu-system-ARCH on PATH)")
    group.addoption("--qemu-src", default=None,
                    help="QEMU binary or build tree for the source (cross-version; default $QTEST_QEMU_BINARY_SRC)")
    group.addoption("--qemu-dst", default=None,
                    help="QEMU binary or build tree for the destination (default $QTEST_QEMU_BINARY_DST)")
    group.addoption("--qemu-wrapper", default=None, metavar="CMD",
                    help="run QEMU under this command, e.g. 'gdb -batch -ex run --args', 'valgrind', 'rr record' "
                         "(timing verdicts are meaningless then)")
    group.addoption("--qemu-wrapper-side", default="both", choices=["source", "destination", "both"],
                    help="whose QEMU --qemu-wrapper wraps: the source's (Testbed.boot), the destination's "
                         "(Testbed.incoming) or both (default)")
    group.addoption("--keep-workdir", nargs="?", const="always", default="never",
                    choices=["never", "failed", "always"],
                    help="keep each test's work dir (migration streams and files, RAM dumps; not sockets) in its "
                         "artefacts as workdir/: always (the bare option) or only when the test failed")
    group.addoption("--machine", default=None,
                    help="machine type for both sides (default: the newest versioned one both binaries support "
                         "when they differ, else the arch's alias)")
    group.addoption("--cpu", default=None, help="CPU model for both sides (default: see harness.qemu.compat)")
    group.addoption("--accel", default=os.environ.get("HARNESS_ACCEL", "auto"), choices=["auto", "kvm", "tcg"],
                    help="auto = KVM only if a probe guest boots under it, else TCG")
    group.addoption("--arch", default=os.environ.get("HARNESS_ARCH", host_arch()), help="guest architecture")
    group.addoption("--image-dir", default=None, help="guest image directory (default: build/images/ARCH)")
    group.addoption("--assume-fixed", action="append", default=[], metavar="KEY",
                    help=f"this build carries the fix of a known QEMU bug (harness.qemu.known_bugs: "
                         f"{', '.join(sorted(KNOWN_BUGS))}): its tests are not expected to fail")
    group.addoption("--artefacts", default=os.environ.get("HARNESS_ARTEFACTS", "artefacts"),
                    help="where each run writes its per-test artefacts (a run-* subdir, 'latest' links to it)")
    group.addoption("--topology", default="loopback", choices=["loopback", "netns"],
                    help="loopback (default): both QEMUs in this network namespace, migrating over 127.0.0.1; "
                         "netns: each in a namespace of its own, migrating over TCP across a veth pair (root)")
    group.addoption("--link-rate", default=None, metavar="RATE",
                    help="netns link bandwidth, each direction, in tc units (100mbit, 1gbit): tc tbf")
    group.addoption("--link-delay", default=None, metavar="DELAY",
                    help="netns link one-way delay, each direction (5ms: 10 ms more round trip): tc netem")
    group.addoption("--link-loss", default=None, metavar="PERCENT",
                    help="netns link packet loss, each direction (1%%): tc netem")
    group.addoption("--hosts", default=None, metavar="FILE",
                    help="run the source and/or destination QEMU on other hosts over SSH: a TOML file with a "
                         "[source] and/or [destination] section (README, \"Remote QEMUs\")")
    group.addoption("--progress-interval", type=float, default=float(os.environ.get("HARNESS_PROGRESS", "10")),
                    help="seconds between progress lines of a long migration (0: none; default 10)")
    group.addoption("--cpu-budget", type=int, default=None, metavar="N",
                    help="host CPUs this user's harness tests may use at once, shared by every run and xdist worker "
                         "(default: the CPUs this process may run on; 0: no budget)")


class SessionUnusable(pytest.UsageError):
    """A bad input found by the session check: pytest prints `ERROR: <line>` and exits 4."""


def worker_id(config: pytest.Config) -> str | None:
    """This process's xdist worker id (gw0, gw1, …), None in a serial run or the controller."""
    workerinput = getattr(config, "workerinput", None)
    return None if workerinput is None else str(workerinput.get("workerid"))


def is_controller(config: pytest.Config) -> bool:
    """This process distributes the run to xdist workers and runs no test itself."""
    return (not hasattr(config, "workerinput") and config.getoption("dist", "no") != "no"
            and bool(config.getoption("tx", None)))


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: Any) -> None:
    """xdist, on the controller, before a worker starts: the run directory's name and where the controller runs."""
    node.workerinput[RUN_NAME_INPUT] = node.config.stash[RUN_NAME_KEY]
    node.workerinput[HOST_INPUT] = socket.gethostname()


def pytest_configure(config: pytest.Config) -> None:
    for line in [
        "needs(**requirements): skip unless the QEMU binaries have these capabilities/parameters/fields/…",
        "needs_userfaultfd: skip unless postcopy can use userfaultfd here",
        "known_bug(key, ...): exposed to a known, fixed QEMU bug (harness.qemu.known_bugs): xfail where a binary has it",
        "guest(**overrides): MachineConfig overrides for the guest and pair fixtures",
        "slow: long matrix; run by `make test`, not by `make check`",
        "smoke: boot, precopy and postcopy with integrity; `make check` runs these on the other guest arch too",
        "link(rate=None, delay=None, loss=None): run over a shaped network-namespace link (harness.hosts.netns)",
        "cpus(n): the host CPUs the test needs while it runs (the CPU budget), instead of the derived count",
    ]:
        config.addinivalue_line("markers", line)
    budget = config.getoption("--cpu-budget", None)
    if budget is not None and budget < 0:
        raise SessionUnusable(f"harness: --cpu-budget {budget}: not a CPU count (0: no budget)")
    if is_controller(config):
        config.stash[RUN_NAME_KEY] = run_name()
    if hasattr(config, "workerinput"):
        config.pluginmanager.register(_WorkerSessionCheck(), "qemu_migration_worker_check")
    global _interrupt, _config
    _interrupt = None
    _config = config
    # SIGTERM (CI timeout, kill) must unwind like Ctrl-C so every fixture cleans up its QEMU.
    if hasattr(signal, "SIGTERM"):
        signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    config.stash[RESULTS_KEY] = {}
    config.stash[PHASES_KEY] = {}
    config.stash[TEST_DIRS_KEY] = {}
    config.stash[RUN_HEADER_KEY] = {"started": datetime.datetime.now().isoformat(timespec="seconds"),
                                    "command": " ".join(["pytest", *config.invocation_params.args])}
    # Output capture is suspended here (it covers only conftest loading and each test), so fd 1 is the real
    # terminal or CI log: a duplicate of it lets progress lines through while a test's output is captured.
    # An xdist worker's fd 1 is /dev/null (execnet talks over the original): its progress goes to stderr, which
    # it shares with the controller.
    if config.getoption("--progress-interval", 0) > 0:
        try:
            config.stash[PROGRESS_FD_KEY] = os.dup(2 if hasattr(config, "workerinput") else 1)
        except OSError:
            pass


def pytest_unconfigure(config: pytest.Config) -> None:
    global _config
    _config = None
    fd = config.stash.get(PROGRESS_FD_KEY, None)
    if fd is not None:
        os.close(fd)
        del config.stash[PROGRESS_FD_KEY]


def _raise_keyboard_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum} ({signal.Signals(signum).name})")


def pytest_sessionstart(session: pytest.Session) -> None:
    workerinput = getattr(session.config, "workerinput", None)
    if workerinput is not None and workerinput.get(HOST_INPUT) == socket.gethostname():
        return   # the controller reaped this host before it started the workers
    # Private temp dirs of runs that died (SIGKILL, power loss) are removed before this run makes its own. Only a
    # dead owner's: a live sibling worker's dirs and namespaces carry its live pid and start time.
    reaped = workdirs.reap_stale()
    if reaped:
        _say(session.config, f"harness: reaped {len(reaped)} temp dir(s) left by dead runs: "
                             + " ".join(str(p) for p in reaped))
    # Likewise their network namespaces (--topology netns), with the veth and qdiscs inside them.
    namespaces = netns.reap_stale()
    if namespaces:
        _say(session.config, f"harness: reaped {len(namespaces)} network namespace(s) left by dead runs: "
                             + " ".join(namespaces))


def _say(config: pytest.Config, line: str) -> None:
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
                        _platform(config, arch, accel, source, destination), wrappers)


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


def _platform(config: pytest.Config, arch: ArchSpec, accel: str, source: QemuBinary,
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
        _session_check(session)


class _WorkerSessionCheck:
    """An xdist worker's session check, before xdist sends the controller its collection (tryfirst): on a bad input
    the worker ends with exit 4 and hands the one line to the controller (workeroutput), which stops the whole run
    with it (pytest_testnodedown) — the same line and status as a serial run, not a crashed worker."""

    @pytest.hookimpl(tryfirst=True)
    def pytest_collection_finish(self, session: pytest.Session) -> None:
        try:
            _session_check(session)
        except SessionUnusable as exc:
            session.config.workeroutput[UNUSABLE_OUTPUT] = str(exc)   # type: ignore[attr-defined]
            pytest.exit(str(exc), returncode=pytest.ExitCode.USAGE_ERROR)


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: Any) -> None:
    line = getattr(node, "workeroutput", {}).get(UNUSABLE_OUTPUT)
    if line:
        raise SessionUnusable(line)


def _session_check(session: pytest.Session) -> None:
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
            _say(config, f"harness: arch {setup.arch.name}, source QEMU {b.source}")
            if b.destination != b.source:
                _say(config, f"harness: destination QEMU {b.destination}")
            _say(config, f"harness: guest image {setup.image.directory}")
            _say(config, f"harness: {setup.platform.describe()}")
        if config.getoption("--hosts"):
            hosts = config.stash[HOSTS_KEY] = check_hosts(config, setup.image)
            for found in hosts.remotes.values():
                _say(config, f"harness: {found.describe()}")


def check_hosts(config: pytest.Config, image: GuestImage) -> remote.HostsFile:
    """--hosts read and every remote side checked over SSH (reachable with the key, the host key as given, its
    QEMU binary a QEMU, its image dir holding the image's files, its work dir writable): SessionUnusable (one
    line) on the first problem. Each side's description then carries the remote QEMU's version."""
    path = Path(config.getoption("--hosts")).expanduser()
    if config.getoption("--topology") == "netns":
        raise SessionUnusable(f"harness: --hosts {path}: a remote host is not in this host's network namespaces; "
                              "use --topology loopback (the default)")
    try:
        hosts = remote.load_hosts(path)
        checked = {}
        for side, found in hosts.remotes.items():
            connection = remote.Connection(found)
            try:
                version = connection.check([image.kernel.name, image.initrd.name])
            finally:
                connection.close()
            checked[side] = dataclasses.replace(found, version=version)
    except (remote.HostsFileError, remote.RemoteUnusable) as exc:
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


def _wants_link(item: pytest.Item) -> bool:
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


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    """One verdict idiom: Artefacts.verdict records and never raises, so every oracle a test computes is recorded;
    here, once the body has ended, the first failing verdict fails the test — or, when there is more to say (a
    guest kernel crash, a QEMU exit, a lost SSH session, an error after failing verdicts), the post-mortem's
    message, whose first line says what broke first (harness.migration.postmortem). Skips, xfails and
    interrupts (BaseExceptions) pass through untouched."""
    artefacts = item.stash.get(ARTEFACTS_KEY, None)
    testbed = getattr(item, "funcargs", {}).get("testbed")
    try:
        result = yield
    except Exception as exc:
        if artefacts is None:
            raise
        diagnosed = postmortem(testbed, artefacts, exc)
        if diagnosed is None:
            raise
        raise diagnosed from exc
    if artefacts is not None:
        diagnosed = postmortem(testbed, artefacts, None)
        if diagnosed is not None:
            raise diagnosed
        artefacts.raise_first_failure()
    return result


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


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """Every report, where the index is written: in a serial run as each test's phases end; on an xdist controller
    as the workers send them in (a worker writes no index, so its own calls record nothing)."""
    config = _config
    if config is None or hasattr(config, "workerinput"):
        return
    _record_result(config, report)
    if is_controller(config) and not config.stash.get(LINKED_KEY, False):
        _adopt_run_dir(config)


def _adopt_run_dir(config: pytest.Config) -> None:
    """Controller: once a worker has made the run directory, point `latest` at it and write the index there."""
    run = Path(config.getoption("--artefacts")).resolve() / config.stash[RUN_NAME_KEY]
    if run.is_dir():
        point_latest(run)
        config.stash[RUN_ROOT_KEY] = run
        config.stash[LINKED_KEY] = True


def _record_result(config: pytest.Config, report: pytest.TestReport) -> None:
    """Fold setup/call/teardown reports into one TestResult per test, for the index.

    A test is "running" until a report decides it: only a passed call makes it "passed". One that never reports
    its call or teardown (Ctrl-C or SIGTERM mid-test unwinds without them) is "interrupted" at session end."""
    results = config.stash.get(RESULTS_KEY, None)
    if results is None:
        return
    config.stash[PHASES_KEY].setdefault(report.nodeid, set()).add(report.when)
    result = results.setdefault(report.nodeid, TestResult(report.nodeid, "running"))
    result.duration += report.duration
    if report.when == "call" and report.passed and not hasattr(report, "wasxfail") and result.outcome == "running":
        result.outcome = "passed"
    if hasattr(report, "wasxfail"):
        result.outcome = "xfailed" if report.skipped else "xpassed"
        result.message = str(report.wasxfail)
    elif report.skipped:
        result.outcome = "skipped"
        longrepr = report.longrepr
        result.message = str(longrepr[2]) if isinstance(longrepr, tuple) and len(longrepr) == 3 else str(longrepr)
    elif report.failed:
        result.outcome = "failed" if report.when == "call" and result.outcome != "error" else "error"
        result.message = _crash_message(report)


def _crash_message(report: pytest.TestReport) -> str:
    crash = getattr(report.longrepr, "reprcrash", None)
    if crash is not None and getattr(crash, "message", None):
        return str(crash.message)
    return report.longreprtext.strip().splitlines()[-1] if report.longreprtext.strip() else "failed"


def pytest_keyboard_interrupt(excinfo: pytest.ExceptionInfo[BaseException]) -> None:
    global _interrupt
    # SIGTERM arrives as KeyboardInterrupt("signal 15 (SIGTERM)") from the handler above; Python's own SIGINT
    # handler gives a bare KeyboardInterrupt; pytest.exit() an Exit with its reason.
    plain = "Ctrl-C (SIGINT)" if excinfo.typename == "KeyboardInterrupt" else excinfo.typename
    _interrupt = str(excinfo.value) or plain


_interrupt: str | None = None   # pytest_keyboard_interrupt gets no config; one session per process
_config: pytest.Config | None = None   # nor does pytest_runtest_logreport


def _mark_interrupted(config: pytest.Config) -> str | None:
    """Results a test never finished get "interrupted"; returns what interrupted the session, if anything did."""
    phases = config.stash.get(PHASES_KEY, {})
    unfinished = []
    why = _interrupt or "session stopped"
    for result in config.stash.get(RESULTS_KEY, {}).values():
        done = sorted(phases.get(result.nodeid, ()), key=["setup", "call", "teardown"].index)
        if "teardown" in done and result.outcome != "running":
            continue
        if result.outcome in ("running", "passed", "xpassed"):
            # A pass whose cleanup never ran is not a pass anyone checked to the end.
            result.message = f"interrupted ({why}) after {', '.join(done) or 'nothing'}"
            result.outcome = "interrupted"
        else:  # a failure or skip already decided stays; say that the teardown did not finish
            result.message = f"{result.message} (then interrupted during teardown: {why})".strip()
        unfinished.append(result.nodeid)
    if _interrupt is None and not unfinished:
        return None
    return f"{_interrupt or 'session stopped'}" + (f" during {', '.join(unfinished)}" if unfinished else "")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Write the run's index.html (and ARTEFACTS/index.html) — only if a harness test made a run directory."""
    config = session.config
    if hasattr(config, "workerinput"):
        return   # the controller writes the run's index
    interrupted = _mark_interrupted(config)
    if is_controller(config) and not config.stash.get(LINKED_KEY, False):
        _adopt_run_dir(config)
    root = config.stash.get(RUN_ROOT_KEY, None)
    if root is None:
        return
    results = list(config.stash.get(RESULTS_KEY, {}).values())
    dirs = config.stash.get(TEST_DIRS_KEY, {})
    for result in results:
        # A worker's test: its directory is named as the `artefacts` fixture names it (on a remote worker's host,
        # not here: then none).
        where = dirs.get(result.nodeid) or root / safe_name(result.nodeid)
        result.directory = where if where.is_dir() else None
    header = {**_worker_headers(root), **config.stash.get(RUN_HEADER_KEY, {})}
    if interrupted:
        header["interrupted"] = interrupted
    started = header.get("started")
    if started:
        elapsed = datetime.datetime.now() - datetime.datetime.fromisoformat(started)
        header["wall time"] = f"{elapsed.total_seconds():.0f} s"
    header["exit status"] = str(int(exitstatus))
    junit = getattr(config.option, "xmlpath", None)
    if junit:
        header["JUnit XML"] = str(Path(junit).resolve())
    try:
        page = write_index(root, results, header)
    except Exception as exc:  # the index must never change the run's outcome
        log.warning("index of %s failed: %s", root, exc)
        return
    config.stash[INDEX_KEY] = page


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    page = config.stash.get(INDEX_KEY, None)
    if page is not None:
        terminalreporter.write_line(f"harness: report {page} (latest run also in {page.parent.parent / 'index.html'})")


# -- session fixtures ------------------------------------------------------------------------------------------
def run_name() -> str:
    """A run directory's name, unique across concurrent runs (the pid of the run's serial process or controller)."""
    return datetime.datetime.now().strftime("run-%Y%m%d-%H%M%S-%f") + f"-p{os.getpid()}"


def point_latest(run: Path) -> None:
    """run.parent/latest → run. The link is made under a private name and renamed over `latest`: rename is atomic,
    so a concurrent run never sees `latest` missing and never fails on a link another run just made."""
    latest = run.parent / "latest"
    if latest.is_symlink() or not latest.exists():   # never replace a real file or directory named latest
        link = run.parent / f".latest-{os.getpid()}.tmp"
        link.unlink(missing_ok=True)
        link.symlink_to(run.name)
        os.replace(link, latest)


def make_run_dir(base: Path) -> Path:
    """A new run-* directory under `base` with base/latest pointing at it."""
    base.mkdir(parents=True, exist_ok=True)
    run = base / run_name()
    run.mkdir()
    point_latest(run)
    return run


@pytest.fixture(scope="session")
def artefacts_root(pytestconfig: pytest.Config) -> Path:
    """This run's artefact directory, ARTEFACTS/run-<time>-<pid> (`latest` points at it): one subdirectory per
    test, the run's results.json and index.html. In an xdist worker, the directory the controller named (each
    worker makes it if it is not there yet; on another host, under that host's ARTEFACTS)."""
    base = Path(pytestconfig.getoption("--artefacts")).resolve()
    workerinput = getattr(pytestconfig, "workerinput", None)
    if workerinput is not None and RUN_NAME_INPUT in workerinput:
        run = base / workerinput[RUN_NAME_INPUT]
        run.mkdir(parents=True, exist_ok=True)
    else:
        run = make_run_dir(base)
    pytestconfig.stash[RUN_ROOT_KEY] = run
    return run


def _worker_headers(root: Path) -> dict[str, str]:
    """What workers' `environment` fixtures found (QEMU, accelerator, …: header-WORKER.json in the run directory),
    for the controller's index header; the first worker's value of each line."""
    merged: dict[str, str] = {}
    for path in sorted(root.glob("header-*.json")):
        try:
            for key, value in json.loads(path.read_text()).items():
                merged.setdefault(key, value)
        except (OSError, ValueError):
            continue
    return merged


@pytest.fixture(scope="session")
def guest_image(pytestconfig: pytest.Config) -> GuestImage:
    """The guest image of --arch (kernel, initramfs, SSH keys), checked complete, private and built from this
    checkout's sources at session start, and held shared so a rebuild waits for the run."""
    return session_setup(pytestconfig).image


@pytest.fixture(scope="session")
def environment(pytestconfig: pytest.Config, guest_image: GuestImage, artefacts_root: Path) -> Environment:
    """The session's choices: source and destination binaries, image, arch, accelerator (--accel auto probes KVM
    with a deadline and says in one line what it chose) and the machine type + CPU both binaries support."""
    b = session_setup(pytestconfig).binaries
    worker = worker_id(pytestconfig)
    accel = choose_accel(pytestconfig.getoption("--accel"), b.source, guest_image,
                         artefacts_root / ("accel-probe" + (f"-{worker}" if worker else "")),
                         cache_dir=Path(pytestconfig.rootpath) / "build" / "cache")
    reporter = pytestconfig.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line(f"harness: {accel.describe()}")
    log.warning("%s", accel.describe())
    header = pytestconfig.stash.setdefault(RUN_HEADER_KEY, {})
    header["source QEMU"] = str(b.source)
    if b.destination != b.source:
        header["destination QEMU"] = str(b.destination)
    header["accelerator"] = accel.describe().removeprefix("accelerator: ")
    header["guest image"] = f"{guest_image.directory} (inputs {guest_image.inputs_hash[:12]})"
    setup = session_setup(pytestconfig)
    platform = setup.platform
    if accel.name == "kvm" and pytestconfig.getoption("--accel") != "kvm":
        # --accel auto chose KVM after the session check: the CPU must be one this host can run.
        try:
            platform = _platform(pytestconfig, setup.arch, "kvm", b.source, b.destination)
        except SessionUnusable as exc:
            pytest.exit(str(exc), returncode=pytest.ExitCode.USAGE_ERROR)
    header["machine and CPU"] = platform.describe()
    if pytestconfig.getoption("--topology") == "netns":
        header["topology"] = ("netns: each QEMU in its own network namespace, migrating over a veth pair ("
                              + link_options(pytestconfig, needs_netns=True).describe() + ")")
    hosts = pytestconfig.stash.get(HOSTS_KEY, None)
    for side, found in (hosts.remotes.items() if hosts else ()):
        local = b.destination if side == "destination" else b.source
        header[f"{side} QEMU"] = f"{found.describe()}; QMP schema features read from {local} here"
    if setup.wrappers:
        header["QEMU wrapper"] = (f"{pytestconfig.getoption('--qemu-wrapper')} "
                                  f"({pytestconfig.getoption('--qemu-wrapper-side')}; timing verdicts are "
                                  "meaningless under it)")
    if worker:
        atomic_write_text(artefacts_root / f"header-{worker}.json", json.dumps(header))
    return Environment(b.source, b.destination, guest_image, setup.arch, accel, platform, setup.wrappers,
                       remotes=hosts.remotes if hosts else {}, local_address=hosts.local_address if hosts else None)


# -- per-test fixtures -----------------------------------------------------------------------------------------
@pytest.fixture
def artefacts(request: pytest.FixtureRequest, artefacts_root: Path) -> Iterator[Artefacts]:
    """The test's artefact directory and recorder: verdicts, JSON, plots; on failure also failure.txt with the
    failing verdict, and the QEMU logs, command lines and consoles the machines left there."""
    record = Artefacts(artefacts_root / safe_name(request.node.nodeid), request.node.nodeid)
    request.node.stash[ARTEFACTS_KEY] = record
    request.config.stash.setdefault(TEST_DIRS_KEY, {})[request.node.nodeid] = record.directory
    yield record
    reports = request.node.stash.get(REPORTS_KEY, {})
    failed = [r for r in reports.values() if r.failed]
    outcome = _plot_outcome(reports, failed)
    record.finalize(outcome, failure=_crash_message(failed[0]) if failed else
                    "interrupted before the test body finished" if outcome == "INTERRUPTED" else None)
    _junit_properties(request.node, record)


def _junit_properties(node: pytest.Item, record: Artefacts) -> None:
    """What a CI page shows beside the test (JUnit <properties>): its artefacts folder, its plots, and the first
    failing verdict in one line. Added at teardown, before pytest writes the test's JUnit record."""
    node.user_properties.append(("artefacts", str(record.directory)))
    for plot in sorted(record.directory.glob("*.png")):
        node.user_properties.append(("plot", str(plot)))
    failing = next((v for v in record.verdicts if not v.passed), None)
    if failing is not None:
        node.user_properties.append(("failed verdict", f"{failing.name}: {failing.why}"))


def _plot_outcome(reports: dict[str, pytest.TestReport], failed: list[pytest.TestReport]) -> str:
    """What the plots' titles say. Only a call that ran and passed is "passed": an xfail, a skip or a call that
    never reported (Ctrl-C, SIGTERM) must not be drawn as a pass."""
    setup, call = reports.get("setup"), reports.get("call")
    if failed:
        return "FAILED"
    if setup is not None and setup.skipped:
        return "SKIPPED"
    if call is None:
        return "INTERRUPTED"
    if hasattr(call, "wasxfail"):
        return "XFAILED" if call.skipped else "XPASSED"
    return "SKIPPED" if call.skipped else "passed"


@pytest.fixture
def link(artefacts: Artefacts, request: pytest.FixtureRequest) -> Iterator[netns.Link | None]:
    """The network between the test's source and destination. None on the default loopback topology; under
    --topology netns or a `link` marker, a link of the test's own (harness.hosts.netns): two fresh namespaces joined by a
    veth pair, shaped by the marker and --link-* options, measured (ping RTT, iperf3 throughput) before any QEMU
    starts and recorded with its configuration in link.json; deleted after the test, whatever happened. Delay or
    loss on a kernel without netem, no ping/iperf3, or (for a `link` marker) no way to make namespaces, skip the
    test with the reason."""
    if not _wants_link(request.node):
        yield None
        return
    shaping = link_options(request.config, needs_netns=False)
    if not (usable := netns.usable()).available:
        pytest.skip(usable.reason)
    marker = request.node.get_closest_marker("link")
    if marker is not None:
        shaping = netns.shaping_from(**marker.kwargs, base=shaping)
    if shaping.needs_netem and not (netem := netns.netem_available()).available:
        pytest.skip(netem.reason)
    if (missing := netns.measuring_tools_missing()) is not None:
        pytest.skip(missing)
    made = netns.create(shaping)
    try:
        made.measure()
        artefacts.write_json("link", made)
        yield made
    finally:
        made.close()


def _budget(config: pytest.Config) -> parallel.CpuBudget | None:
    """This process's view of the host CPU budget (None with --cpu-budget 0), made on first use."""
    if BUDGET_KEY not in config.stash:
        size = config.getoption("--cpu-budget")
        config.stash[BUDGET_KEY] = None if size == 0 else parallel.CpuBudget(size=size)
    return config.stash[BUDGET_KEY]


def cpu_need(request: pytest.FixtureRequest, budget: int) -> parallel.CpuNeed:
    """parallel.cpus_needed for this test: its `cpus` marker, the fixtures it names and gets, its guest overrides."""
    item = request.node
    marker = item.get_closest_marker("cpus")
    info = getattr(item, "_fixtureinfo", None)
    return parallel.cpus_needed(getattr(info, "initialnames", ()), getattr(item, "fixturenames", ()),
                                _guest_overrides(request), marker.args[0] if marker is not None else None, budget)


class _TimeoutPaused:
    """pytest-timeout's timer (signal method: ITIMER_REAL) stopped for the duration, then re-armed with what was
    left: waiting for CPUs other tests hold is not this test's time."""

    def __enter__(self) -> "_TimeoutPaused":
        self.left = signal.getitimer(signal.ITIMER_REAL)[0] if threading.current_thread() is threading.main_thread() \
            else 0.0
        if self.left > 0:
            signal.setitimer(signal.ITIMER_REAL, 0)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.left > 0:
            signal.setitimer(signal.ITIMER_REAL, self.left)


@pytest.fixture
def cpu_budget(request: pytest.FixtureRequest, artefacts: Artefacts) -> Iterator[parallel.CpuGrant | None]:
    """The host CPUs this test needs, taken from the host-wide budget (harness.hosts.parallel: one flock'd token per CPU,
    shared by every xdist worker and every run of this user) before its first QEMU starts, and given back at
    teardown whatever happened. The need: `@pytest.mark.cpus(n)`, else one per vCPU of each guest it boots (a
    source + destination pair of 1-vCPU guests: 2). cpus.json records the need, why, and how long the test waited;
    the wait does not count against its timeout. None (and no wait) with --cpu-budget 0."""
    budget = _budget(request.config)
    if budget is None:
        yield None
        return
    need = cpu_need(request, budget.size)
    with _TimeoutPaused():
        grant = budget.acquire(need.cpus, timeout=CPU_WAIT_TIMEOUT_S)
    try:
        artefacts.write_json("cpus", {"needed": need.cpus, "why": need.why, "budget": budget.size,
                                      "tokens": grant.tokens, "waited_s": grant.waited_s,
                                      "worker": worker_id(request.config), "pid": os.getpid()})
        request.node.user_properties.append(("cpu wait", f"{grant.waited_s:.1f} s for {need.cpus} CPU(s)"))
        yield grant
    finally:
        grant.release()


@pytest.fixture
def testbed(environment: Environment, artefacts: Artefacts, cpu_budget: parallel.CpuGrant | None,
            link: netns.Link | None, request: pytest.FixtureRequest) -> Iterator[Testbed]:
    """The test's QEMUs (boot, incoming, migrate), on this session's binaries, accelerator, machine and CPU, and
    over the test's `link` when it has one; every QEMU it started is stopped and its exit checked at teardown. A
    `known_bug` the run's binaries have turns the test into an expected failure here, where the accelerator is
    known."""
    _expect_known_bugs(request, environment)
    bed = Testbed(environment, artefacts, link)
    progress = _start_progress(request, bed)
    try:
        yield bed
    finally:
        try:
            bed.close(keep_workdir=_keep_workdir(request))
        finally:
            if progress is not None:
                progress.stop()


def _keep_workdir(request: pytest.FixtureRequest) -> bool:
    """--keep-workdir always, or failed and this test's setup or call failed (its reports are in by teardown)."""
    mode = request.config.getoption("--keep-workdir")
    failed = any(report.failed for report in request.node.stash.get(REPORTS_KEY, {}).values())
    return mode == "always" or (mode == "failed" and failed)


def _expect_known_bugs(request: pytest.FixtureRequest, env: Environment) -> None:
    keys = [key for marker in request.node.iter_markers("known_bug") for key in marker.args]
    versions = {"source": env.source_binary.version, "destination": env.destination_binary.version}
    for bug, reason in affecting(keys, versions, env.accel.name,
                                 frozenset(request.config.getoption("--assume-fixed"))):
        request.applymarker(pytest.mark.xfail(reason=reason, strict=bug.deterministic))


class MigrationProgress:
    """Every `interval` seconds, one terminal line per migration of this test that has run longer than that,
    and one when such a migration ends; short migrations print nothing."""

    def __init__(self, bed: Testbed, nodeid: str, fd: int, interval: float) -> None:
        self.bed, self.fd, self.interval = bed, fd, interval
        self.prefix = nodeid.rsplit("/", 1)[-1]
        self._reported: dict[int, float] = {}   # id(migration) -> elapsed time of its last line
        self._ended: set[int] = set()
        self._stop = threading.Event()
        self._first_line = True
        self._thread = threading.Thread(target=self._run, name="harness-progress", daemon=True)

    def start(self) -> "MigrationProgress":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.wait(1.0):  # a periodic display tick, not synchronisation
            try:
                self.tick(time.monotonic())
            except Exception as exc:  # progress output must never disturb a test
                log.debug("progress: %s", exc)

    def tick(self, now: float) -> None:
        for migration in list(self.bed.migrations):
            if migration.sampler is None or id(migration) in self._ended:
                continue
            series = migration.series
            elapsed = now - series.t0
            finished = (migration.name in self.bed.artefacts.series
                        or series.status() in TERMINAL_STATUSES)
            key = id(migration)
            if finished:
                if key in self._reported:
                    self._write(progress_line(migration.name, series, elapsed) + " (ended)")
                self._ended.add(key)
            elif elapsed >= self._reported.get(key, 0.0) + self.interval:
                self._reported[key] = elapsed
                self._write(progress_line(migration.name, series, elapsed))

    def _write(self, line: str) -> None:
        # The first line of a test starts on a fresh line: pytest's progress dots or test id may precede it.
        text = ("\n" if self._first_line else "") + f"  [{self.prefix}] {line}\n"
        self._first_line = False
        os.write(self.fd, text.encode(errors="replace"))


def _start_progress(request: pytest.FixtureRequest, bed: Testbed) -> MigrationProgress | None:
    fd = request.config.stash.get(PROGRESS_FD_KEY, None)
    interval = request.config.getoption("--progress-interval")
    if fd is None or not interval or interval <= 0:
        return None
    return MigrationProgress(bed, request.node.nodeid, fd, interval).start()


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
    """The booted guest's SSH shell (paramiko): connecting is retried, a command only when marked idempotent."""
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
