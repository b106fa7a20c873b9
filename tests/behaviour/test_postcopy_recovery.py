"""Postcopy recovery beyond the plain case (docs/BEHAVIOURS.md, "Failure paths"; upstream
/migration/postcopy/{preempt/recovery/plain, recovery/double-failures/{handshake,reconnect}, recovery/tls/psk,
preempt/recovery/tls/psk} assert completion).

The skeleton is the basics' (harness.migration.scenarios.postcopy_recovers): postcopy under load, migrate-pause 2 MiB
into postcopy, migrate-recover + resume, completion. The cases:
  - with postcopy-preempt: two channels (the main stream and the urgent-page channel), both re-established;
  - a recovery that fails again first (harness.migration.recovery_faults, as upstream's double failures): during the
    handshake (both sides reach postcopy-recover on channels that lead nowhere, then are kicked back) or while
    reconnecting (the source's channel is dead before it connects); then a recovery that works;
  - over TLS (PSK, as upstream), plain and with preempt: every recovered channel is a new TLS session.
Oracles and what anchors each: completed; QEMU's status sequence (the source through postcopy-paused, the destination
through postcopy-recover; after a failed recovery, the source through postcopy-recover-setup and postcopy-paused a
second time); into a paused destination (`paused_pair`, which never runs, so both sides end paused) the host RAM
hashes of both sides — a page the recovery failed to resend differs — then seqinc's invariant on the destination
(the guest's view); over TLS, each side's own trace counts a completed handshake per channel per connection.
"""

from __future__ import annotations

import functools

import pytest

from harness.analysis import oracles
from harness.migration import tls
from harness.migration.config import MigrationConfig
from harness.migration.migrate import Migration
from harness.migration.recovery_faults import STAGES, fail_recovery
from harness.migration.scenarios import postcopy_recovers
from harness.migration.testbed import Pair, Testbed

RECOVERY = pytest.mark.needs(capabilities=["postcopy-ram"], commands=["migrate-pause", "migrate-recover"])
# A recovery made to fail again is kicked back with migrate-pause while in postcopy-recover, which QEMU allows since
# the postcopy-recover-setup phase came (9.1: migration_postcopy_is_alive); 7.2 refuses it on either side
# ("migrate-pause is currently only supported during postcopy-active state").
RECOVERY_FAILS_AGAIN = pytest.mark.needs(migration_statuses=["postcopy-recover-setup"])


@pytest.mark.slow
@pytest.mark.known_bug("tcg-dirty-tlb")
@pytest.mark.needs_userfaultfd
@pytest.mark.needs(capabilities=["postcopy-ram", "postcopy-preempt"], commands=["migrate-pause", "migrate-recover"])
def test_postcopy_with_preempt_recovers_after_pause(testbed: Testbed, pair: Pair) -> None:
    postcopy_recovers(testbed, pair, Migration.pause, MigrationConfig(capabilities={"postcopy-preempt": True}))


@pytest.mark.known_bug("tcg-dirty-tlb")
@pytest.mark.needs_userfaultfd
@RECOVERY
@RECOVERY_FAILS_AGAIN
@pytest.mark.parametrize("stage", [s if s == "handshake" else pytest.param(s, marks=pytest.mark.slow)
                                   for s in STAGES])
def test_postcopy_recovers_after_its_recovery_fails(testbed: Testbed, paused_pair: Pair, stage: str) -> None:
    if paused_pair.source.config.remote is not None or testbed.env.wrappers:
        pytest.skip("passes socket fds to both QEMUs over their monitors: needs local QEMUs without --qemu-wrapper")
    migration = postcopy_recovers(testbed, paused_pair, Migration.pause,
                                  then=functools.partial(fail_recovery, stage=stage))
    statuses = [status for _, status in migration.series.status_changes("source")]
    testbed.artefacts.verdict(
        oracles.went_through(migration.series, ["postcopy-recover-setup"]),
        oracles.at_least("times the source entered postcopy-paused (the break, the failed recovery)",
                         statuses.count("postcopy-paused"), 2, anchor="QEMU's status sequence"))


@pytest.mark.slow
@pytest.mark.known_bug("tcg-dirty-tlb")
@pytest.mark.needs_userfaultfd
@RECOVERY
@pytest.mark.needs(parameters=["tls-creds"], trace_events=tls.TRACE_EVENTS)
@pytest.mark.guest(trace_events=tls.TRACE_EVENTS)
@pytest.mark.parametrize("preempt", [False, True], ids=["postcopy", "postcopy-preempt"])
def test_postcopy_recovers_over_tls(testbed: Testbed, paused_pair: Pair, preempt: bool) -> None:
    try:
        config = tls.configure(testbed.workdir, paused_pair.source, paused_pair.destination,
                               tls.Credentials(kind="psk"), **({"postcopy-preempt": True} if preempt else {}))
    except tls.TlsUnavailable as unavailable:
        pytest.skip(str(unavailable))
    postcopy_recovers(testbed, paused_pair, Migration.pause, config)
    # Two connections (the first and the recovered one), each with its main and (preempt) urgent-page channel.
    testbed.artefacts.verdict(*tls.handshake_verdicts(paused_pair.source, paused_pair.destination, main=2,
                                                      preempt=2 * int(preempt)))
