"""Unit tests of harness.core.process's interruptible tools: Ctrl-C (or SIGTERM) to a tool that runs a pytest child
stops the tool promptly, and the child gets one SIGTERM and its own teardown — even when the tool was started by a
shell that ignores SIGINT in background jobs (what made `kill -INT` a no-op on `make matrix`)."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from harness.core.checkout import ROOT

# The child: counts the SIGTERMs it gets, "tears down" for a moment (or forever), then says so in a file.
CHILD = textwrap.dedent("""
    import signal, sys, time
    from pathlib import Path
    out, teardown = Path(sys.argv[1]), float(sys.argv[2])
    got = []
    signal.signal(signal.SIGTERM, lambda n, f: got.append(n))
    signal.signal(signal.SIGINT, lambda n, f: got.append(n))
    out.write_text("running")
    while not got:
        time.sleep(0.01)
    time.sleep(teardown)      # SIGTERMs that arrive meanwhile are counted
    out.write_text(f"torn down after {len(got)} signal(s): {sorted(set(got))}")
""")
# The tool: as harness.tools.matrix's main, around harness.core.process.run_child.
TOOL = textwrap.dedent("""
    import sys
    from pathlib import Path
    from harness.core.process import interruptible, run_child
    interruptible()
    try:
        run_child([sys.executable, sys.argv[1], sys.argv[2], sys.argv[3]], cwd=Path.cwd(), grace=float(sys.argv[4]))
    except KeyboardInterrupt:
        sys.exit(130)
    sys.exit(0)
""")


def start_tool(tmp_path: Path, teardown: float, grace: float) -> tuple[subprocess.Popen[bytes], Path]:
    (tmp_path / "child.py").write_text(CHILD)
    (tmp_path / "tool.py").write_text(TOOL)
    marker = tmp_path / "child.out"
    # SIGINT ignored on entry, as `cmd &` in a shell without job control leaves it.
    tool = subprocess.Popen([sys.executable, str(tmp_path / "tool.py"), str(tmp_path / "child.py"), str(marker),
                             str(teardown), str(grace)], cwd=ROOT,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    deadline = time.monotonic() + 20
    while not marker.exists():
        assert tool.poll() is None and time.monotonic() < deadline, "the child never started"
        time.sleep(0.02)
    return tool, marker


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_an_interrupted_tool_passes_one_sigterm_and_waits_for_the_childs_teardown(tmp_path: Path, sig: int) -> None:
    tool, marker = start_tool(tmp_path, teardown=0.5, grace=30)
    tool.send_signal(sig)
    time.sleep(0.1)
    tool.send_signal(sig)        # a second Ctrl-C while the child tears down: not passed on, not abandoning it
    assert tool.wait(10) == 130
    assert marker.read_text() == f"torn down after 1 signal(s): [{int(signal.SIGTERM)}]"


def test_a_child_that_does_not_end_within_the_grace_is_killed(tmp_path: Path) -> None:
    tool, marker = start_tool(tmp_path, teardown=60, grace=0.5)
    started = time.monotonic()
    tool.send_signal(signal.SIGINT)
    assert tool.wait(10) == 130 and time.monotonic() - started < 5
    assert marker.read_text() == "running"     # SIGKILLed in its teardown



def test_run_logged_stops_its_child_at_the_deadline_and_from_another_thread(tmp_path: Path) -> None:
    """harness.core.process.run_logged (qmh-mutate's pytest and build runs): the deadline stops the child with its
    teardown (SIGTERM, then the grace) and says None; stop_logged_children stops a child whose run_logged waits in
    a worker thread, where Ctrl-C never arrives."""
    import threading

    from harness.core.process import run_logged, stop_logged_children

    script = ("import signal, sys, time\n"
              "signal.signal(signal.SIGTERM, lambda *a: (print('teardown', flush=True), sys.exit(3)))\n"
              "time.sleep(60)\n")
    with open(tmp_path / "deadline.log", "w") as log:
        started = time.monotonic()
        assert run_logged([sys.executable, "-c", script], tmp_path, log, timeout=0.5, grace=10) is None
    assert time.monotonic() - started < 10 and "teardown" in (tmp_path / "deadline.log").read_text()

    codes: list[int | None] = []
    with open(tmp_path / "worker.log", "w") as log:
        worker = threading.Thread(target=lambda: codes.append(run_logged([sys.executable, "-c", script], tmp_path,
                                                                         log, grace=10)))
        worker.start()
        time.sleep(1.0)
        stop_logged_children(grace=10)
        worker.join(10)
    assert codes == [3] and "teardown" in (tmp_path / "worker.log").read_text()
    # and no child starts once the tool is stopping (a worker's next run raises instead)
    from harness.core import process
    try:
        with open(tmp_path / "after.log", "w") as log, pytest.raises(KeyboardInterrupt, match="stopping"):
            run_logged([sys.executable, "-c", "print('started')"], tmp_path, log)
        assert "started" not in (tmp_path / "after.log").read_text()
    finally:
        process._STOPPING.clear()
