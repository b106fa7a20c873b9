"""`make bench`'s "warm" part (#35): boot-to-ready of a test's source guest — from Testbed.boot() to a command
run over SSH — booted cold vs restored from the session's warm boot (harness.migration.warm_boot), each on a fresh
Testbed as a test gets it, alternating so host load falls on both alike; and what making the save cost once."""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any, Callable

from harness.migration.testbed import Environment, Testbed
from harness.migration.warm_boot import WarmBoots
from harness.report.artefacts import Artefacts

READY_TARGET_S = 1.0


def _timed_boot(env: Environment, directory: Path, warm: WarmBoots | None) -> float:
    bed = Testbed(env, Artefacts(directory, "bench::warm"), warm=warm)
    try:
        started = time.monotonic()
        source = bed.boot("source")
        source.shell.run("true", timeout=30)
        return time.monotonic() - started
    finally:
        bed.close()


def bench_warm(env: Environment, directory: Path, boots: int, log: Callable[[str], None]) -> dict[str, Any]:
    warm = WarmBoots()
    try:
        # A configuration's first boot is cold and its second makes the save, then restores it
        # (WarmBoots.worth_restoring): both before the alternation, so that no warm sample includes the save (the
        # first did until session 13: 9.3 s among 0.8–1.2 s).
        first = _timed_boot(env, directory / "first", warm)
        with_save = _timed_boot(env, directory / "save", warm)
        cold, restored = [], []
        for i in range(boots):
            cold.append(_timed_boot(env, directory / f"cold-{i}", None))
            restored.append(_timed_boot(env, directory / f"warm-{i}", warm))
            log(f"boot-to-ready {i + 1}/{boots}: cold {cold[-1]:.2f} s, warm {restored[-1]:.2f} s")
    finally:
        warm.close()
    median = statistics.median(restored)
    return {"cold_samples": [round(s, 3) for s in cold], "warm_samples": [round(s, 3) for s in restored],
            "cold_median": round(statistics.median(cold), 3), "warm_median": round(median, 3),
            "warm_max": round(max(restored), 3), "first_boot_s": round(first, 3),
            "boot_with_save_s": round(with_save, 3),
            "boots": warm.boots, "target_s": READY_TARGET_S, "pass": median <= READY_TARGET_S}


def warm_rows(result: dict[str, Any], verdict: Callable[[bool | None], str]) -> list[tuple[str, str, str, str]]:
    """bench's table rows for this part."""
    return [("guest ready for a test (boot to SSH)",
             f"warm median {result['warm_median']:.2f} s (max {result['warm_max']:.2f}), cold median "
             f"{result['cold_median']:.2f} s; the boot that makes the save, once: {result['boot_with_save_s']:.2f} s",
             f"≤ {result['target_s']:g} s", verdict(result["pass"]))]
