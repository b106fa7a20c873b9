"""`make flake N=20 TESTS=...`: run a pytest selection N times and count, per test, how often it passed and why
it failed.

    python -m harness.tools.flake --runs 20 [--artefacts artefacts/flake] -- tests/behaviour/test_basics.py --accel tcg

Each run is a separate pytest process with its own artefacts directory (ARTEFACTS/run-K/) and JUnit XML. Per test
the table shows passed/failed/skipped counts over the runs that happened and, for failures, the first line of each
distinct failing verdict (from the run's results.json) or crash (from the JUnit XML), with how often it was seen.
The same goes to ARTEFACTS/flake.json.

Below the table, per test and numeric verdict: the measured values over the runs (min … median … max) beside the
bound, and the worst run's measured/bound — how close the unmodified build came to a false alarm, the figure a
bound's calibration comment needs. `--margins-only` prints that again from an existing ARTEFACTS without running.

A check every migration records (harness.migration.self_report: total-time, setup-time and mbps against the host
clock) is one oracle whatever the test: `--margins-only --across-tests --results DIR…` pools each such verdict over
every test and every results.json under the DIRs (a `make check` run, each pair of a `make matrix`), its label in
brackets dropped — the calibration of a per-migration bound over many migrations of the unmodified build.

A run in which pytest could not run (exit other than 0/1, no JUnit XML, no test ran) is listed as such and counted
neither as a pass nor as a failure of any test; a usage error or an empty selection (exit 4/5) would repeat
identically, so the remaining runs are not started.

Exit status: 0 every test passed in every run; 1 some test failed (or errored) in some run; 4 some run could not
run.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import shutil
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from harness.analysis.oracles import fails_test
from harness.core import workdirs
from harness.core.checkout import ROOT, require_checkout
from harness.core.process import interruptible
from harness.tools.validate import COULD_NOT_RUN, Case, read_run, run_pytest

PASS, FAIL = "passed", "failed"
# Exit codes after which another identical run cannot do better: pytest's usage error, nothing collected.
DETERMINISTIC_EXITS = (4, 5)


@dataclass
class RunRecord:
    """One pytest run: its exit code, why it does not count (or None), and each test's outcome and reason."""
    index: int
    exit_code: int
    could_not_run: str | None = None
    tests: dict[str, tuple[str, str]] = field(default_factory=dict)   # test id → (outcome, first-line reason)
    seconds: float = 0.0


@dataclass
class Tally:
    passed: int = 0
    failed: int = 0
    skipped: int = 0
    xfailed: int = 0
    reasons: Counter[str] = field(default_factory=Counter)

    @property
    def judged(self) -> int:
        return self.passed + self.failed + self.skipped + self.xfailed

    def to_json(self) -> dict[str, Any]:
        return {"passed": self.passed, "failed": self.failed, "skipped": self.skipped, "xfailed": self.xfailed,
                "runs": self.judged, "reasons": dict(self.reasons.most_common())}


def first_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[0][:200] if lines else ""


def aggregate(records: list[RunRecord]) -> dict[str, Tally]:
    """Per test over the runs that happened: outcome counts and the distinct failure reasons with counts."""
    tallies: dict[str, Tally] = {}
    for record in records:
        if record.could_not_run:
            continue   # neither a pass nor a failure of anything
        for test, (outcome, reason) in record.tests.items():
            tally = tallies.setdefault(test, Tally())
            if outcome == "passed":
                tally.passed += 1
            elif outcome in ("failed", "error"):
                tally.failed += 1
                tally.reasons[f"{'error: ' if outcome == 'error' else ''}{reason or outcome}"] += 1
            elif outcome == "xfailed":
                tally.xfailed += 1
            else:
                tally.skipped += 1
    return dict(sorted(tallies.items()))


