"""`make mutate`: the suite's mutation score on QEMU 10.0.2's migration code.

Mutants come from universalmutator (PyPI, the `mutate` extra): its regexp rules for C (universal + c_like) rewrite
one line each — an operator, a constant, a condition, a deleted statement — and only lines inside function bodies
of the selected files (and functions) are kept. A sample of N (SEED) is drawn reproducibly from the mutants' ids,
or all of them with --exhaustive. Then, in this order:

  1. the pristine QEMU (`make validate`'s, build/qemu/variants/pristine, built if not up to date) runs the test selection; a test
     that does not pass there proves nothing about a mutant and is dropped from the selection (listed);
  2. the pristine QEMU built with gcov runs the same selection once, each test with its own GCOV_PREFIX
     (harness.tools.mutate_coverage): line → the tests that execute it;
  3. per mutant: the compiler's front end is asked first (harness.tools.mutate_syntax, the build tree's own
     command with -fsyntax-only: < 1 s); a mutant it refuses is "build failed" without a build. Else its
     one-line patch is built by the same builder as `make validate` (one tree, ccache, only the
     touched object recompiled, under --lock); a build failure and a binary identical to the pristine one
     (sha256: trivially equivalent) are recorded and not run; a mutant whose line no test executes is
     "not covered"; else its covering tests run against it (in the selection's order, -x: the first failure
     decides) — killed (which test, which failing verdicts from its verdicts.json), timed out, or survived. A kill
     is confirmed: the killing test runs once more on the pristine build at once, and if it fails there too the
     mutant is "unconfirmed" (the verdict moved with the host's load), listed and left out of the score.

State (ARTEFACTS/state.json) is rewritten after each mutant: an interrupted run started again with the same
selection continues where it stopped. The record is ARTEFACTS/mutate.json, the page ARTEFACTS/index.html (score per
file and per function, every survivor with its diff and covering tests). Up to --jobs mutants run at once; each
test takes its host CPUs from the shared budget (harness.hosts.parallel), and pytest arguments after `--`
(-n 2, --tx ssh=…) spread one mutant's tests over xdist workers or hosts.

Exit: 0 the run finished (whatever the score); 4 it could not run (no engine, the pristine selection did not run,
nothing passed on pristine).
"""

from __future__ import annotations

import argparse
import contextlib
import fnmatch
import io
import json
import os
import shlex
import shutil
import subprocess
import sys
import threading
import time
import xml.etree.ElementTree as ET
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, Sequence

from harness.analysis import mutants as mut
from harness.analysis.coverage import covering, line_map
from harness.core.checkout import ROOT, require_checkout
from harness.core.files import atomic_write_text
from harness.core.process import interruptible, run_logged, stop_logged_children
from harness.hosts.parallel import CpuBudget, host_cpus
from harness.qemu.arch import ARCHES
from harness.report.artefacts import safe_name
from harness.report.mutation_page import render_page
from harness.tools import mutate_coverage, mutate_syntax
from harness.tools.flake import exclusive
from harness.tools.validate import COULD_NOT_RUN, pytest_argv, read_run

DEFAULT_FILES = ("migration/ram.c", "migration/migration.c", "migration/multifd*.c", "migration/postcopy-ram.c",
                 "migration/savevm.c")
RULES = ("universal.rules", "c_like.rules")     # what universalmutator's own CLI uses for a .c file (c.rules is empty)
QEMU_ROOT = ROOT / "build" / "qemu"
SOURCE_GIT = QEMU_ROOT / "src.git"              # the pristine baseline qemu-build records (never a patched tree)
MUTANTS_OUT = QEMU_ROOT / "mutants"
PRISTINE_OUT = QEMU_ROOT / "variants"           # `make validate`'s pristine build: the same tree and configure
PRISTINE = "pristine"


def log(message: str) -> None:
    print(f"[mutate {time.strftime('%H:%M:%S')}] {message}", flush=True)


# -- sources and the engine ------------------------------------------------------------------------------------------
def pristine_files(patterns: Sequence[str]) -> list[str]:
    """The baseline's files matching the globs (relative to the QEMU source root)."""
    listing = subprocess.run(["git", "--git-dir", str(SOURCE_GIT), "ls-tree", "-r", "--name-only", "HEAD"],
                             capture_output=True, text=True, check=True).stdout.split()
    return sorted({f for f in listing for p in patterns if fnmatch.fnmatchcase(f, p)})


