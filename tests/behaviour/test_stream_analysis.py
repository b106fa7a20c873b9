"""The migration stream itself, read by QEMU's own parser: scripts/analyze-migration.py of the 10.0.2 source
(harness.qemu.source_tree; upstream /migration/analyze-script runs it on an exec: stream and asks only that it
parses).

Scenario: a file: migration of the booted guest (the plain stream, not mapped-ram), the source then paused
(postmigrate); the script reads the file three ways: `-d desc` (the vmstate description QEMU appends to the
stream), `-d state` (the sections, with the RAM blocks' sizes) and `-x` (each RAM block's contents into a file).

Oracles and what anchors each:
  (1) the script parses the stream every way (exit 0) — QEMU's parser, not the harness's;
  (2) the sections parsed from the stream: 'ram' and 'timer' once, 'cpu' once per vCPU (the test's own
      MachineConfig, not the stream), and a section for every device the appended description names (the
      description lists the non-iterable devices only: 'ram' is not among them);
  (3) the RAM section's block list holds the guest's main RAM block with exactly the guest's RAM size (the test's
      own -m), and every block the source's `info ramblock` lists, with its used length;
  (4) the main RAM block as the script extracted it equals the paused source's guest-physical memory (pmemsave)
      page by page, outside the legacy PC window 0xa0000–0xfffff, where guest-physical reads reach VGA and ROM,
      not RAM — the guest's memory itself against QEMU's own reading of the stream.
regressions/vmdesc-never-written.patch (the description no longer appended: the script needs it to parse device
state) is caught by (1).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from harness.analysis import oracles
from harness.analysis.integrity import compare_dumps
from harness.core.units import MiB, PAGE
from harness.migration.config import MigrationConfig
from harness.migration.scenarios import COMPLETION_TIMEOUT
from harness.migration.testbed import Testbed
from harness.qemu.source_tree import FETCH_HINT, qemu_script
from harness.vm.machine import Machine

ANALYZE = "analyze-migration.py"
LEGACY_WINDOW = range(0xa0000 // PAGE, 0x100000 // PAGE)     # VGA and option/BIOS ROM: not RAM when read
EXPECTED_ONCE = ("ram", "timer")                             # one instance on every machine


def analyze(script: Path, stream: Path, cwd: Path, *arguments: str) -> tuple[int, str]:
    done = subprocess.run([sys.executable, str(script), "-f", str(stream), *arguments], cwd=cwd,
                          capture_output=True, text=True, timeout=300)
    (cwd / f"analyze{'-'.join(arguments)}.log").write_text(done.stdout + done.stderr)
    return done.returncode, done.stdout if done.returncode == 0 else done.stderr[-2000:]


def ram_blocks(machine: Machine) -> dict[str, int]:
    """`info ramblock` of `machine`: block name → used length (bytes). Its rows: name, page size ("4 KiB"),
    offset, used, total, HVA, RO."""
    table = machine.qmp.hmp("info ramblock")
    rows = re.finditer(r"^\s*(\S+)\s+\d+ \w+\s+0x[0-9a-f]+\s+0x([0-9a-f]+)\s", table, re.M)
    return {row[1]: int(row[2], 16) for row in rows}


# file: URIs came with the channels argument (QEMU 8.2); no schema entry names the URI scheme itself.
@pytest.mark.needs(command_arguments=["migrate.channels"])
def test_file_stream_reads_back_with_qemus_own_parser(testbed: Testbed, guest: Machine) -> None:
    script = qemu_script(ANALYZE)
    if script is None:
        pytest.skip(f"no QEMU source tree with scripts/{ANALYZE}: {FETCH_HINT}")
    migration = testbed.migrate(guest, None, MigrationConfig(transport="file"), name="stream")
    migration.wait_status({"completed"}, COMPLETION_TIMEOUT)
    migration.finish()
    stream = migration.file_path
    out = testbed.workdir / "analyze"
    out.mkdir()

    runs = {how: analyze(script, stream, out, *how.split()) for how in ("-d desc", "-d state", "-x")}
    testbed.artefacts.write_json("analyze-exit", {how: code for how, (code, _) in runs.items()})
    testbed.artefacts.verdict(*(oracles.equals(f"analyze-migration.py {how} parses the stream", code, 0,
                                               text[-300:] if code else "exit status")
                                for how, (code, text) in runs.items()))                     # (1)
    desc = json.loads(runs["-d desc"][1]) if runs["-d desc"][0] == 0 else {}
    state = json.loads(runs["-d state"][1]) if runs["-d state"][0] == 0 else {}
    testbed.artefacts.write_json("stream-desc", desc)
    testbed.artefacts.write_json("stream-state", state)

    sections = [re.sub(r" \(\d+\)$", "", key) for key in state]          # "cpu (5)": name and section id
    described = sorted({device.get("name") for device in desc.get("devices", [])})
    expected = {**{name: 1 for name in EXPECTED_ONCE}, "cpu": guest.config.cpus}
    testbed.artefacts.verdict(*(oracles.equals(f"stream: {name!r} sections", sections.count(name), count,
                                               f"the booted machine ({guest.config.cpus} vCPU)")
                                for name, count in expected.items()))                       # (2)
    testbed.artefacts.verdict(oracles.equals(
        "stream: every device its description names has a section", sorted(set(described) - set(sections)), [],
        f"{len(described)} described devices against {len(sections)} parsed sections"))

    ram = next((section for key, section in state.items() if key.startswith("ram ")), {})
    sizes = {name: int(size, 16) for name, size in ram.get("section sizes", {}).items()}
    main_size = guest.config.memory_mib * MiB
    main = next((name for name, size in sizes.items() if size == main_size), None)
    blocks = ram_blocks(guest)
    testbed.artefacts.write_json("ram-blocks", {"stream": sizes, "info ramblock": blocks})
    testbed.artefacts.verdict(
        oracles.equals("stream: a RAM block of the guest's RAM size", main is not None, True,
                       f"{guest.config.memory_mib} MiB among {sizes}"),
        oracles.equals("stream: RAM blocks and sizes as the source lists them", sizes, blocks,
                       "the source's `info ramblock` (used length)"))                     # (3)

    extracted = out / (main or "missing")
    if main is None or not extracted.is_file():
        return
    source_ram = testbed.workdir / "source.ram"
    guest.pmemsave(source_ram, main_size)
    comparison = compare_dumps(source_ram, extracted, keep=1 << 20)
    outside = [pfn for pfn in comparison.first_differing if pfn not in LEGACY_WINDOW]
    testbed.artefacts.write_json("extracted-ram-comparison", {**comparison.to_json(), "first_differing": outside[:64]})
    testbed.artefacts.verdict(oracles.equals(
        f"the stream's {main} as QEMU's parser extracts it equals the source's RAM", len(outside), 0,
        f"pages differing outside the legacy window 0xa0000-0xfffff, of {main_size // PAGE}"))   # (4)
