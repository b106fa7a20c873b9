"""Session bookkeeping of the pytest plugin, in real pytest subprocesses with dummy tests (no QEMU): a test cut
short by SIGTERM or Ctrl-C is recorded as interrupted, never as passed; concurrent runs sharing one artefacts
directory do not break each other's run directories, `latest` link or index."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from harness.plugin.results import plot_outcome
from tests.fakes import fake_image

REPO = Path(__file__).resolve().parents[2]

@pytest.fixture(autouse=True)
def private_tmpdir(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Sessions started here reap stale /tmp/qmh-* dirs at start; give them their own temp root so they never
    touch the directories of other runs on this host (some harness versions write no owner record)."""
    root = tmp_path_factory.mktemp("tmpdir")
    monkeypatch.setenv("TMPDIR", str(root))
    monkeypatch.setattr(tempfile, "tempdir", str(root))


DUMMY = '''
import os, time
from pathlib import Path

def test_passes_first(artefacts):
    pass

def test_is_cut_short(artefacts):
    Path(os.environ["STARTED_FILE"]).write_text("started")
    time.sleep(60)

def test_never_starts(artefacts):
    pass
'''


def start(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "--artefacts", "out",
                             *args], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            # The plugin of this checkout, not whichever one the venv has installed.
                            env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})},
                            # Under a background job of a non-interactive shell (CI) SIGINT arrives ignored and
                            # Python keeps it so: the child gets the disposition a terminal's Ctrl-C meets.
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def results(tmp_path: Path) -> dict:
    return json.loads((tmp_path / "out" / "latest" / "results.json").read_text())


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_test_cut_short_by_a_signal_is_recorded_as_interrupted(tmp_path: Path, signum: int) -> None:
    (tmp_path / "test_dummy.py").write_text(DUMMY)
    started = tmp_path / "started"
    proc = start(tmp_path, "test_dummy.py", env={"STARTED_FILE": str(started)})
    deadline = time.monotonic() + 60
    while not started.exists():
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[0]
        time.sleep(0.05)
    proc.send_signal(signum)
    output = proc.communicate(timeout=60)[0]
    assert proc.returncode == 2, output                       # pytest's "interrupted"
    data = results(tmp_path)
    outcomes = {t["nodeid"].split("::")[1]: t["outcome"] for t in data["tests"]}
    assert outcomes == {"test_passes_first": "passed", "test_is_cut_short": "interrupted"}, data
    cut = next(t for t in data["tests"] if t["nodeid"].endswith("test_is_cut_short"))
    why = "signal 15 (SIGTERM)" if signum == signal.SIGTERM else "Ctrl-C (SIGINT)"
    assert cut["message"] == f"interrupted ({why}) after setup", cut
    assert data["header"]["exit status"] == "2"
    assert data["header"]["interrupted"].endswith("during test_dummy.py::test_is_cut_short"), data["header"]
    assert data["counts"] == {"passed": 1, "interrupted": 1}


# Each racer waits for GO to appear, so both make their run dirs at the same time however long Python takes to start.
RACER = """
import sys, time
from pathlib import Path
from harness.plugin.results import make_run_dir
base, go = Path(sys.argv[1]), Path(sys.argv[2])
print("ready", flush=True)
while not go.exists():
    time.sleep(0.001)
print("\\n".join(str(make_run_dir(base)) for _ in range(150)))
"""


def test_run_dirs_and_the_latest_link_survive_two_processes_racing(tmp_path: Path) -> None:
    """Before: `latest` was unlinked and re-made, and two processes failed ~25% of the time (FileExistsError).
    The racers are fresh interpreters, not forks of this one: a fork of a pytest process that has run harness
    tests can inherit a lock some thread held (it hung a make check here)."""
    base, go = tmp_path / "runs", tmp_path / "go"
    racers = [subprocess.Popen([sys.executable, "-c", RACER, str(base), str(go)], cwd=REPO, stdout=subprocess.PIPE,
                               text=True) for _ in range(2)]
    try:
        for racer in racers:
            assert racer.stdout is not None and racer.stdout.readline() == "ready\n"
        go.touch()
        made = [racer.communicate(timeout=120)[0].split() for racer in racers]
    finally:
        for racer in racers:
            racer.kill()
            racer.wait()
    assert [racer.returncode for racer in racers] == [0, 0]
    all_dirs = [d for per_process in made for d in per_process]
    assert len(all_dirs) == 300 and len(set(all_dirs)) == 300  # unique across processes, none reused
    latest = base / "latest"
    assert latest.is_symlink() and (base / os.readlink(latest)).is_dir()
    assert not list(base.glob(".latest-*"))                    # no temporary link left behind