def pristine_source(file: str) -> list[str]:
    text = subprocess.run(["git", "--git-dir", str(SOURCE_GIT), "show", f"HEAD:{file}"], capture_output=True,
                          text=True, check=True).stdout
    return text.splitlines(keepends=True)


def engine_mutants(file: str, lines: list[str]) -> list[mut.Mutant]:
    """Every single-line mutant universalmutator's C rules make of `lines`, with the function each is in."""
    from universalmutator import mutator  # the `mutate` extra: imported only when mutants are made

    with contextlib.redirect_stdout(io.StringIO()):
        found = mutator.mutants_regexp(lines, ruleFiles=list(RULES), ignorePatterns=[], ignoreStringOnly=True)
    spans = mut.function_spans(lines)
    # the engine names a rule as (its text, where it is defined): keep "lhs ==> rhs (builtin:c_like.rules:98)"
    return [mut.Mutant(file, line, mut.function_at(spans, line), lines[line - 1], text,
                       " ".join(str(part) for part in (rule if isinstance(rule, tuple) else (rule,))).strip())
            for line, text, rule, _ in found]


def engine_version() -> str:
    from importlib.metadata import PackageNotFoundError, version
    try:
        return f"universalmutator {version('universalmutator')}"
    except PackageNotFoundError:
        return ""


# -- building --------------------------------------------------------------------------------------------------------
def shared_tree_env() -> dict[str, str]:
    """The builder's environment for the shared tree: QB_ROOT by its real path. A clone whose build/qemu is a
    symlink to another checkout's would otherwise configure the tree under its own path (the configure stamp holds
    the source path), and every build from another clone would wipe and reconfigure it."""
    return {**os.environ, "QB_ROOT": str(QEMU_ROOT.resolve())}


def build_dir(arch: str) -> Path:
    """The shared build tree of ARCH (its compile_commands.json is the compile pre-check's)."""
    return QEMU_ROOT / ("build" if arch == "x86_64" else f"build-{arch}")


def builder(arch: str, lock: Path | None, *args: str) -> list[str]:
    command = ["bash", str(ROOT / "qemu-build" / "build.sh"), "--arch", arch, "--out", str(MUTANTS_OUT), *args]
    return ["flock", str(lock), *command] if lock is not None else command


def build_info(name: str, out: Path = MUTANTS_OUT) -> dict[str, Any]:
    path = out / name / "build-info.json"
    return json.loads(path.read_text()) if path.exists() else {}


def build_batch(mutants: Sequence[mut.Mutant], patches: Path, arch: str, lock: Path | None
                ) -> dict[str, tuple[bool, str, float]]:
    """Build each mutant's patch (PATCHES/ID.patch: the variant is named by the stem) in one builder run, holding
    --lock and every host CPU token (harness.hosts.parallel) once for the whole batch: a compile beside a running
    test would disturb its timing oracles and could fake a kill, and on a host where other jobs queue for the same
    lock one wait per batch beats one per mutant. The builder restores the pristine tree after each mutant, built
    or not. id → (built, why not, build seconds)."""
    for mutant in mutants:
        shutil.rmtree(MUTANTS_OUT / mutant.id, ignore_errors=True)     # never read an earlier attempt's binary
    budget = CpuBudget()
    args = [a for m in mutants for a in ("--patch", str(patches / f"{m.id}.patch"))]
    # the lock first, then the tokens: a job holding the lock (validate --lock) may be waiting for tokens
    with open(patches / f"batch-{mutants[0].id}.log", "w") as out, exclusive(lock), budget.acquire(budget.size):
        start = time.monotonic()           # the build, not the wait for the lock
        # (run_logged: an interrupted build gets SIGTERM, so build.sh's trap restores the pristine tree)
        run_logged(builder(arch, None, "--force", *args), ROOT, out, env=shared_tree_env())
    average = round((time.monotonic() - start) / len(mutants), 1)
    built: dict[str, tuple[bool, str, float]] = {}
    for mutant in mutants:
        info = build_info(mutant.id)
        if info and (MUTANTS_OUT / mutant.id / ARCHES[arch].qemu_binary).exists():
            built[mutant.id] = (True, "", float(info.get("build_seconds", average)))
            continue
        ninja_log = QEMU_ROOT / ("logs" if arch == "x86_64" else f"logs-{arch}") / f"ninja-{mutant.id}.log"
        errors = [line for line in (ninja_log.read_text().splitlines() if ninja_log.exists() else [])
                  if "error:" in line]
        refused = [line for line in Path(out.name).read_text().splitlines()
                   if "patch does not apply" in line and mutant.id in line]
        why = errors[0] if errors else refused[0] if refused else f"build.sh failed (batch log {out.name})"
        built[mutant.id] = (False, why.strip()[:300], average)
    return built


