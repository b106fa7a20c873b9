"""Unit tests of harness.core.process.main_thread_state: where a local QEMU whose monitor stopped answering waits
(the stall report's evidence, e.g. a main loop blocked reading a socket)."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from harness.core.process import kernel_stack, main_thread_state


def test_kernel_stack_reads_the_innermost_functions() -> None:
    stack = ("[<0>] wait_woken+0x89/0x90\n[<0>] sk_wait_data+0x172/0x190\n[<0>] tcp_recvmsg_locked+0x225/0x9e0\n"
             "[<0>] tcp_recvmsg+0xaf/0x220\n")
    assert kernel_stack(stack, frames=3) == "wait_woken <- sk_wait_data <- tcp_recvmsg_locked"
    assert kernel_stack("") == ""


def test_main_thread_state_says_where_a_blocked_process_waits() -> None:
    """What the stall report adds for a local QEMU whose monitor stopped answering (a blocking read here)."""
    reader = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 10
        while "pipe_read" not in (state := main_thread_state(reader.pid)) and time.monotonic() < deadline:
            time.sleep(0.05)
        if not state:
            pytest.skip("this kernel shows neither /proc/PID/task/TID/stack nor wchan")
        assert "pipe_read" in state, state
    finally:
        reader.kill()
        reader.wait()
    assert main_thread_state(reader.pid) == ""      # gone