def failure_reasons(run_root: Path | None) -> dict[str, str]:
    """test id → first line of its failing verdicts (or its crash) from the plugin's results.json, if any."""
    if run_root is None or not (run_root / "results.json").is_file():
        return {}
    try:
        tests = json.loads((run_root / "results.json").read_text()).get("tests", [])
    except (OSError, ValueError):
        return {}
    reasons = {}
    for test in tests:
        failing = [v for v in test.get("verdicts") or [] if fails_test(v)]
        if failing:
            reasons[test["nodeid"]] = "; ".join(first_line(f"{v.get('name')}: {v.get('why')}") for v in failing)
        elif test.get("message"):
            reasons[test["nodeid"]] = first_line(str(test["message"]))
    return reasons


Bound = float | tuple[float, float]    # a limit, or a band [low, high] (oracles.within_band)


@dataclass
class Margin:
    """One numeric verdict of one test over the runs: what was measured against which bound, and which side of
    the bound passing is (inferred from the runs that passed: "<=" when they measured at most the bound; "in" for
    a band)."""
    test: str
    verdict: str
    pairs: list[tuple[float, Bound]] = field(default_factory=list)   # (measured, bound) per run
    passed: list[bool] = field(default_factory=list)

    @property
    def direction(self) -> str:
        if any(isinstance(b, tuple) for _, b in self.pairs):
            return "in"
        ok = [(m, b) for (m, b), good in zip(self.pairs, self.passed) if good]
        if ok and all(m == b for m, b in ok):
            return "=="
        if ok and all(m <= b for m, b in ok):
            return "<="
        if ok and all(m >= b for m, b in ok):
            return ">="
        return "?"

    def worst_ratio(self) -> float | None:
        """measured/bound of the run closest to failing (or past it), for "<=" and ">=" verdicts; for a band, the
        run's distance from its nearer edge as a factor, min(measured/low, high/measured): 1 on the edge, < 1
        outside."""
        if self.direction == "in":
            factors = [min(m / b[0], b[1] / m) for m, b in self.pairs
                       if isinstance(b, tuple) and b[0] > 0 and m > 0]
            return min(factors) if len(factors) == len(self.pairs) else None
        ratios = [m / b for m, b in self.pairs if isinstance(b, float) and b]
        if not ratios or self.direction not in ("<=", ">="):
            return None
        return max(ratios) if self.direction == "<=" else min(ratios)

    def to_json(self) -> dict[str, Any]:
        measured = sorted(m for m, _ in self.pairs)
        worst = self.worst_ratio()
        return {"test": self.test, "verdict": self.verdict, "direction": self.direction, "runs": len(self.pairs),
                "failed": self.passed.count(False), "min": measured[0], "median": measured[len(measured) // 2],
                "max": measured[-1], "bounds": sorted({b for _, b in self.pairs}, key=str),
                "worst_measured_over_bound": None if worst is None else round(worst, 3)}


def _bound(value: Any) -> Bound | None:
    """A number, or a [low, high] band of two."""
    if isinstance(value, list) and len(value) == 2:
        low, high = _number(value[0]), _number(value[1])
        return None if low is None or high is None else (low, high)
    return _number(value)


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


ACROSS_TESTS = "every test"


def pooled_name(verdict: str) -> str:
    """A verdict's name without its trailing "[label]" (which migration of the test it judged)."""
    head, bracket, _ = verdict.rstrip().rpartition(" [")
    return head if bracket and verdict.rstrip().endswith("]") else verdict


def verdict_margins(run_roots: list[Path], across_tests: bool = False) -> list[Margin]:
    """Every numeric verdict (measured a number; bound a number or a [low, high] band) of every test, over the
    given run directories' results.json; with across_tests, each verdict name (label dropped) pooled over every
    test as one row."""
    margins: dict[tuple[str, str], Margin] = {}
    for root in run_roots:
        try:
            tests = json.loads((root / "results.json").read_text()).get("tests", [])
        except (OSError, ValueError):
            continue
        for test in tests:
            for verdict in test.get("verdicts") or []:
                measured, bound = _number(verdict.get("measured")), _bound(verdict.get("bound"))
                if measured is None or bound is None:
                    continue
                key = ((ACROSS_TESTS, pooled_name(str(verdict.get("name")))) if across_tests
                       else (test["nodeid"], str(verdict.get("name"))))
                margin = margins.setdefault(key, Margin(*key))
                margin.pairs.append((measured, bound))
                margin.passed.append(bool(verdict.get("passed")))
    return [margins[key] for key in sorted(margins)]


def _fmt(value: float) -> str:
    return str(int(value)) if value == int(value) and abs(value) < 1e12 else f"{value:.3g}"


def _fmt_bound(bound: Bound) -> str:
    return f"[{_fmt(bound[0])}, {_fmt(bound[1])}]" if isinstance(bound, tuple) else _fmt(bound)


def margins_table(margins: list[Margin]) -> str:
    lines = ["margins: measured min … median … max vs bound over the runs; worst = measured/bound of the run "
             "closest to failing (for a band: min(measured/low, high/measured), < 1 outside)"]
    test = None
    for margin in margins:
        if margin.test != test:
            test = margin.test
            lines.append(test)
        j = margin.to_json()
        bounds = "/".join(_fmt_bound(b) for b in j["bounds"][:3]) + (" …" if len(j["bounds"]) > 3 else "")
        worst = "" if j["worst_measured_over_bound"] is None else f", worst {j['worst_measured_over_bound']:g}"
        failed = f", {j['failed']} failed" if j["failed"] else ""
        lines.append(f"    {margin.verdict}: {_fmt(j['min'])} … {_fmt(j['median'])} … {_fmt(j['max'])} "
                     f"{margin.direction} {bounds} ({j['runs']} runs{worst}{failed})")
    return "\n".join(lines)


def run_roots(artefacts: Path) -> list[Path]:
    """The run directory (its `latest`) of each ARTEFACTS/run-K, in K order."""
    runs = sorted(artefacts.glob("run-*"), key=lambda p: int(p.name.split("-")[1]) if p.name[4:].isdigit() else 0)
    return [run / "latest" for run in runs if (run / "latest").is_dir()]


def results_roots(directories: list[Path]) -> list[Path]:
    """Every directory holding a results.json under the given ones (run directories of make check, matrix, …),
    each once even where a `latest` link also reaches it."""
    found = {r.parent.resolve() for d in directories for r in d.rglob("results.json")}
    return sorted(found)


def record_run(index: int, exit_code: int, cases: dict[str, Case], why: str | None,
               reasons: dict[str, str], seconds: float = 0.0) -> RunRecord:
    tests = {}
    for test, case in cases.items():
        reason = (reasons.get(test) or first_line(case.message)) if case.outcome in ("failed", "error") else ""
        tests[test] = (case.outcome, reason)
    return RunRecord(index, exit_code, why, tests, seconds)


def run_once(index: int, directory: Path, pytest_args: list[str]) -> RunRecord:
    if directory.exists():
        shutil.rmtree(directory)        # our own ARTEFACTS/run-K from an earlier flake run
    directory.mkdir(parents=True)
    junit = directory / "junit.xml"
    started = time.monotonic()
    code, error_line = run_pytest([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "--artefacts",
                                   str(directory), f"--junitxml={junit}", *pytest_args])
    cases, why = read_run(code, junit, error_line)
    latest = directory / "latest"
    return record_run(index, code, cases, why, failure_reasons(latest if latest.is_dir() else None),
                      time.monotonic() - started)


def table(tallies: dict[str, Tally], records: list[RunRecord]) -> str:
    ran = [r for r in records if not r.could_not_run]
    width = max([len(t) for t in tallies] + [4])
    lines = [f"{'test':<{width}}  passed  failed  skipped  (of {len(ran)} run(s) that happened)"]
    for test, tally in tallies.items():
        skipped = tally.skipped + tally.xfailed
        lines.append(f"{test:<{width}}  {tally.passed:>3}/{tally.judged:<3} {tally.failed:>5}  {skipped:>7}")
        for reason, count in tally.reasons.most_common():
            lines.append(f"{'':<{width}}    {count}× {reason}")
    for record in records:
        if record.could_not_run:
            lines.append(f"run {record.index}: could not run: {record.could_not_run} (not counted)")
    return "\n".join(lines)


@contextlib.contextmanager
def exclusive(lock: Path | None) -> Iterator[None]:
    """flock(LOCK_EX) on `lock` for the duration (nothing without one)."""
    if lock is None:
        yield
        return
    with open(lock, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def main(argv: list[str] | None = None) -> int:
    interruptible()    # Ctrl-C / SIGTERM stop the run; its pytest child tears down (harness.core.process.run_child)
    require_checkout("qmh-flake", COULD_NOT_RUN)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--runs", "-N", type=int, default=20, help="how many pytest runs (default 20)")
    parser.add_argument("--artefacts", type=Path, default=ROOT / "artefacts" / "flake",
                        help="run-K/ per run, flake.json (default artefacts/flake)")
    parser.add_argument("--json", type=Path, default=None, help="default: ARTEFACTS/../flake.json")
    parser.add_argument("--lock", type=Path, default=None,
                        help="hold an exclusive flock on this file during each run: on a host shared with other "
                             "timing-sensitive jobs that take the same lock, runs interleave instead of overlapping")
    parser.add_argument("--margins-only", action="store_true",
                        help="run nothing: print the verdict margins of the runs already in ARTEFACTS")
    parser.add_argument("--across-tests", action="store_true",
                        help="with --margins-only: pool each verdict (its [label] dropped) over every test")
    parser.add_argument("--results", type=Path, nargs="+", default=None, metavar="DIR",
                        help="with --margins-only: read every results.json under these DIRs instead of ARTEFACTS")
    parser.add_argument("pytest_args", nargs=argparse.REMAINDER, help="after --: the selection and pytest options")
    options = parser.parse_args(argv)
    if options.margins_only:
        roots = results_roots(options.results) if options.results else run_roots(options.artefacts)
        print(margins_table(verdict_margins(roots, across_tests=options.across_tests)))
        return 0
    pytest_args = [a for a in options.pytest_args if a != "--"]
    if options.runs < 1 or not pytest_args:
        parser.error("need --runs ≥ 1 and a test selection after --")
    reaped = workdirs.reap_stale()
    if reaped:
        print(f"[flake] reaped {len(reaped)} temp dir(s) left by dead runs: {' '.join(map(str, reaped))}")
    records: list[RunRecord] = []
    for index in range(1, options.runs + 1):
        with exclusive(options.lock):
            record = run_once(index, options.artefacts / f"run-{index}", pytest_args)
        records.append(record)
        state = f"could not run: {record.could_not_run}" if record.could_not_run else (
            f"{sum(o == 'passed' for o, _ in record.tests.values())}/{len(record.tests)} passed")
        print(f"[flake] run {index}/{options.runs}: {state} ({record.seconds:.0f} s)", flush=True)
        if record.could_not_run and record.exit_code in DETERMINISTIC_EXITS:
            print(f"[flake] stopping: pytest exit {record.exit_code} would repeat in every run", flush=True)
            break
    tallies = aggregate(records)
    margins = verdict_margins(run_roots(options.artefacts))
    print("\n" + table(tallies, records) + "\n\n" + margins_table(margins))
    out = options.json or options.artefacts.parent / "flake.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({
        "runs_requested": options.runs, "pytest_args": pytest_args,
        "runs": [{"index": r.index, "exit": r.exit_code, "could_not_run": r.could_not_run,
                  "seconds": round(r.seconds, 1),
                  "tests": {t: {"outcome": o, "reason": why} for t, (o, why) in r.tests.items()}} for r in records],
        "tests": {t: tally.to_json() for t, tally in tallies.items()},
        "margins": [m.to_json() for m in margins],
    }, indent=1) + "\n")
    print(f"[flake] JSON in {out}")
    if any(r.could_not_run for r in records):
        return COULD_NOT_RUN
    return 1 if any(t.failed for t in tallies.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
