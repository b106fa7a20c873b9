"""bench's parallel part (python -m harness.tools.bench): one small selection of behaviour tests run by pytest
serially, then with pytest-xdist -n N, back to back — the wall-time speedup, its efficiency (speedup / N) and whether
every test id got the same verdict both times; and the wall time of the last `make check` from its JUnit XML."""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from harness.core.checkout import ROOT
from harness.core.units import ratio
from harness.migration.testbed import Environment
from harness.tools.validate import read_run

# A few short behaviour tests (4–16 s each here on TCG): two that boot a pair, one snapshot, one precopy.
PARALLEL_SELECTION = (
    "tests/behaviour/test_tls.py::test_tls_refuses_a_destination_it_cannot_authenticate",
    "tests/behaviour/test_snapshots.py::test_background_snapshot_saves_the_guest_as_it_was_when_it_began",
    "tests/behaviour/test_basics.py::test_precopy_completes_with_identical_ram_and_intact_guest[dirty8MiBps]",
)
PARALLEL_WORKERS = 2


@dataclass
class SelectionRun:
    """One pytest run of the selection: its wall time, exit status and each test id's verdict (results.json)."""
    wall_s: float
    returncode: int
    verdicts: dict[str, str]


def run_selection(selection: list[str], pytest_args: list[str], artefacts: Path) -> SelectionRun:
    """Run the selection; its verdicts judged as validate and flake judge a run (validate.read_run): a run that
    could not happen — usage error, interruption, nothing collected — raises, it never counts as "identical"."""
    junit = artefacts.parent / f"{artefacts.name}.junit.xml"
    argv = [sys.executable, "-m", "pytest", *selection, "-p", "no:cacheprovider", "-q", "--progress-interval", "0",
            "--artefacts", str(artefacts), f"--junitxml={junit}", *pytest_args]
    t0 = time.monotonic()
    proc = subprocess.run(argv, cwd=ROOT, stdin=subprocess.DEVNULL, capture_output=True, text=True)
    wall = time.monotonic() - t0
    (artefacts.parent / f"{artefacts.name}.log").write_text(proc.stdout + proc.stderr)
    cases, why = read_run(proc.returncode, junit)
    if why is not None:
        raise RuntimeError(f"pytest {' '.join(pytest_args)} could not run: {why}: "
                           + (proc.stderr.strip().splitlines() or proc.stdout.strip().splitlines() or [""])[-1])
    return SelectionRun(round(wall, 1), proc.returncode, {test: case.outcome for test, case in cases.items()})


def parallel_efficiency(serial: SelectionRun, parallel: SelectionRun, workers: int) -> dict[str, Any]:
    """The report of one serial and one parallel run of the same selection (pure: what `bench_parallel` measured)."""
    ids = sorted(set(serial.verdicts) | set(parallel.verdicts))
    differ = {i: {"serial": serial.verdicts.get(i), "parallel": parallel.verdicts.get(i)} for i in ids
              if serial.verdicts.get(i) != parallel.verdicts.get(i)}
    speedup = serial.wall_s / parallel.wall_s if parallel.wall_s > 0 else 0.0
    return {"workers": workers, "tests": len(ids), "serial_s": serial.wall_s, "parallel_s": parallel.wall_s,
            "wall_time_ratio": None if (share := ratio(parallel.wall_s, serial.wall_s)) is None else round(share, 3),
            "speedup": round(speedup, 3), "efficiency": round(speedup / workers, 3),
            "serial_exit": serial.returncode, "parallel_exit": parallel.returncode,
            "verdicts": serial.verdicts, "verdicts_identical": not differ, "differences": differ,
            "pass": not differ}


def bench_parallel(env: Environment, args: argparse.Namespace, directory: Path,
                   log: Callable[[str], None]) -> dict[str, Any]:
    """The selection serially, then with -n workers, on bench's QEMU, arch, accelerator and image. Both runs take
    the host CPU budget (harness.hosts.parallel) like any run, so the parallel one overlaps only what the budget lets."""
    selection = args.parallel_selection or list(PARALLEL_SELECTION)
    common = ["--qemu-binary", str(env.source_binary.path), "--arch", env.arch.name, "--accel", env.accel.name,
              *(["--image-dir", args.image_dir] if args.image_dir else [])]
    serial = run_selection(selection, common, directory / "serial")
    log(f"parallel: serial run {serial.wall_s:.0f} s, {serial.verdicts}")
    parallel = run_selection(selection, [*common, "-n", str(args.workers)], directory / f"n{args.workers}")
    log(f"parallel: -n {args.workers} run {parallel.wall_s:.0f} s, {parallel.verdicts}")
    return {"selection": selection, **parallel_efficiency(serial, parallel, args.workers)}


def suite_wall_time(junit: Path) -> dict[str, Any] | None:
    """Wall time of the last run that wrote `junit` (make check / .ci/run), and its behaviour tests' share."""
    if not junit.is_file():
        return None
    try:
        root = ET.parse(junit).getroot()
    except ET.ParseError:
        return None
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    cases = [c for s in suites for c in s.iter("testcase")]
    behaviour = sum(float(c.get("time", 0)) for c in cases if c.get("classname", "").startswith("tests.behaviour"))
    return {"file": str(junit), "written": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(junit.stat().st_mtime)),
            "total_s": round(sum(float(s.get("time", 0)) for s in suites), 1),
            "behaviour_tests_s": round(behaviour, 1), "tests": len(cases)}


def parallel_rows(par: dict[str, Any], verdict: Callable[[bool | None], str]) -> list[tuple[str, str, str, str]]:
    """bench's table rows for this part's results."""
    return [(f"parallel efficiency (-n {par['workers']}, {par['tests']} tests)",
             f"serial {par['serial_s']:.0f} s, -n {par['workers']} {par['parallel_s']:.0f} s: "
             f"×{par['speedup']:.2f} ({par['efficiency']:.0%} of {par['workers']})", "", ""),
            ("  verdicts serial vs parallel", "identical" if par["verdicts_identical"] else
             "DIFFER: " + ", ".join(f"{k.rsplit('::', 1)[-1]} {v['serial']}/{v['parallel']}"
                                    for k, v in par["differences"].items()), "identical",
             verdict(par["verdicts_identical"]))]
