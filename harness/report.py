"""Artefacts of one test (time series, verdicts, JSON inputs of each verdict, plots) and the run's index.html.

Per test, in its artefacts directory:
  NAME.series.json / NAME.png   every migration's sampled query-migrate series and its plot: a status strip
                                (both sides), the counters over time, MIGRATION_PASS (grey), harness actions such
                                as migrate-start-postcopy (red), QMP stalls (orange), the verdicts' plot hints
                                (thresholds, windows) and, in the title and footer, PASSED/FAILED and why
  comparison.png                with two or more migrations: their counters overlaid (baseline vs treatment)
  verdicts.json                 every verdict, pass or fail, with measured value, bound and reason
  NAME.png / NAME.json          extra figures: Artefacts.add_histogram (latency histograms), add_figure
Per run: index.html (and results.json) in the run directory, and ARTEFACTS/index.html for the latest run.
"""

from __future__ import annotations

import html
import json
import logging
import math
import os
import re
import textwrap
from dataclasses import asdict, dataclass, field, is_dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Mapping, Sequence
from urllib.parse import quote

from .oracles import PlotHint, Verdict
from .sampler import Series, lookup

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

log = logging.getLogger(__name__)

MiB = 1 << 20
TERMINAL = frozenset({"completed", "failed", "cancelled"})


def safe_name(nodeid: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", nodeid).strip("_")[:150]


class Artefacts:
    def __init__(self, directory: Path, nodeid: str = "") -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.nodeid = nodeid
        self.verdicts: list[Verdict] = []
        self.series: dict[str, Series] = {}
        self.figures: list[str] = []  # extra PNGs written by add_histogram / add_figure, in order

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

    def finalize(self, outcome: str, failure: str | None = None) -> None:
        """Write the verdicts and draw every series; `failure` is the error of a test that failed without a
        failing verdict (e.g. a migration that stalled), so the plots say why too."""
        self.write_json("verdicts", [v.to_json() for v in self.verdicts])
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


def _json_default(value: Any) -> Any:
    if hasattr(value, "to_json"):
        return value.to_json()
    if is_dataclass(value) and not isinstance(value, type):
        return asdict(value)   # nested measurement records need no to_json of their own
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    return repr(value)


def outcome_word(outcome: str) -> str:
    return "FAILED" if outcome.lower() in ("failed", "error") else "PASSED" if outcome.lower() == "passed" \
        else outcome.upper()


# -- time-series plots -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Panel:
    key: str              # query-migrate path
    label: str
    scale: float = 1.0    # plotted value = raw × scale (× page size when per_page)
    per_page: bool = False
    show: str = "present"  # present: any sample has it; nonzero: some value ≠ 0; hinted: a verdict hint names it


PANELS = [
    Panel("ram.dirty-sync-count", "dirty-sync-count"),
    Panel("ram.transferred", "transferred (MiB)", 1 / MiB),
    Panel("ram.remaining", "remaining (MiB)", 1 / MiB),
    Panel("ram.dirty-pages-rate", "dirty rate (MiB/s)", 1 / MiB, per_page=True),
    Panel("ram.mbps", "throughput (MiB/s)", 1e6 / 8 / MiB),
    Panel("cpu-throttle-percentage", "throttle %"),
    Panel("ram.postcopy-requests", "postcopy requests", show="nonzero"),
    Panel("expected-downtime", "expected downtime (ms)", show="hinted"),
]

STATUS_COLOURS = {
    "none": "#eeeeee", "setup": "#c7c7c7", "active": "#4c72b0", "pre-switchover": "#8172b3",
    "device": "#dd8452", "postcopy-active": "#55a868", "postcopy-paused": "#c44e52",
    "postcopy-recover-setup": "#e5ae38", "postcopy-recover": "#e5ae38", "wait-unplug": "#937860",
    "colo": "#64b5cd", "cancelling": "#8c8c8c", "cancelled": "#5f5f5f", "completed": "#2f2f2f",
    "failed": "#d62728",
}
# Transitions drawn across every panel: where the migration changed its nature.
MARKED_STATUSES = {"postcopy-active": "#55a868", "device": "#dd8452", "completed": "#2f2f2f",
                   "failed": "#d62728", "cancelled": "#5f5f5f", "postcopy-paused": "#c44e52"}


def _hints_for(verdicts: Sequence[Verdict], name: str | None) -> list[tuple[PlotHint, bool]]:
    """(hint, its verdict passed) for the plot of migration `name` (None: hints for every plot only)."""
    return [(h, v.passed) for v in verdicts for h in getattr(v, "hints", ())
            if h.series is None or h.series == name]


def _page_size(series: Series) -> float:
    for side in series.samples:
        for sample in reversed(series.samples[side]):
            size = lookup(sample["info"], "ram.page-size")
            if size:
                return float(size)
    return 4096.0


def _panel_scale(panel: Panel, series: Series) -> float:
    return panel.scale * (_page_size(series) if panel.per_page else 1.0)


def _panels(series_list: Sequence[Series], hinted_keys: set[str]) -> list[Panel]:
    def shown(panel: Panel) -> bool:
        if panel.show == "hinted" and panel.key not in hinted_keys:
            return False
        values = [v for s in series_list for side in s.samples for _, v in s.track(panel.key, side)]
        if panel.show == "nonzero":
            return any(v for v in values) or panel.key in hinted_keys
        return bool(values)
    panels = [p for p in PANELS if shown(p)]
    known = {p.key for p in PANELS}
    # A hint on a key without a built-in panel gets a panel of its own.
    panels += [Panel(key, f"{key} (MiB)", 1 / MiB) if key.endswith("bytes") else Panel(key, key)
               for key in sorted(hinted_keys - known)
               if any(s.track(key, side) for s in series_list for side in s.samples)]
    return panels


def series_end(series: Series) -> float:
    times = [s["t"] for side in series.samples.values() for s in side[-1:]]
    times += [e["t"] for side in series.events.values() for e in side[-1:]]
    times += [m["t"] for m in series.marks]
    return max(times, default=0.0)


def status_segments(series: Series, side: str) -> list[tuple[float, float, str]]:
    """(start, end, status) spans of one side, each lasting until the next change or the end of the series."""
    changes = series.status_changes(side) if side in series.samples else []
    end = series_end(series)
    return [(t, (changes[i + 1][0] if i + 1 < len(changes) else max(end, t)), status)
            for i, (t, status) in enumerate(changes)]


def verdict_lines(verdicts: Sequence[Verdict], failure: str | None, width: int = 150) -> list[tuple[str, bool]]:
    """The footer of every plot: failing verdicts first, with measured value and bound; then the passed ones."""
    lines: list[tuple[str, bool]] = []
    for v in sorted(verdicts, key=lambda v: v.passed):
        text = f"{'✓' if v.passed else '✗'} {v.name}: {v.why}"
        if not v.passed:
            text += f"  [measured {_short(v.measured)}, bound {_short(v.bound)}]"
        for i, chunk in enumerate(textwrap.wrap(text, width) or [text]):
            lines.append(((" " * 4 if i else "") + chunk, v.passed))
    if failure and all(v.passed for v in verdicts):
        first = [line for line in failure.strip().splitlines() if line.strip()][:3]
        for i, chunk in enumerate(textwrap.wrap(" ".join(first), width)[:4]):
            lines.append(((" " * 4 if i else "✗ error: ") + chunk, False))
    return lines


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 1] + "…"


