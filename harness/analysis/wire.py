"""QEMU's byte counters held to what a transport counted outside QEMU, where the count is not the stream itself.

The relay (harness.migration.relay) counts the stream's own bytes: there, carried − ram.transferred is 0 to the
byte and the page-lifecycle test holds it to ±4 KiB. Over a link between network namespaces the relay would take
the stream off the link, so the kernel's counter of the source's veth end stands in: it counts frames, the stream
plus its TCP/IP/Ethernet headers (14 + 20 + 32 bytes per segment of up to 1448, less with GSO's large segments)
plus the acknowledgements of what the destination sends back — at least what QEMU sent, and not much more.
Pure: numbers in, a Verdict out.
"""

from __future__ import annotations

from harness.analysis.oracles import Verdict, within_band

# Headers per full segment: (14 + 20 + 32) / 1448 = 4.6 % with every segment on the wire alone (no GSO); a
# little more for the return path's acknowledgements and partly filled segments. Measured: 1.0015 (multifd page
# lifecycle), 1.0034 (precopy); make flake N=10 of test_link's precopy (session 12): 10/10, 1.0014 … 1.0105 (GSO
# keeps it far below the per-segment figure). regressions/link-async-pages-counted-twice: 0.5026.
LINK_OVERHEAD_MAX = 1.06


def link_vs_transferred(link_sent: int | None, transferred: int | None,
                        high: float = LINK_OVERHEAD_MAX) -> Verdict:
    """The source veth's tx bytes over the migration / QEMU's ram.transferred within [1, high]: below 1, QEMU
    counted bytes the link never carried; above `high`, bytes crossed the link that QEMU did not count (more than
    headers explain)."""
    ratio = link_sent / transferred if link_sent is not None and transferred else None
    return within_band("bytes the link carried / ram.transferred", ratio, 1.0, high,
                       anchor=f"the kernel's veth tx counter: {link_sent} bytes of frames, {transferred} reported; "
                              f"TCP/IP/Ethernet headers on top")


def bytes_per_page_beyond_data(carried: int, normal: int, duplicate: int, page_size: int, high: float) -> Verdict:
    """QEMU's page counts held to the bytes the transport carried: (carried − ram.normal × page size) over all
    pages counted (normal + duplicate), within [0, high], for a stream that sends each normal page whole (no
    compression, no xbzrle, no TLS records): what is left per page is its header (legacy: 8 bytes, + 1 for a zero
    page; multifd: an 8-byte offset in a packet) and the device state spread thin. Below 0, QEMU counts normal
    pages it did not send; far above, it sent whole pages it counted as zero pages (or not at all)."""
    pages = normal + duplicate
    left = carried - normal * page_size
    per_page = left / pages if pages else None
    return within_band("bytes carried per page beyond the normal pages' data", per_page, 0.0, high,
                       anchor=f"the transport's count: {carried} carried, ram.normal {normal} × {page_size}, "
                              f"ram.duplicate {duplicate}")
