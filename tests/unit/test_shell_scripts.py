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
# Only scripts under pipefail can lose a match this way.
SCRIPTS = sorted(p for p in REPO.glob("**/*.sh")
                 if ".venv" not in p.parts and "build" not in p.parts and "pipefail" in p.read_text())


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: str(p.relative_to(REPO)))
def test_no_early_exiting_grep_at_the_end_of_a_pipeline(script: Path) -> None:
    text = script.read_text()
    offending = [f"{n}: {line.strip()}" for n, line in enumerate(text.splitlines(), 1)
                 if re.search(r"\|\s*grep\s+(-\w*q|--quiet)", line) and not line.lstrip().startswith("#")]
    assert not offending, "a pipeline ends in an early-exiting grep under pipefail:\n" + "\n".join(offending)


def test_the_race_is_real_and_the_replacement_is_not(tmp_path: Path) -> None:
    """A writer that outlives grep -q makes the pipeline fail under pipefail; `grep >/dev/null` does not."""
    writer = "seq 1 400000"   # ~2.7 MB: far more than a pipe buffer
    quick = subprocess.run(["bash", "-c", f"set -o pipefail; {writer} | grep -q 1"], timeout=30)
    full = subprocess.run(["bash", "-c", f"set -o pipefail; {writer} | grep 1 >/dev/null"], timeout=30)
    assert quick.returncode != 0 and full.returncode == 0