def header_lines(outcome: str | None, subject: str, verdicts: Sequence[Verdict], failure: str | None,
                 width: int = 120) -> list[str]:
    """Title of a plot: PASSED/FAILED and, when failed, why (the failing verdicts or the error); then the subject
    (test id, migration). Without an outcome (a plot drawn outside a test) just the subject."""
    if outcome is None:
        return textwrap.wrap(subject, width)[:3] or [""]
    word = outcome_word(outcome)
    failed = [v for v in verdicts if not v.passed]
    if failed:
        reason = "; ".join(f"{v.name}: {v.why}" for v in failed)
    elif failure and word == "FAILED":
        reason = " ".join(line.strip() for line in failure.strip().splitlines()[:2])
    else:
        reason = f"{len(verdicts)} verdict(s) passed" if verdicts else ""
    headline = textwrap.wrap(f"{word}: {reason}" if reason else word, width)
    if len(headline) > 3:
        headline = headline[:3]
        headline[-1] += " …"
    return headline + textwrap.wrap(subject, width + 20)[:2]


def _figure_header(fig: "Figure", lines: list[str], failed: bool, verdicts: Sequence[Verdict],
                   failure: str | None, footer_height: float) -> None:
    fig.suptitle("\n".join(lines), fontsize=9.5, fontweight="bold", color="#b00000" if failed else "#006400",
                 y=1 - 0.08 / fig.get_figheight())
    height = fig.get_figheight()
    step = 0.17 / height
    top = (footer_height - 0.1) / height
    for i, (text, passed) in enumerate(verdict_lines(verdicts, failure)):
        fig.text(0.01, top - i * step, text, fontsize=7.5, family="DejaVu Sans", va="top",
                 color="#1a1a1a" if passed else "#b00000")


def _is_failed(outcome: str | None, verdicts: Sequence[Verdict], failure: str | None) -> bool:
    if outcome is not None:
        return outcome_word(outcome) != "PASSED"
    return any(not v.passed for v in verdicts) or bool(failure)


def _header_height(lines: list[str]) -> float:
    return 0.25 + 0.2 * len(lines)


