"""The network namespaces of --topology netns never outlive the run that made them: Ctrl-C or SIGTERM during a
test removes them on the way out; a runner killed with SIGKILL cannot, and the next run's start reaps them — only
those whose owning run is gone."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from harness.hosts import netns
ROOT = Path(__file__).resolve().parents[2]
INNER = Path(__file__).parent / "inner" / "inner_link.py"
READY_WITHIN_S = 60.0       # namespaces, veth, ping and a 2 s iperf3: a few seconds
EXIT_WITHIN_S = 20.0


@pytest.fixture
def can_make_links() -> None:
    """Skip (with the reason) where this host cannot make and measure a netns link."""
    if not netns.usable().available:
        pytest.skip(netns.usable().reason)
    if (missing := netns.measuring_tools_missing()) is not None:
        pytest.skip(missing)


def run_inner_until_ready(tmp_path: Path, inner_test: Path, sig: int, *args: str,
                          env_extra: dict[str, str] | None = None,
                          within: float = READY_WITHIN_S) -> tuple[dict[str, Any], int]:
    """A child pytest running `inner_test`, which writes what it made to QMH_INNER_READY (JSON) and holds it; once
    it has, send it `sig` and wait for it to end. Returns what it wrote and the child's exit status."""
    ready = tmp_path / "ready.json"
    env = {**os.environ, "QMH_INNER": "1", "QMH_INNER_READY": str(ready), **(env_extra or {})}
    # A job started by a non-interactive shell inherits SIGINT ignored: give the child the default, as a terminal.
    inner = subprocess.Popen([sys.executable, "-m", "pytest", str(inner_test), "--artefacts",
                              str(tmp_path / "artefacts"), "-p", "no:cacheprovider", "-q", "--progress-interval", "0",
                              *args],
                             cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + within
        while not ready.exists():
            assert inner.poll() is None, f"inner pytest ended before it was ready:\n{inner.stdout.read().decode()}"
            assert time.monotonic() < deadline, f"inner pytest not ready within {within}s"
            time.sleep(0.1)
        inner.send_signal(sig)
        inner.communicate(timeout=EXIT_WITHIN_S)
    finally:
        if inner.poll() is None:
            inner.kill()
            inner.wait()
    return json.loads(ready.read_text()), inner.returncode


def run_inner_until_linked(tmp_path: Path, sig: int) -> tuple[list[str], int]:
    """A child pytest that makes a link and holds it, sent `sig` once it has: the link's namespace names and the
    child's exit status."""
    made, returncode = run_inner_until_ready(tmp_path, INNER, sig)
    return made["namespaces"], returncode


@pytest.mark.timeout(120)
# SIGTERM is `slow` (#35), as in test_interrupts.py: the harness turns it into the same KeyboardInterrupt as SIGINT,
# whose case keeps the namespace clean-up in `make check`.
@pytest.mark.parametrize("sig", [signal.SIGINT, pytest.param(signal.SIGTERM, marks=pytest.mark.slow)],
                         ids=["SIGINT", "SIGTERM"])
def test_an_interrupted_run_removes_its_namespaces(tmp_path: Path, sig: int, can_make_links: None) -> None:
    namespaces, returncode = run_inner_until_linked(tmp_path, sig)
    assert returncode not in (0, None)
    assert not set(namespaces) & set(netns.list_namespaces()), f"left behind: {namespaces}"


@pytest.mark.timeout(180)
def test_namespaces_of_a_sigkilled_run_are_reaped_at_the_next_start(tmp_path: Path, can_make_links: None) -> None:
    namespaces, returncode = run_inner_until_linked(tmp_path, signal.SIGKILL)
    assert returncode == -signal.SIGKILL
    assert set(namespaces) <= set(netns.list_namespaces()), "the SIGKILLed run's namespaces should still be there"
    # A namespace of this (live) process must survive the reaping: only dead owners' are taken.
    mine = netns.create(netns.Shaping())
    try:
        # The next start: any pytest session of the harness reaps at sessionstart (no test needs to run).
        after = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
                                str(INNER)], cwd=ROOT, env={**os.environ, "QMH_INNER": "1"}, capture_output=True,
                               text=True, timeout=120)
        left = set(netns.list_namespaces())
        assert not set(namespaces) & left, f"not reaped: {sorted(set(namespaces) & left)}\n{after.stdout}"
        said = [line for line in after.stdout.splitlines() if "network namespace(s) left by dead runs" in line]
        assert said and all(name in said[0] for name in namespaces), after.stdout
        assert {mine.source_ns, mine.destination_ns} <= left, "a live run's namespaces were reaped"
    finally:
        mine.close()
