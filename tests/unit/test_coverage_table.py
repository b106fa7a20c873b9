"""The coverage table in docs/BEHAVIOURS.md lists every upstream migration test, once, and names real tests.

The reference is docs/upstream-migration-tests.txt, which scripts/upstream-migration-tests.py derives from QEMU's
source (checked again here when the source tree the build unpacked is present)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LISTING = ROOT / "docs" / "upstream-migration-tests.txt"
SECTION = "## Coverage of QEMU's own migration tests"
QEMU_SRC = ROOT / "build" / "qemu" / "src" / "qemu-10.0.2"


def table_rows() -> list[list[str]]:
    text = (ROOT / "docs" / "BEHAVIOURS.md").read_text()
    section = text.split(SECTION, 1)[1].split("\n## ", 1)[0]
    return [[cell.strip() for cell in line.strip("|").split(" | ")]
            for line in section.splitlines() if line.startswith("| `")]


def test_table_lists_every_upstream_test_once() -> None:
    first_column = [row[0].strip("`") for row in table_rows()]
    listed = LISTING.read_text().split()
    duplicates = sorted({p for p in first_column if first_column.count(p) > 1})
    assert not duplicates, f"listed twice in the coverage table: {duplicates}"
    assert sorted(set(listed) - set(first_column)) == [], "upstream tests missing from the coverage table"
    assert sorted(set(first_column) - set(listed)) == [], "coverage table rows that are no upstream test"


def test_every_row_names_a_test_or_says_why_not() -> None:
    for row in table_rows():
        assert len(row) == 4, row
        ours = row[1]
        assert re.search(r"`test_\w+\.py", ours) or ours.startswith("not yet"), row


def test_named_test_files_and_functions_exist() -> None:
    behaviour = ROOT / "tests" / "behaviour"
    for row in table_rows():
        for file, function in re.findall(r"`(test_\w+\.py)(?:::(\w+))?", row[1]):
            path = behaviour / file
            assert path.is_file(), f"{row[0]}: {file} does not exist"
            if function:
                assert f"def {function}(" in path.read_text(), f"{row[0]}: {file} has no {function}"


@pytest.mark.skipif(not (QEMU_SRC / "tests" / "qtest" / "migration").is_dir(),
                    reason=f"no QEMU source tree at {QEMU_SRC} (make setup's build unpacks it)")
def test_listing_is_what_the_script_derives_from_qemu_source() -> None:
    derived = subprocess.run([sys.executable, str(ROOT / "scripts" / "upstream-migration-tests.py"), str(QEMU_SRC)],
                             check=True, capture_output=True, text=True).stdout
    assert derived.split() == LISTING.read_text().split()
