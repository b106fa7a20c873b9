"""Per-page digests of a RAM dump, computed where the dump is: here (harness.analysis.integrity) or, for a QEMU on
another host, on that host — this module's source is sent there and run by its python3 (stdlib only, no harness
import), so only the digests cross the network, not the dump (512 MiB took ~110 s over SFTP; its digests ~1 MiB,
far less once compressed: a zero page's digest repeats).

Output of `python3 - DUMP` with this source on stdin: one line "SIZE SHA256", then the zlib-compressed, base64
page digests (DIGEST_BYTES each, in page order) on the next line."""

from __future__ import annotations

import base64
import hashlib
import sys
import zlib

PAGE = 4096               # the dump's page size (harness.core.units.PAGE; duplicated: this runs without the harness)
DIGEST_BYTES = 16         # blake2b-128 per page: a collision between two differing pages is out of reach
CHUNK = 1 << 20
_ZERO_CHUNK = bytes(CHUNK)
ZERO_PAGE_DIGEST = hashlib.blake2b(bytes(PAGE), digest_size=DIGEST_BYTES).digest()


def digest_pages(path: str) -> tuple[int, str, bytes]:
    """(size in bytes, sha256 of the whole dump, the concatenated page digests) of the file at `path`."""
    whole = hashlib.sha256()
    pages = bytearray()
    size = 0
    with open(path, "rb", buffering=0) as f:
        while chunk := f.read(CHUNK):
            size += len(chunk)
            whole.update(chunk)
            if chunk == _ZERO_CHUNK:   # most of an idle guest: one memcmp per MiB
                pages += ZERO_PAGE_DIGEST * (CHUNK // PAGE)
                continue
            view = memoryview(chunk)
            for page in range(0, len(chunk), PAGE):
                pages += hashlib.blake2b(view[page:page + PAGE], digest_size=DIGEST_BYTES).digest()
    return size, whole.hexdigest(), bytes(pages)


def encode(size: int, sha256: str, pages: bytes) -> str:
    return f"{size} {sha256}\n{base64.b64encode(zlib.compress(pages, 6)).decode()}\n"


def decode(text: str) -> tuple[int, str, bytes]:
    """encode()'s output (the remote run's stdout) back into digest_pages()'s tuple; ValueError if malformed."""
    lines = text.split("\n")
    if len(lines) < 2:
        raise ValueError(f"page digests: expected two lines, got {text[:200]!r}")
    size_text, sha256 = lines[0].split()
    pages = zlib.decompress(base64.b64decode(lines[1]))
    size = int(size_text)
    if len(pages) != -(-size // PAGE) * DIGEST_BYTES:
        raise ValueError(f"page digests: {len(pages)} bytes of digests for a {size}-byte dump")
    return size, sha256, pages


if __name__ == "__main__":
    sys.stdout.write(encode(*digest_pages(sys.argv[1])))
