"""`make validate`: prove the suite catches each regression patch and passes the unmodified build.

Every regressions/*.patch names, in its header, what it breaks and which tests must catch it:

    Description: one line
    Guards: the behaviour (B0..B4, basics)
    Tests: tests/behaviour/test_x.py::test_y [more node ids, space separated; may continue on `Tests:` lines]
    Needs-accel: kvm   (optional: a behaviour only that accelerator has, e.g. dirty-limit's KVM dirty ring)

For every patch the variant QEMU is built by qemu-build/build.sh, then the guarding tests run against it; the pristine build runs the union of all tests.
Everything is for one target arch (--arch: the QEMU built, and the guest pytest boots), x86_64 by default;
`--only B0,B4` selects the patches that guard B0 or B4 (or whose name contains a word).
A patch is caught when at least one of its tests fails (or errors) on the variant and passed on the pristine build;
it is missed when all pass, skip or xfail. Prints the patch × test matrix and writes it as JSON. A patch whose
`Needs-accel` is not this validation's accelerator (--accel: tcg, the default, or kvm on a KVM host) is listed as
not judged, with why, and neither built nor run: its tests would only skip.

Exit status: 0 every patch caught and every pristine test passed; 1 a patch missed or a pristine test did not pass
(failed, errored, skipped, xfailed or did not run: a test that did not pass on the unmodified build proves nothing
about a patch); 4 a pytest run could not run at all (pytest exit other than 0/1, no JUnit XML, or no test ran) —
validation stops there and judges nothing, since a run that did not happen can neither catch a patch nor pass.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.core import workdirs
from harness.core.process import interruptible, run_child
from harness.qemu.arch import ARCHES
from harness.core.checkout import ROOT, require_checkout

PRISTINE = "pristine"
DEFAULT_ARCH = "x86_64"   # the arch of the layout from before there were arches (qemu-build/lib.sh: qb_arch_path)
COULD_NOT_RUN = 4     # exit status of `make validate` (and qmh-flake) when a pytest run did not happen

# pytest's exit codes (_pytest.main.ExitCode), for the one line that says why a run did not count.
PYTEST_EXIT_MEANINGS = {2: "interrupted", 3: "internal error", 4: "usage error (bad option or input)",
                        5: "no tests collected"}


@dataclass(frozen=True)
class Regression:
    patch: Path
    description: str
    guards: str
    tests: tuple[str, ...]
    exploratory: bool = False     # `Exploratory: yes`: reported when it escapes, but not a validation failure
    needs_accel: str | None = None  # `Needs-accel: kvm`: judged only by a validation on that accelerator

    @property
    def variant(self) -> str:
        return self.patch.stem


@dataclass
class VariantRun:
    variant: str
    outcomes: dict[str, str] = field(default_factory=dict)  # test id → passed|failed|error|skipped|xfailed
    seconds: float = 0.0
    exit_code: int = 0
    messages: dict[str, str] = field(default_factory=dict)  # test id → skip reason / failure message
    could_not_run: str | None = None                        # why this run does not count at all


@dataclass(frozen=True)
class Case:
    """One test's outcome in a JUnit XML file, with the reason pytest gave (skip reason, failure message)."""
    outcome: str      # passed | failed | error | skipped | xfailed
    message: str = ""


class JUnitUnreadable(ValueError):
    pass


def parse_header(patch: Path) -> Regression:
    """The `Key: value` lines before the first diff; `Tests:` may repeat."""
    fields: dict[str, str] = {}
    tests: list[str] = []
    for line in patch.read_text().splitlines():
        if line.startswith(("diff ", "--- ")):
            break
        key, sep, value = line.partition(":")
        if not sep or " " in key:
            continue
        if key == "Tests":
            tests += value.split()
        else:
            fields.setdefault(key, value.strip())
    missing = [k for k in ("Description", "Guards") if k not in fields]
    if missing:
        raise ValueError(f"{patch}: header lacks {', '.join(missing)}")
    return Regression(patch, fields["Description"], fields["Guards"], tuple(tests),
                      fields.get("Exploratory", "no").lower().startswith("y"), fields.get("Needs-accel") or None)


def load_regressions(directory: Path) -> list[Regression]:
    return [parse_header(patch) for patch in sorted(directory.glob("*.patch"))]


def per_arch(base: Path, arch: str) -> Path:
    """BASE for x86_64, BASE-ARCH for another arch: as qemu-build/lib.sh's qb_arch_path, so that the x86_64
    variants and artefacts stay where they were."""
    return base if arch == DEFAULT_ARCH else base.with_name(f"{base.name}-{arch}")