def _draw_status_strip(ax: "Axes", series: Series) -> None:
    sides = [s for s in ("source", "destination") if s in series.samples and series.status_changes(s)]
    sides += [s for s in series.samples if s not in ("source", "destination") and series.status_changes(s)]
    for row, side in enumerate(sides):
        for start, end, status in status_segments(series, side):
            width = max(end - start, 0.002 * max(series_end(series), 1.0))
            colour = STATUS_COLOURS.get(status, "#bbbbbb")
            ax.broken_barh([(start, width)], (row - 0.4, 0.8), facecolors=colour, edgecolors="white", lw=0.3)
            if width > 0.06 * max(series_end(series), 1e-9):
                ax.text(start + width / 2, row, status, ha="center", va="center", fontsize=7,
                        color="white" if status not in ("setup", "none") else "black")
    ax.set_yticks(range(len(sides)), [s[:11] for s in sides], fontsize=7)
    ax.set_ylim(-0.5, max(len(sides), 1) - 0.5)
    ax.invert_yaxis()
    ax.tick_params(axis="x", labelbottom=False)
    ax.set_ylabel("status", fontsize=8)


def _draw_events(ax: "Axes", series: Series, hints: list[tuple[PlotHint, bool]], panel: Panel | None,
                 scale: float) -> None:
    passes = series.event_times("MIGRATION_PASS") if "source" in series.events else []
    for t in passes:
        ax.axvline(t, color="grey", lw=0.4, alpha=0.45 if len(passes) < 200 else 0.2)
    # The first status may be the previous migration's (a source migrated again): not a change of this one.
    for t, status in series.status_changes("source")[1:] if "source" in series.samples else []:
        if status in MARKED_STATUSES:
            ax.axvline(t, color=MARKED_STATUSES[status], lw=1.0, ls="--", alpha=0.8)
    for stall in series.stalls:
        ax.axvspan(stall["t"], stall["t"] + stall["seconds"], color="orange", alpha=0.2, lw=0)
    for mark in series.marks:
        if mark["what"] not in ("migrate",):
            ax.axvline(mark["t"], color="red", lw=0.9, alpha=0.8)
    for hint, passed in hints:
        colour = "#006400" if passed else "#b00000"
        if hint.kind == "span" and hint.end is not None:
            ax.axvspan(hint.value, hint.end, color=colour, alpha=0.08, lw=0)
            ax.axvline(hint.value, color=colour, lw=0.8, ls=":")
            ax.axvline(hint.end, color=colour, lw=0.8, ls=":")
        elif hint.kind == "vline":
            ax.axvline(hint.value, color=colour, lw=1.0, ls="-.")
        elif hint.kind == "hline" and panel is not None and hint.key == panel.key:
            ax.axhline(hint.value * scale, color=colour, lw=1.1, ls="--")
            ax.annotate(hint.label or f"bound {hint.value:g}", (1.0, hint.value * scale),
                        xycoords=("axes fraction", "data"), xytext=(-4, 2), textcoords="offset points",
                        ha="right", va="bottom", fontsize=7, color=colour)


def _label_top(ax: "Axes", series: Series, hints: list[tuple[PlotHint, bool]]) -> None:
    """Names of harness actions and time hints, above the first panel."""
    labels = [(m["t"], m["what"], "red") for m in series.marks if m["what"] != "migrate"]
    labels += [(h.value, h.label, "#006400" if passed else "#b00000") for h, passed in hints
               if h.kind in ("span", "vline") and h.label]
    span = max(series_end(series), 1e-9)
    last_t, level = None, 0
    for t, text, colour in sorted(labels):
        # Labels of actions close in time (pause, then recover) are stacked instead of overprinted.
        level = level + 1 if last_t is not None and t - last_t < 0.08 * span else 0
        last_t = t
        ax.annotate(text, (t, 1.0), xycoords=("data", "axes fraction"), xytext=(0, 2 + 9 * level),
                    textcoords="offset points", fontsize=7, color=colour, va="bottom",
                    ha="right" if t > 0.75 * span else "left")


def _footer_height(verdicts: Sequence[Verdict], failure: str | None) -> float:
    return 0.25 + 0.17 * len(verdict_lines(verdicts, failure))


PANEL_HEIGHT = 1.5        # inches
PANEL_GAP = 0.28          # inches between panels (tick labels of the shared x axis are hidden)
MARK_LABELS_HEIGHT = 0.3  # above the first panel: names of harness actions
FIG_WIDTH = 11.0


def _figure(plt: Any, heights: list[float], header: float, footer: float) -> tuple[Any, Any, float]:
    """Stacked panels with fixed margins in inches: tight_layout would cost half of the plot's time."""
    axis_label = 0.45  # the x label under the last panel
    total = sum(heights) + PANEL_GAP * (len(heights) - 1) + header + footer + axis_label
    fig, axes = plt.subplots(len(heights), 1, figsize=(FIG_WIDTH, total), sharex=True, squeeze=False,
                             gridspec_kw={"height_ratios": heights})
    fig.subplots_adjust(left=1.0 / FIG_WIDTH, right=1 - 0.25 / FIG_WIDTH, top=1 - header / total,
                        bottom=(footer + axis_label) / total, hspace=PANEL_GAP / (sum(heights) / len(heights)))
    return fig, axes, total


