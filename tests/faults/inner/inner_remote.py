"""Run only by tests/faults/test_remote_reap.py in a child pytest that it then SIGKILLs: boots a remote source QEMU
(test_remote's sshd in the link's source namespace), tells the outer test what it made (QMH_INNER_READY, JSON),
then waits to be killed, so nothing of the run gets to clean up."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from harness.hosts import netns

from harness.hosts import hosts_file
from harness.vm.machine import Machine
from tests.behaviour.test_remote import remote_host, remote_side, testbed  # noqa: F401 (fixtures)


@pytest.mark.link()
@pytest.mark.parametrize("remote_side", ["source"])
def test_holds_a_remote_qemu_until_killed(guest: Machine, link: netns.Link | None,
                                          remote_host: hosts_file.RemoteHost) -> None:
    assert link is not None and guest.process is not None
    ready = Path(os.environ["QMH_INNER_READY"])
    ready.with_suffix(".tmp").write_text(json.dumps({
        "pytest_pid": os.getpid(), "namespaces": [link.source_ns, link.destination_ns],
        "qemu_pid": guest.process.pid, "run_dir": guest.host.run_dir,
        "host_dir": str(Path(remote_host.work_dir).parent)}))
    ready.with_suffix(".tmp").rename(ready)
    time.sleep(600)
