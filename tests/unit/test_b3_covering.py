"""B3's save matrix is a pairwise covering array (#35): every value of each multifd factor meets every value of
each other factor in some case, and the cases the B3 patches' `Tests:` headers name are in it."""

from __future__ import annotations

import importlib.util
import itertools
import re
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[2]
B3 = ROOT / "tests" / "behaviour" / "test_b3_mapped_ram.py"


def b3_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("b3_mapped_ram_for_unit", B3)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module     # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def uncovered_pairs(rows: list[tuple], levels: list[tuple]) -> list[tuple]:
    """(factor i, value a, factor j, value b) for every pair of factor values no row holds together."""
    missing = []
    for i, j in itertools.combinations(range(len(levels)), 2):
        held = {(row[i], row[j]) for row in rows}
        missing += [(i, a, j, b) for a in levels[i] for b in levels[j] if (a, b) not in held]
    return missing


def test_uncovered_pairs_finds_a_missing_pair() -> None:
    levels = [(1, 2), (True, False)]
    assert uncovered_pairs([(1, True), (2, False)], levels) == [(0, 1, 1, False), (0, 2, 1, True)]
    assert uncovered_pairs([(1, True), (1, False), (2, True), (2, False)], levels) == []


def test_the_multifd_cases_cover_every_pair_of_factor_values() -> None:
    b3 = b3_module()
    rows = [(c.channels, c.live, c.flush_each_section, c.direct_io) for c in b3.MULTIFD_CASES]
    levels = [b3.CHANNELS, (True, False), (True, False), (True, False)]
    assert len(set(rows)) == len(rows), "a case appears twice"
    assert uncovered_pairs(rows, levels) == []


def test_the_cases_regression_patches_name_are_collected() -> None:
    ids = {case.id for case in [p.values[0] for p in b3_module().matrix()]}
    named = set()
    for patch in (ROOT / "regressions").glob("*.patch"):
        named |= set(re.findall(r"test_mapped_ram_save_restore_keeps_ram_and_guest\[([^\]]+)\]", patch.read_text()))
    assert named and named <= ids, f"named by patches but not in the matrix: {sorted(named - ids)}"