def plot_series(series: Series, path: Path, title: str, verdicts: Sequence[Verdict] = (),
                name: str | None = None, failure: str | None = None, outcome: str | None = None) -> None:
    """One migration: status strip, counter panels, events, hints. With `outcome` the title says PASSED/FAILED
    and why (failing verdicts, else `failure`), then `title` (the test id); the footer lists every verdict."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    hints = _hints_for(verdicts, name)
    panels = _panels([series], {h.key for h, _ in hints if h.kind == "hline" and h.key})
    has_status = any(series.status_changes(side) for side in series.samples)
    if not panels and not has_status:
        return
    footer = _footer_height(verdicts, failure)
    lines = header_lines(outcome, f"{title} — migration '{name}'" if name else title, verdicts, failure)
    header = _header_height(lines)
    heights = [0.55 + 0.2 * (len(series.samples) - 1)] + [PANEL_HEIGHT] * len(panels)
    fig, axes, fig_height = _figure(plt, heights, header + MARK_LABELS_HEIGHT, footer)
    _draw_status_strip(axes[0, 0], series)
    for ax, panel in zip(axes[1:, 0], panels):
        scale = _panel_scale(panel, series)
        for side, style in (("source", "-"), ("destination", "--")):
            points = series.track(panel.key, side) if side in series.samples else []
            if points:
                ax.plot([t for t, _ in points], [v * scale for _, v in points], style, lw=1,
                        label=_counter_label(side, points) if panel.key == "ram.dirty-sync-count" else side,
                        drawstyle="steps-post")
        ax.set_ylabel(panel.label, fontsize=8)
        ax.tick_params(labelsize=7)
        _draw_events(ax, series, hints, panel, scale)
        ax.grid(alpha=0.3)
    _label_top(axes[0, 0], series, hints)
    if panels:
        axes[1, 0].legend(fontsize=7, loc="upper left")
    hz = {side: series.achieved_hz(side) for side in series.samples if series.samples[side]}
    axes[-1, 0].set_xlabel("seconds since migrate — grey: MIGRATION_PASS, red: harness actions, dashed: status "
                           "changes, orange: QMP stalls; sampled at "
                           + ", ".join(f"{side} {v:.0f} Hz" for side, v in hz.items()), fontsize=7.5)
    axes[-1, 0].tick_params(axis="x", labelbottom=True)
    _figure_header(fig, lines, _is_failed(outcome, verdicts, failure), verdicts, failure, footer)

    fig.savefig(path, dpi=90)
    plt.close(fig)


def _counter_label(side: str, points: list[tuple[float, Any]]) -> str:
    """A counter's legend entry with its average rate, e.g. "source: 99 in 10.0 s (9.9/s)"."""
    (t0, first), (t1, last) = points[0], points[-1]
    rate = f" ({(last - first) / (t1 - t0):.2g}/s)" if t1 > t0 else ""
    return f"{side}: +{last - first} in {t1 - t0:.1f} s{rate}"


def _summary_label(name: str, series: Series) -> str:
    syncs = [v for _, v in series.track("ram.dirty-sync-count")]
    moved = [v for _, v in series.track("ram.transferred")]
    parts = [f"{series_end(series):.1f} s", str(series.status() or "?")]
    if syncs:
        parts.append(f"{syncs[-1] - syncs[0]} syncs")
    if moved:
        parts.append(f"{moved[-1] / MiB:.0f} MiB")
    return f"{name} ({', '.join(parts)})"


