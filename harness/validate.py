"""`make validate`: prove the suite catches each regression patch and passes the unmodified build.

Every regressions/*.patch names, in its header, what it breaks and which tests must catch it:

    Description: one line
    Guards: the behaviour (B0..B4, basics)
    Tests: tests/behaviour/test_x.py::test_y [more node ids, space separated; may continue on `Tests:` lines]

For every patch the variant QEMU is built by qemu-build/build.sh, then the guarding tests run against it; the pristine build runs the union of all tests.
A patch is caught when at least one of its tests fails; it is missed when all pass (or skip). Prints the
patch × test matrix, writes it as JSON, and exits non-zero if a patch is missed or the pristine build fails a test.
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

ROOT = Path(__file__).resolve().parent.parent
PRISTINE = "pristine"


@dataclass(frozen=True)
class Regression:
    patch: Path
    description: str
    guards: str
    tests: tuple[str, ...]
    exploratory: bool = False     # `Exploratory: yes`: reported when it escapes, but not a validation failure

    @property
    def variant(self) -> str:
        return self.patch.stem


@dataclass
class VariantRun:
    variant: str
    outcomes: dict[str, str] = field(default_factory=dict)  # test id → passed | failed | skipped | error
    seconds: float = 0.0
    exit_code: int = 0


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
                      fields.get("Exploratory", "no").lower().startswith("y"))


def load_regressions(directory: Path) -> list[Regression]:
    return [parse_header(patch) for patch in sorted(directory.glob("*.patch"))]


def build_variants(regressions: list[Regression], out: Path) -> None:
    args = ["bash", str(ROOT / "qemu-build" / "build.sh"), "--pristine", "--out", str(out)]
    for regression in regressions:
        args += ["--patch", str(regression.patch)]
    print(f"[validate] building pristine + {len(regressions)} variants into {out}", flush=True)
    subprocess.run(args, check=True)


def junit_outcomes(path: Path) -> dict[str, str]:
    outcomes: dict[str, str] = {}
    if not path.exists():
        return outcomes
    for case in ET.parse(path).getroot().iter("testcase"):
        classname, name = case.get("classname", ""), case.get("name", "")
        test_id = classname.replace(".", "/") + ".py::" + name
        if case.find("failure") is not None:
            outcomes[test_id] = "failed"
        elif case.find("error") is not None:
            outcomes[test_id] = "error"
        elif case.find("skipped") is not None:
            outcomes[test_id] = "skipped"
        else:
            outcomes[test_id] = "passed"
    return outcomes


def run_tests(variant: str, binary: Path, tests: list[str], artefacts: Path, pytest_args: list[str]) -> VariantRun:
    junit = artefacts / f"{variant}.junit.xml"
    args = [sys.executable, "-m", "pytest", *tests, "--qemu-binary", str(binary), "--accel", "tcg",
            "--artefacts", str(artefacts / variant), f"--junitxml={junit}", "-p", "no:cacheprovider", "-q",
            *pytest_args]
    print(f"[validate] {variant}: running {len(tests)} test(s)", flush=True)
    start = time.monotonic()
    proc = subprocess.run(args, cwd=ROOT)
    run = VariantRun(variant, junit_outcomes(junit), time.monotonic() - start, proc.returncode)
    return run


def matches(test_id: str, selector: str) -> bool:
    """A test id from junit matches a selector from the index (file::name, possibly without parameters)."""
    return test_id == selector or test_id.startswith(selector + "[") or (
        "::" not in selector and test_id.startswith(selector + "::"))


def verdict_for(run: VariantRun, selector: str) -> str:
    outcomes = [o for t, o in run.outcomes.items() if matches(t, selector)]
    if not outcomes:
        return "not-run"
    if any(o in ("failed", "error") for o in outcomes):
        return "failed"
    return "skipped" if all(o == "skipped" for o in outcomes) else "passed"


def render(regressions: list[Regression], runs: dict[str, VariantRun], pristine_tests: list[str]) -> tuple[str, bool]:
    lines, ok = [], True
    width = max(len(r.variant) for r in regressions) if regressions else 10
    pristine = runs[PRISTINE]
    lines.append(f"{'variant':<{width}}  {'verdict':<8}  test → outcome")
    bad = [t for t in pristine_tests if verdict_for(pristine, t) not in ("passed", "skipped")]
    ok &= not bad
    lines.append(f"{PRISTINE:<{width}}  {'PASS' if not bad else 'FAIL':<8}  "
                 + ", ".join(f"{t.split('::')[-1]}={verdict_for(pristine, t)}" for t in pristine_tests))
    for regression in regressions:
        run = runs.get(regression.variant)
        if not regression.tests or run is None:
            lines.append(f"{regression.variant:<{width}}  {'NO-TEST':<8}  ({regression.guards}: no guarding test yet)")
            ok = False
            continue
        cells = {t: verdict_for(run, t) for t in regression.tests}
        caught = any(v == "failed" for v in cells.values())
        ok &= caught or regression.exploratory
        label = "caught" if caught else "escaped" if regression.exploratory else "MISSED"
        lines.append(f"{regression.variant:<{width}}  {label:<8}  "
                     + ", ".join(f"{t.split('::')[-1]}={'caught' if v == 'failed' else v}" for t, v in cells.items()))
    return "\n".join(lines), ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--regressions", type=Path, default=ROOT / "regressions",
                        help="directory of regression patches (headers name the guarding tests)")
    parser.add_argument("--variants", type=Path, default=ROOT / "build" / "qemu" / "variants")
    parser.add_argument("--artefacts", type=Path, default=ROOT / "artefacts" / "validate")
    parser.add_argument("--json", type=Path, default=None, help="write the matrix here (default: ARTEFACTS/validate.json)")
    parser.add_argument("--only", action="append", default=[], help="only patches whose name contains this")
    parser.add_argument("--no-build", action="store_true", help="use the variants already built")
    parser.add_argument("pytest_args", nargs="*", help="extra pytest arguments (after --)")
    options = parser.parse_args(argv)

    regressions = load_regressions(options.regressions)
    if options.only:
        regressions = [r for r in regressions if any(o in r.patch.name for o in options.only)]
    if not options.no_build:
        build_variants(regressions, options.variants)
    options.artefacts.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    pristine_tests = sorted({t for r in regressions for t in r.tests})
    runs: dict[str, VariantRun] = {}
    runs[PRISTINE] = run_tests(PRISTINE, options.variants / PRISTINE / "qemu-system-x86_64", pristine_tests,
                               options.artefacts, options.pytest_args)
    for regression in regressions:
        if regression.tests:
            runs[regression.variant] = run_tests(regression.variant,
                                                 options.variants / regression.variant / "qemu-system-x86_64",
                                                 list(regression.tests), options.artefacts, options.pytest_args)
    table, ok = render(regressions, runs, pristine_tests)
    print("\n" + table)
    result: dict[str, Any] = {
        "ok": ok, "seconds": time.monotonic() - started,
        "regressions": [{"patch": r.patch.name, "description": r.description, "guards": r.guards,
                         "exploratory": r.exploratory,
                         "tests": {t: verdict_for(runs[r.variant], t) for t in r.tests} if r.variant in runs else {}}
                        for r in regressions],
        "runs": {name: run.__dict__ for name, run in runs.items()},
    }
    out = options.json or options.artefacts / "validate.json"
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"\n[validate] {'every patch caught, pristine passes' if ok else 'NOT OK'}; matrix in {out}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
