"""Artefacts of one test: time series, verdicts, JSON inputs of each verdict, and a plot of every migration."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any

from .oracles import Verdict
from .sampler import Series, lookup

log = logging.getLogger(__name__)


def safe_name(nodeid: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", nodeid).strip("_")[:150]


class Artefacts:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.verdicts: list[Verdict] = []
        self.series: dict[str, Series] = {}

    def path(self, name: str) -> Path:
        return self.directory / name

    def write_json(self, name: str, data: Any) -> Path:
        path = self.directory / (name if name.endswith(".json") else f"{name}.json")
        path.write_text(json.dumps(data, indent=1, default=_json_default) + "\n")
        return path

    def add_series(self, name: str, series: Series) -> None:
        self.series[name] = series
        self.write_json(f"{name}.series", series.to_json())

    def verdict(self, verdict: Verdict, check: bool = True) -> Verdict:
        """Record a verdict (pass or fail) and, unless told otherwise, assert it."""
        self.verdicts.append(verdict)
        self.write_json("verdicts", [v.to_json() for v in self.verdicts])
        return verdict.check() if check else verdict

    def finalize(self, outcome: str) -> None:
        self.write_json("verdicts", [v.to_json() for v in self.verdicts])
        for name, series in self.series.items():
            try:
                plot_series(series, self.directory / f"{name}.png", f"{name}: {outcome}", self.verdicts)
            except Exception as exc:  # a plot must never hide the test's own result
                log.warning("plot of %s failed: %s", name, exc)


def _json_default(value: Any) -> Any:
    if hasattr(value, "to_json"):
        return value.to_json()
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    return repr(value)


PANELS = [
    ("ram.transferred", "transferred (MiB)", 1 / 2**20),
    ("ram.remaining", "remaining (MiB)", 1 / 2**20),
    ("ram.dirty-sync-count", "dirty-sync-count", 1),
    ("ram.dirty-pages-rate", "dirty pages/s", 1),
    ("cpu-throttle-percentage", "throttle %", 1),
]


def plot_series(series: Series, path: Path, title: str, verdicts: list[Verdict] = ()) -> None:  # type: ignore[assignment]
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [p for p in PANELS if any(series.track(p[0], side) for side in series.samples)]
    if not panels:
        return
    fig, axes = plt.subplots(len(panels), 1, figsize=(10, 2.0 * len(panels) + 1), sharex=True, squeeze=False)
    for ax, (key, label, scale) in zip(axes[:, 0], panels):
        for side, style in (("source", "-"), ("destination", "--")):
            points = series.track(key, side) if side in series.samples else []
            if points:
                ax.plot([t for t, _ in points], [v * scale for _, v in points], style, label=side, lw=1)
        ax.set_ylabel(label, fontsize=8)
        for event in series.events.get("source", []):
            if event["event"] == "MIGRATION_PASS":
                ax.axvline(event["t"], color="grey", lw=0.4, alpha=0.5)
        for mark in series.marks:
            ax.axvline(mark["t"], color="red", lw=0.8, alpha=0.7)
        ax.grid(alpha=0.3)
    axes[0, 0].legend(fontsize=7, loc="upper right")
    for mark in series.marks:
        axes[0, 0].annotate(mark["what"], (mark["t"], 1.0), xycoords=("data", "axes fraction"), fontsize=7,
                            color="red", rotation=30, va="bottom")
    axes[-1, 0].set_xlabel("seconds since migrate (grey: MIGRATION_PASS, red: harness actions)")
    failed = [v for v in verdicts if not v.passed]
    verdict_line = ("FAILED: " + "; ".join(f"{v.name}: {v.why}" for v in failed)) if failed else (
        f"{len(verdicts)} verdicts passed" if verdicts else "")
    fig.suptitle(f"{title}\n{verdict_line}"[:300], fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def final_value(series: Series, key: str, side: str = "source") -> Any:
    return lookup(series.latest(side), key)