# -- running ---------------------------------------------------------------------------------------------------------
def run_selection(name: str, binary: Path, tests: list[str], artefacts: Path, options: argparse.Namespace,
                  extra: Sequence[str] = (), env: dict[str, str] | None = None,
                  stop_first: bool = False) -> tuple[dict[str, str], dict[str, str], str | None, float]:
    """(test → outcome, test → message, why it could not run, seconds) of one pytest run, output to a log."""
    artefacts.mkdir(parents=True, exist_ok=True)
    junit = artefacts / f"{name}.junit.xml"
    junit.unlink(missing_ok=True)
    args = pytest_argv(binary, tests, artefacts / name, junit,
                       [f"--timeout={options.test_timeout}", *(["-x"] if stop_first else []), *extra,
                        *options.pytest_args], options.arch)
    start = time.monotonic()
    deadline = options.test_timeout * max(1, len(tests)) + 300
    with open(artefacts / f"{name}.log", "w") as out:
        # run_logged: a Ctrl-C or SIGTERM of the tool, or the deadline, stops pytest with one SIGTERM and waits for
        # its teardown (its QEMUs, temp dirs), as validate, flake and matrix do
        code = run_logged(args, ROOT, out, timeout=deadline, env=env)
    if code is None:
        return {t: "timeout" for t in tests}, {t: f"timed out after {deadline} s" for t in tests}, None, deadline
    cases, why = read_run(code, junit)
    return ({t: c.outcome for t, c in cases.items()}, {t: c.message for t, c in cases.items() if c.message}, why,
            time.monotonic() - start)


def junit_durations(junit: Path) -> dict[str, float]:
    """test id (as harness.tools.validate.junit_cases names it) → seconds, from a JUnit XML file."""
    durations: dict[str, float] = {}
    if junit.exists():
        for case in ET.parse(junit).getroot().iter("testcase"):
            test_id = case.get("classname", "").replace(".", "/") + ".py::" + case.get("name", "")
            durations[test_id] = float(case.get("time") or 0)
    return durations


def failing_verdicts(run_dir: Path, test: str) -> list[str]:
    """The failing verdicts the killing test recorded (name: why), from its verdicts.json."""
    path = run_dir / "latest" / safe_name(test) / "verdicts.json"
    if not path.exists():
        return []
    return [f"{v['name']}: {v.get('why', '')}" for v in json.loads(path.read_text()) if not v.get("passed")]


def run_mutant(mutant: mut.Mutant, tests: list[str], options: argparse.Namespace, build_s: float) -> mut.Result:
    binary = MUTANTS_OUT / mutant.id / ARCHES[options.arch].qemu_binary
    try:
        outcomes, messages, why, seconds = run_selection(mutant.id, binary, tests, options.artefacts / "runs",
                                                         options, stop_first=True)
    finally:
        binary.unlink(missing_ok=True)        # 70 MB each: the build-info.json stays
    if why is not None and not outcomes:
        # The pristine QEMU passed the same selection with the same options: a session that cannot start on the
        # mutant (its binary fails `-version` or QMP query-target at the session check) is the mutant's doing.
        return mut.Result(mut.KILLED, killed_by="(session check)", build_seconds=build_s, run_seconds=seconds,
                          note=f"pytest could not run on the mutant: {why}")
    timeouts = [t for t, m in messages.items() if mut.is_timeout_message(m)] + [
        t for t, o in outcomes.items() if o == "timeout"]
    ran = {t: o for t, o in outcomes.items() if o != "skipped" or t in timeouts}
    try:
        outcome, killer = mut.classify(ran, timeouts)
    except ValueError as exc:
        # no failure, but a covering test skipped (it passed on pristine): not a kill; listed with why
        return mut.Result(mut.SURVIVED, outcomes, build_seconds=build_s, run_seconds=seconds, note=str(exc))
    verdicts = failing_verdicts(options.artefacts / "runs" / mutant.id, killer) if killer else []
    if killer and not verdicts and killer in messages:
        verdicts = [messages[killer].splitlines()[0][:300]]
    if outcome == mut.KILLED:
        # The pristine build passed this test at the run's start, but the host's load has changed since: the
        # killing test runs once more on pristine, now. A failure there too means the verdict moved with the host,
        # not with the mutant (session 13: an equivalent mutant "killed" by B5's rate window at 1.99×).
        control, control_messages, _, control_s = run_selection(f"{mutant.id}.pristine-control", pristine_binary(
            options.arch), [killer], options.artefacts / "runs", options)
        seconds += control_s
        if control.get(killer) != "passed":
            return mut.Result(mut.UNCONFIRMED, outcomes, killer, verdicts, build_s, round(seconds, 1),
                              note=f"pristine {control.get(killer, 'did not run')} the same test right after: "
                                   f"{control_messages.get(killer, '')[:200]}")
    return mut.Result(outcome, outcomes, killer, verdicts, build_s, round(seconds, 1))


