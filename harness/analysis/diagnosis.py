"""A failed test's message, in the order a person needs it: what broke first, then what the oracles saw.

1. a guest kernel crash (oops, BUG, panic), on whichever side — "destination guest: kernel Oops 12 s after
   switchover: BUG: unable to handle page fault …" — whatever step noticed it (an SSH command that lost its
   session, a seqcheck whose result file never appeared);
2. a QEMU that exited;
3. the failing verdicts, the host RAM comparison first ("host RAM hashes equal: guest RAM differs in N pages");
4. the error that ended the test body, with what is known of the guest it could not reach.
Pure: harness.migration.postmortem gathers the facts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from harness.analysis.oracles import Verdict, failure_line

# The verdict a RAM comparison records (oracles.ram_identical): named first among the failing verdicts.
RAM_VERDICT = "host RAM hashes equal"
MAX_VERDICT_LINES = 6


@dataclass(frozen=True)
class Reference:
    """An instant a crash time is told against: what it was and when (time.monotonic())."""
    what: str        # "switchover", "the start of the migration", "boot"
    t: float


def crash_headline(machine: str, kind: str, line: str, t: float | None, reference: Reference | None) -> str:
    """"destination guest: kernel Oops 12 s after switchover: <line>"."""
    when = ""
    if t is not None and reference is not None:
        delta = t - reference.t
        when = (f" {delta:.0f} s after {reference.what}" if delta >= 0
                else f" {-delta:.0f} s before {reference.what}")
    return f"{machine} guest: {kind}{when}: {line}"


def verdict_line(verdict: Verdict) -> str:
    return failure_line(verdict.to_json())


def ordered_failures(verdicts: Sequence[Verdict]) -> list[Verdict]:
    """The failing verdicts, the RAM comparison first, the rest in the order they were recorded."""
    failed = [v for v in verdicts if v.fails_test]
    return sorted(failed, key=lambda v: not v.name.endswith(RAM_VERDICT))


def failure_message(crashes: Sequence[str], exits: Sequence[str], verdicts: Sequence[Verdict],
                    error: str | None, context: Sequence[str] = ()) -> str:
    """One message: the first line says what broke first; each later line adds what else was found."""
    lines = [*crashes, *exits]
    failed = ordered_failures(verdicts)
    lines += [verdict_line(v) for v in failed[:MAX_VERDICT_LINES]]
    if len(failed) > MAX_VERDICT_LINES:
        lines.append(f"… and {len(failed) - MAX_VERDICT_LINES} more failing verdicts (verdicts.json)")
    if error:
        first, *rest = error.strip().splitlines() or [""]
        lines.append(f"the test stopped at: {first}" if lines else first)
        lines += rest
    lines += context
    return "\n".join(lines) if lines else "failed"
