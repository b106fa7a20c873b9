"""Recording one test's artefacts: time series, verdicts and the JSON inputs of each verdict, extra figures.

Per test, in its artefacts directory:
  NAME.series.json / NAME.png   every migration's sampled query-migrate series and its plot (harness.report.plots)
  comparison.png                with two or more migrations: their counters overlaid (baseline vs treatment)
  verdicts.json                 every verdict, pass or fail, with measured value, bound and reason
  NAME.png / NAME.json          extra figures: Artefacts.add_histogram (latency histograms), add_figure
Per run: index.html and results.json in the run directory (harness.report.index). Statistics are in harness.core.stats.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from harness.analysis.progress import dirty_mibps
from harness.analysis.oracles import Verdict
from harness.report.plots import plot_comparison, plot_histograms, plot_series
from harness.analysis.samples import Series, lookup
from harness.core.files import json_default
from harness.core.stats import Histogram
from harness.core.units import MiB

if TYPE_CHECKING:
    from matplotlib.figure import Figure

log = logging.getLogger(__name__)


def safe_name(nodeid: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", nodeid).strip("_")[:150]


class Artefacts:
    """One test's artefacts directory and recorder: verdicts (verdicts.json), JSON inputs of each verdict
    (write_json), sampled series drawn at finalize(), extra figures; the `artefacts` fixture makes one per test."""

    def __init__(self, directory: Path, nodeid: str = "") -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.nodeid = nodeid
        self.verdicts: list[Verdict] = []
        self.series: dict[str, Series] = {}
        self.figures: list[str] = []  # extra PNGs written by add_histogram / add_figure, in order
        # Verdict name (its start) → (reason, strict): verdicts a known QEMU bug of this run's binaries makes fail
        # (harness.qemu.known_bugs; set by the testbed fixture). Such a verdict is still judged and recorded.
        self.expected_failures: dict[str, tuple[str, bool]] = {}

    def expect_failure(self, verdict_name: str, reason: str, strict: bool) -> None:
        """Every verdict whose name starts with `verdict_name` is an expected failure for `reason`: recorded as
        measured, it does not fail the test when it fails; `strict`: it fails the test when it passes."""
        self.expected_failures[verdict_name] = (reason, strict)

    def _expected(self, verdict: Verdict) -> Verdict:
        for name, (reason, strict) in self.expected_failures.items():
            if verdict.name.startswith(name) and not verdict.expected_failure:
                return verdict.expected_to_fail(reason, strict)
        return verdict

    def path(self, name: str) -> Path:
        return self.directory / name

    def write_json(self, name: str, data: Any) -> Path:
        path = self.directory / (name if name.endswith(".json") else f"{name}.json")
        path.write_text(json.dumps(data, indent=1, default=json_default) + "\n")
        return path

    def add_series(self, name: str, series: Series) -> None:
        self.series[name] = series
        self.write_json(f"{name}.series", series.to_json())

    def verdict(self, *verdicts: Verdict) -> Verdict:
        """Record one or more verdicts, pass or fail, and return the last. Nothing is raised here: the test goes
        on to compute its other oracles, and a failing verdict fails the test when its body ends (the plugin
        calls `raise_first_failure`; harness.migration.postmortem when the body raised), so a failed test's
        verdicts.json always holds every oracle it could compute. A step that cannot go on after a failure
        (a seqcheck on a guest that never arrived) asks `failed()` first."""
        if not verdicts:
            raise ValueError("verdict() needs at least one verdict")
        recorded = [self._expected(v) for v in verdicts]
        self.verdicts.extend(recorded)
        self.write_json("verdicts", [v.to_json() for v in self.verdicts])
        return recorded[-1]

    def failed(self) -> list[Verdict]:
        """The recorded verdicts that fail the test (Verdict.fails_test), in the order they were recorded."""
        return [v for v in self.verdicts if v.fails_test]

    def recorded(self, name: str) -> bool:
        return any(v.name == name for v in self.verdicts)

    def raise_first_failure(self) -> None:
        """Raise the first failing verdict's AssertionError (its one line: name, why, measured, bound); an
        expected failure that failed is passed over (Verdict.fails_test)."""
        for verdict in self.verdicts:
            verdict.check()


    def add_histogram(self, name: str, data: Mapping[str, Any], unit: str = "µs", title: str = "",
                      thresholds: Mapping[str, float] | None = None, log_x: bool = True) -> Path:
        """Overlaid histograms of several labelled latency sets: writes NAME.json (inputs + summary) and NAME.png.

        `data` maps a label (e.g. "postcopy-preempt off") to one of
          - raw samples: a sequence of numbers in `unit`;
          - a pre-binned histogram: a sequence of [upper_bound, count] pairs in `unit` — the `histogram` of the
            guest `probe` workload (log2 buckets: bucket (upper/2, upper], the first [0, 1]);
          - a probe result dict (its "histogram" plus p50_us, p99_us, max_us…, which are kept as the summary).
        `thresholds` ({label: value in unit}) are drawn as vertical lines, e.g. {"p99 bound": 5000}.
        Example: testbed.artefacts.add_histogram("stalls", {"off": probe_off, "on": probe_on}, unit="µs")
        """
        histograms = {label: Histogram.from_data(values) for label, values in data.items()}
        self.write_json(name, {"unit": unit, "thresholds": dict(thresholds or {}),
                               "histograms": {k: h.to_json() for k, h in histograms.items()}})
        path = self.directory / f"{name}.png"
        try:
            plot_histograms(histograms, path, title or name, unit, thresholds or {}, log_x)
            self._remember_figure(path.name)
        except Exception as exc:  # a plot must never hide the test's own result
            log.warning("histogram %s failed: %s", name, exc)
        return path

    def add_figure(self, name: str, figure: "Figure") -> Path:
        """Save any matplotlib Figure as NAME.png (and close it); the run index shows it with the test."""
        import matplotlib.pyplot as plt
        path = self.directory / f"{name}.png"
        figure.savefig(path, dpi=90)
        plt.close(figure)
        self._remember_figure(path.name)
        return path

    def _remember_figure(self, filename: str) -> None:
        if filename not in self.figures:
            self.figures.append(filename)

    def finalize(self, outcome: str, failure: str | None = None, plots: bool = True) -> None:
        """Write the verdicts and draw every series (unless not `plots`: the series JSON are written as they are
        recorded, and `python -m harness.report.plots DIR` draws them later); `failure` is the error of a test
        that failed without a failing verdict (e.g. a migration that stalled), so the plots say why too."""
        self.write_json("verdicts", [v.to_json() for v in self.verdicts])
        if not plots:
            return
        title = self.nodeid or self.directory.name
        for name, series in self.series.items():
            try:
                plot_series(series, self.directory / f"{name}.png", title, self.verdicts, name=name,
                            failure=failure, outcome=outcome)
            except Exception as exc:  # a plot must never hide the test's own result
                log.warning("plot of %s failed: %s", name, exc)
        if len(self.series) >= 2:
            try:
                plot_comparison(self.series, self.directory / "comparison.png", title, self.verdicts, failure,
                                outcome)
            except Exception as exc:
                log.warning("comparison plot failed: %s", exc)


# -- live progress -----------------------------------------------------------------------------------------------
def progress_line(name: str, series: Series, elapsed: float) -> str:
    """One terminal line about a running (or just finished) migration, from its latest source sample."""
    info = series.latest("source")
    parts = [f"{'migration' if name == 'migration' else f'migration {name}'}: {series.status() or 'starting'} "
             f"after {elapsed:.0f} s"]
    transferred, remaining = lookup(info, "ram.transferred"), lookup(info, "ram.remaining")
    if transferred is not None:
        parts.append(f"transferred {transferred / MiB:.0f} MiB")
    if remaining is not None:
        parts.append(f"remaining {remaining / MiB:.0f} MiB")
    syncs = lookup(info, "ram.dirty-sync-count")
    if syncs is not None:
        parts.append(f"syncs {syncs}")
    rate = dirty_mibps(info)
    if rate:
        parts.append(f"dirty {rate:.0f} MiB/s")
    throttle = lookup(info, "cpu-throttle-percentage")
    if throttle:
        parts.append(f"throttle {throttle}%")
    return ", ".join(parts)