def pristine_binary(arch: str) -> Path:
    return PRISTINE_OUT / PRISTINE / ARCHES[arch].qemu_binary


# -- the run ---------------------------------------------------------------------------------------------------------
class Run:
    def __init__(self, options: argparse.Namespace, state: mut.State) -> None:
        self.options = options
        self.state = state
        self.lock = threading.Lock()
        self.state_path = options.artefacts / "state.json"
        self.interrupted = False     # set on Ctrl-C: a run cut short proves nothing and is not recorded

    def save(self) -> None:
        with self.lock:
            atomic_write_text(self.state_path, json.dumps(self.state.to_json(), indent=1) + "\n")

    def record(self, mutant: mut.Mutant, result: mut.Result) -> None:
        if self.interrupted:
            return
        with self.lock:
            self.state.results[mutant.id] = result
        self.save()
        done = sum(m.id in self.state.results for m in self.state.mutants)
        log(f"{done}/{len(self.state.mutants)} {mutant.id} ({mutant.function}): {result.outcome}"
            f"{' by ' + result.killed_by if result.killed_by else ''}{' — ' + result.note if result.note else ''}")

    def mutate(self) -> None:
        """Mutants the compiler's front end refuses are recorded as build failures first (mutate_syntax: < 1 s
        each instead of a build). Then in batches of --batch: write the patches, build them (build_batch), record
        the build failures, equivalents and uncovered ones, run the rest (--jobs at once), then the next batch."""
        options, state = self.options, self.state
        patches = options.artefacts / "patches"
        patches.mkdir(parents=True, exist_ok=True)
        pristine_sha = build_info(PRISTINE, PRISTINE_OUT).get("binary_sha256")
        order = state.run_order()
        sources: dict[str, list[str]] = {}
        pending: list[mut.Mutant] = []
        for mutant in state.pending():
            source = sources.setdefault(mutant.file, pristine_source(mutant.file))
            start = time.monotonic()
            error = mutate_syntax.syntax_error(mutant, source, build_dir(options.arch))
            if error is None:
                pending.append(mutant)
            else:
                self.record(mutant, mut.Result(mut.BUILD_FAILED, build_seconds=round(time.monotonic() - start, 1),
                                               note=f"{error} (compile pre-check)"))
        with ThreadPoolExecutor(max_workers=options.jobs) as pool:
            try:
                for first in range(0, len(pending), options.batch):
                    batch = pending[first:first + options.batch]
                    for mutant in batch:
                        source = sources[mutant.file]
                        (patches / f"{mutant.id}.patch").write_text(mut.patch_text(mutant, source, {
                            "Description": f"qmh-mutate: {mutant.rule or 'mutant'} in {mutant.function}()",
                            "Mutant": mutant.id}))
                    log(f"building {len(batch)} mutant(s) ({first + len(batch)}/{len(pending)} of this run)")
                    builds = build_batch(batch, patches, options.arch, options.lock)
                    running: list[Future[None]] = []
                    for mutant in batch:
                        built, why, build_s = builds[mutant.id]
                        binary = MUTANTS_OUT / mutant.id / ARCHES[options.arch].qemu_binary
                        tests = covering(state.coverage, mutant.file, mutant.line, order)
                        if not built:
                            self.record(mutant, mut.Result(mut.BUILD_FAILED, build_seconds=build_s, note=why))
                        elif build_info(mutant.id).get("binary_sha256") == pristine_sha:
                            binary.unlink(missing_ok=True)
                            self.record(mutant, mut.Result(mut.EQUIVALENT, build_seconds=build_s,
                                                           note="binary identical to pristine (sha256)"))
                        elif not tests:
                            binary.unlink(missing_ok=True)
                            self.record(mutant, mut.Result(mut.NOT_COVERED, build_seconds=build_s))
                        else:
                            running.append(pool.submit(self._run, mutant, tests, build_s))
                    for future in running:
                        future.result()
            except KeyboardInterrupt:
                # Ctrl-C reaches this thread only: stop the pytest runs waiting in the workers, whose results
                # are then not recorded (record), before the pool waits for them
                self.interrupted = True
                stop_logged_children()
                raise

    def _run(self, mutant: mut.Mutant, tests: list[str], build_s: float) -> None:
        self.record(mutant, run_mutant(mutant, tests, self.options, build_s))