def selected(regression: Regression, only: list[str]) -> bool:
    """--only WORD[,WORD...] (repeatable): the behaviour the patch guards (the first word of `Guards:`, e.g. B0
    or basics), or a part of its file name."""
    words = [w.strip() for o in only for w in o.split(",") if w.strip()]
    guards = regression.guards.split()[0] if regression.guards.split() else ""
    return any(w.lower() == guards.lower() or w in regression.patch.name for w in words)


def build_variants(regressions: list[Regression], out: Path, arch: str = DEFAULT_ARCH) -> None:
    args = ["bash", str(ROOT / "qemu-build" / "build.sh"), "--arch", arch, "--pristine", "--out", str(out)]
    for regression in regressions:
        args += ["--patch", str(regression.patch)]
    print(f"[validate] building {arch}: pristine + {len(regressions)} variants into {out}", flush=True)
    subprocess.run(args, check=True)


def junit_cases(path: Path) -> dict[str, Case]:
    """Every testcase of a pytest JUnit XML file; {} when there is no file. A file that does not parse (a run
    killed while writing it) raises JUnitUnreadable: it must not be read as "no failures"."""
    cases: dict[str, Case] = {}
    if not path.exists():
        return cases
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as exc:
        raise JUnitUnreadable(f"{path}: unreadable JUnit XML ({exc})") from None
    for case in root.iter("testcase"):
        classname, name = case.get("classname", ""), case.get("name", "")
        test_id = classname.replace(".", "/") + ".py::" + name
        # A failure in the call and an error in teardown land in the same testcase: the failure decides.
        for tag in ("failure", "error", "skipped"):
            element = case.find(tag)
            if element is None:
                continue
            outcome = {"failure": "failed", "error": "error", "skipped": "skipped"}[tag]
            # An expected failure (xfail) is written as <skipped type="pytest.xfail">: it is neither a pass nor a
            # plain skip, and must not read as one.
            if tag == "skipped" and element.get("type") == "pytest.xfail":
                outcome = "xfailed"
            cases[test_id] = Case(outcome, (element.get("message") or "").strip())
            break
        else:
            cases[test_id] = Case("passed")
    return cases


def junit_outcomes(path: Path) -> dict[str, str]:
    return {test_id: case.outcome for test_id, case in junit_cases(path).items()}


def could_not_run(pytest_exit: int, junit: Path, cases: dict[str, Case] | None) -> str | None:
    """Why a pytest run does not count as a run at all, or None when its outcomes can be judged.

    Only exits 0 (all passed) and 1 (some failed) come from tests that ran; anything else — usage error,
    internal error, interruption, nothing collected — means the tests did not get to judge the QEMU."""
    if pytest_exit not in (0, 1):
        meaning = PYTEST_EXIT_MEANINGS.get(pytest_exit, "killed by a signal" if pytest_exit < 0 else "unknown")
        return f"pytest exited {pytest_exit} ({meaning})"
    if cases is None:
        return f"pytest's JUnit XML {junit} is unreadable"
    if not junit.exists():
        return f"pytest wrote no JUnit XML ({junit})"
    if not cases:
        return "no test ran"
    return None


def run_pytest(args: list[str]) -> tuple[int, str]:
    """Run pytest from the harness checkout (its output streams through as usual) and return its exit status and
    its usage-error line, if it printed one — the one line that says why a run could not happen. Ctrl-C or SIGTERM
    here stops pytest as its own Ctrl-C would, teardown and all (harness.core.process.run_child)."""
    returncode, stderr = run_child(args, cwd=ROOT)
    errors = [line for line in stderr.splitlines() if line.startswith("ERROR: ") or ": error: " in line]
    return returncode, errors[-1].removeprefix("ERROR: ").strip() if errors else ""


def read_run(pytest_exit: int, junit: Path, error_line: str = "") -> tuple[dict[str, Case], str | None]:
    """(cases, why the run does not count or None) of a finished pytest run."""
    try:
        cases: dict[str, Case] | None = junit_cases(junit)
    except JUnitUnreadable:
        cases = None
    why = could_not_run(pytest_exit, junit, cases)
    return cases or {}, f"{why}: {error_line}" if why and error_line else why


def pytest_argv(binary: Path, tests: list[str], artefacts: Path, junit: Path, pytest_args: list[str],
                arch: str = DEFAULT_ARCH, accel: str = "tcg") -> list[str]:
    """One variant's pytest run: its binary, on `accel`, with the guest of `arch`."""
    return [sys.executable, "-m", "pytest", *tests, "--qemu-binary", str(binary), "--accel", accel, "--arch", arch,
            "--artefacts", str(artefacts), f"--junitxml={junit}", "-p", "no:cacheprovider", "-q", *pytest_args]


