"""Iteration rounds of a live migration, rebuilt from the source's trace log, and how iterative devices share them.

QEMU's migration thread calls qemu_savevm_state_iterate() once per round (trace `savevm_state_iterate`); in each
round every active iterative device gets one `save_live_iterate` call, bracketed by `savevm_section_start ID,
section_id N` and `savevm_section_end ID, section_id N -> RET` (RET 1: the device has nothing left for this stage,
0: not finished, <0: error). A round that used up the bandwidth budget is followed by a rate-limit wait (trace
`migration_rate_limit_pre`): devices after the one that exhausted it are skipped for that round by design, in every
QEMU — so such rounds are reported separately and do not count against the device that missed its turn.

Device ids are plain inputs ("ram", "dirty-bitmap", "s390-storage_attributes", VFIO's "0000:00:05.0/vfio", …):
nothing here knows what a particular device is.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable

from harness.analysis.trace import TraceRecord
from harness.core.units import ratio

ROUND_MARKER = "savevm_state_iterate"
RATE_LIMIT_WAIT = "migration_rate_limit_pre"
SECTION_START = "savevm_section_start"
SECTION_END = "savevm_section_end"
# Events that end the current round without starting one: the sections that follow them (switchover to postcopy,
# completion, non-iterative device state) belong to no round.
BOUNDARY_EVENTS = frozenset({"savevm_state_setup", "migration_thread_setup_complete", "postcopy_start",
                             "migration_completion_vm_stop", "migration_completion_postcopy_end",
                             "migration_thread_after_loop", "savevm_state_cleanup"})
# Enable these to rebuild rounds. Any other event in the log is ignored.
TRACE_EVENTS = (ROUND_MARKER, SECTION_START, SECTION_END, RATE_LIMIT_WAIT, *sorted(BOUNDARY_EVENTS))


@dataclass(frozen=True)
class Section:
    device: str
    section_id: int
    ret: int
    t: float | None


@dataclass
class Round:
    index: int
    t: float | None
    sections: list[Section] = field(default_factory=list)
    budget_exhausted: bool = False   # a rate-limit wait followed, before the next round began

    def section(self, device: str) -> Section | None:
        return next((s for s in self.sections if s.device == device), None)

    @property
    def devices(self) -> list[str]:
        return [s.device for s in self.sections]

    def to_json(self) -> dict[str, Any]:
        return {"index": self.index, "t": self.t, "budget_exhausted": self.budget_exhausted,
                "sections": [[s.device, s.ret] for s in self.sections]}


@dataclass
class IterationLog:
    rounds: list[Round]
    # Sections outside any iteration round: setup, switchover/completion, non-iterative device state.
    other_sections: int = 0
    # A start without its end (or the reverse): a torn log, or a device that failed mid-section.
    unmatched: int = 0

    def section_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for rnd in self.rounds:
            for section in rnd.sections:
                counts[section.device] = counts.get(section.device, 0) + 1
        return counts

    def to_json(self) -> dict[str, Any]:
        return {"rounds": len(self.rounds), "section_counts": self.section_counts(),
                "other_sections": self.other_sections, "unmatched": self.unmatched,
                "round_list": [r.to_json() for r in self.rounds]}


class _Builder:
    """Feeds trace records in order; a round runs from its marker to the next marker, rate-limit wait or boundary
    event, or to a device appearing in it twice."""

    def __init__(self, boundaries: frozenset[str]) -> None:
        self.boundaries = boundaries
        self.log = IterationLog([])
        self.current: Round | None = None
        self.latest: Round | None = None      # the round a rate-limit wait would follow (none after a boundary)
        self.pending: TraceRecord | None = None

    def close(self) -> None:
        if self.pending is not None:
            self.log.unmatched += 1
            self.pending = None
        self.current = None

    def feed(self, record: TraceRecord) -> None:
        if record.name == ROUND_MARKER:
            self.close()
            self.current = self.latest = Round(len(self.log.rounds), record.t)
            self.log.rounds.append(self.current)
        elif record.name == SECTION_START:
            self._start(record)
        elif record.name == SECTION_END:
            self._end(record)
        elif record.name == RATE_LIMIT_WAIT:
            self.close()
            if self.latest is not None:
                self.latest.budget_exhausted = True
        elif record.name in self.boundaries:
            self.close()
            self.latest = None

    def _start(self, record: TraceRecord) -> None:
        if self.pending is not None:          # the previous section never ended
            self.log.unmatched += 1
            self.pending = None
        if self.current is not None and self.current.section(record.fields["id"]) is not None:
            self.close()                      # a device iterates once per round: this is after the round
        if self.current is None:
            self.log.other_sections += 1
            return
        self.pending = record

    def _end(self, record: TraceRecord) -> None:
        start, self.pending = self.pending, None
        if self.current is None:
            return                            # the end of an "other" section (counted at its start)
        if start is None or (start.fields["id"], start.fields["section_id"]) != (
                record.fields["id"], record.fields["section_id"]):
            self.log.unmatched += 1 + (start is not None)
            return
        self.current.sections.append(Section(record.fields["id"], int(record.fields["section_id"]),
                                             int(record.fields["ret"]), start.t))


def rounds_from_trace(records: Iterable[TraceRecord],
                      boundaries: frozenset[str] = BOUNDARY_EVENTS) -> IterationLog:
    """Rebuild iteration rounds from trace records in log order (events not named here are ignored)."""
    builder = _Builder(boundaries)
    for record in records:
        builder.feed(record)
    builder.close()
    return builder.log


@dataclass(frozen=True)
class Coverage:
    """How `other` fared in the rounds where `lead` was iterated and still had work (returned 0)."""
    lead: str
    other: str
    lead_rounds: int          # rounds considered: lead iterated, not finished
    with_other: int           # … in which `other` was iterated too
    budget_exhausted: int     # … without `other`, but the round ran out of bandwidth budget (skip by design)
    skipped: int              # … without `other` although budget was left: `other` was held back
    lead_last_round: int | None
    other_first_round: int | None

    @property
    def eligible(self) -> int:
        """Rounds in which `other` had a turn it could have taken."""
        return self.with_other + self.skipped

    @property
    def fraction(self) -> float | None:
        return ratio(self.with_other, self.eligible)

    def describe(self) -> str:
        return (f"{self.other} iterated in {self.with_other}/{self.eligible} {self.lead} rounds with budget left "
                f"({self.lead_rounds} unfinished {self.lead} rounds, {self.budget_exhausted} ran out of bandwidth "
                f"budget; {self.other} first iterated in round {self.other_first_round}, {self.lead}'s last "
                f"round {self.lead_last_round})")

    def to_json(self) -> dict[str, Any]:
        return {"lead": self.lead, "other": self.other, "lead_rounds": self.lead_rounds,
                "with_other": self.with_other, "budget_exhausted": self.budget_exhausted, "skipped": self.skipped,
                "eligible": self.eligible, "fraction": self.fraction, "lead_last_round": self.lead_last_round,
                "other_first_round": self.other_first_round, "describe": self.describe()}


def coverage(log: IterationLog, lead: str, other: str, since: float | None = None) -> Coverage:
    """In the rounds (from time `since`, when `other` is known to be active) where `lead` was iterated and
    returned "not finished", count those that iterated `other` too.

    A device that does not hold back the ones after it leaves `skipped` at 0: its followers get a turn in every
    round that still has bandwidth budget. A serializing QEMU stops each round at the first unfinished device,
    so `other` appears only once `lead` has finished.
    """
    rounds = [r for r in log.rounds if since is None or (r.t is not None and r.t >= since)]
    considered = [r for r in rounds if (s := r.section(lead)) is not None and s.ret == 0]
    with_other = [r for r in considered if r.section(other) is not None]
    without = [r for r in considered if r.section(other) is None]
    exhausted = [r for r in without if r.budget_exhausted]
    lead_seen = [r.index for r in rounds if r.section(lead) is not None]
    other_seen = [r.index for r in rounds if r.section(other) is not None]
    return Coverage(lead, other, len(considered), len(with_other), len(exhausted), len(without) - len(exhausted),
                    lead_seen[-1] if lead_seen else None, other_seen[0] if other_seen else None)