def prepare(options: argparse.Namespace, state: mut.State) -> int | None:
    """The plan (mutants), the pristine run and the coverage map, each once per state; an exit code on failure."""
    if not state.mutants:
        files = pristine_files(options.files)
        candidates = [m for f in files for m in engine_mutants(f, pristine_source(f))
                      if mut.wanted(m, options.functions)]
        state.mutants = mut.sample(candidates, None if options.exhaustive else options.n, options.seed)
        log(f"{len(candidates)} mutant(s) in {len(files)} file(s) ({', '.join(files)}); "
            f"{len(state.mutants)} selected (N={'all' if options.exhaustive else options.n}, SEED={options.seed})")
    if not state.pristine:
        binary = mutate_coverage.pristine_build(PRISTINE_OUT, options.arch, options.lock, shared_tree_env())
        binary = binary / ARCHES[options.arch].qemu_binary
        outcomes, messages, why, seconds = run_selection(PRISTINE, binary, options.selection, options.artefacts, options)
        if why is not None or not any(o == "passed" for o in outcomes.values()):
            log(f"could not run: the pristine selection {why or 'passed no test'} "
                f"(log {options.artefacts / 'pristine.log'})")
            return COULD_NOT_RUN
        state.pristine = outcomes
        state.durations = junit_durations(options.artefacts / f"{PRISTINE}.junit.xml")
        for test, outcome in outcomes.items():
            if outcome != "passed":
                log(f"pristine {outcome}: {test} — dropped from the selection ({messages.get(test, '')[:120]})")
        log(f"pristine: {sum(o == 'passed' for o in outcomes.values())}/{len(outcomes)} passed in {seconds:.0f} s")
    if not state.coverage:
        gcov = mutate_coverage.build_gcov(options.arch, options.lock)
        root = options.artefacts / "gcov"
        shutil.rmtree(root, ignore_errors=True)
        env = {**os.environ, "QMH_GCOV_ROOT": str(root)}
        tests = state.run_order()
        outcomes, _, why, seconds = run_selection("coverage", gcov / ARCHES[options.arch].qemu_binary, tests,
                                                  options.artefacts, options, ["-p", "harness.plugin.gcov_prefix"],
                                                  env)
        files = pristine_files(options.files)        # every selected file: a later sample reuses the map
        state.coverage = line_map(mutate_coverage.per_test_lines(root, tests, files))
        if not state.coverage:
            # every mutant would read "not covered": a coverage step that measured nothing must not say so
            log(f"could not run: the coverage run left no gcov data for {', '.join(files)} under {root} "
                f"({why or 'pytest ran'}; log {options.artefacts / 'coverage.log'})")
            return COULD_NOT_RUN
        log(f"coverage run ({seconds:.0f} s, {why or 'ran'}): lines executed per file: "
            + ", ".join(f"{f} {len(state.coverage.get(f, {}))}" for f in files))
    return None


