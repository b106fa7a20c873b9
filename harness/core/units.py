"""Units and plain arithmetic, spelled once: QMP reports bytes and pages, the tests and reports think in MiB and
in ratios of two measured figures."""

from __future__ import annotations

MiB = 1 << 20

# The target page size (TARGET_PAGE_SIZE) of both guest arches this suite runs: x86_64 and s390x both use 4 KiB
# pages, so one constant serves RAM dumps (pmemsave is compared page by page), "bytes per page" oracles and the
# fallback where a query-migrate answer lacks ram.page-size. Another arch with a different page size needs its own
# row in harness/qemu/arch.py first.
PAGE = 4096


def interval_ms(start: float | None, end: float | None) -> float | None:
    """end − start, seconds → milliseconds, or None when either moment was not seen (unmeasured stays unmeasured)."""
    if start is None or end is None:
        return None
    return (end - start) * 1e3


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    """numerator / denominator, or None when either is missing or the denominator is 0: a figure that could not be
    measured stays unmeasured (an oracle then fails it as such) instead of raising or becoming 0 or inf."""
    if numerator is None or not denominator:
        return None
    return numerator / denominator
