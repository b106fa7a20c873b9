"""Guest kernel crashes on a QEMU's console, timestamped with the host's clock as they appear.

The guest boots `quiet loglevel=1`, but an oops switches the kernel's console to verbose (console_verbose() in
oops_begin), so its report reaches the console: the first line of a crash ("BUG: unable to handle page fault…",
"Oops: 0000 [#1]…", "general protection fault…", "kernel BUG at…", "Kernel panic - not syncing…") is what a
failed test names first (harness.analysis.diagnosis). A ConsoleWatcher per Machine polls the console file and
stamps each crash line with time.monotonic() when it was first seen, so a report can say how long after the
switchover it came.
"""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path

# (pattern, kind), most specific first: the kind names what the line announces.
CRASH_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"Kernel panic - not syncing"), "kernel panic"),
    (re.compile(r"kernel BUG at "), "kernel BUG"),
    (re.compile(r"\bBUG: "), "kernel BUG"),
    (re.compile(r"\bOops\b"), "kernel Oops"),
    (re.compile(r"\bgeneral protection fault\b"), "kernel Oops"),
    (re.compile(r"\binvalid opcode: "), "kernel Oops"),
    (re.compile(r"\bUnable to handle kernel\b"), "kernel Oops"),         # s390x, arm
    (re.compile(r"\bKernel stack overflow\b|\bdouble fault\b"), "kernel Oops"),
)
POLL_INTERVAL = 0.1


@dataclass(frozen=True)
class ConsoleCrash:
    """One crash line of a guest kernel: which console, what kind, the line, and when the host first saw it."""
    console: str        # the console file's name, e.g. destination.console.log
    kind: str           # "kernel Oops", "kernel BUG", "kernel panic"
    line: str
    t: float | None     # time.monotonic() when first seen; None when found only by reading the file afterwards


def crash_kind(line: str) -> str | None:
    """The kind of kernel crash `line` announces, or None."""
    for pattern, kind in CRASH_PATTERNS:
        if pattern.search(line):
            return kind
    return None


def crash_lines(text: str, console: str = "", t: float | None = None) -> list[ConsoleCrash]:
    """Every crash line in a console text, in order."""
    crashes = []
    for raw in text.splitlines():
        line = raw.strip()
        if (kind := crash_kind(line)) is not None:
            crashes.append(ConsoleCrash(console, kind, line, t))
    return crashes


class ConsoleWatcher:
    """Polls one console file (QEMU writes it) every POLL_INTERVAL s and keeps its crash lines with the host
    time each was first seen. Cheap: a stat and, when the file grew, one read of what is new."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._crashes: list[ConsoleCrash] = []
        self._lock = threading.Lock()
        self._reading = threading.Lock()   # the thread and a caller's poll() must not both advance the offset
        self._stop = threading.Event()
        self._offset = 0
        self._partial = ""
        self._thread: threading.Thread | None = None

    def start(self) -> "ConsoleWatcher":
        self._thread = threading.Thread(target=self._run, name=f"console-{self.path.name}", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(POLL_INTERVAL):
            self.poll()

    def poll(self) -> None:
        """Read what the console gained since the last poll (also called once more when the watcher stops)."""
        with self._reading:
            self._poll()

    def _poll(self) -> None:
        try:
            with open(self.path, "rb") as f:
                f.seek(self._offset)
                data = f.read()
        except OSError:
            return
        if not data:
            return
        now = time.monotonic()
        self._offset += len(data)
        text = self._partial + data.decode(errors="replace")
        complete, _, self._partial = text.rpartition("\n")
        found = crash_lines(complete, self.path.name, now)
        if found:
            with self._lock:
                self._crashes.extend(found)

    @property
    def crashes(self) -> list[ConsoleCrash]:
        with self._lock:
            return list(self._crashes)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(1.0)
        self.poll()
