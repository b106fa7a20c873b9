"""A pool of 2 MiB huge pages for a test whose guest RAM lives in them, made for the test where the host has none.

Hosts rarely keep a hugetlb pool (this one has `HugePages_Total: 0` and no hugetlbfs mounted), so hugepage-backed
guests — common in production, and the only ones where a host page is more than one target page — were always
skipped here and in CI. As root, `reserved(pages)` raises vm.nr_hugepages by what is missing for the test, and
gives back exactly that many when the test ends; guest RAM then uses memory-backend-memfd with hugetlb=on, which
needs no hugetlbfs mount. Without root and without enough free pages it says why, for the test to skip.

One test at a time holds the pool (an exclusive flock in the runtime dir, held for the test): two tests adjusting
vm.nr_hugepages at once could each give back the other's pages. A runner killed with SIGKILL cannot give its pages
back: the ledger file beside the lock records how many were added, and the next run's `reap_stale()` removes them
(under the same lock, so never while a live test holds it).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from pathlib import Path
from typing import Iterator

from harness.hosts.capabilities import HostCapability
from harness.hosts.parallel import runtime_dir

PAGE_BYTES = 2 << 20
SYSFS = Path("/sys/kernel/mm/hugepages/hugepages-2048kB")


def _read(name: str) -> int:
    return int((SYSFS / name).read_text())


def _set_pool(pages: int) -> None:
    (SYSFS / "nr_hugepages").write_text(f"{pages}\n")


def _ledger(root: Path) -> Path:
    return root / "hugepages-added.json"


def pages_for(ram_bytes: int, sides: int = 2) -> int:
    """2 MiB pages that `sides` guests of `ram_bytes` each back their RAM with."""
    return sides * -(-ram_bytes // PAGE_BYTES)


def memfd_backend() -> str:
    """The -object for guest RAM in 2 MiB huge pages without a hugetlbfs mount (memfd_create(MFD_HUGETLB))."""
    return f"memory-backend-memfd,hugetlb=on,hugetlbsize={PAGE_BYTES},share=on"


@contextlib.contextmanager
def _pool_lock(root: Path, wait: bool = True) -> Iterator[bool]:
    """The pool's lock; yields False (not held) when `wait` is off and a live test holds it."""
    with open(root / "hugepages.lock", "a+") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        yield True


def _give_back(root: Path) -> int:
    """Remove the pages a ledger says were added (the pool never below 0); the ledger goes. Returns how many."""
    ledger = _ledger(root)
    if not ledger.exists():
        return 0
    added = int(json.loads(ledger.read_text()).get("added", 0))
    _set_pool(max(0, _read("nr_hugepages") - added))
    ledger.unlink()
    return added


@contextlib.contextmanager
def reserved(pages: int, root: Path | None = None) -> Iterator[HostCapability]:
    """Hold `pages` free 2 MiB huge pages for the body: the host's own when it has them, else (root) the missing
    ones added to the pool and removed afterwards. Yields whether that worked and why not."""
    if not SYSFS.exists():
        yield HostCapability(False, "no 2 MiB hugepage support on this host")
        return
    root = root or runtime_dir()
    with _pool_lock(root):
        free = _read("free_hugepages")
        missing = pages - free
        if missing <= 0:
            yield HostCapability(True, f"{free} free 2 MiB hugepages on the host")
            return
        if os.geteuid() != 0:
            yield HostCapability(False, f"{free} free 2 MiB hugepages, {pages} needed (as root: "
                                        f"`sysctl vm.nr_hugepages={_read('nr_hugepages') + missing}`)")
            return
        before = _read("nr_hugepages")
        _ledger(root).write_text(json.dumps({"added": missing, "pid": os.getpid()}) + "\n")
        _set_pool(before + missing)
        # the kernel may grant fewer (too little free memory): the ledger holds what it granted
        _ledger(root).write_text(json.dumps({"added": _read("nr_hugepages") - before, "pid": os.getpid()}) + "\n")
        try:
            free = _read("free_hugepages")
            if free < pages:     # the kernel found too little contiguous memory
                yield HostCapability(False, f"only {free} of {pages} 2 MiB hugepages could be reserved")
            else:
                yield HostCapability(True, f"{missing} 2 MiB hugepages added to the pool for this test")
        finally:
            _give_back(root)


def reap_stale(root: Path | None = None) -> int:
    """Give back the pages a killed run added (its ledger), once no live test holds the pool. Returns how many."""
    if not SYSFS.exists():
        return 0
    root = root or runtime_dir()
    if not _ledger(root).exists():
        return 0
    with _pool_lock(root, wait=False) as held:
        return _give_back(root) if held else 0     # a live test holds the pool: it gives its own pages back
