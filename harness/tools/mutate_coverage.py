"""qmh-mutate's coverage step: which test of the selection executes which line of the mutated files.

The pristine QEMU is built once more with gcov (qemu-build/build.sh, QB_EXTRA_CONFIGURE_ARGS=--enable-gcov, in its
own build dir build/qemu/build-gcov, installed to build/qemu/variants-gcov/pristine), the selection runs once
against it with harness.plugin.gcov_prefix (each test its own GCOV_PREFIX), and `gcov --json-format` over each
test's .gcda files (next to a copy of the build's .gcno) gives that test's executed lines
(harness.analysis.coverage). Only the files' own objects are read (migration_ram.c.gcda for migration/ram.c).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Iterable

from harness.analysis.coverage import executed_lines
from harness.core.checkout import ROOT
from harness.report.artefacts import safe_name

GCOV_BUILD_DIR = ROOT / "build" / "qemu" / "build-gcov"
GCOV_VARIANTS = ROOT / "build" / "qemu" / "variants-gcov"


def pristine_build(out: Path, arch: str, lock: Path | None, env: dict[str, str] | None = None) -> Path:
    """OUT/pristine, built by qemu-build/build.sh under `lock` — unless build.sh's own check (qb_variant_uptodate:
    same configure, baseline and binary) says it is up to date, which costs no CPU and so waits for no lock (on a
    host where many jobs queue for the lock, that is one wait fewer per run)."""
    env = {**os.environ, **(env or {}), "QB_ARCH": arch}
    check = (f'source {ROOT}/qemu-build/lib.sh && qb_init && qb_variant_uptodate pristine "$1"')
    if subprocess.run(["bash", "-c", check, "check", str(out)], env=env, check=False).returncode != 0:
        command = ["bash", str(ROOT / "qemu-build" / "build.sh"), "--arch", arch, "--pristine", "--out", str(out)]
        subprocess.run(["flock", str(lock), *command] if lock is not None else command, env=env, check=True)
    return out / "pristine"


def build_gcov(arch: str, lock: Path | None) -> Path:
    """The pristine QEMU with --coverage, in its own build tree (built once, kept while its inputs are unchanged)."""
    return pristine_build(GCOV_VARIANTS, arch, lock, {
        "QB_BUILD_DIR": str(GCOV_BUILD_DIR), "QB_LOG_DIR": str(ROOT / "build" / "qemu" / "logs-gcov"),
        "QB_EXTRA_CONFIGURE_ARGS": "--enable-gcov"})


def object_stem(source: str) -> str:
    """The object name meson gives a source (migration/ram.c → migration_ram.c)."""
    return source.replace("/", "_")


def test_lines(prefix: Path, files: Iterable[str]) -> dict[str, set[int]]:
    """One test's executed lines of `files`, from the .gcda files under its GCOV_PREFIX directory `prefix`."""
    wanted = list(files)
    stems = {object_stem(f) + ".gcda" for f in wanted}
    lines: dict[str, set[int]] = {}
    for gcda in prefix.rglob("*.gcda"):
        if gcda.name not in stems:
            continue
        # the .gcda sits at PREFIX + the object's absolute path; its .gcno is at that path itself
        gcno = Path("/") / gcda.relative_to(prefix).with_suffix(".gcno")
        if not gcno.exists():
            continue
        shutil.copyfile(gcno, gcda.with_suffix(".gcno"))
        proc = subprocess.run(["gcov", "--json-format", "--stdout", gcda.name], cwd=gcda.parent,
                              capture_output=True, text=True, check=False)
        for document in proc.stdout.splitlines():
            if document.strip().startswith("{"):
                for file, hit in executed_lines(json.loads(document), wanted).items():
                    lines.setdefault(file, set()).update(hit)
    return lines


def per_test_lines(root: Path, tests: Iterable[str], files: Iterable[str]) -> dict[str, dict[str, set[int]]]:
    """test → file → executed lines, for every test of the coverage run (a test with no data: nothing)."""
    wanted = list(files)
    return {test: test_lines(root / safe_name(test), wanted) for test in tests
            if (root / safe_name(test)).is_dir()}