def write_record(options: argparse.Namespace, state: mut.State, seconds: float) -> None:
    results = {m.id: state.results[m.id] for m in state.mutants if m.id in state.results}   # this sample's
    by_outcome = {o: sum(r.outcome == o for r in results.values()) for o in mut.OUTCOMES}
    record = {"config": state.config, "seconds": round(seconds, 1), "counts": by_outcome,
              "per_file": mut.score(state.mutants, results, "file"),
              "per_function": mut.score(state.mutants, results, "function"),
              "pristine": state.pristine,
              "mutants": [{**m.to_json(), **(results[m.id].to_json() if m.id in results else {"outcome": None}),
                           "covering": covering(state.coverage, m.file, m.line)} for m in state.mutants]}
    atomic_write_text(options.artefacts / "mutate.json", json.dumps(record, indent=1) + "\n")
    patches = {m.id: (options.artefacts / "patches" / f"{m.id}.patch") for m in state.mutants}
    diffs = {k: p.read_text() for k, p in patches.items() if p.exists()}
    atomic_write_text(options.artefacts / "index.html", render_page(record, diffs))
    log(f"done: {by_outcome}; " + "; ".join(f"{f} score {row['score']}" for f, row in record["per_file"].items())
        + f"; record {options.artefacts / 'mutate.json'}, page {options.artefacts / 'index.html'}")


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", nargs="+", default=list(DEFAULT_FILES),
                        help="source globs relative to QEMU's root (default: %(default)s)")
    parser.add_argument("--functions", nargs="*", default=[], help="only mutants inside these functions")
    parser.add_argument("-n", "--n", type=int, default=20, help="sample size (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=1, help="sample seed (default: %(default)s)")
    parser.add_argument("--exhaustive", action="store_true", help="every mutant, no sample")
    parser.add_argument("--tests", default="tests/behaviour -m 'not slow'",
                        help="the pytest selection, one shell-quoted string (node ids, paths, -m/-k; default: "
                             "make check's behaviour tests: %(default)s)")
    parser.add_argument("--arch", choices=sorted(ARCHES), default="x86_64")
    parser.add_argument("--artefacts", type=Path, default=ROOT / "artefacts" / "mutate")
    parser.add_argument("--jobs", type=int, default=max(1, host_cpus() // 2),
                        help="mutants run at once (default: host CPUs / 2, a pair of 1-vCPU guests each)")
    parser.add_argument("--batch", type=int, default=8,
                        help="mutants built per builder run, under one hold of --lock (default: %(default)s)")
    parser.add_argument("--test-timeout", type=int, default=600, help="per test (pytest-timeout), seconds")
    parser.add_argument("--lock", type=Path, default=None, help="hold this flock around every QEMU build")
    parser.add_argument("--fresh", action="store_true", help="ignore a saved state")
    parser.add_argument("--report-only", action="store_true", help="rewrite mutate.json and index.html, run nothing")
    parser.add_argument("pytest_args", nargs="*", help="extra pytest arguments (after --): -n 2, --tx …")
    options = parser.parse_args(argv)
    options.selection = shlex.split(options.tests)
    return options


def main(argv: list[str] | None = None) -> int:
    require_checkout("qmh-mutate", COULD_NOT_RUN)
    options = parse(argv)
    if not engine_version():
        print("[mutate] could not run: universalmutator is not installed (pip install -c constraints.txt "
              "-e '.[mutate]', which `make mutate` does)", file=sys.stderr)
        return COULD_NOT_RUN
    options.artefacts.mkdir(parents=True, exist_ok=True)
    config = {"files": options.files, "functions": options.functions, "n": None if options.exhaustive else options.n,
              "seed": options.seed, "tests": options.tests, "arch": options.arch, "engine": engine_version(),
              "rules": list(RULES)}
    state_path = options.artefacts / "state.json"
    saved = None if options.fresh or not state_path.exists() else json.loads(state_path.read_text())
    state, why = mut.resume(saved, config)
    log(why)
    started = time.monotonic()
    run = Run(options, state)
    if not options.report_only:
        interruptible()     # Ctrl-C / SIGTERM: the running pytest or build is stopped with its teardown
        try:
            code = prepare(options, state)
            run.save()
            if code is not None:
                return code
            run.mutate()
        except KeyboardInterrupt as exc:
            # every finished mutant is in the state already; the one cut short runs again on resume
            run.save()
            write_record(options, state, time.monotonic() - started)
            log(f"interrupted ({exc or 'Ctrl-C'}): {len(state.results)} result(s) kept in {run.state_path}")
            return 130
    write_record(options, state, time.monotonic() - started)
    return 0


if __name__ == "__main__":
    sys.exit(main())
