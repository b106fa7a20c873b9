"""How a migration the harness cancelled ended, read from its recorded series (pure: no QEMU, no QMP).

A deliberate cancel is the scenario's own action, never the failure under test: 'cancelled' is its clean end, and
'failed' with a channel error is QEMU tearing the stream down under the cancel (10.0 sometimes reports that a few ms
after migrate_cancel). Anything else is not what the test asked for. Migration.cancel_and_wait() applies this.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from harness.analysis.samples import Series

# How QEMU describes the stream it is tearing down breaking under it (migration/qemu-file.c, channel errors):
# after migrate_cancel these mean the cancel did its work, not that the migration failed on its own.
CHANNEL_ERROR_MARKERS = ("Channel error", "Input/output error", "Broken pipe", "Unable to write to socket",
                         "Unable to read from socket", "Connection reset by peer")


@dataclass(frozen=True)
class CancelOutcome:
    """How a deliberate cancel ended, from the recorded series (see classify_cancel)."""
    kind: str                   # cancelled | failed-channel-error | failed-other | completed | not-ended
    status: str | None          # the source's final status
    error_desc: str | None
    t_cancel: float             # series time of the migrate_cancel mark
    t_end: float | None         # series time the terminal status was first seen
    accepted: bool              # the cancel did what the test asked

    @property
    def seconds_after_cancel(self) -> float | None:
        return None if self.t_end is None else self.t_end - self.t_cancel

    @property
    def channel_error_race(self) -> bool:
        return self.kind == "failed-channel-error"

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "seconds_after_cancel": self.seconds_after_cancel}


def is_channel_error(error_desc: str | None) -> bool:
    return bool(error_desc) and any(m in str(error_desc) for m in CHANNEL_ERROR_MARKERS)


def classify_cancel(series: Series, side: str = "source") -> CancelOutcome:
    """Classify the end of a migration the harness cancelled. Pure: works on a recorded Series.

    'cancelled' is the clean outcome. 'failed' whose error-desc is a channel/socket error is also the cancel's
    doing (migrate_cancel shuts the channel down; on 10.0.2 the migration thread sometimes reports that as
    'failed' ~3 ms later instead of 'cancelled') — accepted, but recorded as such. Any other failure, or
    'completed' (the cancel came too late), is not what the test asked for."""
    cancels = [m["t"] for m in series.marks if m.get("what") == "migrate_cancel"]
    if not cancels:
        raise ValueError("no migrate_cancel mark in the series: this migration was not cancelled by the harness")
    t_cancel = cancels[-1]
    status = series.status(side)
    error = series.latest(side).get("error-desc")
    t_end = next((t for t, s in series.status_changes(side) if t >= t_cancel and s == status), None)
    kind, accepted = cancel_end(status, error)
    return CancelOutcome(kind, status, error, t_cancel, None if kind == "not-ended" else t_end, accepted)


def announced_statuses(series: Series, side: str = "source") -> list[str]:
    """`side`'s status sequence as its MIGRATION events announced it, in order. Unlike status_changes, no polled
    sample is mixed in: QEMU emits these as it changes state, so even a state that lasts a millisecond shows."""
    return [str(e["data"].get("status")) for e in series.events.get(side, []) if e["event"] == "MIGRATION"]


def interrupted_status(series: Series, side: str = "source") -> str | None:
    """The status a migrate_cancel took `side` out of: the one announced just before the first 'cancelling' (None
    when the migration never entered 'cancelling'): what QEMU itself announced, whatever the harness's own timing
    of the cancel was."""
    statuses = announced_statuses(series, side)
    if "cancelling" not in statuses:
        return None
    index = statuses.index("cancelling")
    return statuses[index - 1] if index else None


def cancel_end(status: str | None, error_desc: str | None) -> tuple[str, bool]:
    """(kind, accepted) of a cancelled migration's status: the one rule of what a deliberate cancel may end in."""
    if status == "cancelled":
        return "cancelled", True
    if status == "failed":
        return ("failed-channel-error", True) if is_channel_error(error_desc) else ("failed-other", False)
    if status == "completed":
        return "completed", False
    return "not-ended", False
