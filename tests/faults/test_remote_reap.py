"""Nothing of a remote QEMU outlives a runner killed with SIGKILL (harness.hosts.remote_qemu): its SSH connection
closes, the remote command's watcher kills QEMU and removes its run dir, the test's sshd dies with the runner
(PDEATHSIG) and its connection's sshd with the connection; the next start reaps the namespaces and the run's private
dirs (the sshd's keys, the directory standing for the remote's disk)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.hosts import netns
from test_netns_reap import ROOT, run_inner_until_ready

INNER = Path(__file__).parent / "inner" / "inner_remote.py"
READY_WITHIN_S = 120.0      # link, sshd, one boot on TCG
GONE_WITHIN_S = 15.0        # sshd's ClientAlive is not needed: the kernel closes the runner's socket at once


def namespace_pids(name: str) -> list[str]:
    return netns.run(["ip", "netns", "pids", name], check=False).stdout.split()


# The child pytest boots one (remote) QEMU: this test holds its CPU from the budget (harness.hosts.parallel) and the child
# takes none (--cpu-budget 0), so under -n its readiness deadline never includes a wait for CPUs another worker holds.
@pytest.mark.timeout(300)
@pytest.mark.cpus(1)
@pytest.mark.usefixtures("cpu_budget")
def test_a_sigkilled_runner_leaves_no_remote_qemu_sshd_or_namespace(tmp_path: Path) -> None:
    if not netns.usable().available:
        pytest.skip(netns.usable().reason)
    if (missing := netns.measuring_tools_missing()) is not None:
        pytest.skip(missing)
    temp = tmp_path / "tmp"
    temp.mkdir()
    env = {**os.environ, "QMH_INNER": "1", "TMPDIR": str(temp)}
    made, returncode = run_inner_until_ready(tmp_path, INNER, signal.SIGKILL, "--accel", "tcg", "--cpu-budget", "0",
                                             env_extra={"TMPDIR": str(temp)}, within=READY_WITHIN_S)
    assert returncode == -signal.SIGKILL
    deadline = time.monotonic() + GONE_WITHIN_S
    while time.monotonic() < deadline and (Path(f"/proc/{made['qemu_pid']}").exists()
                                           or any(namespace_pids(ns) for ns in made["namespaces"])):
        time.sleep(0.1)
    assert not Path(f"/proc/{made['qemu_pid']}").exists(), "the remote QEMU outlived the SIGKILLed runner"
    assert not any(namespace_pids(ns) for ns in made["namespaces"]), \
        f"processes left in the namespaces: {[namespace_pids(ns) for ns in made['namespaces']]}"
    assert not Path(made["run_dir"]).exists(), "the remote run dir outlived the runner"
    # The next start reaps the dead run's namespaces and private dirs.
    after = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
                            str(INNER)], cwd=ROOT, env=env, capture_output=True,
                           text=True, timeout=120)
    assert not set(made["namespaces"]) & set(netns.list_namespaces()), after.stdout
    assert not list(temp.glob("qmh-*")), f"left: {list(temp.glob('qmh-*'))}\n{after.stdout}"
