"""Facts about the host that decide what can run: userfaultfd for postcopy, hugepages."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


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
