"""QEMU startup failures end at once with QEMU's own error (QemuExited), not after a QMP connect timeout.

Before: the harness stopped watching the process once the QMP socket file existed (QEMU leaves it behind when it
exits) and then waited out a 30 s connect timeout."""

from __future__ import annotations

import dataclasses
import socket
import time
from pathlib import Path
from typing import Iterator

import pytest

from harness.core import process as process_module
from harness.vm.exits import QemuExited
from harness.vm.machine import Machine
from harness.migration.testbed import Testbed

# Generous for a loaded 2-core host: QEMU itself needs ~0.1–0.3 s to parse its options and exit.
REPORTED_WITHIN_S = 3.0


def launch_failure(testbed: Testbed, name: str, **overrides: object) -> tuple[QemuExited, float]:
    image = overrides.pop("image", testbed.env.image)
    machine = Machine(testbed.env.source_binary, image, testbed.config(**overrides), name,  # type: ignore[arg-type]
                      testbed.artefacts.directory)
    start = time.monotonic()
    with machine, pytest.raises(QemuExited) as caught:
        machine.launch()
    return caught.value, time.monotonic() - start


@pytest.mark.timeout(30)
def test_missing_kernel_is_reported_at_once_with_qemus_error(testbed: Testbed) -> None:
    image = dataclasses.replace(testbed.env.image, kernel=Path("/nonexistent/vmlinuz"))
    exc, took = launch_failure(testbed, "no-kernel", image=image)
    assert took < REPORTED_WITHIN_S, f"took {took:.1f}s"
    assert exc.returncode == 1 and "/nonexistent/vmlinuz" in str(exc), str(exc)
    assert "no-kernel" in str(exc) and "exit status 1" in str(exc)


@pytest.mark.timeout(30)
def test_bad_device_is_reported_at_once_with_qemus_error(testbed: Testbed) -> None:
    exc, took = launch_failure(testbed, "bad-device", extra_args=("-device", "no-such-device-model"))
    assert took < REPORTED_WITHIN_S, f"took {took:.1f}s"
    assert "no-such-device-model" in exc.output_tail and "is not a valid device model name" in str(exc), str(exc)


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A listening socket on a loopback port: QEMU's hostfwd cannot bind it."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield int(sock.getsockname()[1])


@pytest.mark.timeout(60)
def test_ssh_port_taken_is_retried_with_another_port(testbed: Testbed, taken_port: int,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    # The race this simulates: another process binds the probed port before QEMU does. The first probe returns
    # the taken port, later probes the real thing.
    ports = iter([taken_port])
    real = process_module.free_tcp_port
    monkeypatch.setattr(process_module, "free_tcp_port", lambda: next(ports, None) or real())
    start = time.monotonic()
    machine = testbed.launch("hostfwd-retry", testbed.config(memory_mib=128))
    took = time.monotonic() - start
    assert machine.is_running() and machine.ssh_port != taken_port
    log = machine.files.output.read_text()
    assert log.lower().count("could not set up host forwarding") == 1, log
    assert took < 10, f"the retry took {took:.1f}s: the failed attempt was not noticed at once"


@pytest.mark.timeout(60)
def test_ssh_port_taken_every_time_ends_with_qemus_error(testbed: Testbed, taken_port: int,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(process_module, "free_tcp_port", lambda: taken_port)
    exc, took = launch_failure(testbed, "hostfwd-taken")
    assert took < Machine.HOSTFWD_ATTEMPTS * REPORTED_WITHIN_S, f"took {took:.1f}s"
    assert f"{taken_port}" in str(exc) and "host forwarding" in str(exc).lower(), str(exc)