def plot_comparison(all_series: Mapping[str, Series], path: Path, title: str, verdicts: Sequence[Verdict] = (),
                    failure: str | None = None, outcome: str | None = None) -> None:
    """Two or more migrations of one test overlaid (source side), so baseline and treatment read side by side."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    hinted = {h.key for v in verdicts for h in getattr(v, "hints", ()) if h.kind == "hline" and h.key}
    panels = [p for p in _panels(list(all_series.values()), hinted) if p.key != "ram.mbps"]
    if not panels:
        return
    footer = _footer_height(verdicts, failure)
    lines = header_lines(outcome, f"{title} — {len(all_series)} migrations compared", verdicts, failure)
    header = _header_height(lines)
    fig, axes, fig_height = _figure(plt, [PANEL_HEIGHT] * len(panels), header, footer)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, panel in zip(axes[:, 0], panels):
        for i, (name, series) in enumerate(all_series.items()):
            colour = colours[i % len(colours)]
            scale = _panel_scale(panel, series)
            points = series.track(panel.key)
            if points:
                ax.plot([t for t, _ in points], [v * scale for _, v in points], color=colour, lw=1,
                        drawstyle="steps-post", label=_summary_label(name, series))
            for hint, passed in _hints_for(verdicts, name):
                if hint.series is None and hint.kind != "hline":
                    continue  # an untargeted time hint means nothing on a shared axis
                if hint.kind == "span" and hint.end is not None:
                    ax.axvspan(hint.value, hint.end, color=colour, alpha=0.08, lw=0)
                elif hint.kind == "vline":
                    ax.axvline(hint.value, color=colour, lw=1.0, ls="-.")
                elif hint.kind == "hline" and hint.key == panel.key:
                    ax.axhline(hint.value * scale, color="#006400" if passed else "#b00000", lw=1.1, ls="--")
            for mark in series.marks:
                if mark["what"] != "migrate":
                    ax.axvline(mark["t"], color=colour, lw=0.8, ls=":")
        ax.set_ylabel(panel.label, fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    axes[0, 0].legend(fontsize=7, loc="upper left")
    axes[-1, 0].set_xlabel("seconds since each migration's migrate (source side; dotted: harness actions)",
                           fontsize=7.5)
    _figure_header(fig, lines, _is_failed(outcome, verdicts, failure), verdicts, failure, footer)

    fig.savefig(path, dpi=90)
    plt.close(fig)


# -- histograms ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Histogram:
    """Counts over bins [edges[i], edges[i+1]) plus a summary (n, percentiles) in the data's unit."""
    edges: tuple[float, ...]
    counts: tuple[int, ...]
    summary: dict[str, float] = field(default_factory=dict)

    @classmethod
    def from_data(cls, data: Any) -> "Histogram":
        if isinstance(data, Mapping):
            if "histogram" in data:
                summary = {k.removesuffix("_us"): float(v) for k, v in data.items()
                           if isinstance(v, (int, float)) and not isinstance(v, bool)
                           and (k.endswith("_us") or k == "count")}
                return cls.from_buckets(data["histogram"], summary)
            if "edges" in data and "counts" in data:
                return cls(tuple(map(float, data["edges"])), tuple(map(int, data["counts"])))
            raise ValueError("histogram data: expected samples, [[upper, count], …] or a probe result")
        values = list(data)
        if values and isinstance(values[0], (list, tuple)):
            return cls.from_buckets(values)
        return cls.from_samples([float(v) for v in values])

    @classmethod
    def from_buckets(cls, buckets: Iterable[Sequence[float]], summary: dict[str, float] | None = None) -> "Histogram":
        """log2 buckets [[upper, count], …]: bucket (upper/2, upper], the first from 0."""
        pairs = sorted((float(u), int(c)) for u, c in buckets)
        if not pairs:
            return cls((), (), summary or {"count": 0})
        edges = [0.0 if i == 0 else pairs[i][0] / 2 for i in range(len(pairs))] + [pairs[-1][0]]
        counts = [c for _, c in pairs]
        if not summary:
            summary = {"count": float(sum(counts))}
            for q in (50, 90, 99):
                summary[f"p{q}"] = _bucket_percentile(pairs, q)
            summary["max"] = max((u for u, c in pairs if c), default=0.0)
        return cls(tuple(edges), tuple(counts), summary)

    @classmethod
    def from_samples(cls, values: list[float], bins: int = 40) -> "Histogram":
        if not values:
            return cls((), (), {"count": 0})
        lo, hi = min(values), max(values)
        positive = lo > 0
        if hi <= lo:
            edges = [lo * 0.9 if positive else lo - 0.5, hi * 1.1 if positive else hi + 0.5]
        elif positive:
            ratio = (hi / lo) ** (1 / bins)
            edges = [lo * ratio ** i for i in range(bins + 1)]
        else:
            edges = [lo + (hi - lo) * i / bins for i in range(bins + 1)]
        edges[-1] = max(edges[-1], hi) * (1 + 1e-9) + (1e-12 if edges[-1] == 0 else 0)
        counts = [0] * (len(edges) - 1)
        for v in values:
            i = _bin_index(edges, v)
            counts[i] += 1
        ordered = sorted(values)
        summary = {"count": float(len(values)), "mean": sum(values) / len(values), "min": ordered[0],
                   **{f"p{q}": nearest_rank(ordered, q) for q in (50, 90, 99)}, "max": ordered[-1]}
        return cls(tuple(edges), tuple(counts), summary)

    def to_json(self) -> dict[str, Any]:
        return {"edges": list(self.edges), "counts": list(self.counts), "summary": self.summary}


def _bin_index(edges: Sequence[float], value: float) -> int:
    lo, hi = 0, len(edges) - 2
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if edges[mid] <= value:
            lo = mid
        else:
            hi = mid - 1
    return lo


