"""Host-side integrity: two dumps of guest RAM compared page by page, by per-page digests computed where each dump
is (harness.vm.ram takes the dumps with pmemsave; a remote QEMU's dump is digested on its host)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from harness.analysis import page_digests
from harness.core.units import PAGE

CHUNK = 1 << 16
# A dump's (size in bytes, sha256 of the whole, concatenated per-page digests): harness.analysis.page_digests.
PageDigests = tuple[int, str, bytes]


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


def compare_digests(source: PageDigests, destination: PageDigests, keep: int = 64) -> RamComparison:
    """Two dumps compared by their per-page digests (harness.analysis.page_digests), each computed where its dump
    is: a page differs when its digests do."""
    (size_s, sha_s, pages_s), (size_d, sha_d, pages_d) = source, destination
    if size_s != size_d:
        raise ValueError(f"RAM dumps differ in size: {size_s} vs {size_d}")
    differing, source_zero, first = 0, 0, []
    if pages_s != pages_d:
        width = page_digests.DIGEST_BYTES
        for offset in range(0, len(pages_s), CHUNK):   # CHUNK bytes of digests at a time: one compare each
            if pages_s[offset:offset + CHUNK] == pages_d[offset:offset + CHUNK]:
                continue
            for at in range(offset, min(offset + CHUNK, len(pages_s)), width):
                if pages_s[at:at + width] != pages_d[at:at + width]:
                    differing += 1
                    source_zero += pages_s[at:at + width] == page_digests.ZERO_PAGE_DIGEST
                    if len(first) < keep:
                        first.append(at // width)
    return RamComparison(differing == 0 and sha_s == sha_d, size_s, sha_s, sha_d, differing, first, source_zero)


def digest_dump(path: Path) -> PageDigests:
    """The per-page digests of a dump here."""
    return page_digests.digest_pages(str(path))


def compare_dumps(source: Path, destination: Path, keep: int = 64) -> RamComparison:
    """Two dumps here, page by page."""
    return compare_digests(digest_dump(source), digest_dump(destination), keep)
