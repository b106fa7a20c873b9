"""Live progress: a migration running longer than --progress-interval seconds prints one terminal line per interval
(and one when it ends), through a duplicate of the real terminal's fd taken before output capture."""

from __future__ import annotations

import logging
import os
import threading
import time

import pytest

from harness.migration.migrate import TERMINAL_STATUSES
from harness.migration.testbed import Testbed
from harness.report.artefacts import progress_line

log = logging.getLogger("harness")
PROGRESS_FD_KEY = pytest.StashKey[int]()


def pytest_configure(config: pytest.Config) -> None:
    # Output capture is suspended here (it covers only conftest loading and each test), so fd 1 is the real
    # terminal or CI log: a duplicate of it lets progress lines through while a test's output is captured.
    # An xdist worker's fd 1 is /dev/null (execnet talks over the original): its progress goes to stderr, which
    # it shares with the controller.
    if config.getoption("--progress-interval", 0) > 0:
        try:
            config.stash[PROGRESS_FD_KEY] = os.dup(2 if hasattr(config, "workerinput") else 1)
        except OSError:
            pass


def pytest_unconfigure(config: pytest.Config) -> None:
    fd = config.stash.get(PROGRESS_FD_KEY, None)
    if fd is not None:
        os.close(fd)
        del config.stash[PROGRESS_FD_KEY]


class MigrationProgress:
    """Every `interval` seconds, one terminal line per migration of this test that has run longer than that,
    and one when such a migration ends; short migrations print nothing."""

    def __init__(self, bed: Testbed, nodeid: str, fd: int, interval: float) -> None:
        self.bed, self.fd, self.interval = bed, fd, interval
        self.prefix = nodeid.rsplit("/", 1)[-1]
        self._reported: dict[int, float] = {}   # id(migration) -> elapsed time of its last line
        self._ended: set[int] = set()
        self._stop = threading.Event()
        self._first_line = True
        self._thread = threading.Thread(target=self._run, name="harness-progress", daemon=True)

    def start(self) -> "MigrationProgress":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.wait(1.0):  # a periodic display tick, not synchronisation
            try:
                self.tick(time.monotonic())
            except Exception as exc:  # progress output must never disturb a test
                log.debug("progress: %s", exc)

    def tick(self, now: float) -> None:
        for migration in list(self.bed.migrations):
            if migration.sampler is None or id(migration) in self._ended:
                continue
            series = migration.series
            elapsed = now - series.t0
            finished = (migration.name in self.bed.artefacts.series
                        or series.status() in TERMINAL_STATUSES)
            key = id(migration)
            if finished:
                if key in self._reported:
                    self._write(progress_line(migration.name, series, elapsed) + " (ended)")
                self._ended.add(key)
            elif elapsed >= self._reported.get(key, 0.0) + self.interval:
                self._reported[key] = elapsed
                self._write(progress_line(migration.name, series, elapsed))

    def _write(self, line: str) -> None:
        # The first line of a test starts on a fresh line: pytest's progress dots or test id may precede it.
        text = ("\n" if self._first_line else "") + f"  [{self.prefix}] {line}\n"
        self._first_line = False
        os.write(self.fd, text.encode(errors="replace"))


def start_progress(request: pytest.FixtureRequest, bed: Testbed) -> MigrationProgress | None:
    """The test's progress lines, if --progress-interval asks for them and the terminal's fd was kept."""
    fd = request.config.stash.get(PROGRESS_FD_KEY, None)
    interval = request.config.getoption("--progress-interval")
    if fd is None or not interval or interval <= 0:
        return None
    return MigrationProgress(bed, request.node.nodeid, fd, interval).start()