def run_tests(variant: str, binary: Path, tests: list[str], artefacts: Path, pytest_args: list[str],
              arch: str = DEFAULT_ARCH, accel: str = "tcg") -> VariantRun:
    junit = artefacts / f"{variant}.junit.xml"
    # A JUnit file left by an earlier run must never be read as this run's result.
    junit.unlink(missing_ok=True)
    args = pytest_argv(binary, tests, artefacts / variant, junit, pytest_args, arch, accel)
    print(f"[validate] {variant} ({arch}): running {len(tests)} test(s)", flush=True)
    start = time.monotonic()
    code, error_line = run_pytest(args)
    cases, why = read_run(code, junit, error_line)
    return VariantRun(variant, {t: c.outcome for t, c in cases.items()}, time.monotonic() - start, code,
                      {t: c.message for t, c in cases.items() if c.message}, why)


def matches(test_id: str, selector: str) -> bool:
    """A test id from junit matches a selector from the index (file::name, possibly without parameters)."""
    return test_id == selector or test_id.startswith(selector + "[") or (
        "::" not in selector and test_id.startswith(selector + "::"))


def verdict_for(run: VariantRun, selector: str) -> str:
    """passed | failed | skipped | xfailed | not-run for one selector (all its parametrisations).

    "passed" only when every matching case passed: a parametrisation that skipped or xfailed left part of the
    selector unproven, so the selector is reported by its weakest outcome."""
    outcomes = [o for t, o in run.outcomes.items() if matches(t, selector)]
    if not outcomes:
        return "not-run"
    if any(o in ("failed", "error") for o in outcomes):
        return "failed"
    if all(o == "passed" for o in outcomes):
        return "passed"
    return "xfailed" if "xfailed" in outcomes else "skipped"


def _reason(run: VariantRun, selector: str) -> str:
    reasons = sorted({m for t, m in run.messages.items() if matches(t, selector)})
    return f" ({reasons[0].splitlines()[0][:120]})" if reasons else ""


def not_judged_line(regression: Regression, accel: str) -> str:
    return (f"[validate] not judged: {regression.variant} needs {regression.needs_accel} (this validation runs "
            f"{accel}); run `make validate VALIDATE_ARGS='--accel {regression.needs_accel}'` where it is real")


def render(regressions: list[Regression], runs: dict[str, VariantRun], pristine_tests: list[str]) -> tuple[str, bool]:
    lines, ok = [], True
    width = max(len(r.variant) for r in regressions) if regressions else 10
    pristine = runs[PRISTINE]
    lines.append(f"{'variant':<{width}}  {'verdict':<8}  test → outcome")
    # Only a pass on the unmodified build makes the same test's failure on a variant mean anything: a pristine
    # skip, xfail or absence proves nothing, so it fails the validation instead of counting as a pass.
    unproven = {t: verdict_for(pristine, t) for t in pristine_tests if verdict_for(pristine, t) != "passed"}
    ok &= not unproven
    lines.append(f"{PRISTINE:<{width}}  {'PASS' if not unproven else 'FAIL':<8}  "
                 + ", ".join(f"{t.split('::')[-1]}={verdict_for(pristine, t)}" for t in pristine_tests))
    for regression in regressions:
        run = runs.get(regression.variant)
        if not regression.tests or run is None:
            lines.append(f"{regression.variant:<{width}}  {'NO-TEST':<8}  ({regression.guards}: no guarding test yet)")
            ok = False
            continue
        cells = {t: verdict_for(run, t) for t in regression.tests}
        caught = any(v == "failed" and t not in unproven for t, v in cells.items())
        ok &= caught or regression.exploratory
        label = "caught" if caught else "escaped" if regression.exploratory else "MISSED"
        lines.append(f"{regression.variant:<{width}}  {label:<8}  "
                     + ", ".join(f"{t.split('::')[-1]}={_cell(v, t in unproven)}" for t, v in cells.items()))
    for test, verdict in unproven.items():
        relying = [r.variant for r in regressions if test in r.tests]
        lines.append(f"[validate] pristine {verdict}: {test}{_reason(pristine, test)} — proves nothing for "
                     f"{', '.join(relying) or 'any patch'}")
    return "\n".join(lines), ok


def _cell(verdict: str, pristine_unproven: bool) -> str:
    if verdict != "failed":
        return verdict
    return "failed-also-pristine-unproven" if pristine_unproven else "caught"


def stop_line(run: VariantRun) -> str:
    """The one line that says a variant's run did not happen and why."""
    return (f"[validate] could not run {run.variant}: {run.could_not_run}; nothing judged (its output is above, "
            f"exit {COULD_NOT_RUN})")


