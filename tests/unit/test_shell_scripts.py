"""The project's shell scripts avoid `… | grep -q` under `set -o pipefail`.

grep -q exits at its first match; a writer still writing then dies of SIGPIPE, and pipefail turns the whole pipeline
false although the match was found. images/build.sh took a known package for an unknown one this way and ran an
`apt-get update` in most runs (issue #34). `grep PATTERN >/dev/null` reads to the end and has the same status.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def is_shell_script(path: Path) -> bool:
    if path.suffix == ".sh":
        return True
    with path.open("rb") as f:
        first = f.readline()
    return first.startswith(b"#!") and re.search(rb"\b(ba)?sh\b", first) is not None


# Every shell script of the repository, not only those that set pipefail themselves: a sourced library
# (qemu-build/lib.sh) runs under its caller's options, and CI scripts (.ci/run) have no .sh suffix.
SCRIPTS = sorted(REPO / line for line in subprocess.run(["git", "-C", str(REPO), "ls-files"], capture_output=True,
                                                        text=True, check=True).stdout.splitlines()
                 if (REPO / line).is_file() and is_shell_script(REPO / line))


def early_exiting_greps(text: str) -> list[str]:
    """Lines where a pipeline ends in `grep -q`, also when the pipe ends the line before (`… |` newline `grep -q`)."""
    lines = text.splitlines()
    found = []
    for n, line in enumerate(lines, 1):
        if line.lstrip().startswith("#"):
            continue
        piped = re.search(r"\|\s*grep\s+(-\w*q|--quiet)", line)
        continued = (n > 1 and re.match(r"\s*grep\s+(-\w*q|--quiet)", line)
                     and re.search(r"(?<!\|)\|\s*(\\)?\s*$", lines[n - 2]))
        if piped or continued:
            found.append(f"{n}: {line.strip()}")
    return found


def test_every_kind_of_shell_script_is_found() -> None:
    names = {str(p.relative_to(REPO)) for p in SCRIPTS}
    assert {"images/build.sh", "qemu-build/lib.sh", ".ci/run", "images/extract-vmlinux"} <= names


def test_the_check_sees_a_pipeline_split_over_two_lines() -> None:
    assert early_exiting_greps("set -o pipefail\nfoo |\n    grep -q bar\n")
    assert early_exiting_greps("foo | grep -qx bar")
    assert not early_exiting_greps("foo | grep bar >/dev/null\nfoo ||\n grep -q x file\n")


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: str(p.relative_to(REPO)))
def test_no_early_exiting_grep_at_the_end_of_a_pipeline(script: Path) -> None:
    offending = early_exiting_greps(script.read_text())
    assert not offending, "a pipeline ends in an early-exiting grep under pipefail:\n" + "\n".join(offending)


def test_the_race_is_real_and_the_replacement_is_not(tmp_path: Path) -> None:
    """A writer that outlives grep -q makes the pipeline fail under pipefail; `grep >/dev/null` does not."""
    writer = "seq 1 400000"   # ~2.7 MB: far more than a pipe buffer
    quick = subprocess.run(["bash", "-c", f"set -o pipefail; {writer} | grep -q 1"], timeout=30)
    full = subprocess.run(["bash", "-c", f"set -o pipefail; {writer} | grep 1 >/dev/null"], timeout=30)
    assert quick.returncode != 0 and full.returncode == 0
