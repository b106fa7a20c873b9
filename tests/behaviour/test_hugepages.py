"""Guest RAM in 2 MiB huge pages: postcopy sends each host page whole.

With hugepage-backed RAM one host page holds 512 target pages. The destination can place a page only whole
(UFFDIO_COPY of 2 MiB), so it gathers a host page's target pages in a temporary page and requires them to arrive
in sequence on their channel (migration/ram.c ram_load_postcopy: "Non-same host page detected"); the source must
therefore send every host page whole before it serves the next page request (ram_save_host_page). Every other test
here backs RAM with anonymous 4 KiB pages — one target page per host page — where none of this runs, and this host
keeps no hugepage pool: as root the test adds the pages it needs to the pool and gives them back
(harness.hosts.hugepages); without root and without free pages it skips, saying how many it needs.

Oracles and what anchors each:
  - completed, through postcopy-active, with ≥ 1 page request served (the run faulted pages in at all);
  - the seqinc invariant on the destination — the guest's own memory, which a host page placed with a stranger's
    target pages, or not placed, breaks.
regressions/postcopy-hugepage-sent-piecemeal.patch (the surviving `make mutate` mutant ram.c:2160: the host-page
loop returns after its first target page, so a page request is served in the middle of a host page) makes the
destination refuse the stream: caught.
"""

from __future__ import annotations

from typing import Iterator

import pytest

from harness.core.units import MiB
from harness.hosts import hugepages
from harness.migration.scenarios import postcopy_with_integrity
from harness.migration.testbed import Pair, Testbed

GUEST_MIB = 256                 # 128 huge pages a side: the pool this test adds is 512 MiB
POSTCOPY_BANDWIDTH = 32 * MiB   # as test_basics' postcopy: the stream queues, the guest's faults become requests


@pytest.fixture
def huge_page_backend() -> Iterator[str]:
    """The memory backend for guest RAM in 2 MiB huge pages, with the pages for both sides held in the host's pool
    for the test (set up before `testbed`, so its QEMUs are gone before the pages are given back)."""
    with hugepages.reserved(hugepages.pages_for(GUEST_MIB * MiB)) as pool:
        if not pool.available:
            pytest.skip(f"guest RAM in 2 MiB hugepages: {pool.reason}")
        yield hugepages.memfd_backend()


@pytest.mark.needs_userfaultfd
@pytest.mark.needs(capabilities=["postcopy-ram"], commands=["migrate-start-postcopy"])
def test_postcopy_of_hugepage_ram_places_whole_host_pages(huge_page_backend: str, testbed: Testbed) -> None:
    source = testbed.boot(memory_mib=GUEST_MIB, memory_backend=huge_page_backend)
    pair = Pair(source, testbed.incoming(source))
    postcopy_with_integrity(testbed, pair, postcopy_bandwidth=POSTCOPY_BANDWIDTH)
