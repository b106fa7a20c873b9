#!/usr/bin/env python3
"""List every migration test path QEMU's own suites register, read from a QEMU source tree.

    python3 scripts/upstream-migration-tests.py build/qemu/src/qemu-10.0.2 > docs/upstream-migration-tests.txt

qtest: every `migration_test_add("PATH", …)` in tests/qtest/migration/*.c (whatever condition guards it: a path
that needs KVM or an arch is still an upstream test), plus the `/migration/cancel/src/after/<status>` family that
precopy-tests.c registers in a loop over qapi's MigrationStatus, less the statuses its switch skips (`case …:`
before `continue`). functional: every `def test_*` of tests/functional/*migration*.py, as `FILE::NAME`.
One path a line, sorted. The committed listing is what tests/unit/test_coverage_table.py holds the coverage table in
docs/BEHAVIOURS.md to; rerun this against a new QEMU to see what it added.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

ADD = re.compile(r'migration_test_add\(\s*"([^"]+)"')
SUFFIX_LOOP = re.compile(r'switch \(i\) \{(?P<body>.*?)migration_test_add_suffix\(\s*"(?P<prefix>[^"]+)"', re.S)
SKIPPED_CASE = re.compile(r"case MIGRATION_STATUS_(\w+):")
STATUS_ENUM = re.compile(r"'enum':\s*'MigrationStatus',\s*'data':\s*\[(?P<values>[^\]]*)\]", re.S)
FUNCTIONAL_TEST = re.compile(r"^\s+def (test_\w+)\(", re.M)


def migration_statuses(qemu_src: Path) -> list[str]:
    schema = (qemu_src / "qapi" / "migration.json").read_text()
    match = STATUS_ENUM.search(schema)
    if match is None:
        raise SystemExit(f"{qemu_src}/qapi/migration.json: no MigrationStatus enum")
    return re.findall(r"'([\w-]+)'", match["values"])


def qtest_paths(qemu_src: Path) -> list[str]:
    paths: list[str] = []
    for source in sorted((qemu_src / "tests" / "qtest" / "migration").glob("*.c")):
        text = source.read_text()
        paths += ADD.findall(text)
        for loop in SUFFIX_LOOP.finditer(text):
            skipped = {name.lower().replace("_", "-") for name in SKIPPED_CASE.findall(loop["body"])}
            paths += [loop["prefix"] + status for status in migration_statuses(qemu_src) if status not in skipped]
    return paths


def functional_paths(qemu_src: Path) -> list[str]:
    paths: list[str] = []
    for source in sorted((qemu_src / "tests" / "functional").glob("*migration*.py")):
        paths += [f"functional/{source.name}::{name}" for name in FUNCTIONAL_TEST.findall(source.read_text())]
    return paths


def upstream_paths(qemu_src: Path) -> list[str]:
    return sorted(set(qtest_paths(qemu_src)) | set(functional_paths(qemu_src)))


def main(argv: list[str]) -> int:
    if len(argv) != 2 or not (Path(argv[1]) / "tests" / "qtest" / "migration").is_dir():
        print(f"usage: {argv[0]} QEMU_SOURCE_DIR (a tree with tests/qtest/migration/)", file=sys.stderr)
        return 2
    print("\n".join(upstream_paths(Path(argv[1]))))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
