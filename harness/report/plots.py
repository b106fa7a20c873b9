"""Drawing: a migration's series (status strip, counters, events, verdict hints), several migrations overlaid,
latency histograms. Data in, PNG out; nothing here records or judges (harness.report.artefacts, harness.analysis.oracles)."""

from __future__ import annotations

import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from harness.analysis.oracles import PlotHint, Verdict
from harness.analysis.samples import Series, lookup
from harness.core.stats import Histogram, log2_histogram
from harness.core.units import PAGE, MiB

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure


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
    return float(PAGE)


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
    for v in sorted(verdicts, key=lambda v: not v.fails_test):
        mark = "✓" if v.passed else ("✗ (expected: known QEMU bug)" if v.expected_failure else "✗")
        text = f"{mark} {v.name}: {v.why}"
        if not v.passed or v.fails_test:
            text += f"  [measured {short_text(v.measured)}, bound {short_text(v.bound)}]"
        for i, chunk in enumerate(textwrap.wrap(text, width) or [text]):
            lines.append(((" " * 4 if i else "") + chunk, not v.fails_test))
    if failure and not any(v.fails_test for v in verdicts):
        first = [line for line in failure.strip().splitlines() if line.strip()][:3]
        for i, chunk in enumerate(textwrap.wrap(" ".join(first), width)[:4]):
            lines.append(((" " * 4 if i else "✗ error: ") + chunk, False))
    return lines


def short_text(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 1] + "…"


def header_lines(outcome: str | None, subject: str, verdicts: Sequence[Verdict], failure: str | None,
                 width: int = 120) -> list[str]:
    """Title of a plot: PASSED/FAILED and, when failed, why (the failing verdicts or the error); then the subject
    (test id, migration). Without an outcome (a plot drawn outside a test) just the subject."""
    if outcome is None:
        return textwrap.wrap(subject, width)[:3] or [""]
    word = outcome_word(outcome)
    failed = [v for v in verdicts if v.fails_test]
    if failed:
        reason = "; ".join(f"{v.name}: {v.why}" for v in failed)
    elif failure and word == "FAILED":
        reason = " ".join(line.strip() for line in failure.strip().splitlines()[:2])
    else:
        expected = sum(1 for v in verdicts if v.expected_failure and not v.passed)
        reason = (f"{len(verdicts) - expected} verdict(s) passed" + (f", {expected} failed as a known QEMU bug "
                  "says it does" if expected else "")) if verdicts else ""
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
    return any(v.fails_test for v in verdicts) or bool(failure)


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


def plot_latency_distributions(path: Path, title: str, runs: Mapping[str, Sequence[float]],
                               markers: Mapping[str, float] | None = None) -> None:
    """Log2 histograms and empirical CDFs (log-x) of several runs' latencies (µs) side by side, with vertical
    reference lines (`markers`: label → µs, e.g. a bound)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (hist_ax, cdf_ax) = plt.subplots(1, 2, figsize=(12, 4.5))
    tallest = 1
    for label, values in runs.items():
        ordered = sorted(values)
        if not ordered:
            continue
        bins = log2_histogram(ordered)
        tallest = max([tallest, *(c for _, c in bins)])
        hist_ax.step([b for b, _ in bins], [c for _, c in bins], where="pre", label=f"{label} (n={len(ordered)})")
        cdf_ax.plot(ordered, [(i + 1) / len(ordered) for i in range(len(ordered))], label=label, lw=1.2)
    for ax in (hist_ax, cdf_ax):
        ax.set_xscale("log")
        ax.set_xlabel("per-access stall (µs)")
        ax.grid(alpha=0.3, which="both")
        for i, (label, value) in enumerate((markers or {}).items()):
            ax.axvline(value, color=f"C{i + 3}", ls="--", lw=0.9, label=label)
    hist_ax.set_yscale("symlog", linthresh=1)  # runs differ by orders of magnitude in stall count
    hist_ax.set_ylim(0, tallest * 2)
    hist_ax.set_ylabel("accesses per log2 bucket")
    cdf_ax.set_ylabel("fraction of stalls ≤ x")
    cdf_ax.axhline(0.99, color="grey", lw=0.6, ls=":")
    hist_ax.legend(fontsize=7)
    cdf_ax.legend(fontsize=7, loc="lower right")
    fig.suptitle(title[:300], fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def plot_stalls_vs_rtt(path: Path, title: str, curves: Mapping[str, Mapping[str, Sequence[tuple[float, float]]]]) -> None:
    """Stall p50 (dotted, circles) and p99 (solid, squares) in link round trips against the link's round trip, one
    colour per arm (harness.analysis.latency.stall_curves). Log scales: round trips and stalls span orders of magnitude."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    for i, (arm, stats) in enumerate(sorted(curves.items())):
        for stat, style, marker in (("p50", ":", "o"), ("p99", "-", "s")):
            points = list(stats.get(stat, ()))
            if points:
                ax.plot([x for x, _ in points], [y for _, y in points], ls=style, marker=marker, color=f"C{i}",
                        label=f"{arm} {stat}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("link round trip (ms, measured with ping)")
    ax.set_ylabel("stall (link round trips)")
    ax.grid(alpha=0.3, which="both")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7)
    ax.set_title(title[:200], fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def draw_missing(directory: Path) -> list[Path]:
    """Draw what a `--plots failed` run left undrawn: NAME.png beside every NAME.series.json under `directory`
    that has none (the passing tests' migrations; without their verdicts' hints or outcome, which the plot then
    does not claim)."""
    drawn = []
    for data in sorted(directory.rglob("*.series.json")):
        name = data.name[:-len(".series.json")]
        png = data.with_name(f"{name}.png")
        if not png.exists():
            plot_series(Series.load(data), png, data.parent.name, name=name)
            drawn.append(png)
    return drawn


if __name__ == "__main__":
    import sys
    for drawn_png in draw_missing(Path(sys.argv[1] if len(sys.argv) > 1 else "artefacts/latest")):
        print(drawn_png)
