"""pytest-xdist roles: the controller (distributes the run, runs no test, writes the index) and its workers (run the
tests, each in the run directory the controller named): which role this process has, and what the controller hands a
worker (node.workerinput). Who uses them: harness.plugin.session (a worker's session check, reaping), results (the
run directory, the index), fixtures (artefacts_root, per-worker files)."""

from __future__ import annotations

import socket
from typing import Any

import pytest

# What a controller hands its xdist workers (node.workerinput): the run directory's name, and its host.
RUN_NAME_INPUT = "qmh_run_name"
HOST_INPUT = "qmh_controller_host"
UNUSABLE_OUTPUT = "qmh_session_unusable"     # a worker's session check's one line, back to the controller
RUN_NAME_KEY = pytest.StashKey[str]()


def worker_id(config: pytest.Config) -> str | None:
    """This process's xdist worker id (gw0, gw1, …), None in a serial run or the controller."""
    workerinput = getattr(config, "workerinput", None)
    return None if workerinput is None else str(workerinput.get("workerid"))


def is_controller(config: pytest.Config) -> bool:
    """This process distributes the run to xdist workers and runs no test itself."""
    return (not hasattr(config, "workerinput") and config.getoption("dist", "no") != "no"
            and bool(config.getoption("tx", None)))


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: Any) -> None:
    """xdist, on the controller, before a worker starts: the run directory's name and where the controller runs."""
    node.workerinput[RUN_NAME_INPUT] = node.config.stash[RUN_NAME_KEY]
    node.workerinput[HOST_INPUT] = socket.gethostname()
