"""Bad --topology/--link-* inputs stop the session with exit 4 and one line, as the README's bad-input table does
for the other options (tests/inputs/test_bad_inputs.py); nothing boots."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.inputs.test_bad_inputs import USAGE_ERROR, pytest_run

ROWS = [
    ("rate-malformed", "--topology netns --link-rate fast",
     "ERROR: harness: --link-rate 'fast': not a bandwidth (e.g. 100mbit, 1gbit, 500kbit)"),
    ("delay-malformed", "--topology netns --link-delay soon",
     "ERROR: harness: --link-delay 'soon': not a delay (e.g. 5ms, 250us)"),
    ("loss-too-high", "--topology netns --link-loss 100%",
     "ERROR: harness: --link-loss '100%': not a loss percentage below 100 (e.g. 1%, 0.1)"),
    ("link-option-without-netns", "--link-rate 100mbit",
     "ERROR: harness: --link-rate shapes the netns link: add --topology netns"),
]


@pytest.mark.parametrize("args, line", [(a, l) for _, a, l in ROWS], ids=[r[0] for r in ROWS])
def test_bad_link_input_stops_the_session_with_one_line(args: str, line: str, tmp_path: Path) -> None:
    proc = pytest_run(tmp_path, "tests/behaviour/test_basics.py", *args.split(), "--artefacts",
                      str(tmp_path / "artefacts"))
    output = proc.stdout + proc.stderr
    assert proc.returncode == USAGE_ERROR, output
    assert proc.stderr.strip().splitlines() == [line], output


def test_an_unknown_topology_is_pytests_own_usage_error(tmp_path: Path) -> None:
    proc = pytest_run(tmp_path, "tests/behaviour/test_basics.py", "--topology", "wan")
    assert proc.returncode == USAGE_ERROR
    assert any("--topology: invalid choice: 'wan'" in line for line in proc.stderr.splitlines()), proc.stderr
