"""The harness's fixtures: the run's artefacts root, guest image and environment (session); each test's artefacts,
link, CPU grant, testbed, guest, ssh, pair and paused_pair. Every one is documented (`pytest --fixtures`)."""

from __future__ import annotations

import json
import logging
import os
import signal
import threading
from pathlib import Path
from typing import Any, Iterator

import pytest

from harness.core.files import atomic_write_text
from harness.hosts import netns, parallel
from harness.migration.testbed import Environment, Pair, Testbed
from harness.migration.warm_boot import WarmBoots
from harness.plugin.progress import start_progress
from harness.plugin.results import (ARTEFACTS_KEY, REPORTS_KEY, RUN_HEADER_KEY, RUN_ROOT_KEY, TEST_DIRS_KEY,
                                    TESTBED_KEY, crash_message, junit_properties, make_run_dir, plot_outcome)
from harness.plugin.session import (HOSTS_KEY, SessionUnusable, link_options, platform_choice, session_setup,
                                    wants_link)
from harness.plugin.xdist_roles import RUN_NAME_INPUT, worker_id
from harness.qemu.image import GuestImage
from harness.qemu.known_bugs import KNOWN_BUGS, KnownBug, affecting, describe
from harness.report.artefacts import Artefacts, safe_name
from harness.vm.accel import choose_accel
from harness.vm.guest import GuestShell
from harness.vm.machine import Machine

log = logging.getLogger("harness")
BUDGET_KEY = pytest.StashKey["parallel.CpuBudget | None"]()
# Waiting for CPUs longer than this is an error of the test (the wait does not count against its pytest-timeout).
CPU_WAIT_TIMEOUT_S = 3600.0


# -- session fixtures ------------------------------------------------------------------------------------------
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
            platform = platform_choice(pytestconfig, setup.arch, "kvm", b.source, b.destination)
        except SessionUnusable as exc:
            pytest.exit(str(exc), returncode=pytest.ExitCode.USAGE_ERROR)
    header["machine and CPU"] = platform.describe()
    bugs = [describe(bug, reason) for bug, reason in affecting(
        KNOWN_BUGS, {"source": b.source.version, "destination": b.destination.version}, accel.name,
        frozenset(pytestconfig.getoption("--assume-fixed")))]
    if bugs:
        header["known QEMU bugs"] = "; ".join(bugs)
        for line in bugs:
            if reporter is not None:
                reporter.write_line(f"harness: known QEMU bug {line}")
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



@pytest.fixture(scope="session")
def warm_boots(pytestconfig: pytest.Config) -> Iterator[WarmBoots]:
    """The session's warm boots (harness.migration.warm_boot): a source guest booted once per binary and guest
    configuration, saved, and restored for every later test that boots one like it (`cold_boot` marker or
    --cold-boot: none). The saves are removed at session end; warm-boots-<worker>.json in the run directory lists
    what each boot took."""
    warm = WarmBoots(enabled=not pytestconfig.getoption("--cold-boot"))
    try:
        yield warm
    finally:
        warm.close()
        run = pytestconfig.stash.get(RUN_ROOT_KEY, None)
        if run is not None and warm.boots:
            atomic_write_text(run / f"warm-boots-{worker_id(pytestconfig) or 'main'}.json",
                              json.dumps(warm.boots, indent=1))


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
    outcome = plot_outcome(reports, failed)
    record.finalize(outcome, failure=crash_message(failed[0]) if failed else
                    "interrupted before the test body finished" if outcome == "INTERRUPTED" else None,
                    plots=request.config.getoption("--plots", "all") == "all" or outcome != "passed")
    junit_properties(request.node, record)


