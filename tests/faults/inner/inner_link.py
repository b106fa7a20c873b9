"""Run only by tests/faults/test_netns_reap.py in a child pytest that it then SIGKILLs: makes a test link (two
network namespaces and their veth), tells the outer test their names (QMH_INNER_READY, JSON), then waits to be
killed, so nothing of the run gets to clean up."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from harness.hosts import netns
@pytest.mark.link()
def test_holds_a_link_until_killed(link: netns.Link | None) -> None:
    assert link is not None
    ready = Path(os.environ["QMH_INNER_READY"])
    ready.with_suffix(".tmp").write_text(json.dumps({"pytest_pid": os.getpid(),
                                                     "namespaces": [link.source_ns, link.destination_ns]}))
    ready.with_suffix(".tmp").rename(ready)
    time.sleep(600)