DUMMIES = '''
import pytest

@pytest.mark.parametrize("n", range(4))
def test_writes_artefacts(artefacts, n):
    artefacts.write_json("data", {"n": n})
'''


def test_two_concurrent_sessions_keep_their_bookkeeping(tmp_path: Path) -> None:
    (tmp_path / "test_dummies.py").write_text(DUMMIES)
    for round_ in range(4):
        procs = [start(tmp_path, "test_dummies.py") for _ in range(2)]
        outputs = [p.communicate(timeout=120)[0] for p in procs]
        for proc, output in zip(procs, outputs):
            assert proc.returncode == 0, f"round {round_}: {output}"
            assert "error" not in output.lower(), output
    runs = sorted((tmp_path / "out").glob("run-*"))
    assert len(runs) == 8
    for run in runs:
        data = json.loads((run / "results.json").read_text())
        assert data["counts"] == {"passed": 4}, run
        assert (run / "index.html").read_text().endswith("</html>\n")
    assert (tmp_path / "out" / "index.html").read_text().endswith("</html>\n")
    assert not list((tmp_path / "out").glob(".*.tmp")) and not list((tmp_path / "out").glob("run-*/.*.tmp"))


def test_the_built_guest_image_keeps_its_private_keys_private() -> None:
    """images/build.sh writes the initramfs (which carries the guest's host key) and ssh/ under umask 077."""
    from harness.qemu.image import GuestImage
    directory = REPO / "build" / "images" / "x86_64"
    if not (directory / "manifest.json").is_file():
        pytest.skip(f"no guest image in {directory}: `make image` has not run")
    image = GuestImage.load(directory)          # raises ImageInsecure on a group/world-readable secret
    assert (directory / "ssh").stat().st_mode & 0o077 == 0
    assert image.initrd.stat().st_mode & 0o077 == 0


def test_build_sh_and_the_harness_record_the_same_image_sources() -> None:
    """The session's staleness check (harness/qemu/image.py) recomputes what images/build.sh recorded: same files, same
    digests, or every session would refuse a fresh image (or accept a stale one)."""
    from harness.qemu.image import checkout_sources
    function = subprocess.run(["sed", "-n", "/^source_digests()/,/^}/p", "images/build.sh"], cwd=REPO,
                              capture_output=True, text=True, check=True).stdout
    assert function, "images/build.sh has no source_digests()"
    out = subprocess.run(["bash", "-euo", "pipefail", "-c", f'die() {{ exit 1; }}; {function}\nsource_digests'],
                         env={**os.environ, "REPO": str(REPO)}, capture_output=True, text=True, check=True).stdout
    recorded = {path: digest for digest, path in (line.split(None, 1) for line in out.splitlines())}
    current = checkout_sources(REPO)
    assert recorded == current
    assert {"images/SOURCES", "images/build.sh", "guest-workloads/dirty.c"} <= current.keys()


def test_an_image_from_other_sources_is_refused(tmp_path: Path) -> None:
    """Changed, added and removed source files all make an image stale; one that recorded no sources (built before
    the check existed) is stale too."""
    from harness.qemu.image import GuestImage, ImageStale, checkout_sources
    sources = checkout_sources(REPO)
    assert GuestImage.load(fake_image(tmp_path / "same", sources=sources), current=True).sources == sources
    changed = {**sources, "guest-workloads/dirty.c": "0" * 64, "guest-workloads/gone.c": "1" * 64}
    del changed["images/init"]
    image = GuestImage.load(fake_image(tmp_path / "changed", sources=changed))
    assert image.stale_sources(REPO) == ["guest-workloads/dirty.c", "guest-workloads/gone.c", "images/init"]
    with pytest.raises(ImageStale, match=r"other sources than this checkout \(guest-workloads/dirty.c, "):
        GuestImage.load(tmp_path / "changed", current=True)
    assert GuestImage.load(fake_image(tmp_path / "old")).stale_sources(REPO) == ["(unrecorded)"]
    with pytest.raises(ImageStale, match=r"does not record the sources it was built from .*: run `make image`$"):
        GuestImage.load(tmp_path / "old", current=True)