def nearest_rank(ordered: Sequence[float], q: float) -> float:
    rank = max(1, math.ceil(len(ordered) * q / 100))
    return ordered[min(rank, len(ordered)) - 1]


def _bucket_percentile(pairs: Sequence[tuple[float, int]], q: float) -> float:
    total = sum(c for _, c in pairs)
    if not total:
        return 0.0
    rank, seen = max(1, math.ceil(total * q / 100)), 0
    for upper, count in pairs:
        seen += count
        if seen >= rank:
            return upper
    return pairs[-1][0]


def plot_histograms(histograms: Mapping[str, Histogram], path: Path, title: str, unit: str,
                    thresholds: Mapping[str, float], log_x: bool = True) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 4.5))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    use_log_x = log_x and all(h.edges and h.edges[-1] > 0 for h in histograms.values())
    for i, (label, h) in enumerate(histograms.items()):
        if not h.counts:
            continue
        colour = colours[i % len(colours)]
        left = [max(e, h.edges[1] / 2) if use_log_x and e <= 0 else e for e in h.edges]
        ax.stairs(h.counts, left, color=colour, lw=1.4,
                  label=f"{label}: " + ", ".join(f"{k} {_fmt(v)}" for k, v in h.summary.items()
                                                 if k in ("count", "p50", "p99", "max")))
        for key, style in (("p50", ":"), ("p99", "--")):
            if key in h.summary:
                ax.axvline(h.summary[key], color=colour, lw=0.8, ls=style)
    for label, value in thresholds.items():
        ax.axvline(value, color="#b00000", lw=1.2, ls="-")
        ax.annotate(label, (value, 1.0), xycoords=("data", "axes fraction"), fontsize=7, color="#b00000",
                    rotation=25, va="bottom")
    if use_log_x:
        ax.set_xscale("log")
    ax.set_yscale("symlog", linthresh=1)
    ax.set_xlabel(f"{unit} (dotted: p50, dashed: p99)", fontsize=8)
    ax.set_ylabel("count", fontsize=8)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _fmt(value: float) -> str:
    return f"{value:.0f}" if abs(value) >= 100 or float(value).is_integer() else f"{value:.3g}"


def final_value(series: Series, key: str, side: str = "source") -> Any:
    return lookup(series.latest(side), key)


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
    rate, page = lookup(info, "ram.dirty-pages-rate"), lookup(info, "ram.page-size") or 4096
    if rate:
        parts.append(f"dirty {rate * page / MiB:.0f} MiB/s")
    throttle = lookup(info, "cpu-throttle-percentage")
    if throttle:
        parts.append(f"throttle {throttle}%")
    return ", ".join(parts)


# -- the run index -----------------------------------------------------------------------------------------------
@dataclass
class TestResult:
    __test__ = False  # not a pytest test class, despite the name

    nodeid: str
    outcome: str                 # passed | failed | error | skipped | xfailed | xpassed | interrupted
    duration: float = 0.0
    message: str = ""            # crash line of a failure/error, reason of a skip
    directory: Path | None = None  # the test's artefacts directory, if it has one

    def verdicts(self) -> list[dict[str, Any]]:
        path = self.directory / "verdicts.json" if self.directory else None
        if path is None or not path.is_file():
            return []
        try:
            return list(json.loads(path.read_text()))
        except (OSError, ValueError):
            return []

    def to_json(self) -> dict[str, Any]:
        return {"nodeid": self.nodeid, "outcome": self.outcome, "duration": round(self.duration, 3),
                "message": self.message, "directory": self.directory.name if self.directory else None,
                "verdicts": self.verdicts()}


OUTCOME_COLOURS = {"passed": "#2e7d32", "failed": "#c62828", "error": "#c62828", "skipped": "#9e9e9e",
                   "xfailed": "#9e9e9e", "xpassed": "#ef6c00", "interrupted": "#6a1b9a"}
# Outcomes listed under "Failures" at the top of the index: anything that is not a clean pass, skip or xfail.
NOT_OK = ("failed", "error", "xpassed", "interrupted")

_CSS = """
body{font-family:system-ui,sans-serif;margin:1.2em;color:#222}
table{border-collapse:collapse;width:100%} td,th{border-bottom:1px solid #ddd;padding:.35em;vertical-align:top;
text-align:left;font-size:13px} .badge{color:#fff;padding:.1em .5em;border-radius:.3em;font-weight:bold}
.fail{color:#b00000} .pass{color:#1b5e20} .muted{color:#777} img{max-width:320px;border:1px solid #ccc;margin:2px}
code{font-size:12px} details summary{cursor:pointer} .files a{margin-right:.8em;white-space:nowrap}
"""


def _rel(path: Path, root: Path, prefix: str) -> str:
    return prefix + quote(str(path.relative_to(root)))


