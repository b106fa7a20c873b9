"""Fault suite: every case provokes one failure with a real QEMU and asserts the verdict names what happened.

The inner/ directory holds tests run only by test_interrupts.py in a child pytest (so it can be signalled); this
session never collects it. At the end of the session the suite checks that it left nothing behind — QEMU
processes, qmh-* directories and sockets, mounts — counting only what this pytest process (and its children)
created, so a concurrent run by someone else on the same host is never mistaken for a leak.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator

import pytest

from faults_leftovers import leftovers
from harness.migration.warm_boot import WarmBoots

# Fault files whose guests boot as any test's do and are broken only once running (a QEMU killed or its monitor
# closed mid-migration, a guest panic or a dropped SSH session, a full file system, a stalled or a port-racing
# migration): restored from the session's warm boot like the behaviour tests' (#35: ~2 s less per guest on TCG).
# Every other fault file boots cold: they break boots and launches on purpose, run child sessions, or wrap QEMU.
WARM_BOOTED = {"test_full_filesystem.py", "test_guest.py", "test_qemu_death.py", "test_stall.py", "test_tcp_port.py"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Fault cases boot cold (harness.migration.warm_boot) but those of WARM_BOOTED."""
    here = Path(__file__).parent
    for item in items:
        if here in item.path.parents and item.path.name not in WARM_BOOTED:
            item.add_marker(pytest.mark.cold_boot)


# inner/ is only ever run by test_interrupts.py, in a child pytest that sets QMH_INNER.
collect_ignore = [] if os.environ.get("QMH_INNER") else ["inner"]


@pytest.fixture(scope="session", autouse=True)
def nothing_left_behind(warm_boots: WarmBoots) -> Iterator[None]:
    """After the whole fault suite: no QEMU, no qmh-* dir (with its sockets), no mount from this run — but the
    session's warm-boot saves, which the behaviour tests of the same session made and `warm_boots` removes after
    this check (session fixtures end in reverse order)."""
    yield
    session_dir = str(warm_boots.directory) if warm_boots.directory is not None else None
    left = {what: [item for item in items if session_dir is None or not item.startswith(session_dir)]
            for what, items in leftovers(os.getpid()).items()}
    left = {what: items for what, items in left.items() if items}
    assert not left, f"the fault suite left things behind: {left}"
