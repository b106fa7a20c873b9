"""The matrix's static vmstate step: both binaries of a cross-version pair dump their vmstate (`-dump-vmstate`) for
the machine type the pair migrates with (harness.qemu.compat), QEMU's scripts/vmstate-static-checker.py compares
them source → destination, and harness.analysis.vmstate_diff judges the report. The dumps, the report and the
judgement (vmstate-static-checker.json) are kept in the pair's artefacts directory."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

from harness.analysis.vmstate_diff import Judgement, judge
from harness.qemu.arch import arch_spec
from harness.qemu.binary import QemuBinary
from harness.qemu.compat import platform_for
from harness.qemu.source_tree import FETCH_HINT, qemu_script

CHECKER = "vmstate-static-checker.py"
TIMEOUT = 120


class CheckerUnavailable(RuntimeError):
    """No checker script here (no QEMU source tree): the step is skipped with this reason."""


class CheckerFailed(RuntimeError):
    """A binary would not dump, or the checker crashed: nothing judged, an error cell."""


def dump_vmstate(binary: QemuBinary, machine: str, path: Path) -> Path:
    done = subprocess.run([*binary.base_args(), "-M", machine, "-accel", "tcg", "-nodefaults", "-dump-vmstate",
                           str(path)], capture_output=True, text=True, timeout=TIMEOUT, stdin=subprocess.DEVNULL)
    if done.returncode != 0 or not path.is_file():
        raise CheckerFailed(f"{binary.path} -M {machine} -dump-vmstate: exit {done.returncode}: "
                                 f"{done.stderr.strip()[-300:]}")
    return path


def check_pair(source_spec: str, destination_spec: str, backward: bool, directory: Path,
               arch: str = "x86_64") -> Judgement:
    """Dump both, run the checker source → destination, judge, and keep it all in `directory`."""
    script = qemu_script(CHECKER)
    if script is None:
        raise CheckerUnavailable(f"no QEMU source tree with scripts/{CHECKER}: {FETCH_HINT}")
    name = f"qemu-system-{arch}"
    source, destination = QemuBinary.locate(source_spec, name), QemuBinary.locate(destination_spec, name)
    machine = platform_for(arch_spec(arch), "tcg", source, destination).machine
    directory.mkdir(parents=True, exist_ok=True)
    dumps = [dump_vmstate(binary, machine, directory / f"vmstate-{side}.json")
             for side, binary in (("source", source), ("destination", destination))]
    done = subprocess.run([sys.executable, str(script), "-s", str(dumps[0]), "-d", str(dumps[1])],
                          capture_output=True, text=True, timeout=TIMEOUT)
    (directory / "vmstate-static-checker.txt").write_text(done.stdout + done.stderr)
    if done.returncode != 0 and not done.stdout.strip():      # its exit status is the number of findings
        raise CheckerFailed(f"{CHECKER} failed (exit {done.returncode}): {done.stderr.strip()[-300:]}")
    judgement = judge(done.stdout, backward)
    (directory / "vmstate-static-checker.json").write_text(json.dumps(
        {"machine": machine, "backward": backward, "passed": judgement.passed, "summary": judgement.summary,
         "counts": judgement.counts(), "findings": [asdict(f) for f in judgement.findings]}, indent=1) + "\n")
    return judgement
