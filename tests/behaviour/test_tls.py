"""Migration over TLS: every channel is authenticated against the test's own CA, by the name tls-hostname gives.

Both sides get a `tls-creds-x509` object (harness.migration.tls: a CA made for the test; the destination a server
certificate naming DESTINATION_HOSTNAME, the source a client certificate, which the destination verifies) and the
`tls-creds` parameter; the source's `tls-hostname` names the destination. Migrations go over TCP to 127.0.0.1, so
the URI's host never matches the certificate: only tls-hostname can make the handshake succeed.

Oracles and what anchors each (docs/BEHAVIOURS.md):
  (1) completed, RAM identical (host hashes, both sides paused) or seqcheck after postcopy — the guest's memory;
  (2) TLS sessions on the source = the channels the migration opens (1 main, + multifd-channels, + the preempt
      channel), no handshake error — mechanism: QEMU wraps every outgoing channel in TLS, read from the source's
      own trace (migration_tls_outgoing_handshake_complete, multifd_set_outgoing_channel as qio-channel-tls,
      postcopy_preempt_tls_handshake); that they
      verified tls-hostname shows in (1) itself, as the certificate carries no other name;
  (3) a source of another CA (which it trusts and which issued its own certificate) refuses the destination with
      QEMU's message ("The certificate hasn't got a known issuer"), and a tls-hostname the certificate does not name is refused ("Certificate does not match the
      hostname …") — QEMU's own verdict on certificates the test made wrong on purpose; the refusal is declared
      (Outcome.FAILED), so the failure is the expected result, never a fault.
"""

from __future__ import annotations

from typing import Any

import pytest

from harness.analysis import oracles

from harness.vm import workloads
from harness.migration.config import MigrationConfig, Outcome
from harness.migration.testbed import Pair
from harness.migration.scenarios import COMPLETION_TIMEOUT, postcopy_under_load, precopy_with_integrity
from harness.migration.testbed import Testbed
from harness.migration import tls
from harness.migration.tls import DESTINATION_HOSTNAME
from harness.core.units import MiB

TRACE_EVENTS = tls.TRACE_EVENTS
CHANNELS = 2
NEEDS = pytest.mark.needs(parameters=["tls-creds", "tls-hostname"], trace_events=TRACE_EVENTS)
GUEST = pytest.mark.guest(trace_events=TRACE_EVENTS)


def over_tls(testbed: Testbed, pair: Pair, **options: Any) -> MigrationConfig:
    """harness.migration.tls.over_tls on this test's pair; a QEMU without GnuTLS skips the test with its reason."""
    try:
        return tls.over_tls(testbed.workdir, pair.source, pair.destination, **options)
    except tls.TlsUnavailable as unavailable:
        pytest.skip(str(unavailable))


def handshake_verdicts(pair: Pair, main: int = 1, multifd: int = 0, preempt: int = 0) -> list[oracles.Verdict]:
    return tls.handshake_verdicts(pair.source, pair.destination, main=main, multifd=multifd, preempt=preempt)


@pytest.mark.known_bug("tcg-dirty-tlb")
@NEEDS
@GUEST
# precopy is slow: multifd's case authenticates the main channel too, and every multifd channel.
@pytest.mark.parametrize("channels", [pytest.param(0, marks=pytest.mark.slow), CHANNELS], ids=["precopy", "multifd"])
def test_precopy_over_tls_authenticates_every_channel_and_keeps_ram_identical(testbed: Testbed, paused_pair: Pair,
                                                                              channels: int) -> None:
    config = over_tls(testbed, paused_pair, multifd=bool(channels))
    if channels:
        config = config.with_parameters(multifd_channels=channels)
    precopy_with_integrity(testbed, paused_pair, config.with_parameters(max_bandwidth=128 * MiB), dirty_mibps=16)
    testbed.artefacts.verdict(*handshake_verdicts(paused_pair, multifd=channels))


@pytest.mark.known_bug("tcg-dirty-tlb")
@pytest.mark.needs_userfaultfd
@NEEDS
@GUEST
# slow (#35, 15 s and 17 s on TCG): `make check` keeps TLS by the multifd precopy (every channel authenticated) and
# the wrong-CA refusal; postcopy itself by test_basics.py.
@pytest.mark.slow
@pytest.mark.parametrize("preempt", [False, True],
                         ids=["postcopy", "postcopy-preempt"])
def test_postcopy_over_tls_completes_with_intact_guest(testbed: Testbed, pair: Pair, preempt: bool) -> None:
    config = over_tls(testbed, pair, **({"postcopy-preempt": True} if preempt else {}))
    seq, migration = postcopy_under_load(testbed, pair, postcopy_bandwidth=32 * MiB, config=config)
    final = migration.wait_completed(COMPLETION_TIMEOUT)
    migration.finish()
    check = workloads.seqcheck(pair.destination, seq)
    testbed.artefacts.verdict(
        oracles.completed(final),
        oracles.went_through(migration.series, ["postcopy-active"]),
        oracles.guest_invariant(check.passed, check.line),
        *handshake_verdicts(pair, preempt=int(preempt)))


@NEEDS
@pytest.mark.parametrize("wrong, message", [
    ("ca", "The certificate hasn't got a known issuer"),
    pytest.param("hostname", "Certificate does not match the hostname elsewhere.migration.test",
                 marks=pytest.mark.slow),    # slow: wrong-ca keeps the refusal in `make check`
], ids=["wrong-ca", "wrong-hostname"])
def test_tls_refuses_a_destination_it_cannot_authenticate(testbed: Testbed, pair: Pair, wrong: str,
                                                          message: str) -> None:
    config = over_tls(testbed, pair, rogue_ca=wrong == "ca", expect=Outcome.FAILED,
                      hostname="elsewhere.migration.test" if wrong == "hostname" else DESTINATION_HOSTNAME)
    migration = testbed.migrate(pair.source, pair.destination, config)
    final = migration.wait_outcome(60)
    migration.finish()
    testbed.artefacts.verdict(oracles.refused(final, message),
                              pair.source.still_running("the refused handshake"))
