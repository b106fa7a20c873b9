"""Ctrl-C, SIGTERM and pytest-timeout during a migration: the (inner) run ends promptly, does not record the test
as passed, and leaves no QEMU process, socket, temp dir or mount behind."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from faults_leftovers import leftovers

ROOT = Path(__file__).resolve().parents[2]
INNER = Path(__file__).parent / "inner" / "inner_migration.py"
READY_WITHIN_S = 150.0      # two TCG boots plus a migration start on a shared 2-core host
EXIT_WITHIN_S = 20.0        # teardown: quit both QEMUs (≤ 10 s each if one hangs), remove dirs
# pytest-timeout counts from the inner test's start: its migration was under way ~2 s after it (session 12's
# clean-clone run: 28.4 s from ready to exit at 30 s), so 10 s leaves 5× that. Too short cannot pass: the inner run
# would end before its migration started, which run_inner reports as a failure. (30 s before #35: 32 s a run.)
# 10 runs (make flake, session 13, a host shared with a mutation run): 10/10 passed, ready to exit 8.1–8.6 s (so
# under way 1.4–1.9 s after the start), 11.6–12.4 s a run.
INNER_TIMEOUT_S = 10

# The child pytest boots a source and a destination: this test holds their CPUs from the budget (harness.hosts.parallel)
# and the child takes none (--cpu-budget 0), so its timings never include a wait for CPUs another worker holds.
pytestmark = [pytest.mark.cpus(2), pytest.mark.usefixtures("cpu_budget")]


def run_inner(tmp_path: Path, sig: int | None, extra_env: dict[str, str] | None = None) -> dict:
    ready = tmp_path / "ready.json"
    env = {**os.environ, "QMH_INNER": "1", "QMH_INNER_READY": str(ready), **(extra_env or {})}
    argv = [sys.executable, "-m", "pytest", str(INNER), "--accel", "tcg", "--artefacts", str(tmp_path / "artefacts"),
            "-p", "no:cacheprovider", "-q", "--progress-interval", "0", "--cpu-budget", "0"]
    started = time.monotonic()
    # A job started in the background by a non-interactive shell (CI) inherits SIGINT ignored, and Python then
    # keeps ignoring it: give the child the default disposition a terminal's Ctrl-C meets.
    inner = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        while not ready.exists():
            if inner.poll() is not None:
                raise AssertionError(f"inner pytest ended before its migration started:\n"
                                     f"{inner.stdout.read().decode(errors='replace') if inner.stdout else ''}")
            if time.monotonic() - started > READY_WITHIN_S:
                raise AssertionError(f"inner migration not under way after {READY_WITHIN_S}s")
            time.sleep(0.1)
        record = json.loads(ready.read_text())
        signalled = time.monotonic()
        if sig is not None:
            inner.send_signal(sig)
        output, _ = inner.communicate(timeout=EXIT_WITHIN_S + (INNER_TIMEOUT_S if sig is None else 0) + 30)
    finally:
        if inner.poll() is None:
            inner.kill()
            inner.wait()
    record.update(returncode=inner.returncode, seconds=time.monotonic() - signalled,
                  output=output.decode(errors="replace"))
    return record


def assert_nothing_left(record: dict) -> None:
    alive = [pid for pid in record["qemu_pids"] if Path(f"/proc/{pid}").exists()]
    assert not alive, f"QEMU processes still alive: {alive}"
    assert not [d for d in record["dirs"] if Path(d).exists()], record["dirs"]
    left = {what: items for what, items in leftovers(record["pytest_pid"]).items() if items}
    assert not left, left


def results_outcome(tmp_path: Path) -> str | None:
    found = sorted((tmp_path / "artefacts").glob("run-*/results.json"))
    if not found:
        return None
    data = json.loads(found[-1].read_text())
    tests = data.get("tests", data) if isinstance(data, dict) else data
    for test in tests if isinstance(tests, list) else []:
        if "inner_migration" in str(test.get("nodeid", "")):
            return str(test.get("outcome"))
    return None


def check_results_json(tmp_path: Path) -> None:
    """The interrupted test is recorded as such in results.json (it used to be recorded as passed)."""
    assert results_outcome(tmp_path) == "interrupted"


@pytest.mark.timeout(240)
# SIGTERM is slow: SIGINT keeps a signal during migration in `make check` (the harness turns SIGTERM into the same
# KeyboardInterrupt, harness.plugin.results).
@pytest.mark.parametrize("sig", [signal.SIGINT, pytest.param(signal.SIGTERM, marks=pytest.mark.slow)],
                         ids=["SIGINT", "SIGTERM"])
def test_signal_during_migration_ends_promptly_and_cleans_up(tmp_path: Path, sig: int,
                                                             request: pytest.FixtureRequest) -> None:
    record = run_inner(tmp_path, sig)
    # user_properties rather than record_property, which warns under the default xunit2 JUnit family.
    request.node.user_properties.append(("seconds_to_exit", round(record["seconds"], 2)))
    assert record["seconds"] < EXIT_WITHIN_S, f"inner pytest took {record['seconds']:.1f}s:\n{record['output']}"
    assert record["returncode"] not in (0, None), record["output"]
    assert "1 passed" not in record["output"], record["output"]
    assert_nothing_left(record)
    check_results_json(tmp_path)


@pytest.mark.timeout(300)
def test_pytest_timeout_during_migration_fails_the_test_and_cleans_up(tmp_path: Path,
                                                                     request: pytest.FixtureRequest) -> None:
    record = run_inner(tmp_path, None, {"QMH_INNER_TIMEOUT": str(INNER_TIMEOUT_S)})
    request.node.user_properties.append(("seconds_from_ready_to_exit", round(record["seconds"], 2)))
    assert record["returncode"] == 1, record["output"]
    assert "1 failed" in record["output"] and "Timeout" in record["output"], record["output"]
    assert_nothing_left(record)
    assert results_outcome(tmp_path) in (None, "failed", "error")
