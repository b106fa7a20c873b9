"""A run spread over two xdist workers (`-n 2`, and two `--tx popen` gateways: what a multi-host `--tx ssh=…` run
does, on this host): both workers' tests pass, each worker on its own port, work dir and process, all tests in one
run directory that `latest` points at, with one index listing them, and each test's CPU wait recorded."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from faults_leftovers import leftovers

ROOT = Path(__file__).resolve().parents[2]
INNER = Path(__file__).parent / "inner" / "inner_parallel.py"


@pytest.mark.timeout(300)
# tx-popen is slow (~57 s on TCG): -n 2 keeps two workers sharing one run in `make check`.
@pytest.mark.parametrize("spread", [["-n", "2"], pytest.param(["--dist", "load", "--tx",
                                                               f"2*popen//python={sys.executable}"],
                                                              marks=pytest.mark.slow)],
                         ids=["n2", "tx-popen"])
def test_two_workers_share_one_run_with_their_own_ports_and_dirs(tmp_path: Path, spread: list[str]) -> None:
    artefacts = tmp_path / "artefacts"
    argv = [sys.executable, "-m", "pytest", str(INNER), *spread, "--accel", "tcg", "--artefacts", str(artefacts),
            "-p", "no:cacheprovider", "-q", "--progress-interval", "0", "--junitxml", str(tmp_path / "junit.xml")]
    proc = subprocess.Popen(argv, cwd=ROOT, env={**os.environ, "QMH_INNER": "1"}, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        output = proc.communicate(timeout=240)[0]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0 and "2 passed" in output, output

    run = (artefacts / "latest").resolve()
    runs = [p for p in artefacts.iterdir() if p.name.startswith("run-")]
    assert runs == [run], runs                                    # one run directory for both workers
    results = json.loads((run / "results.json").read_text())
    assert sorted(t["outcome"] for t in results["tests"]) == ["passed", "passed"], results
    where = [json.loads((run / t["directory"] / "where.json").read_text()) for t in results["tests"]]
    cpus = [json.loads((run / t["directory"] / "cpus.json").read_text()) for t in results["tests"]]
    # Two tests on two workers: xdist deals them out one each (fewer tests than twice the workers: round robin).
    assert {w["worker"] for w in where} == {"gw0", "gw1"} and len({w["pid"] for w in where}) == 2, where
    # Nothing left by the controller or either worker (each names its dirs with its own pid).
    left = {pid: {what: items for what, items in leftovers(pid).items() if items}
            for pid in {proc.pid} | {w["pid"] for w in where}}
    assert not any(left.values()), left
    assert len({w["ssh_port"] for w in where}) == 2 and len({w["workdir"] for w in where}) == 2, where
    assert all(c["needed"] == 1 and c["waited_s"] >= 0 for c in cpus), cpus
    assert (tmp_path / "junit.xml").read_text().count("<testcase ") == 2   # written once, by the controller
    assert "source QEMU" in results["header"] and "accelerator" in results["header"], results["header"]
