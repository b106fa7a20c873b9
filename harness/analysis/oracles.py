"""Pure judgements: measured data in, a Verdict out (passed, measured value, bound, one-line reason)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any, Iterable, Mapping, Sequence

from harness.analysis.integrity import RamComparison
from harness.analysis.samples import Series
from harness.core.units import MiB


@dataclass(frozen=True)
class PlotHint:
    """Where a verdict's threshold or window belongs on the migration plots (harness/report/plots.py draws it).

    kind   "hline": a threshold `value` on the panel of `key` (in the unit query-migrate reports `key` in,
                    e.g. bytes for ram.remaining, pages/s for ram.dirty-pages-rate)
           "vline": an instant `value` (seconds since that migration's `migrate`), on every panel
           "span":  a window from `value` to `end` seconds, shaded on every panel
    key    a query-migrate path; a key without a built-in panel gets a panel of its own (hline only)
    series the migration's name (Testbed.migrate(name=…)) whose plot it belongs to; None: every plot
    """
    kind: str
    value: float
    end: float | None = None
    key: str | None = None
    label: str = ""
    series: str | None = None


def threshold(key: str, value: float, label: str = "", series: str | None = None) -> PlotHint:
    return PlotHint("hline", float(value), key=key, label=label, series=series)


def instant(t: float, label: str = "", series: str | None = None) -> PlotHint:
    return PlotHint("vline", float(t), label=label, series=series)


def window(t_start: float, t_end: float, label: str = "", series: str | None = None) -> PlotHint:
    return PlotHint("span", float(t_start), end=float(t_end), label=label, series=series)


@dataclass(frozen=True)
class Verdict:
    """One judgement: its name, whether it passed, the measured value, the bound and a one-line reason saying what
    anchors the bound. Built by the functions below; recorded with Artefacts.verdict (pass or fail), and the first
    failing one fails the test once the test has recorded all it could."""
    name: str
    passed: bool
    measured: Any
    bound: Any
    why: str
    # Optional plot hints (thresholds, windows): drawn on the test's plots, never part of the judgement.
    hints: tuple[PlotHint, ...] = ()
    # Set when a known QEMU bug this run's binaries have makes this one verdict fail (harness.qemu.known_bugs, a
    # bug with a `verdict`): the reason naming the bug and its fix. Still judged and recorded as measured; a failure
    # then does not fail the test, and with `strict` (a deterministic bug) a pass does, as news of a backport.
    expected_failure: str = ""
    strict: bool = False

    def with_hints(self, *hints: PlotHint) -> "Verdict":
        """`artefacts.verdict(oracles.ratio_at_most(…).with_hints(oracles.window(t0, t1, series="on")))`"""
        return replace(self, hints=self.hints + hints)

    def expected_to_fail(self, reason: str, strict: bool) -> "Verdict":
        return replace(self, expected_failure=reason, strict=strict)

    @property
    def fails_test(self) -> bool:
        """Whether this verdict fails its test: a failure not expected, or a strict expected failure that passed."""
        return fails_test(self.to_json())

    def check(self) -> "Verdict":
        if self.fails_test:
            raise AssertionError(failure_line(self.to_json()))
        return self

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def fails_test(verdict: Mapping[str, Any]) -> bool:
    """fails_test of a recorded verdict (a verdicts.json entry; one written before expected failures existed has
    neither key and fails when it did not pass)."""
    passed, expected = bool(verdict.get("passed")), bool(verdict.get("expected_failure"))
    return (not passed and not expected) or (passed and expected and bool(verdict.get("strict")))


def failure_line(verdict: Mapping[str, Any]) -> str:
    """The one line a failing recorded verdict fails its test with."""
    name, why = verdict.get("name"), verdict.get("why")
    bounds = f"(measured {verdict.get('measured')!r}, bound {verdict.get('bound')!r})"
    if verdict.get("passed") and verdict.get("expected_failure"):
        return (f"{name}: passed, but it is an expected failure of this build ({verdict['expected_failure']}) "
                f"{bounds}")
    return f"{name}: {why} {bounds}"


def completed(info: dict[str, Any]) -> Verdict:
    status = info.get("status")
    return Verdict("migration completed", status == "completed", status, "completed",
                   "status is completed" if status == "completed"
                   else f"status {status}: {info.get('error-desc', 'no error description')}")


def refused(info: dict[str, Any], message: str) -> Verdict:
    """The migration failed with QEMU's own `message` in its error-desc: a refusal the test provoked."""
    status, error = info.get("status"), info.get("error-desc") or ""
    return Verdict(f"refused with {message!r}", status == "failed" and message in error, error or status, message,
                   f"status {status}: {error or 'no error description'}")


def ram_identical(comparison: RamComparison) -> Verdict:
    return Verdict("host RAM hashes equal", comparison.equal, comparison.differing_pages, 0, comparison.describe())


def ram_identical_but_discarded(comparison: RamComparison) -> Verdict:
    """Host RAM equal page by page except pages all zero on the source: with virtio-balloon free page reporting the
    source's host discards pages the guest reported free, after some were sent, and the destination keeps what
    was sent there (QEMU does not resend a discarded page; the guest holds no data in a free page). Any other
    difference is damage."""
    damaged = comparison.differing_pages - comparison.source_zero_pages
    return Verdict("host RAM equal but for pages discarded on the source", damaged == 0, damaged, 0,
                   comparison.describe())


def discards_whole_blocks(lengths: Iterable[int], block: int) -> Verdict:
    """Every range the host discarded for the guest's free page reports is a whole number of the guest's reporting
    blocks (`block`, a mechanism-derived absolute: the smallest order the guest's mm/page_reporting.c hands over,
    its pageblock — 2 MiB on x86_64): the guest reported that much free, and nothing else. A discard longer by part
    of a block took pages the guest still used — damage the RAM comparison cannot see (such a page reads zero on
    the source, as a free page does, and the destination gets that too), and that crashes the guest only where it
    happens to hit something the guest reads."""
    lengths = list(lengths)
    odd = [length for length in lengths if length % block]
    text = f"{len(odd)} of {len(lengths)} discards not a whole number of {block // MiB} MiB reporting blocks"
    return Verdict("discards are whole free-page-reporting blocks", not odd, len(odd), 0,
                   f"{text} (e.g. {odd[0]:#x} bytes)" if odd else text)


def guest_invariant(passed: bool, line: str) -> Verdict:
    return Verdict("guest seqcheck invariant", passed, line, "SEQCHECK PASS", line)


def downtime_within(downtime_ms: float | None, limit_ms: float, slack_ms: float) -> Verdict:
    bound = limit_ms + slack_ms
    if downtime_ms is None:
        return Verdict("downtime within limit", False, None, bound, "query-migrate reported no downtime")
    ok = downtime_ms <= bound
    return Verdict("downtime within limit", ok, downtime_ms, bound,
                   f"downtime {downtime_ms:.0f} ms {'≤' if ok else '>'} downtime-limit {limit_ms:.0f} ms "
                   f"+ slack {slack_ms:.0f} ms")


def stop_copy_data_within(downtime_bytes: float | None, bandwidth_bps: float, limit_ms: float,
                          tolerance: float) -> Verdict:
    """QEMU may switch over only when what is left fits in downtime-limit at the migration bandwidth.

    Judged on the bytes sent while the guest was stopped (ram.downtime-bytes), not on the downtime in ms: a fast
    link (loopback) sends even a wrongly large remainder within the limit and hides the wrong decision.
    """
    budget = bandwidth_bps * limit_ms / 1000.0
    bound = budget * (1.0 + tolerance)
    name = "stop-copy data within bandwidth × downtime-limit"
    if downtime_bytes is None:
        return Verdict(name, False, None, bound, "query-migrate reported no ram.downtime-bytes")
    ok = downtime_bytes <= bound
    return Verdict(name, ok, downtime_bytes, round(bound),
                   f"{downtime_bytes / MiB:.1f} MiB sent while stopped {'≤' if ok else '>'} "
                   f"{budget / MiB:.1f} MiB (bandwidth × downtime-limit) + {tolerance:.0%}")


def went_through(series: Series, statuses: Iterable[str], side: str = "source") -> Verdict:
    """The run really visited these states (e.g. postcopy-active), so it tested what it claims to."""
    seen = [status for _, status in series.status_changes(side)]
    missing = [s for s in statuses if s not in seen]
    return Verdict(f"{side} went through {', '.join(statuses)}", not missing, seen, list(statuses),
                   "all states seen" if not missing else f"never saw {missing}; status sequence {seen}")


def progressed(name: str, before: float, after: float, minimum: float) -> Verdict:
    delta = after - before
    return Verdict(name, delta >= minimum, delta, minimum,
                   f"advanced by {delta:g} ({before:g} → {after:g}); needed ≥ {minimum:g}")


def ratio_at_most(name: str, value: float, baseline: float, factor: float, floor: float = 0.0) -> Verdict:
    """value ≤ factor × baseline (with `floor` as the smallest baseline, so near-zero baselines don't divide)."""
    base = max(baseline, floor)
    ratio = value / base if base else float("inf") if value else 1.0
    return Verdict(name, ratio <= factor, round(ratio, 3), factor,
                   f"{value:g} vs baseline {baseline:g}: ratio {ratio:.2f} {'≤' if ratio <= factor else '>'} {factor}")


def at_most(name: str, value: float | None, bound: float, unit: str = "", anchor: str = "") -> Verdict:
    """value ≤ bound, for a bound that does not come from the judged run: a mechanism-derived absolute (syncs per
    pass) or a multiple of a reference measured outside the judged arm. `anchor` says which, for the report."""
    if value is None:
        return Verdict(name, False, None, bound, f"nothing measured ({anchor})" if anchor else "nothing measured")
    ok = value <= bound
    text = f"{value:.3g}{unit} {'≤' if ok else '>'} {bound:g}{unit}"
    return Verdict(name, ok, round(value, 4), bound, f"{text} ({anchor})" if anchor else text)


def at_least(name: str, value: float | None, bound: float, anchor: str = "") -> Verdict:
    """value ≥ bound: a floor showing the scenario provoked what it measures (rounds, levels, decisions), or a
    minimum the mechanism implies. `anchor` says which, for the report."""
    if value is None:
        return Verdict(name, False, None, bound, f"nothing measured ({anchor})" if anchor else "nothing measured")
    ok = value >= bound
    text = f"{value:.3g} {'≥' if ok else '<'} {bound:g}"
    return Verdict(name, ok, round(value, 4), bound, f"{text} ({anchor})" if anchor else text)


def reported_nothing(name: str, lines: Sequence[str], expected: Sequence[str] = ()) -> Verdict:
    """No error or warning line of QEMU's own (error_report / warn_report) but the `expected` ones (substrings):
    a migration that works has nothing to report. Anchor: the mechanism — QEMU reports only what went wrong or
    what it had to change (a parameter out of range, a channel error), and such a report is news even when the
    migration then completes."""
    unexpected = [line for line in lines if not any(e in line for e in expected)]
    return Verdict(name, not unexpected, unexpected[:5] if unexpected else 0, list(expected) or 0,
                   f"{len(unexpected)} unexpected report(s)" + (f", first: {unexpected[0]}" if unexpected else ""))


def equals(name: str, measured: Any, expected: Any, why: str = "") -> Verdict:
    """measured == expected, for a value the test knows exactly: a parameter it set, a count it made, a state."""
    ok = measured == expected
    text = f"{measured!r} {'==' if ok else '≠'} {expected!r}"
    return Verdict(name, ok, measured, expected, f"{text} ({why})" if why else text)


def holds_no_more(name: str, before: int, after: int, added: list[str]) -> Verdict:
    """A process holds nothing it did not hold before (open fds, threads: read from the host kernel, by kind):
    the reference is the same process before the migration, which the failure under test cannot move. `added`
    is what it holds beyond that; the counts are given for the reader."""
    text = f"{after} held after, {before} before the migration"
    return Verdict(name, not added, added, [], f"{text}; added: {', '.join(added)}" if added else text)


# The name of the verdict that sets QEMU's own byte count beside what the transport carried (a byte-counting relay,
# harness.migration.relay): a known bug that makes QEMU miscount names it (harness.qemu.known_bugs).
CARRIED_VS_REPORTED = "bytes the relay carried − ram.transferred"


def carried_matches_reported(carried: int, reported: int, slack: int, detail: str = "") -> Verdict:
    """What the relay carried from source to destination against what QEMU says it sent (ram.transferred, less
    anything the caller knows QEMU counts twice), within ±slack bytes — the sockets' count, outside QEMU."""
    anchor = f"the sockets' count: {carried} carried, {reported} reported" + (f" ({detail})" if detail else "")
    return within_band(CARRIED_VS_REPORTED, carried - reported, -slack, slack, anchor=anchor)


def within_band(name: str, value: float | None, low: float, high: float, anchor: str = "") -> Verdict:
    """low ≤ value ≤ high (e.g. measured/expected for an effect whose size follows from the mechanism)."""
    if value is None:
        return Verdict(name, False, None, [low, high], f"nothing measured ({anchor})" if anchor else "nothing measured")
    ok = low <= value <= high
    text = f"{value:.3g} {'within' if ok else 'outside'} [{low:g}, {high:g}]"
    return Verdict(name, ok, round(value, 4), [low, high], f"{text} ({anchor})" if anchor else text)


def not_measured(name: str, reason: str) -> Verdict:
    """An oracle that could not be computed in this set-up, recorded as such rather than left out: it passes (a
    test cannot fail on what it could not measure), and verdicts.json says what was not checked and why."""
    return Verdict(name, True, None, None, f"not measured: {reason}")
