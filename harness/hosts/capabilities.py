"""Facts about the host that decide what can run (userfaultfd for postcopy, hugepages, O_DIRECT), and host-side
measurements of a QEMU's threads."""

from __future__ import annotations

import errno
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from harness.analysis.series import ThreadTimes


@dataclass(frozen=True)
class HostCapability:
    available: bool
    reason: str


def userfaultfd() -> HostCapability:
    """Postcopy needs userfaultfd: root (CAP_SYS_PTRACE), vm.unprivileged_userfaultfd=1 or /dev/userfaultfd."""
    if os.geteuid() == 0:
        return HostCapability(True, "userfaultfd available: running as root")
    sysctl = Path("/proc/sys/vm/unprivileged_userfaultfd")
    if sysctl.exists() and sysctl.read_text().strip() == "1":
        return HostCapability(True, "userfaultfd available: vm.unprivileged_userfaultfd=1")
    if os.access("/dev/userfaultfd", os.R_OK | os.W_OK):
        return HostCapability(True, "userfaultfd available: /dev/userfaultfd is accessible")
    return HostCapability(False, "postcopy needs userfaultfd: run as root or `sysctl vm.unprivileged_userfaultfd=1`")


def hugepages_2m() -> HostCapability:
    free = Path("/sys/kernel/mm/hugepages/hugepages-2048kB/free_hugepages")
    if not free.exists():
        return HostCapability(False, "no 2 MiB hugepage support on this host")
    count = int(free.read_text())
    mounted = any(line.split()[2] == "hugetlbfs" for line in Path("/proc/mounts").read_text().splitlines())
    if count == 0 or not mounted:
        return HostCapability(False, f"{count} free 2 MiB hugepages, hugetlbfs {'mounted' if mounted else 'not mounted'}")
    return HostCapability(True, f"{count} free 2 MiB hugepages")


def o_direct_refusal(directory: Path) -> str | None:
    """Why this directory's filesystem refuses O_DIRECT (as QEMU's direct-io would find out), or None."""
    probe = directory / "o_direct.probe"
    try:
        fd = os.open(probe, os.O_CREAT | os.O_WRONLY | os.O_DIRECT, 0o600)
    except OSError as exc:
        if exc.errno in (errno.EINVAL, errno.EOPNOTSUPP):
            return f"filesystem of {directory} refuses O_DIRECT: {exc.strerror}"
        raise
    os.close(fd)
    probe.unlink()
    return None


def thread_times(pid: int, tid: int) -> ThreadTimes:
    """The kernel's scheduler accounting of one thread: /proc/PID/task/TID/schedstat gives nanoseconds on a CPU and
    nanoseconds waiting on a run queue (CONFIG_SCHED_INFO, on in every distribution kernel)."""
    fields = Path(f"/proc/{pid}/task/{tid}/schedstat").read_text().split()
    return ThreadTimes(time.monotonic(), int(fields[0]) / 1e9, int(fields[1]) / 1e9)


class ThreadTimesSampler:
    """Reads thread_times(pid, tid) every `interval` s in a background thread while the `with` block runs; a
    thread that has gone (QEMU exited) ends the sampling, it does not raise."""

    def __init__(self, pid: int, tid: int, interval: float = 0.1) -> None:
        self.pid, self.tid, self.interval = pid, tid, interval
        self.samples: list[ThreadTimes] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"schedstat-{tid}", daemon=True)

    def _run(self) -> None:
        while True:
            try:
                self.samples.append(thread_times(self.pid, self.tid))
            except (OSError, ValueError, IndexError):
                return
            if self._stop.wait(self.interval):
                return

    def __enter__(self) -> "ThreadTimesSampler":
        self._thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        try:
            self.samples.append(thread_times(self.pid, self.tid))
        except (OSError, ValueError, IndexError):
            pass
