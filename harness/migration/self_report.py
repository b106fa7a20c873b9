"""What QEMU reports about its own completed migration, held to the host's view — for every migration of every test.

Testbed records these verdicts when a migration finishes (its `on_finish`), and the plugin finishes every migration
of a test once its body has ended, before the verdicts are judged: no test can forget them. The comparisons are
pure (harness.analysis.timing); the bands, and the runs they were calibrated on, are here.

A migration that did not complete (cancelled, failed, cut short by the test) has no final figures: nothing is
judged. One whose series lacks what a comparison needs (no reply after completion, no 'active' event) records
the comparison as not measured, with the reason.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from harness.analysis import oracles, timing
from harness.analysis.oracles import Verdict

if TYPE_CHECKING:
    from harness.migration.migrate import Migration

# Calibration (unmodified 10.0.2, TCG, 2 shared cores): 33 completed migrations, all passing — 5 `make flake` runs
# of 5 tests (page-lifecycle precopy, multifd-zpd-multifd, postcopy, tls-precopy; basics precopy 8 MiB/s; the
# session's CPU lock allowed no more before the deadline) and 8 single runs of 8 more (B3 file save, background
# snapshot, basics postcopy recovery, free page reporting, precopy and page lifecycle over a link), 0.9 s – 40 s
# long. Figures min … median … max:
# Session 12, pooled (`python -m harness.tools.flake --margins-only --across-tests --results …`): 169 completed
# migrations of the unmodified 10.0.2, all passing — a clean-clone make check (40), make matrix's 10.0 → 10.0 pair
# (53) and 76 from make flake N=10 runs of B2, dirty rate, suspend, downtime, link, page lifecycle and TLS:
# total-time 0.986 … 1.0 … 1.0; mbps 0.946 … 0.999 … 1.0; setup-time 0 … 2 … 93 ms, each within host + 10 ms
# (closest: 93 ms against 108).
#
# total-time over the host's time from `migrate` to the source's completed event: ≤ 1 on the mechanism (QEMU's
# clock starts once the command has arrived) plus ms rounding. Measured 0.9991 … 0.9999 … 1.0 (and, before, 0.997 …
# 1.0 in test_basics' downtime case, 10 runs). A total-time counted from the last iteration
# (regressions/basic-total-time-misreported): 0.0216 (20 ms against 926 ms).
# The low end scales by (`migrate` returned → completed) / (sent → completed) (harness.analysis.timing): session
# 13's clean-clone CI run, on a host shared with a mutation run, measured 0.7803 for an exec: pipe migration whose
# `migrate` QEMU read 225 ms after it was sent (setup-time 3 ms, migrate → active 228 ms).
TOTAL_TIME_SHARE = (0.9, 1.02)
# setup-time ≤ the host's time from `migrate` to the source's 'active' event + this: QEMU stamps the end of set-up
# right after it switches to 'active' (µs later), its ms rounding, and the series-clock placement of the event.
# Measured setup-time 0 … 2 … 8 ms, each within its host interval + 10 ms.
SETUP_SLACK_MS = 10.0
# ram.mbps at completion over the bytes per host time from 'active' to 'completed': 1 on the mechanism, less the
# difference between QEMU's set-up end and the 'active' event (µs) and ms rounding of a ≥ 1 s span. The relay's
# bytes equal ram.transferred to 4 KiB (test_page_lifecycle), TLS adds ≤ 5 % (its ciphertext). Measured 0.9855 (TLS:
# the relay counts ciphertext, 1.0107× the plaintext) … 0.9999 … 1.0003. A throughput computed in bytes rather
# than bits (regressions/basic-mbps-in-bytes): 0.1248.
# The band's low end also scales by (active → completed) / (migrate → completed) (harness.analysis.timing: QEMU's
# span counts the set-up before its migration thread started): ≈ 1 for these migrations, but a 6–16 ms migration of
# 340 KB (test_ignore_shared, 8 runs) measured 0.34–0.94, with 2.5–7.6 ms of it before 'active' (QEMU's setup-time
# 1–4 ms of that: the rest passed before its thread started); 0.34 failed the band before it allowed for this.
MBPS_SHARE = (0.8, 1.25)
# Both QEMU and the comparison count whole ms, and a migration may last only tens of ms (a paused guest to a file):
# each band widens by what this many ms would change in the host's interval.
ROUNDING_MS = 3.0


def timing_verdicts(migration: "Migration") -> tuple[dict[str, Any], list[Verdict]]:
    """total-time, setup-time and mbps of `migration` against the series' clock, once it has completed; with
    the host's milestones (for the artefacts). Nothing for a migration that did not complete."""
    series = migration.series
    if series.status("source") != "completed":
        return {}, []
    suffix = f" [{migration.name}]"
    if migration.config.capabilities.get("events") is False:
        return {}, [oracles.not_measured(f"QEMU timing figures vs host clock{suffix}",
                                         "the test turned MIGRATION events off: no host milestones")]
    if not series.reply_is_current("source"):
        return {}, [oracles.not_measured(f"QEMU timing figures vs host clock{suffix}",
                                         "no query-migrate reply of the source after its completion")]
    final = series.latest("source")
    # A QEMU on another host stamps its events with that host's wall clock: place them by their arrival instead.
    clock = timing.host_clock(series, qemu_timestamps=migration.source.config.remote is None)
    # The relay's count (TLS: ciphertext, ≤ 5 % more, inside the band) where there is one; an exec: pipe's count
    # (harness.migration.endpoints) where the stream went through one.
    if migration.relay is not None:
        carried, carried_by = migration.relay.counts().sent, "the relay"
    else:
        carried, carried_by = migration.handoff.piped_bytes(), "the exec: pipe (wc -c)"
    verdicts = [timing.total_time_vs_host(clock, final, *TOTAL_TIME_SHARE, rounding_ms=ROUNDING_MS),
                timing.setup_time_vs_host(clock, final, SETUP_SLACK_MS),
                timing.mbps_vs_host(clock, final, carried, *MBPS_SHARE, rounding_ms=ROUNDING_MS,
                                    carried_by=carried_by)]
    return ({**clock.to_json(), "carried": carried},
            [dataclasses.replace(v, name=v.name + suffix) for v in verdicts])
