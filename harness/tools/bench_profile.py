"""Where a `make check` run's time went (#35), from what the run already wrote: its JUnit file (each test's wall
time), its run directory (per test: cpus.json's CPU wait, timings.json's boots, RAM digests and teardown —
harness.migration.testbed) and, optionally, pytest's `--durations=0` lines (the setup / call / teardown split).

    python -m harness.tools.bench_profile [--junit artefacts/junit.xml] [--run artefacts/latest] [--durations LOG]

`make bench` adds it to artefacts/bench.json as "profile"; the table below is what this prints. Seconds are sums
over tests (serial runs: they add up to the wall time, the rest being collection and session set-up)."""

from __future__ import annotations

import argparse
import json
import re
import sys
import xml.etree.ElementTree as ET
from collections import defaultdict
from pathlib import Path
from typing import Any

from harness.report.artefacts import safe_name

DURATION_LINE = re.compile(r"^\s*([\d.]+)s (setup|call|teardown)\s+(\S.*?)\s*$")
SUITES = ("unit", "behaviour", "faults", "inputs")
# timings.json keys (harness.migration.testbed.Testbed.close) and what the table calls them.
FIXED_COSTS = {"boot_cold_s": "cold boots (incl. warm saves)", "boot_warm_s": "warm restores",
               "ram_digest_s": "RAM dumps + digests", "close_s": "teardown (QEMUs, work dir)"}


def junit_cases(junit: Path) -> list[tuple[str, float, Path | None]]:
    """(node id, wall seconds, its artefacts directory if the JUnit record names one) of every test case."""
    root = ET.parse(junit).getroot()
    cases = []
    for case in root.iter("testcase"):
        # pytest's classname: the module's dotted path, then any class names: "tests.unit.test_x.TestY".
        parts = case.get("classname", "").split(".")
        module = max((i for i, part in enumerate(parts) if part.startswith("test_")), default=len(parts) - 1)
        node = "::".join(["/".join(parts[:module + 1]) + ".py", *parts[module + 1:], case.get("name", "")])
        where = next((prop.get("value") for prop in case.iter("property") if prop.get("name") == "artefacts"), None)
        cases.append((node, float(case.get("time", 0.0)), Path(where) if where else None))
    return cases


def suite_of(node: str) -> str:
    for suite in SUITES:
        if node.startswith(f"tests/{suite}/"):
            return suite
    return "other"


def durations(log: Path) -> dict[str, dict[str, float]]:
    """node id → phase → seconds, from pytest's `--durations=0` report in a log."""
    phases: dict[str, dict[str, float]] = defaultdict(dict)
    for line in log.read_text(errors="replace").splitlines():
        if (m := DURATION_LINE.match(line)):
            phases[m.group(3)][m.group(2)] = float(m.group(1))
    return phases


def test_record(directory: Path | None, name: str) -> dict[str, Any]:
    if directory is None:
        return {}
    path = directory / f"{name}.json"
    try:
        return dict(json.loads(path.read_text()))
    except (OSError, ValueError):
        return {}


def profile(junit: Path, run: Path | None = None, durations_log: Path | None = None,
            slowest: int = 15) -> dict[str, Any]:
    cases = junit_cases(junit)
    by_suite: dict[str, float] = defaultdict(float)
    counts: dict[str, int] = defaultdict(int)
    fixed: dict[str, float] = defaultdict(float)
    cpu_wait = 0.0
    for node, seconds, where in cases:
        # The JUnit record's own artefacts path, else the run directory's folder for the node id.
        directory = where if where is not None else (run / safe_name(node) if run is not None else None)
        suite = suite_of(node)
        by_suite[suite] += seconds
        counts[suite] += 1
        cpu_wait += float(test_record(directory, "cpus").get("waited_s", 0.0))
        for key, value in test_record(directory, "timings").items():
            if key in FIXED_COSTS:
                fixed[key] += float(value)
    machine_tests = sum(by_suite.get(suite, 0.0) for suite in ("behaviour", "faults", "inputs"))
    result: dict[str, Any] = {
        "junit": str(junit), "run": str(run) if run else None, "tests": len(cases),
        "total_s": round(sum(c[1] for c in cases), 1),
        "by_suite": {k: {"tests": counts[k], "seconds": round(v, 1)} for k, v in sorted(by_suite.items())},
        "cpu_wait_s": round(cpu_wait, 1),
        "fixed_costs_s": {k: round(fixed.get(k, 0.0), 1) for k in FIXED_COSTS},
        "slowest": [{"test": n, "seconds": round(s, 1)} for n, s, _ in sorted(cases, key=lambda c: -c[1])[:slowest]],
    }
    result["test_bodies_s"] = round(machine_tests - cpu_wait - sum(fixed.values()), 1)
    if durations_log is not None and durations_log.is_file():
        phases = durations(durations_log)
        split: dict[str, float] = defaultdict(float)
        for node_phases in phases.values():
            for phase, seconds in node_phases.items():
                split[phase] += seconds
        result["by_phase_s"] = {k: round(v, 1) for k, v in split.items()}
    return result


def rows(prof: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """bench's table rows for the profile."""
    suites = ", ".join(f"{k} {v['seconds']:.0f} s ({v['tests']})" for k, v in prof["by_suite"].items())
    out = [("profile of the last make check", f"{prof['total_s']:.0f} s in {prof['tests']} tests: {suites}", "", ""),
           ("  waiting for host CPUs", f"{prof['cpu_wait_s']:.0f} s", "", "")]
    for key, label in FIXED_COSTS.items():
        out.append((f"  {label}", f"{prof['fixed_costs_s'][key]:.0f} s", "", ""))
    out.append(("  test bodies (windows, workloads, SSH)", f"{prof['test_bodies_s']:.0f} s", "", ""))
    if "by_phase_s" in prof:
        out.append(("  by pytest phase", ", ".join(f"{k} {v:.0f} s" for k, v in prof["by_phase_s"].items()), "", ""))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.tools.bench_profile", description=__doc__.split("\n\n")[0])
    parser.add_argument("--junit", default="artefacts/junit.xml")
    parser.add_argument("--run", default="artefacts/latest", help="the run directory (per-test artefacts)")
    parser.add_argument("--durations", default=None, help="a log with pytest's --durations=0 report")
    args = parser.parse_args(argv)
    junit = Path(args.junit)
    if not junit.is_file():
        print(f"bench_profile: no JUnit file {junit}", file=sys.stderr)
        return 4
    run = Path(args.run) if Path(args.run).is_dir() else None
    prof = profile(junit, run, Path(args.durations) if args.durations else None)
    print(json.dumps(prof, indent=1))
    for row in rows(prof):
        print(" | ".join(cell for cell in row if cell))
    return 0


if __name__ == "__main__":
    sys.exit(main())
