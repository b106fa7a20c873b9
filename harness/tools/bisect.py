"""One `git bisect run` step: build the checked-out QEMU, run the selected tests a few times, vote, exit 0/1/125.

    cd ~/qemu && git bisect start BAD GOOD
    git bisect run /path/to/harness/.venv/bin/qmh-bisect-step --build-dir ~/qemu/build-bisect \\
        tests/behaviour/test_b0_sync_storm.py::test_postcopy_ram_enabled_does_not_multiply_dirty_syncs

Exit codes follow git-bisect(1): 0 good, 1 bad, 125 skip (the commit does not build, the tests cannot judge it
because the commit's QEMU lacks a feature they need, or the outcome stays split after the retry budget), 128 abort
(the harness itself cannot run: pytest exit other than 0/1 — usage error such as a binary that is not a working
QEMU of the asked arch, internal error, interruption, nothing collected —, no JUnit XML, no test ran, a test skipped
for a reason that is not the commit's (host lacks userfaultfd, …), missing build tools) — a broken harness must
never mark commits bad, and must never skip every commit either.

A run is "bad" when any selected test fails. Votes: `--repeats N` runs are made (stopping early once a strict
majority of N is reached); a split vote earns up to `--retry-budget` extra runs, after which a ≥ 2/3 majority decides
and anything closer is reported as flaky (125).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from harness.core.checkout import ROOT, require_checkout
from harness.tools.validate import Case, read_run, run_pytest

GOOD, BAD, SKIP, ABORT = 0, 1, 125, 128


@dataclass
class Votes:
    """Outcomes of repeated runs of the same tests against one build."""
    repeats: int
    retry_budget: int
    good: int = 0
    bad: int = 0
    inconclusive: int = 0          # every selected test skipped: this commit cannot be judged
    history: list[str] = field(default_factory=list)

    def add(self, outcome: str) -> None:
        self.history.append(outcome)
        if outcome == "good":
            self.good += 1
        elif outcome == "bad":
            self.bad += 1
        else:
            self.inconclusive += 1

    @property
    def runs(self) -> int:
        return len(self.history)

    def decision(self) -> int | None:
        """An exit code once the vote is settled, None while more runs are needed."""
        majority = self.repeats // 2 + 1
        if self.inconclusive >= majority:
            return SKIP
        if self.good >= majority and self.bad == 0:
            return GOOD
        if self.bad >= majority and self.good == 0:
            return BAD
        if self.runs < self.repeats + (self.retry_budget if self.good and self.bad else 0):
            return None
        judged = self.good + self.bad
        if judged and 3 * self.good >= 2 * judged:
            return GOOD
        if judged and 3 * self.bad >= 2 * judged:
            return BAD
        return SKIP


# The skip reason pytest_plugin's `needs` marker gives when the binary under test lacks a feature: the only skip
# that depends on the commit. Any other skip is about the host or the harness and says nothing about the commit.
COMMIT_SKIP_PREFIX = "QEMU lacks "


def _host_skip(case: Case) -> bool:
    """A skip that is not about the commit's QEMU. An xfail is (the tests mark one only for a binary that
    predates the behaviour, e.g. B4 on QEMU ≤ 9.1), like a `needs` skip."""
    return case.outcome == "skipped" and not case.message.startswith(COMMIT_SKIP_PREFIX)


def classify(cases: dict[str, Case], pytest_exit: int) -> str:
    """good | bad | inconclusive | broken, from one pytest run's JUnit cases and exit code."""
    if pytest_exit not in (0, 1) or not cases:
        return "broken"
    outcomes = [c.outcome for c in cases.values()]
    if any(o in ("failed", "error") for o in outcomes):
        return "bad"
    if any(_host_skip(c) for c in cases.values()):
        return "broken"   # e.g. "postcopy needs userfaultfd": the same on every commit, so never a 125
    if all(o in ("skipped", "xfailed") for o in outcomes):
        return "inconclusive"
    return "good"


def build(source: Path, build_dir: Path) -> int:
    proc = subprocess.run(["bash", str(ROOT / "qemu-build" / "build-checkout.sh"), str(source), str(build_dir)])
    return proc.returncode


