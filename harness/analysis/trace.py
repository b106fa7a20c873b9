"""Parse QEMU `log` trace-backend output (`-trace enable=EV -D FILE -msg timestamp=on`).

Lines look like `PID@SEC.USEC:event_name args…`; without `-msg timestamp=on` just `event_name args…`. Anything
else (QEMU warnings, torn last lines of a killed process) is counted and skipped, never fatal.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

_LINE = re.compile(r"^(?:(?P<pid>\d+)@(?P<sec>\d+\.\d+):)?(?P<name>[a-z][a-z0-9_]*)(?: (?P<args>.*))?$")

# Argument layouts (from QEMU's trace-events files) of the events the oracles read.
_ARGS = {
    "savevm_section_start": re.compile(r"^(?P<id>\S+), section_id (?P<section_id>\d+)"),
    "savevm_section_end": re.compile(r"^(?P<id>\S+), section_id (?P<section_id>\d+) -> (?P<ret>-?\d+)"),
    "savevm_section_skip": re.compile(r"^(?P<id>\S+), section_id (?P<section_id>\d+)"),
    "migrate_pending_exact": re.compile(
        r"^exact pending size (?P<size>\d+) \(pre = (?P<pre>\d+) post=(?P<post>\d+)\)"),
    "migrate_pending_estimate": re.compile(
        r"^estimate pending size (?P<size>\d+) \(pre = (?P<pre>\d+) post=(?P<post>\d+)\)"),
    # A range of guest RAM given back to the host (virtio-balloon free page reporting, postcopy discards).
    "ram_block_discard_range": re.compile(r"^(?P<block>\S+)@\S+ \+ 0x(?P<length>[0-9a-fA-F]+):"),
    # Once per multifd channel as a socket, and once more as a TLS channel when its handshake completed.
    "multifd_set_outgoing_channel": re.compile(r"^ioc=\S+ ioctype=(?P<ioctype>\S+)"),
}


@dataclass(frozen=True)
class TraceRecord:
    name: str
    t: float | None       # host wall-clock seconds (with -msg timestamp=on)
    pid: int | None
    args: str
    fields: dict[str, str] = field(default_factory=dict)


@dataclass
class TraceLog:
    records: list[TraceRecord]
    skipped: int = 0

    def named(self, *names: str) -> list[TraceRecord]:
        wanted = set(names)
        return [r for r in self.records if r.name in wanted]

    def count(self, name: str) -> int:
        return sum(1 for r in self.records if r.name == name)


def parse_lines(lines: Iterable[str], known_events: frozenset[str] | None = None) -> TraceLog:
    """`known_events` (e.g. Features.trace_events) rejects lines that merely look like events."""
    records: list[TraceRecord] = []
    skipped = 0
    for raw in lines:
        line = raw.rstrip("\n")
        match = _LINE.match(line)
        if not match or (known_events is not None and match["name"] not in known_events):
            skipped += bool(line.strip())
            continue
        name, args = match["name"], match["args"] or ""
        layout = _ARGS.get(name)
        parsed = layout.match(args) if layout else None
        if layout is not None and parsed is None:
            skipped += 1
            continue
        records.append(TraceRecord(
            name=name,
            t=float(match["sec"]) if match["sec"] else None,
            pid=int(match["pid"]) if match["pid"] else None,
            args=args,
            fields=parsed.groupdict() if parsed else {},
        ))
    return TraceLog(records, skipped)


def parse_file(path: Path, known_events: frozenset[str] | None = None) -> TraceLog:
    if not path.exists():
        return TraceLog([], 0)
    with open(path, errors="replace") as handle:
        return parse_lines(handle, known_events)
