"""Every bad input in README's "Bad inputs" table stops the session with exit 4 and the one line shown there —
no traceback, no INTERNALERROR, no skip, no test run. Each row runs the real command in a subprocess:

    python -m pytest tests/behaviour/test_basics.py <bad option>

Only the session check runs: at most a machine-less QEMU answers `-version` and one QMP query (no guest boots).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from harness.qemu.image import checkout_sources
from harness.qemu.known_bugs import KNOWN_BUGS
from tests.fakes import fake_image

REPO = Path(__file__).resolve().parents[2]
QEMU = shutil.which("qemu-system-x86_64")
USAGE_ERROR = 4

# (id, the bad arguments, the line the user sees). {dir}: an empty directory, {file}: a non-executable file,
# {qemu}: the installed qemu-system-x86_64, {image}: a guest image whose initramfs is readable by everyone,
# {stale}: a guest image built before guest-workloads/dirty.c last changed, {known_bugs}: the known-bug table's
# keys, sorted (the table grows as the matrix finds bugs; the line's form is what this row pins).
ROWS = [
    ("missing-binary", "--qemu-binary /nonexistent/qemu",
     "ERROR: harness: --qemu-binary: /nonexistent/qemu: no such file or directory"),
    ("directory-without-qemu", "--qemu-binary {dir}",
     "ERROR: harness: --qemu-binary: no qemu-system-x86_64 in build tree {dir} (looked in . and build/)"),
    ("non-executable-file", "--qemu-binary {file}",
     "ERROR: harness: --qemu-binary: {file} is not executable"),
    ("etc-passwd", "--qemu-binary /etc/passwd",
     "ERROR: harness: --qemu-binary: /etc/passwd is not executable"),
    ("bin-true", "--qemu-binary /bin/true",
     "ERROR: harness: --qemu-binary: /usr/bin/true is not a QEMU system emulator (`-version` printed nothing, "
     "exit 0)"),
    ("bin-echo", "--qemu-binary /bin/echo",
     "ERROR: harness: --qemu-binary: /usr/bin/echo is not a QEMU system emulator (`-version` printed '-version', "
     "exit 0)"),
    ("qemu-of-another-arch", "--arch s390x --qemu-binary {qemu}",
     "ERROR: harness: --qemu-binary: {qemu} emulates x86_64 (QMP query-target), not s390x (--arch)"),
    ("qemu-src-not-qemu", "--qemu-src /bin/true",
     "ERROR: harness: --qemu-src: /usr/bin/true is not a QEMU system emulator (`-version` printed nothing, "
     "exit 0)"),
    ("unsupported-arch", "--arch sparc",
     "ERROR: harness: --arch sparc: unsupported guest arch; known: s390x, x86_64 (the default is this host's "
     "arch, x86_64)"),
    ("image-dir-missing", "--image-dir /nonexistent/images",
     "ERROR: harness: no guest image in /nonexistent/images (run `make image`, or pass --image-dir)"),
    ("image-key-readable", "--image-dir {image}",
     "ERROR: harness: guest image {image}: initramfs.cpio has mode 0644, but holds an SSH private key: rebuild "
     "with `make image` (or chmod go= it)"),
    ("image-of-older-sources", "--image-dir {stale}",
     "ERROR: harness: guest image {stale} was built from other sources than this checkout "
     "(guest-workloads/dirty.c): run `make image`"),
    ("artefacts-under-a-file", "--artefacts /etc/passwd/artefacts",
     "ERROR: harness: --artefacts /etc/passwd/artefacts: cannot create or write it (Not a directory)"),
    ("machine-unknown", "--machine pc-q35-99.0",
     "ERROR: harness: --machine pc-q35-99.0: the QEMU does not support it (QMP query-machines)"),
    ("cpu-unknown", "--cpu no-such-cpu",
     "ERROR: harness: --cpu no-such-cpu: the QEMU does not support it (QMP query-cpu-definitions)"),
    ("assume-fixed-unknown", "--assume-fixed no-such-bug",
     "ERROR: harness: --assume-fixed no-such-bug: no such known QEMU bug; known: {known_bugs} "
     "(harness/qemu/known_bugs.py)"),
    ("qemu-wrapper-missing", "--qemu-wrapper no-such-debugger",
     "ERROR: harness: --qemu-wrapper: no-such-debugger: no such program on PATH"),
    ("parallel-missing-binary", "-n 2 --qemu-binary /nonexistent/qemu",
     "ERROR: harness: --qemu-binary: /nonexistent/qemu: no such file or directory"),
    ("cpu-budget-negative", "--cpu-budget -1",
     "ERROR: harness: --cpu-budget -1: not a CPU count (0: no budget)"),
    ("unknown-option", "--no-such-option",
     "error: unrecognized arguments: --no-such-option"),
]


def pytest_run(tmp_path: Path, *args: str, env_extra: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("QEMU_BINARY", "HARNESS_ARCH", "HARNESS_ARTEFACTS") and not k.startswith("QTEST_QEMU_BINARY")}
    env.update(env_extra or {})
    # The session reaps stale qmh-* temp dirs at start: a temp root of its own keeps it off other runs' dirs.
    env["TMPDIR"] = str(tmp_path)
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=300, env=env)


@pytest.fixture
def places(tmp_path: Path) -> dict[str, str]:
    empty = tmp_path / "empty"
    empty.mkdir()
    text = tmp_path / "qemu-system-x86_64.txt"
    text.write_text("not a program\n")
    image = fake_image(tmp_path / "image")
    (image / "initramfs.cpio").chmod(0o644)   # what images/build.sh wrote under the default umask
    sources = checkout_sources(REPO)
    sources["guest-workloads/dirty.c"] = "0" * 64
    stale = fake_image(tmp_path / "stale", sources=sources)
    return {"dir": str(empty), "file": str(text), "qemu": str(Path(QEMU).resolve()) if QEMU else "",
            "image": str(image), "stale": str(stale), "known_bugs": ", ".join(sorted(KNOWN_BUGS))}


@pytest.mark.parametrize("args, line", [(a, l) for _, a, l in ROWS], ids=[r[0] for r in ROWS])
def test_bad_input_stops_the_session_with_one_line(args: str, line: str, places: dict[str, str],
                                                   tmp_path: Path) -> None:
    if "{qemu}" in args and not QEMU:
        pytest.skip("no qemu-system-x86_64 installed to be the wrong-arch binary")
    argv = args.format(**places).split()
    if not any(a.startswith("--artefacts") for a in argv):
        argv += ["--artefacts", str(tmp_path / "artefacts")]
    proc = pytest_run(tmp_path, "tests/behaviour/test_basics.py", *argv)
    output = proc.stdout + proc.stderr
    assert proc.returncode == USAGE_ERROR, output
    expected = line.format(**places)
    assert "Traceback" not in output and "INTERNALERROR" not in output, output
    assert " passed" not in proc.stdout and " skipped" not in proc.stdout and " error" not in proc.stdout, output
    if expected.startswith("ERROR: harness:"):
        assert proc.stderr.strip().splitlines() == [expected], output   # the one line, nothing else
    else:  # pytest's own usage error: its usage line, then this one
        assert any(l.endswith(expected) for l in proc.stderr.splitlines()), output


@pytest.mark.parametrize("variable", ["QTEST_QEMU_BINARY", "QTEST_QEMU_BINARY_SRC", "QTEST_QEMU_BINARY_DST"])
def test_qtest_variables_name_the_binary_and_are_named_when_it_is_wrong(variable: str, tmp_path: Path) -> None:
    """QEMU's own tests' variables are the defaults of --qemu-binary/--qemu-src/--qemu-dst; a bad one is named."""
    proc = pytest_run(tmp_path, "tests/behaviour/test_basics.py", "--artefacts", str(tmp_path / "artefacts"),
                      env_extra={variable: "/bin/true"})
    assert proc.returncode == USAGE_ERROR, proc.stdout + proc.stderr
    assert proc.stderr.strip().splitlines() == [
        f"ERROR: harness: ${variable}: /usr/bin/true is not a QEMU system emulator (`-version` printed nothing, "
        "exit 0)"], proc.stdout + proc.stderr


def test_readme_table_lists_every_row() -> None:
    readme = (REPO / "README.md").read_text()
    table = readme.split("## Bad inputs", 1)[1].split("\n## ", 1)[0]
    for _, args, line in ROWS:
        assert f"| `{args}` | `` {line} `` |" in table, args


def test_a_run_that_selects_no_harness_test_checks_nothing(tmp_path: Path) -> None:
    """Unit tests alone need no QEMU and no image: the session check only covers what the selected tests use."""
    proc = pytest_run(tmp_path, "tests/unit/test_harness_pure.py", "-q", "--qemu-binary", "/nonexistent", "--arch",
                      "sparc", "--image-dir", "/nonexistent", "--artefacts", "/etc/passwd/x")
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_deselecting_every_harness_test_checks_nothing(tmp_path: Path) -> None:
    proc = pytest_run(tmp_path, "tests/behaviour/test_basics.py", "-q", "-k", "no_such_test", "--qemu-binary",
                      "/nonexistent")
    assert proc.returncode == 5, proc.stdout + proc.stderr        # pytest's "no tests ran", not a usage error
