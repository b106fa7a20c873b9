"""Host-side integrity: two dumps of guest RAM compared page by page (harness.vm.ram takes the dumps with pmemsave)."""

from __future__ import annotations

import hashlib
import mmap
from dataclasses import dataclass, field
from pathlib import Path

from harness.core.units import PAGE
CHUNK = 1 << 20
ZERO_PAGE = bytes(PAGE)


@dataclass(frozen=True)
class RamComparison:
    equal: bool
    size_bytes: int
    source_sha256: str
    destination_sha256: str
    differing_pages: int
    first_differing: list[int] = field(default_factory=list)  # guest-physical page frame numbers
    # Of the differing pages, those all zero on the source: a page the source's host discarded after it was sent
    # (a free page the guest reported: virtio-balloon free-page-reporting) reads zero there, stale data here.
    source_zero_pages: int = 0

    def describe(self) -> str:
        if self.equal:
            return f"guest RAM identical ({self.size_bytes >> 20} MiB, sha256 {self.source_sha256[:16]}…)"
        pfns = ", ".join(hex(p) for p in self.first_differing[:8])
        zero = f", {self.source_zero_pages} of them zero on the source" if self.source_zero_pages else ""
        return (f"guest RAM differs in {self.differing_pages} of {self.size_bytes // PAGE} pages{zero} "
                f"(first pfns: {pfns})")

    def to_json(self) -> dict[str, object]:
        return self.__dict__.copy()


def compare_dumps(source: Path, destination: Path, keep: int = 64) -> RamComparison:
    with open(source, "rb") as fs, open(destination, "rb") as fd:
        size_s, size_d = fs.seek(0, 2), fd.seek(0, 2)
        if size_s != size_d:
            raise ValueError(f"RAM dumps differ in size: {size_s} vs {size_d}")
        hs, hd = hashlib.sha256(), hashlib.sha256()
        differing, source_zero, first = 0, 0, []
        with mmap.mmap(fs.fileno(), 0, access=mmap.ACCESS_READ) as ms, \
                mmap.mmap(fd.fileno(), 0, access=mmap.ACCESS_READ) as md:
            for offset in range(0, size_s, CHUNK):
                a, b = ms[offset:offset + CHUNK], md[offset:offset + CHUNK]
                hs.update(a)
                hd.update(b)
                if a != b:
                    for page in range(0, len(a), PAGE):
                        if a[page:page + PAGE] != b[page:page + PAGE]:
                            differing += 1
                            source_zero += a[page:page + PAGE] == ZERO_PAGE
                            if len(first) < keep:
                                first.append((offset + page) // PAGE)
    return RamComparison(differing == 0, size_s, hs.hexdigest(), hd.hexdigest(), differing, first, source_zero)