def test_a_session_holds_the_image_so_a_rebuild_waits(tmp_path: Path) -> None:
    """A process that loaded the image with hold=True keeps its use lock shared until it exits; images/build.sh
    swaps an image's files only under that lock held exclusively (what `flock -x` does here)."""
    image = fake_image(tmp_path / "image")
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from pathlib import Path; "
                               "from harness.qemu.image import GuestImage; GuestImage.load(Path(sys.argv[1]), hold=True); "
                               "print('held', flush=True); time.sleep(60)", str(image)],
                              cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        swap = ["flock", "-x", "-w", "0.5", str(image / ".use.lock"), "true"]
        assert subprocess.run(swap).returncode == 1           # the rebuild's swap has to wait for the session
        holder.kill()
        holder.wait()
        assert subprocess.run(swap).returncode == 0           # and goes ahead once the session is gone
    finally:
        holder.kill()
        holder.wait()


def _report(outcome: str, **extra: str) -> SimpleNamespace:
    return SimpleNamespace(passed=outcome == "passed", failed=outcome == "failed", skipped=outcome == "skipped",
                           **extra)


@pytest.mark.parametrize("reports, title", [
    ({"setup": "passed", "call": "passed"}, "passed"),
    ({"setup": "passed", "call": "failed"}, "FAILED"),
    ({"setup": "passed"}, "INTERRUPTED"),                          # Ctrl-C/SIGTERM: the call never reported
    ({"setup": "skipped"}, "SKIPPED"),
    ({"setup": "passed", "call": "skipped"}, "SKIPPED"),           # pytest.skip() in the body
    ({"setup": "passed", "call": ("skipped", "xfail")}, "XFAILED"),
    ({"setup": "passed", "call": ("passed", "xfail")}, "XPASSED"),
])
def test_plots_say_passed_only_for_a_call_that_passed(reports: dict, title: str) -> None:
    made = {when: _report(o[0], wasxfail=o[1]) if isinstance(o, tuple) else _report(o)
            for when, o in reports.items()}
    assert plot_outcome(made, [r for r in made.values() if r.failed]) == title


JUNIT_DUMMY = '''
from harness.analysis import oracles
def test_fails_a_verdict(artefacts):
    artefacts.add_histogram("stalls", {"run": [1.0, 2.0, 40.0]})
    artefacts.verdict(oracles.at_most("p99 stall in link RTTs", 40.0, 10.0, anchor="link RTT"))
'''


def test_junit_points_to_the_artefacts_and_names_the_failing_verdict(tmp_path: Path) -> None:
    """CI pages read JUnit: each test's record carries its artefacts folder, its plots and the failing verdict."""
    import xml.etree.ElementTree as ET
    (tmp_path / "test_junit_dummy.py").write_text(JUNIT_DUMMY)
    proc = start(tmp_path, "test_junit_dummy.py", "--junitxml", "junit.xml")
    output = proc.communicate(timeout=120)[0]
    assert proc.returncode == 1, output
    case = ET.parse(tmp_path / "junit.xml").find(".//testcase")
    properties = [(p.get("name"), p.get("value")) for p in case.iter("property")]
    folder = dict(properties)["artefacts"]
    assert Path(folder).is_dir() and (Path(folder) / "verdicts.json").is_file(), properties
    assert ("plot", str(Path(folder) / "stalls.png")) in properties, properties
    assert ("failed verdict", "p99 stall in link RTTs: 40 > 10 (link RTT)") in properties, properties
    assert case.find("failure").get("message").startswith("AssertionError: p99 stall in link RTTs: 40 > 10")


def test_under_xdist_the_controller_records_a_workers_test_cut_short_as_interrupted(tmp_path: Path) -> None:
    """-n 2: the controller writes the index from the reports the workers sent; SIGTERM to the controller while a
    worker's test runs leaves that test "interrupted" and the other worker's pass a pass, in the one run directory
    `latest` points at."""
    (tmp_path / "test_dummy.py").write_text(DUMMY.split("def test_never_starts")[0])
    started = tmp_path / "started"
    proc = start(tmp_path, "test_dummy.py", "-n", "2", env={"STARTED_FILE": str(started)})
    deadline = time.monotonic() + 60
    while not started.exists():
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[0]
        time.sleep(0.05)
    time.sleep(1)   # the other worker's instant pass reaches the controller (a report on the wire is not a result)
    proc.send_signal(signal.SIGTERM)
    output = proc.communicate(timeout=60)[0]
    assert proc.returncode == 2, output
    data = results(tmp_path)
    assert {t["nodeid"].split("::")[1]: t["outcome"] for t in data["tests"]} == {
        "test_passes_first": "passed", "test_is_cut_short": "interrupted"}, data
    assert [p.name for p in (tmp_path / "out").iterdir() if p.name.startswith("run-")] == [
        (tmp_path / "out" / "latest").resolve().name]