def _verdict_html(verdicts: list[dict[str, Any]]) -> str:
    failed = [v for v in verdicts if not v.get("passed")]
    passed = [v for v in verdicts if v.get("passed")]
    out = [f"<div class=fail>✗ <b>{html.escape(str(v.get('name')))}</b>: {html.escape(str(v.get('why')))} "
           f"<span class=muted>(measured {html.escape(_short(v.get('measured')))}, "
           f"bound {html.escape(_short(v.get('bound')))})</span></div>" for v in failed]
    if passed:
        items = "".join(f"<div class=pass>✓ {html.escape(str(v.get('name')))}: {html.escape(str(v.get('why')))}"
                        "</div>" for v in passed)
        out.append(f"<details><summary class=pass>{len(passed)} verdict(s) passed</summary>{items}</details>")
    return "".join(out)


def _files_html(directory: Path, root: Path, prefix: str) -> tuple[str, str]:
    """(thumbnails of the PNGs, links to every other file) of one test's artefacts directory."""
    if not directory.is_dir():
        return "", ""
    files = sorted(p for p in directory.iterdir() if p.is_file())
    pngs = sorted((p for p in files if p.suffix == ".png"), key=lambda p: (p.name != "comparison.png", p.name))
    thumbs = "".join(f"<a href='{_rel(p, root, prefix)}'><img src='{_rel(p, root, prefix)}' "
                     f"title='{html.escape(p.name)}' loading=lazy></a>" for p in pngs)
    links = "".join(f"<a href='{_rel(p, root, prefix)}'>{html.escape(p.name)}</a><span class=muted>"
                    f"{_size(p)}</span> " for p in files if p.suffix != ".png")
    return thumbs, links


def _size(path: Path) -> str:
    size = path.stat().st_size
    return f" {size / MiB:.1f} MiB" if size >= MiB else f" {size / 1024:.0f} KiB" if size >= 10240 else ""


def counts(results: Sequence[TestResult]) -> dict[str, int]:
    tally: dict[str, int] = {}
    for r in results:
        tally[r.outcome] = tally.get(r.outcome, 0) + 1
    return tally


def render_index(results: Sequence[TestResult], header: Mapping[str, str], root: Path, prefix: str = "",
                 other_runs: Sequence[tuple[str, str]] = ()) -> str:
    """The run's index: a summary, failures first in a short list, then one row per test with its verdicts,
    plots (thumbnails) and artefact files. Links are relative to `root` with `prefix` in front."""
    tally = counts(results)
    summary = ", ".join(f"<span style='color:{OUTCOME_COLOURS.get(k, '#222')}'>{n} {k}</span>"
                        for k, n in sorted(tally.items()))
    page_dir = root.parent if prefix else root
    head = "".join(f"<tr><th>{html.escape(k)}</th><td>{_header_value(str(v), page_dir)}</td></tr>"
                   for k, v in header.items())
    bad = [r for r in results if r.outcome in NOT_OK]
    failures = "".join(f"<li><a href='#{safe_name(r.nodeid)}'>{html.escape(r.nodeid)}</a>: "
                       f"<span class=fail>{html.escape(_first_reason(r))}</span></li>" for r in bad)
    rows, plain = [], []
    for r in results:
        if r.directory is None and r.outcome not in NOT_OK:
            plain.append(r)
            continue
        thumbs, links = _files_html(r.directory, root, prefix) if r.directory else ("", "")
        message = (f"<div class={'fail' if r.outcome in NOT_OK else 'muted'}><code>"
                   f"{html.escape(r.message[:600])}</code></div>" if r.message and not any(
                       not v.get("passed") for v in r.verdicts()) else "")
        rows.append(
            f"<tr id='{safe_name(r.nodeid)}'><td><span class=badge style='background:"
            f"{OUTCOME_COLOURS.get(r.outcome, '#555')}'>{html.escape(r.outcome.upper())}</span></td>"
            f"<td><b>{html.escape(r.nodeid)}</b><br><span class=muted>{r.duration:.1f} s</span>"
            f"{_verdict_html(r.verdicts())}{message}<div class=files>{links}</div></td><td>{thumbs}</td></tr>")
    plain_html = ""
    if plain:
        plain_html = (f"<details><summary>{len(plain)} test(s) without artefacts ("
                      + ", ".join(f"{n} {k}" for k, n in sorted(counts(plain).items())) + ")</summary><ul>"
                      + "".join(f"<li>{html.escape(r.outcome)} — {html.escape(r.nodeid)} "
                                f"<span class=muted>{r.duration:.2f} s {html.escape(r.message[:200])}</span></li>"
                                for r in plain) + "</ul></details>")
    runs = ""
    if other_runs:
        runs = "<h3>Earlier runs</h3><ul>" + "".join(
            f"<li><a href='{href}'>{html.escape(text)}</a></li>" for href, text in other_runs) + "</ul>"
    return (f"<!doctype html><html><head><meta charset=utf-8><title>migration harness: {len(results)} tests"
            f"</title><style>{_CSS}</style></head><body><h2>QEMU migration harness — {summary}</h2>"
            f"<table style='width:auto'>{head}</table>"
            + (f"<h3 class=fail>Failures</h3><ul>{failures}</ul>" if failures else "")
            + f"<h3>Tests</h3><table><tr><th>outcome</th><th>test, verdicts, files</th><th>plots</th></tr>"
            + "".join(rows) + f"</table>{plain_html}{runs}</body></html>\n")


