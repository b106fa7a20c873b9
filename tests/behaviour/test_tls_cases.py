"""TLS as QEMU's own tls-tests.c has it — PSK, x509 host names, tls-authz, anonymous clients, TLS on one side —
as a table of scenarios with a declared outcome, run by one skeleton (docs/BEHAVIOURS.md, "TLS").

Each case is `tls.Credentials` (what each side is given) and the outcome it is declared to have (as
MigrationConfig(expect=…)); for a refusal also the side whose QEMU refuses and its own words. Modes: precopy and
multifd (2 channels) for every TCP case (a unix one: precopy), postcopy and postcopy-preempt for the successes
where TLS meets a channel of their own (PSK, tls-authz on every channel). Override-host over TCP and a destination
of an unknown CA are test_tls.py's.

Oracles and what anchors each:
  success: completed, RAM identical (host hashes, both sides paused) or, after postcopy, seqcheck — the guest's
      memory; every channel a TLS session: on the source one completed handshake per channel it opens (main,
      multifd, preempt) and none failed, and on the destination as many incoming handshakes completed — each side's
      own trace, the mechanism's count (tls.handshake_verdicts);
  refusal: the source ends 'failed', the refusing side's QEMU says why in its own words (the source's error-desc,
      or the destination's output), the source guest still runs — the failure is declared, never a fault; both
      sides' texts are recorded (refusal.json).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import pytest

from harness.analysis import oracles
from harness.core.units import MiB
from harness.migration import tls
from harness.migration.config import MigrationConfig, Outcome
from harness.migration.scenarios import COMPLETION_TIMEOUT, postcopy_under_load, precopy_with_integrity
from harness.migration.testbed import Pair, Testbed
from harness.migration.tls import CLIENT_NAME, HOSTILE_CLIENT_NAME, Credentials
from harness.vm import workloads

CHANNELS = 2


@dataclass(frozen=True)
class TlsCase:
    credentials: Credentials
    expect: Outcome = Outcome.COMPLETED
    refused_by: str = ""        # "source" | "destination": whose QEMU refuses
    reason: str = ""            # its own words (GnuTLS's or QEMU's)
    transport: str = "tcp"


ALLOWED = f"CN={CLIENT_NAME}"
FAILED, QUITS = Outcome.FAILED, Outcome.DESTINATION_QUITS
CASES = {
    "psk-match": TlsCase(Credentials(kind="psk")),
    "psk-mismatch": TlsCase(Credentials(kind="psk", psk_mismatch=True), FAILED, "destination",
                            "TLS handshake failed: An illegal parameter has been received"),
    # The certificate names the URI's 127.0.0.1 and no tls-hostname is set: the URI's host is verified.
    "x509-default-host": TlsCase(Credentials(server_names=("127.0.0.1",), tls_hostname=None)),
    "x509-mismatch-host": TlsCase(Credentials(server_names=("10.0.0.1",), tls_hostname=None), FAILED, "source",
                                  "Certificate does not match the hostname 127.0.0.1"),
    # A unix socket has no host and none is given: the source has no name to verify the certificate against.
    "x509-no-hostname": TlsCase(Credentials(server_names=("127.0.0.1",), tls_hostname=None), QUITS, "source",
                                "No hostname for certificate validation", transport="unix"),
    # Over a unix socket (no host in the URI): PSK needs none, x509 verifies tls-hostname.
    "psk-unix": TlsCase(Credentials(kind="psk"), transport="unix"),
    "x509-override-host-unix": TlsCase(Credentials(), transport="unix"),
    "x509-friendly-client": TlsCase(Credentials(authz_identity=ALLOWED)),
    "x509-hostile-client": TlsCase(Credentials(authz_identity=ALLOWED, client_name=HOSTILE_CLIENT_NAME), FAILED,
                                   "destination", f"TLS x509 authz check for CN={HOSTILE_CLIENT_NAME} is denied"),
    "x509-allow-anon-client": TlsCase(Credentials(client_certificate=False, verify_client=False)),
    "x509-reject-anon-client": TlsCase(Credentials(client_certificate=False), FAILED, "destination",
                                       "No certificate was found"),
    # The plain destination reads a ClientHello as its stream and quits; the source's handshake is cut short.
    "tls-source-only": TlsCase(Credentials(tls_sides=frozenset({"source"})), QUITS, "source",
                               "TLS handshake failed"),
    "tls-destination-only": TlsCase(Credentials(tls_sides=frozenset({"destination"})), FAILED, "destination",
                                    "TLS handshake failed: An unexpected TLS packet was received"),
}
POSTCOPY_CASES = ("psk-match", "x509-friendly-client")
REPRESENTATIVE = {("psk-match", "precopy"), ("x509-hostile-client", "precopy")}
NEEDS = pytest.mark.needs(parameters=["tls-creds", "tls-hostname", "tls-authz"], trace_events=tls.TRACE_EVENTS)
GUEST = pytest.mark.guest(trace_events=tls.TRACE_EVENTS)


# A destination before 8.0 never reads a plain multifd main channel that a TLS source opened (known_bugs).
KNOWN_BUGS = {("tls-source-only", "multifd"): "plain-multifd-destination-ignores-tls-main-channel"}


def params(modes: tuple[str, ...], names: Any) -> list[Any]:
    def marks(name: str, mode: str) -> list[Any]:
        bug = KNOWN_BUGS.get((name, mode))
        return ([] if (name, mode) in REPRESENTATIVE else [pytest.mark.slow]) + (
            [pytest.mark.known_bug(bug)] if bug else [])
    return [pytest.param(name, mode, id=f"{name}-{mode}", marks=marks(name, mode))
            for name in names for mode in modes
            if mode == "precopy" or CASES[name].transport == "tcp"]


def case_config(testbed: Testbed, pair: Pair, case: TlsCase, mode: str) -> MigrationConfig:
    """The case's credentials on the pair, the mode's capabilities; a QEMU without GnuTLS skips with its reason."""
    capabilities = {"multifd": mode == "multifd", "postcopy-preempt": mode == "postcopy-preempt"}
    capabilities = {name: True for name, on in capabilities.items() if on}
    try:
        config = tls.configure(testbed.workdir, pair.source, pair.destination, case.credentials, case.expect,
                               **capabilities)
    except tls.TlsUnavailable as unavailable:
        pytest.skip(str(unavailable))
    config = dataclasses.replace(config, transport=case.transport)
    return config.with_parameters(multifd_channels=CHANNELS) if mode == "multifd" else config


def refusal_verdicts(testbed: Testbed, pair: Pair, case: TlsCase, final: dict[str, Any]) -> list[oracles.Verdict]:
    """The source failed, the refusing side said why in its own words, the source guest runs on."""
    source_said = final.get("error-desc") or ""
    destination_said = pair.destination.output_tail(30)
    testbed.artefacts.write_json("refusal", {"declared refused by": case.refused_by, "declared reason": case.reason,
                                             "source error-desc": source_said, "destination said": destination_said})
    said = source_said if case.refused_by == "source" else destination_said
    where = "the source's error-desc" if case.refused_by == "source" else "the destination's QEMU output"
    return [oracles.equals("source status", final.get("status"), "failed"),
            oracles.Verdict(f"{case.refused_by} refused: {case.reason!r}", case.reason in said, said[-300:],
                            case.reason, where),
            pair.source.still_running("the refused migration")]


@NEEDS
@GUEST
@pytest.mark.known_bug("tcg-dirty-tlb")
@pytest.mark.parametrize("name, mode", params(("precopy", "multifd"), CASES))
def test_tls_case_precopy(testbed: Testbed, paused_pair: Pair, name: str, mode: str) -> None:
    case = CASES[name]
    config = case_config(testbed, paused_pair, case, mode)
    if case.expect is Outcome.COMPLETED:
        precopy_with_integrity(testbed, paused_pair, config.with_parameters(max_bandwidth=128 * MiB), dirty_mibps=16)
        testbed.artefacts.verdict(*tls.handshake_verdicts(paused_pair.source, paused_pair.destination,
                                                          multifd=CHANNELS if mode == "multifd" else 0))
        return
    migration = testbed.migrate(paused_pair.source, paused_pair.destination, config)
    final = migration.wait_outcome(60)
    migration.finish()
    testbed.artefacts.verdict(*refusal_verdicts(testbed, paused_pair, case, final))


@NEEDS
@GUEST
@pytest.mark.slow
@pytest.mark.known_bug("tcg-dirty-tlb")
@pytest.mark.needs_userfaultfd
@pytest.mark.parametrize("name, mode", params(("postcopy", "postcopy-preempt"), POSTCOPY_CASES))
def test_tls_case_postcopy(testbed: Testbed, pair: Pair, name: str, mode: str) -> None:
    config = case_config(testbed, pair, CASES[name], mode)
    seq, migration = postcopy_under_load(testbed, pair, postcopy_bandwidth=32 * MiB, config=config)
    final = migration.wait_completed(COMPLETION_TIMEOUT)
    migration.finish()
    check = workloads.seqcheck(pair.destination, seq)
    testbed.artefacts.verdict(
        oracles.completed(final), oracles.went_through(migration.series, ["postcopy-active"]),
        oracles.guest_invariant(check.passed, check.line),
        *tls.handshake_verdicts(pair.source, pair.destination, preempt=int(mode == "postcopy-preempt")))