def run_once(build_dir: Path, tests: list[str], artefacts: Path,
             pytest_args: list[str]) -> tuple[str, float, str]:
    """(outcome, seconds, why it is broken or "") of one pytest run against the build."""
    artefacts.mkdir(parents=True, exist_ok=True)
    junit = artefacts / "junit.xml"
    junit.unlink(missing_ok=True)
    started = time.monotonic()
    code, error_line = run_pytest([sys.executable, "-m", "pytest", *tests, "--qemu-binary", str(build_dir),
                                   "--artefacts", str(artefacts), f"--junitxml={junit}", "-p", "no:cacheprovider",
                                   "-q", *pytest_args])
    cases, why = read_run(code, junit, error_line)
    outcome = "broken" if why else classify(cases, code)
    if outcome == "broken" and not why:
        why = "; ".join(sorted({f"{t.split('::')[-1]} skipped: {c.message}" for t, c in cases.items()
                                if _host_skip(c)}))[:300]
    return outcome, time.monotonic() - started, why


def revision(source: Path) -> str:
    proc = subprocess.run(["git", "-C", str(source), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    return proc.stdout.strip() or "unknown"


def main(argv: list[str] | None = None) -> int:
    """git bisect run reads every exit 1..127 except 125 as "bad": a bad command line (argparse exits 2) or an
    unexpected exception (Python exits 1) would blame the commit, so both become 128 (abort)."""
    require_checkout("qmh-bisect-step", ABORT)
    try:
        return _main(argv)
    except SystemExit as exc:
        if exc.code in (0, None):
            return GOOD if exc.code is None else int(exc.code)
        print(f"[bisect] aborting: bad command line (exit {exc.code})", flush=True)
        return ABORT
    except Exception as exc:
        print(f"[bisect] aborting: {type(exc).__name__}: {exc}".splitlines()[0], flush=True)
        return ABORT


def _main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("tests", nargs="+", help="pytest node ids (relative to the harness checkout)")
    parser.add_argument("--source", type=Path, default=Path.cwd(), help="QEMU checkout (default: cwd)")
    parser.add_argument("--build-dir", type=Path, required=True, help="kept across steps: builds are incremental")
    parser.add_argument("--repeats", type=int, default=3, help="runs per commit (majority vote)")
    parser.add_argument("--retry-budget", type=int, default=2, help="extra runs allowed when the vote splits")
    parser.add_argument("--artefacts", type=Path, default=ROOT / "artefacts" / "bisect")
    parser.add_argument("--accel", default="tcg", choices=["auto", "kvm", "tcg"])
    parser.add_argument("--log", type=Path, default=None, help="append one JSON line per step here")
    parser.add_argument("pytest_args", nargs=argparse.REMAINDER, help="after --: extra pytest arguments")
    options = parser.parse_args(argv)
    if options.repeats < 1 or options.retry_budget < 0:
        parser.error("--repeats must be ≥ 1 and --retry-budget ≥ 0")
    pytest_args = ["--accel", options.accel, *[a for a in options.pytest_args if a != "--"]]

    rev = revision(options.source)
    started = time.monotonic()
    built = build(options.source, options.build_dir)
    if built != 0:
        code = built if built in (SKIP, ABORT) else SKIP
        return report(options, rev, code, Votes(options.repeats, options.retry_budget), started,
                      "build failed" if code == SKIP else "build host unusable")
    votes = Votes(options.repeats, options.retry_budget)
    code = None
    while code is None:
        outcome, seconds, why = run_once(options.build_dir, options.tests,
                                         options.artefacts / rev / f"run{votes.runs + 1}", pytest_args)
        print(f"[bisect {rev}] run {votes.runs + 1}: {outcome} ({seconds:.0f}s)", flush=True)
        if outcome == "broken":
            return report(options, rev, ABORT, votes, started, f"pytest could not run the tests: {why}")
        votes.add(outcome)
        code = votes.decision()
    return report(options, rev, code, votes, started, "")


def report(options: argparse.Namespace, rev: str, code: int, votes: Votes, started: float, why: str) -> int:
    verdict = {GOOD: "good", BAD: "bad", SKIP: "skip", ABORT: "abort"}[code]
    line = {"revision": rev, "verdict": verdict, "exit": code, "votes": votes.history, "why": why,
            "seconds": round(time.monotonic() - started, 1)}
    print(f"[bisect {rev}] {verdict.upper()} (exit {code}) votes={votes.history}{' — ' + why if why else ''}",
          flush=True)
    if options.log:
        with options.log.open("a") as log:
            log.write(json.dumps(line) + "\n")
    return code


if __name__ == "__main__":
    sys.exit(main())