def _header_value(value: str, page_dir: Path) -> str:
    """A file next to the artefacts (e.g. the JUnit XML) becomes a link; anything else is shown as code."""
    path = Path(value)
    if path.is_absolute() and path.is_file():
        try:
            href = quote(os.path.relpath(path, page_dir))
        except ValueError:
            href = ""
        if href and not href.startswith("../../"):
            return f"<a href='{href}'><code>{html.escape(value)}</code></a>"
    return f"<code>{html.escape(value)}</code>"


def _first_reason(result: TestResult) -> str:
    failed = [v for v in result.verdicts() if not v.get("passed")]
    if failed:
        return "; ".join(f"{v.get('name')}: {v.get('why')}" for v in failed)[:300]
    return (result.message.strip().splitlines() or [result.outcome])[0][:300]


def atomic_write_text(path: Path, text: str) -> None:
    """Write `path` so that a reader (another run listing earlier runs, a browser) sees the old or the new
    content, never a partial file: a private temporary name in the same directory, then rename."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


MATRIX_COLOURS = {"pass": OUTCOME_COLOURS["passed"], "fail": OUTCOME_COLOURS["failed"], "skip": "#9e9e9e",
                  "xfail": "#9e9e9e", "refused": "#ef6c00"}


def render_matrix(data: Mapping[str, Any]) -> str:
    """`make matrix`'s page (harness.matrix's JSON): tests as rows, QEMU pairs as columns, each cell its outcome
    with the reason, linked to the test's row in that pair's run index."""
    pairs = data.get("pairs", [])
    tests = sorted({t for p in pairs for t in p.get("cells", {})})
    head = "".join(f"<th>{html.escape(p['pair'])}<br><span class=muted>{html.escape(p.get('platform', ''))}"
                   f"</span></th>" for p in pairs)
    rows = []
    for test in tests:
        cells = []
        for p in pairs:
            cell = p.get("cells", {}).get(test)
            if cell is None:
                cells.append("<td class=muted>not run</td>")
                continue
            badge = (f"<span class=badge style='background:{MATRIX_COLOURS.get(cell['outcome'], '#555')}'>"
                     f"{html.escape(cell['outcome'].upper())}</span>")
            if cell.get("link"):
                badge = f"<a href='{quote(cell['link'], safe='/#')}'>{badge}</a>"
            reason = f"<div class=muted><code>{html.escape(cell['reason'][:400])}</code></div>" if cell.get(
                "reason") else ""
            cells.append(f"<td>{badge}{reason}</td>")
        rows.append(f"<tr><td><b>{html.escape(test)}</b></td>{''.join(cells)}</tr>")
    verdict = "every cell pass, skip or refusal" if data.get("ok") else "NOT OK: a cell failed"
    return (f"<!doctype html><html><head><meta charset=utf-8><title>migration harness: version matrix</title>"
            f"<style>{_CSS}</style></head><body><h2>QEMU version matrix — {verdict}</h2>"
            f"<table><tr><th>test</th>{head}</tr>{''.join(rows)}</table></body></html>\n")


def write_index(run_dir: Path, results: Sequence[TestResult], header: Mapping[str, str]) -> Path:
    """run_dir/index.html + results.json, and run_dir.parent/index.html: the same page for the latest run,
    with links into run_dir and a list of the earlier runs' indexes. Each file is replaced atomically: runs
    sharing an artefacts directory read each other's results.json and overwrite the shared index.html."""
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run_dir / "results.json", json.dumps(
        {"header": dict(header), "counts": counts(results), "tests": [r.to_json() for r in results]},
        indent=1, default=_json_default) + "\n")
    page = run_dir / "index.html"
    atomic_write_text(page, render_index(results, header, run_dir))
    base = run_dir.parent
    others = []
    for other in sorted(base.glob("run-*/results.json"), reverse=True):
        if other.parent == run_dir:
            continue
        try:
            tally = json.loads(other.read_text()).get("counts", {})
        except (OSError, ValueError):
            continue
        others.append((quote(other.parent.name) + "/index.html",
                       f"{other.parent.name}: " + ", ".join(f"{n} {k}" for k, n in sorted(tally.items()))))
    atomic_write_text(base / "index.html", render_index(results, header, run_dir, quote(run_dir.name) + "/",
                                                        others[:50]))
    return page