@pytest.fixture
def link(artefacts: Artefacts, request: pytest.FixtureRequest) -> Iterator[netns.Link | None]:
    """The network between the test's source and destination. None on the default loopback topology; under
    --topology netns or a `link` marker, a link of the test's own (harness.hosts.netns): two fresh namespaces joined by a
    veth pair, shaped by the marker and --link-* options, measured (ping RTT, iperf3 throughput) before any QEMU
    starts and recorded with its configuration in link.json; deleted after the test, whatever happened. Delay or
    loss on a kernel without netem, no ping/iperf3, or (for a `link` marker) no way to make namespaces, skip the
    test with the reason."""
    if not wants_link(request.node):
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
def cpu_budget(request: pytest.FixtureRequest, artefacts: Artefacts,
               environment: Environment) -> Iterator[parallel.CpuGrant | None]:
    """The host CPUs this test needs, taken from the host-wide budget (harness.hosts.parallel: one flock'd token per CPU,
    shared by every xdist worker and every run of this user) before its first QEMU starts, and given back at
    teardown whatever happened. The need: `@pytest.mark.cpus(n)`, else one per vCPU of each guest it boots (a
    source + destination pair of 1-vCPU guests: 2). cpus.json records the need, why, and how long the test waited;
    the wait does not count against its timeout. None (and no wait) with --cpu-budget 0. A test that a known bug
    would hang is an expected failure here, before it waits for CPUs it will not use (KnownBug.hangs)."""
    _not_run_if_it_would_hang(request, environment)
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
            link: netns.Link | None, warm_boots: WarmBoots, request: pytest.FixtureRequest) -> Iterator[Testbed]:
    """The test's QEMUs (boot, incoming, migrate), on this session's binaries, accelerator, machine and CPU, and
    over the test's `link` when it has one; every QEMU it started is stopped and its exit checked at teardown. A
    `known_bug` the run's binaries have (decided here, where the accelerator is known) gives every QEMU of the test
    its workaround where it has one, makes the one verdict it names an expected failure where it names one, else
    makes the test an expected failure. Its source guests are restored from the session's `warm_boots` unless the
    test is marked `cold_boot`."""
    bugs = _expect_known_bugs(request, environment, artefacts)
    bed = Testbed(environment, artefacts, link, bugs, warm=warm_boots,
                  cold=request.node.get_closest_marker("cold_boot") is not None)
    request.node.stash[TESTBED_KEY] = bed
    progress = start_progress(request, bed)
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


def _known_bugs_of(request: pytest.FixtureRequest, env: Environment) -> list[tuple[KnownBug, str]]:
    """The known bugs the test is marked with (and those every test has) that this run's binaries have."""
    keys = [key for marker in request.node.iter_markers("known_bug") for key in marker.args]
    keys += [key for key, bug in KNOWN_BUGS.items() if bug.every_test]
    versions = {"source": env.source_binary.version, "destination": env.destination_binary.version}
    return affecting(dict.fromkeys(keys), versions, env.accel.name,
                     frozenset(request.config.getoption("--assume-fixed")))


def _not_run_if_it_would_hang(request: pytest.FixtureRequest, env: Environment) -> None:
    """An expected failure at once, nothing booted, when one of the test's known bugs would hang a QEMU."""
    for bug, reason in _known_bugs_of(request, env):
        if bug.hangs:
            pytest.xfail(f"not run: {reason}")


def _expect_known_bugs(request: pytest.FixtureRequest, env: Environment, artefacts: Artefacts) -> list[KnownBug]:
    """The test's known bugs this run has, each handled as its table entry says (KnownBug.handling): a workaround
    (the testbed applies it; the test is judged), one verdict an expected failure (`artefacts` marks it when it
    is recorded; the test is judged on the rest), a bug that hangs a QEMU an expected failure at once, before
    anything boots, else the whole test an expected failure. Returns them all, for the testbed to apply and record
    in platform.json."""
    handled = []
    for bug, reason in _known_bugs_of(request, env):
        if bug.workaround is not None:
            handled.append(bug)
            request.node.user_properties.append(("workaround", f"{bug.key}: {bug.workaround.summary}"))
        elif bug.verdict is not None:
            handled.append(bug)
            artefacts.expect_failure(bug.verdict, reason, strict=bug.deterministic)
            for name in bug.also_spoils:
                artefacts.expect_failure(name, reason, strict=False)
            request.node.user_properties.append(("expected verdict failure", f"{bug.verdict}: {reason}"))
        elif bug.hangs:
            _not_run_if_it_would_hang(request, env)    # raises (cpu_budget already did, unless not requested)
        else:
            handled.append(bug)
            request.applymarker(pytest.mark.xfail(reason=reason, strict=bug.deterministic))
    return handled


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


@pytest.fixture
def pair(testbed: Testbed, guest: Machine) -> Pair:
    """The booted source plus a destination waiting with `-incoming defer` (running after migration)."""
    return Pair(guest, testbed.incoming(guest))


@pytest.fixture
def paused_pair(testbed: Testbed, guest: Machine) -> Pair:
    """Like `pair`, but the destination starts with -S: both sides end paused, so their RAM can be compared."""
    return Pair(guest, testbed.incoming(guest, paused=True))
