"""`make validate` and `qmh-bisect-step` must only judge pytest runs that happened: a stale JUnit file, a pytest
that could not run, a pristine skip or a host-caused skip must never read as "caught", "pristine passes", "good",
"bad" or "skip this commit"."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from harness.tools import bisect

from harness.tools import validate
from harness.tools.validate import Case, junit_cases

# Every session started here reaps stale qmh-* dirs: keep them in a temp root of their own.
from test_session import private_tmpdir  # noqa: E402,F401  (autouse fixture)

REPO = Path(__file__).resolve().parents[2]
TEST = "tests/x.py::test_a"


def junit(path: Path, **cases: str) -> Path:
    """A pytest-style JUnit file; each keyword is a test name in tests/x.py, its value the body of its testcase."""
    body = "".join(f'<testcase classname="tests.x" name="{name}" time="1">{inner}</testcase>'
                   for name, inner in cases.items())
    path.write_text(f'<?xml version="1.0"?><testsuites><testsuite name="pytest">{body}</testsuite></testsuites>')
    return path


PASSED = ""
FAILED = '<failure message="verdict failed">x</failure>'
SKIPPED_LACKS = '<skipped type="pytest.skip" message="QEMU lacks capability \'x\'">s</skipped>'
SKIPPED_HOST = '<skipped type="pytest.skip" message="postcopy needs userfaultfd">s</skipped>'
XFAILED = '<skipped type="pytest.xfail" message="QEMU without the feature">x</skipped>'
SETUP_ERROR = '<error message="failed on setup with boom">e</error>'


def fake_subprocess(behaviour: Any) -> SimpleNamespace:
    """A stand-in for the `subprocess` module of validate/bisect: `behaviour(args)` → (exit code, junit writer)."""
    def run(args: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        if "pytest" not in args:
            return subprocess.CompletedProcess(args, 0, stdout="abc1234\n", stderr="")
        junit_path = Path(next(a for a in args if a.startswith("--junitxml=")).split("=", 1)[1])
        code, write, *stderr = behaviour(args, junit_path)
        if write is not None:
            write(junit_path)
        return subprocess.CompletedProcess(args, code, stderr="".join(stderr))
    return SimpleNamespace(run=run, CompletedProcess=subprocess.CompletedProcess, PIPE=subprocess.PIPE)


@pytest.fixture(autouse=True)
def pytest_runs_through_validate_subprocess(monkeypatch: pytest.MonkeyPatch) -> None:
    """validate runs pytest with harness.core.process.run_child (its Ctrl-C handling is test_interrupt's): here it
    goes through `validate.subprocess`, which the tests replace with fake_subprocess."""
    def run_child(args: list[str], cwd: Path) -> tuple[int, str]:
        proc = validate.subprocess.run(args, cwd=cwd, stderr=subprocess.PIPE, text=True)
        sys.stderr.write(proc.stderr or "")
        return proc.returncode, proc.stderr or ""
    monkeypatch.setattr(validate, "run_child", run_child)


@pytest.fixture
def regressions(tmp_path: Path) -> Path:
    directory = tmp_path / "regressions"
    directory.mkdir()
    (directory / "X.patch").write_text(f"Description: breaks x\nGuards: B0\nTests: {TEST}\n\ndiff --git a/x b/x\n")
    return directory


def run_validate(tmp_path: Path, regressions: Path) -> int:
    return validate.main(["--regressions", str(regressions), "--variants", str(tmp_path / "variants"),
                          "--artefacts", str(tmp_path / "art"), "--no-build"])


def test_validate_ignores_a_stale_junit_and_stops_when_pytest_could_not_run(tmp_path, regressions, monkeypatch,
                                                                             capsys) -> None:
    art = tmp_path / "art"
    art.mkdir()
    # What an earlier, successful validation left behind.
    junit(art / "pristine.junit.xml", test_a=PASSED)
    junit(art / "X.junit.xml", test_a=FAILED)
    line = "ERROR: harness: --qemu-binary: /v/pristine/qemu-system-x86_64: no such file or directory\n"
    monkeypatch.setattr(validate, "subprocess", fake_subprocess(lambda args, path: (4, None, line)))
    assert run_validate(tmp_path, regressions) == validate.COULD_NOT_RUN
    out = capsys.readouterr().out
    assert "every patch caught" not in out
    assert ("could not run pristine: pytest exited 4 (usage error (bad option or input)): harness: --qemu-binary: "
            "/v/pristine/qemu-system-x86_64: no such file or directory; nothing judged") in out


@pytest.mark.parametrize("code, cases, why", [
    (5, None, "pytest exited 5 (no tests collected)"),
    (3, {"test_a": PASSED}, "pytest exited 3 (internal error)"),
    (2, {"test_a": FAILED}, "pytest exited 2 (interrupted)"),
    (0, None, "pytest wrote no JUnit XML"),
    (0, {}, "no test ran"),
])
def test_validate_counts_no_run_that_did_not_happen(tmp_path, regressions, monkeypatch, capsys, code, cases,
                                                    why) -> None:
    writer = None if cases is None else (lambda path: junit(path, **cases))
    monkeypatch.setattr(validate, "subprocess", fake_subprocess(lambda args, path: (code, writer)))
    assert run_validate(tmp_path, regressions) == validate.COULD_NOT_RUN
    out = capsys.readouterr().out
    assert f"could not run pristine: {why}" in out
    assert "caught" not in out and "pristine passes" not in out


@pytest.mark.parametrize("pristine, code, line", [
    (SKIPPED_HOST, 1, "[validate] pristine skipped: tests/x.py::test_a (postcopy needs userfaultfd) — proves nothing "
                      "for X"),
    (XFAILED, 1, "[validate] pristine xfailed: tests/x.py::test_a (QEMU without the feature) — proves nothing for X"),
    (PASSED, 0, "[validate] every patch caught, pristine passes"),
], ids=["pristine-skip", "pristine-xfail", "pristine-pass"])
def test_a_variant_failure_counts_only_against_a_pristine_pass(tmp_path, regressions, monkeypatch, capsys,
                                                               pristine, code, line) -> None:
    def behaviour(args: list[str], path: Path) -> tuple[int, Any]:
        if "pristine" in path.name:
            return 0, lambda p: junit(p, test_a=pristine)
        return 1, lambda p: junit(p, test_a=FAILED)
    monkeypatch.setattr(validate, "subprocess", fake_subprocess(behaviour))
    assert run_validate(tmp_path, regressions) == code
    out = capsys.readouterr().out
    assert line in out
    assert ("MISSED" in out) == (code == 1)


def test_validate_refuses_a_selection_without_tests(tmp_path, regressions, monkeypatch, capsys) -> None:
    """With no test id, pytest would run the whole default selection against pristine: refuse instead."""
    monkeypatch.setattr(validate, "subprocess", fake_subprocess(lambda args, path: pytest.fail("pytest ran")))
    code = validate.main(["--regressions", str(regressions), "--only", "nothing-matches", "--no-build",
                          "--artefacts", str(tmp_path / "art")])
    assert code == validate.COULD_NOT_RUN
    assert "no patch matching --only names a test" in capsys.readouterr().out


def test_junit_tells_xfail_and_setup_errors_apart_from_skips_and_passes(tmp_path) -> None:
    cases = junit_cases(junit(tmp_path / "j.xml", a=PASSED, b=SKIPPED_LACKS, c=XFAILED, d=SETUP_ERROR, e=FAILED))
    assert {k.split("::")[1]: c.outcome for k, c in cases.items()} == {
        "a": "passed", "b": "skipped", "c": "xfailed", "d": "error", "e": "failed"}
    assert cases["tests/x.py::b"].message == "QEMU lacks capability 'x'"


def test_an_unparsable_junit_is_a_run_that_did_not_happen(tmp_path) -> None:
    path = tmp_path / "j.xml"
    path.write_text("<testsuites><testsuite><testcase name=")   # killed while writing
    cases, why = validate.read_run(0, path)
    assert cases == {} and why is not None and "unreadable" in why


def test_a_pristine_xfail_or_partial_skip_is_not_a_pristine_pass() -> None:
    run = validate.VariantRun("pristine", {"t.py::a[1]": "passed", "t.py::a[2]": "skipped", "t.py::b": "xfailed"})
    assert validate.verdict_for(run, "t.py::a") == "skipped"
    assert validate.verdict_for(run, "t.py::b") == "xfailed"


# -- bisect ------------------------------------------------------------------------------------------------------
def test_bisect_never_skips_a_commit_for_a_host_reason() -> None:
    assert bisect.classify({"a": Case("skipped", "postcopy needs userfaultfd")}, 0) == "broken"
    assert bisect.classify({"a": Case("skipped", "QEMU lacks command 'x'")}, 0) == "inconclusive"
    assert bisect.classify({"a": Case("xfailed", "QEMU without the feature")}, 0) == "inconclusive"
    assert bisect.classify({"a": Case("passed"), "b": Case("skipped", "needs hugepages")}, 0) == "broken"


def bisect_main(tmp_path: Path, monkeypatch, behaviour: Any) -> int:
    fake = fake_subprocess(behaviour)
    monkeypatch.setattr(bisect, "subprocess", fake)
    monkeypatch.setattr(validate, "subprocess", fake)    # bisect runs pytest through validate.run_pytest
    monkeypatch.setattr(bisect, "build", lambda source, build_dir: 0)
    return bisect.main(["--build-dir", str(tmp_path / "b"), "--artefacts", str(tmp_path / "art"),
                        "--source", str(tmp_path), TEST])


def test_bisect_aborts_when_every_test_skips_for_a_host_reason(tmp_path, monkeypatch, capsys) -> None:
    code = bisect_main(tmp_path, monkeypatch, lambda args, path: (0, lambda p: junit(p, test_a=SKIPPED_HOST)))
    assert code == bisect.ABORT
    assert "test_a skipped: postcopy needs userfaultfd" in capsys.readouterr().out


def test_bisect_aborts_when_pytest_could_not_run(tmp_path, monkeypatch) -> None:
    assert bisect_main(tmp_path, monkeypatch, lambda args, path: (4, None)) == bisect.ABORT
    assert bisect_main(tmp_path, monkeypatch, lambda args, path: (0, lambda p: junit(p))) == bisect.ABORT


def test_a_build_whose_binary_is_not_qemu_aborts_the_bisect(tmp_path) -> None:
    """Real pytest, real plugin: a 'build' whose qemu-system-x86_64 is not QEMU (here: true) must give 128 — before
    the session check it became a boot error ("bad") or, for `needs` tests, a skip (125) on every commit."""
    build_dir = tmp_path / "build"
    build_dir.mkdir()
    fake = build_dir / "qemu-system-x86_64"
    fake.write_text("#!/bin/sh\nexit 0\n")
    fake.chmod(0o755)
    outcome, _, why = bisect.run_once(
        build_dir, ["tests/behaviour/test_basics.py::test_precopy_completes_with_identical_ram_and_intact_guest"],
        tmp_path / "art", ["--accel", "tcg"])
    assert outcome == "broken"
    assert "pytest exited 4" in why


@pytest.mark.parametrize("argv", [["--repeats", "0", "--build-dir", "/x", "t"], ["--no-such-option"], []])
def test_a_bad_bisect_step_command_line_aborts_instead_of_marking_the_commit_bad(argv) -> None:
    """git bisect run reads any exit 1..127 except 125 as "bad": argparse's exit 2 would blame every commit."""
    proc = subprocess.run([sys.executable, "-m", "harness.tools.bisect", *argv], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == bisect.ABORT, proc.stderr


def test_an_unexpected_error_in_the_bisect_step_aborts(tmp_path, monkeypatch, capsys) -> None:
    def boom(args: list[str], path: Path) -> tuple[int, Any]:
        raise OSError("disk full")
    assert bisect_main(tmp_path, monkeypatch, boom) == bisect.ABORT
    assert "disk full" in capsys.readouterr().out


def test_validate_against_variants_that_are_not_there_stops_with_the_reason(tmp_path: Path) -> None:
    """Real validate, real pytest, real plugin: no variant built (a --variants dir that is empty) is 'could not run'
    with the session check's line, exit 4 — never 'every patch caught', never a pristine pass by skipping."""
    proc = subprocess.run([sys.executable, "-m", "harness.tools.validate", "--no-build", "--only", "B0",
                           "--variants", str(tmp_path / "variants"), "--artefacts", str(tmp_path / "art")],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == validate.COULD_NOT_RUN, proc.stdout + proc.stderr
    last = proc.stdout.strip().splitlines()[-1]
    assert last.startswith("[validate] could not run pristine: pytest exited 4 (usage error (bad option or input)): "
                           "harness: --qemu-binary: "), last
    assert last.endswith("no such file or directory; nothing judged (its output is above, exit 4)"), last


# -- validate per target arch, --only by behaviour ------------------------------------------------------------------
def test_only_selects_by_the_guarded_behaviour_or_a_part_of_the_name() -> None:
    regressions = validate.load_regressions(REPO / "regressions")
    def chosen(*only: str) -> set[str]:
        return {r.variant for r in regressions if validate.selected(r, list(only))}
    b0_b4 = chosen("B0,B4")
    assert b0_b4 and b0_b4 == chosen("B0", "B4") == chosen("b0, b4")
    assert all(r.guards.split()[0] in ("B0", "B4") for r in regressions if r.variant in b0_b4)
    assert b0_b4 == {r.variant for r in regressions if r.guards.split()[0] in ("B0", "B4")}
    assert chosen("basics") == {r.variant for r in regressions if r.variant.startswith("basic-")}
    assert chosen("mapped-ram-no-final") == {"B3-mapped-ram-no-final-wait"}     # a part of the name, as before
    assert chosen("B9") == set() and chosen(",") == set()


@pytest.fixture
def two_behaviours(tmp_path: Path) -> Path:
    directory = tmp_path / "regressions"
    directory.mkdir()
    for name, guards, test in (("P0", "B0 (x)", "tests/x.py::test_a"), ("P4", "B4", "tests/x.py::test_b"),
                               ("P2", "B2", "tests/x.py::test_c")):
        (directory / f"{name}.patch").write_text(f"Description: d\nGuards: {guards}\nTests: {test}\n\ndiff --git a/x b/x\n")
    return directory


def every_variant_caught(calls: list[list[str]]) -> Any:
    """A pytest stand-in: test_a and test_b pass on pristine and fail on every variant; each argv is recorded."""
    def behaviour(args: list[str], path: Path) -> tuple[int, Any]:
        calls.append(args)
        pristine = "pristine" in path.name
        return (0 if pristine else 1), lambda p: junit(p, test_a=PASSED if pristine else FAILED,
                                                       test_b=PASSED if pristine else FAILED)
    return behaviour


@pytest.mark.parametrize("arch, variants", [("x86_64", "variants"), ("s390x", "variants-s390x")])
def test_validate_builds_and_runs_every_variant_for_its_arch(tmp_path, two_behaviours, monkeypatch, capsys, arch,
                                                             variants) -> None:
    calls: list[list[str]] = []
    fake = fake_subprocess(every_variant_caught(calls))
    builds: list[list[str]] = []
    run_pytest_or_build = fake.run
    def run(args: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        if "pytest" not in args:
            builds.append(args)
        return run_pytest_or_build(args, **kwargs)
    fake.run = run
    monkeypatch.setattr(validate, "subprocess", fake)
    art = tmp_path / "art"
    argv = ["--regressions", str(two_behaviours), "--artefacts", str(art), "--only", "B0,B4"]
    assert validate.main(argv + (["--arch", arch] if arch != "x86_64" else [])) == 0
    out_dir = REPO / "build" / "qemu" / variants
    [build] = builds
    assert build[1:] == [str(REPO / "qemu-build" / "build.sh"), "--arch", arch, "--pristine", "--out", str(out_dir),
                         "--patch", str(two_behaviours / "P0.patch"), "--patch", str(two_behaviours / "P4.patch")]
    binary = f"qemu-system-{arch}"
    assert [(c[c.index("--qemu-binary") + 1], c[c.index("--arch") + 1], [a for a in c if a.startswith("tests/")])
            for c in calls] == [
        (str(out_dir / "pristine" / binary), arch, ["tests/x.py::test_a", "tests/x.py::test_b"]),   # only B0 + B4
        (str(out_dir / "P0" / binary), arch, ["tests/x.py::test_a"]),
        (str(out_dir / "P4" / binary), arch, ["tests/x.py::test_b"])]
    result = json.loads((art / "validate.json").read_text())
    assert result["arch"] == arch and [r["patch"] for r in result["regressions"]] == ["P0.patch", "P4.patch"]
    assert f"every patch caught, pristine passes ({arch})" in capsys.readouterr().out


def test_validate_artefacts_of_another_arch_go_beside_the_x86_64_ones() -> None:
    base = REPO / "artefacts" / "validate"
    assert validate.per_arch(base, "x86_64") == base
    assert validate.per_arch(base, "s390x") == REPO / "artefacts" / "validate-s390x"


def test_pytest_argv_names_the_arch_and_ends_with_the_extra_arguments(tmp_path) -> None:
    argv = validate.pytest_argv(Path("/v/pristine/qemu-system-s390x"), ["t.py::a"], tmp_path / "pristine",
                                tmp_path / "pristine.junit.xml", ["-x"], "s390x")
    assert argv[1:] == ["-m", "pytest", "t.py::a", "--qemu-binary", "/v/pristine/qemu-system-s390x", "--accel", "tcg",
                        "--arch", "s390x", "--artefacts", str(tmp_path / "pristine"),
                        f"--junitxml={tmp_path / 'pristine.junit.xml'}", "-p", "no:cacheprovider", "-q", "-x"]


def test_validate_refuses_an_arch_it_cannot_build(capsys) -> None:
    with pytest.raises(SystemExit) as stop:
        validate.main(["--arch", "sparc", "--no-build"])
    assert stop.value.code == 2
    assert "invalid choice: 'sparc'" in capsys.readouterr().err


@pytest.mark.parametrize("accel, judged", [("tcg", ["P0"]), ("kvm", ["P0", "KVM"])])
def test_a_patch_needing_kvm_is_judged_only_by_a_kvm_validation(tmp_path, monkeypatch, capsys, accel,
                                                                judged) -> None:
    directory = tmp_path / "regressions"
    directory.mkdir()
    (directory / "P0.patch").write_text("Description: d\nGuards: B0\nTests: tests/x.py::test_a\n\ndiff --git a/x b/x\n")
    (directory / "KVM.patch").write_text("Description: d\nGuards: dirty-limit\nNeeds-accel: kvm\n"
                                         "Tests: tests/x.py::test_b\n\ndiff --git a/x b/x\n")
    calls: list[list[str]] = []
    monkeypatch.setattr(validate, "subprocess", fake_subprocess(every_variant_caught(calls)))
    code = validate.main(["--regressions", str(directory), "--variants", str(tmp_path / "variants"),
                          "--artefacts", str(tmp_path / "art"), "--no-build", "--accel", accel])
    out = capsys.readouterr().out
    assert code == 0
    assert {c[c.index("--accel") + 1] for c in calls} == {accel}
    assert sorted(Path(c[c.index("--qemu-binary") + 1]).parent.name for c in calls) == sorted(["pristine", *judged])
    not_judged = ("[validate] not judged: KVM needs kvm (this validation runs tcg); run "
                  "`make validate VALIDATE_ARGS='--accel kvm'` where it is real")
    assert (not_judged in out) == (accel == "tcg")
    result = json.loads((tmp_path / "art" / "validate.json").read_text())
    assert [r["judged"] for r in result["regressions"]] == [True] * (len(judged)) + [False] * (accel == "tcg")


@pytest.mark.parametrize("patch", sorted((REPO / "regressions").glob("*.patch")), ids=lambda p: p.stem)
def test_every_regression_names_tests_that_exist(patch: Path) -> None:
    """A renamed test must not leave a patch pointing nowhere (validate would stop with a usage error)."""
    regression = validate.parse_header(patch)
    assert regression.tests, f"{patch.name} names no test"
    for selector in regression.tests:
        path, _, name = selector.partition("::")
        source = (REPO / path).read_text()
        assert not name or f"def {name.split('[')[0]}(" in source, f"{patch.name}: no {selector}"