def main(argv: list[str] | None = None) -> int:
    interruptible()    # Ctrl-C / SIGTERM stop the run; its pytest child tears down (harness.core.process.run_child)
    require_checkout("qmh-validate", COULD_NOT_RUN)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--regressions", type=Path, default=ROOT / "regressions",
                        help="directory of regression patches (headers name the guarding tests)")
    parser.add_argument("--arch", choices=sorted(ARCHES), default=DEFAULT_ARCH,
                        help="target arch: the QEMU built and the guest booted (default: %(default)s)")
    parser.add_argument("--variants", type=Path, default=None,
                        help="built variants (default: build/qemu/variants, variants-ARCH for another arch)")
    parser.add_argument("--artefacts", type=Path, default=None,
                        help="default: artefacts/validate, validate-ARCH for another arch")
    parser.add_argument("--json", type=Path, default=None, help="write the matrix here (default: ARTEFACTS/validate.json)")
    parser.add_argument("--only", action="append", default=[],
                        help="only patches guarding one of these behaviours or whose name contains one "
                             "(comma-separated, repeatable: --only B0,B4)")
    parser.add_argument("--accel", choices=["tcg", "kvm"], default="tcg",
                        help="accelerator of every run (default: %(default)s); patches with another Needs-accel "
                             "are listed as not judged")
    parser.add_argument("--no-build", action="store_true", help="use the variants already built")
    parser.add_argument("pytest_args", nargs="*", help="extra pytest arguments (after --)")
    options = parser.parse_args(argv)
    arch = options.arch
    options.variants = options.variants or per_arch(ROOT / "build" / "qemu" / "variants", arch)
    options.artefacts = options.artefacts or per_arch(ROOT / "artefacts" / "validate", arch)

    regressions = load_regressions(options.regressions)
    if options.only:
        regressions = [r for r in regressions if selected(r, options.only)]
    not_judged = [r for r in regressions if r.needs_accel not in (None, options.accel)]
    regressions = [r for r in regressions if r not in not_judged]
    for regression in not_judged:
        print(not_judged_line(regression, options.accel), flush=True)
    if not any(r.tests for r in regressions):
        # Without a test id pytest would run its whole default selection: nothing here could judge a patch.
        print(f"[validate] could not run: no patch {'matching --only ' if options.only else ''}names a test "
              f"(Tests: header) in {options.regressions}; nothing judged", flush=True)
        return COULD_NOT_RUN
    if not options.no_build:
        build_variants(regressions, options.variants, arch)
    options.artefacts.mkdir(parents=True, exist_ok=True)
    reaped = workdirs.reap_stale()
    if reaped:
        print(f"[validate] reaped {len(reaped)} temp dir(s) left by dead runs: {' '.join(map(str, reaped))}",
              flush=True)
    started = time.monotonic()
    pristine_tests = sorted({t for r in regressions for t in r.tests})
    out = options.json or options.artefacts / "validate.json"
    runs: dict[str, VariantRun] = {}
    plan = [(PRISTINE, pristine_tests)] + [(r.variant, list(r.tests)) for r in regressions if r.tests]
    for variant, tests in plan:
        run = runs[variant] = run_tests(variant, options.variants / variant / ARCHES[arch].qemu_binary, tests,
                                        options.artefacts, options.pytest_args, arch, options.accel)
        if run.could_not_run:
            # A run that did not happen is neither a catch nor a pristine pass, and the next ones would most
            # likely fail the same way (bad option, broken image): stop and say so.
            out.write_text(json.dumps({"ok": False, "arch": arch, "could_not_run": {"variant": variant,
                                                                      "why": run.could_not_run},
                                       "runs": {name: r.__dict__ for name, r in runs.items()}}, indent=1) + "\n")
            print(stop_line(run), flush=True)
            return COULD_NOT_RUN
    table, ok = render(regressions, runs, pristine_tests)
    print("\n" + "\n".join([table, *(not_judged_line(r, options.accel) for r in not_judged)]))
    result: dict[str, Any] = {
        "ok": ok, "arch": arch, "seconds": time.monotonic() - started,
        "regressions": [{"patch": r.patch.name, "description": r.description, "guards": r.guards,
                         "exploratory": r.exploratory, "judged": True,
                         "tests": {t: verdict_for(runs[r.variant], t) for t in r.tests} if r.variant in runs else {}}
                        for r in regressions] + [
            {"patch": r.patch.name, "description": r.description, "guards": r.guards, "judged": False,
             "why": f"needs {r.needs_accel}, this validation runs {options.accel}"} for r in not_judged],
        "runs": {name: run.__dict__ for name, run in runs.items()},
    }
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"\n[validate] {'every patch caught, pristine passes' if ok else 'NOT OK'} ({arch}); matrix in {out}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
