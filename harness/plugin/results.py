"""Recording the run: a test's verdicts turned into its outcome once its body ended (the first failing one, or the
post-mortem), each test's phases folded into one TestResult, a test cut short by Ctrl-C or SIGTERM recorded as
"interrupted", its failure text and JUnit properties; the run directory (run-*, `latest`) and, at session end, its
index.html + results.json (harness.report.index) — written by the serial process or the xdist controller."""

from __future__ import annotations

import datetime
import json
import logging
import os
import signal
from pathlib import Path
from typing import Any, Iterator

import pytest

from harness.migration.postmortem import postmortem
from harness.plugin.xdist_roles import RUN_NAME_KEY, is_controller
from harness.report.artefacts import Artefacts, safe_name
from harness.report.index import TestResult, write_index

log = logging.getLogger("harness")
ARTEFACTS_KEY = pytest.StashKey[Artefacts]()
TESTBED_KEY = pytest.StashKey[Any]()   # the test's Testbed (harness.migration.testbed), set by its fixture
REPORTS_KEY = pytest.StashKey[dict[str, pytest.TestReport]]()
# Session-wide, for the index written at session end.
RUN_ROOT_KEY = pytest.StashKey[Path]()
RUN_HEADER_KEY = pytest.StashKey[dict[str, str]]()
RESULTS_KEY = pytest.StashKey[dict[str, TestResult]]()
TEST_DIRS_KEY = pytest.StashKey[dict[str, Path]]()
INDEX_KEY = pytest.StashKey[Path]()
PHASES_KEY = pytest.StashKey[dict[str, set[str]]]()     # nodeid → the phases that reported
LINKED_KEY = pytest.StashKey[bool]()

_interrupt: str | None = None   # pytest_keyboard_interrupt gets no config; one session per process
_config: pytest.Config | None = None   # nor does pytest_runtest_logreport


def pytest_configure(config: pytest.Config) -> None:
    global _interrupt, _config
    _interrupt = None
    _config = config
    if is_controller(config):
        config.stash[RUN_NAME_KEY] = run_name()
    # SIGTERM (CI timeout, kill) must unwind like Ctrl-C so every fixture cleans up its QEMU.
    if hasattr(signal, "SIGTERM"):
        signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    config.stash[RESULTS_KEY] = {}
    config.stash[PHASES_KEY] = {}
    config.stash[TEST_DIRS_KEY] = {}
    config.stash[RUN_HEADER_KEY] = {"started": datetime.datetime.now().isoformat(timespec="seconds"),
                                    "command": " ".join(["pytest", *config.invocation_params.args])}


def pytest_unconfigure(config: pytest.Config) -> None:
    global _config
    _config = None


def _raise_keyboard_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum} ({signal.Signals(signum).name})")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    """One verdict idiom: Artefacts.verdict records and never raises, so every oracle a test computes is recorded;
    here, once the body has ended, the first failing verdict fails the test — or, when there is more to say (a
    guest kernel crash, a QEMU exit, a lost SSH session, an error after failing verdicts), the post-mortem's
    message, whose first line says what broke first (harness.migration.postmortem). Skips, xfails and
    interrupts (BaseExceptions) pass through untouched."""
    # Both looked up once the body has ended: a test may reach its testbed (and so its artefacts) through
    # request.getfixturevalue inside the body, and its verdicts must fail it all the same.
    try:
        result = yield
    except Exception as exc:
        artefacts, testbed = item.stash.get(ARTEFACTS_KEY, None), item.stash.get(TESTBED_KEY, None)
        if artefacts is None:
            raise
        _finish_migrations(testbed)
        diagnosed = postmortem(testbed, artefacts, exc)
        if diagnosed is None:
            raise
        raise diagnosed from exc
    artefacts, testbed = item.stash.get(ARTEFACTS_KEY, None), item.stash.get(TESTBED_KEY, None)
    if artefacts is not None:
        _finish_migrations(testbed)
        diagnosed = postmortem(testbed, artefacts, None)
        if diagnosed is not None:
            raise diagnosed
        artefacts.raise_first_failure()
    return result


def _finish_migrations(testbed: Any) -> None:
    """The test's migrations end with its body: what they record when they finish (QEMU's timing figures against
    the host clock, harness.migration.self_report) is judged with the test's own verdicts."""
    if testbed is None:
        return
    try:
        testbed.finish_migrations()
    except Exception:   # a finish that fails (a dead QEMU) must not hide what the body did; teardown tries again
        log.exception("finishing the test's migrations")


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
        result.message = crash_message(report)


def crash_message(report: pytest.TestReport) -> str:
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


def junit_properties(node: pytest.Item, record: Artefacts) -> None:
    """What a CI page shows beside the test (JUnit <properties>): its artefacts folder, its plots, and the first
    failing verdict in one line. Added at teardown, before pytest writes the test's JUnit record."""
    node.user_properties.append(("artefacts", str(record.directory)))
    for plot in sorted(record.directory.glob("*.png")):
        node.user_properties.append(("plot", str(plot)))
    failing = next((v for v in record.verdicts if v.fails_test), None)
    if failing is not None:
        node.user_properties.append(("failed verdict", f"{failing.name}: {failing.why}"))


def plot_outcome(reports: dict[str, pytest.TestReport], failed: list[pytest.TestReport]) -> str:
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
