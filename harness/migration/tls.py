"""x509 credentials for migration over TLS: a CA and the certificates QEMU's tls-creds-x509 reads, made per test.

QEMU's `tls-creds-x509` object reads a directory: ca-cert.pem always, server-cert.pem + server-key.pem for
endpoint=server (the destination), client-cert.pem + client-key.pem for endpoint=client (the source; the server
verifies it, verify-peer defaults to on). QEMU checks each certificate when the object is created
(crypto/tlscredsx509.c: basic constraints, key usage and purpose, validity), so these carry exactly what it wants:
the CA may sign certificates, the leaves allow digital signature and key encipherment and name their purpose
(serverAuth / clientAuth), and the server's names its host in subjectAltName, which the source matches against
`tls-hostname` (or the URI's host) during the handshake.

Keys are EC P-256 (fast to make; GnuTLS accepts them), written 0600 in the test's 0700 work dir, never reused.

`Credentials` declares, as data, everything one TLS scenario varies (x509 or PSK, the names the destination's
certificate carries, the source's tls-hostname, a client certificate or none, the destination's verify-peer and
tls-authz, which sides use TLS at all); `configure` gives each side what it declares and returns the
MigrationConfig. `handshake_verdicts` judges, from both sides' traces, that every channel was a TLS session.
"""

from __future__ import annotations

import dataclasses
import datetime
import ipaddress
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from qemu.qmp import ExecuteError
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from harness.analysis import oracles
from harness.analysis.trace import parse_file
from harness.migration.config import MigrationConfig, Outcome

# The destination's name in its certificate: a name of the reserved .test TLD, resolvable nowhere, so it can
# only match through tls-hostname (a URI's 127.0.0.1 never matches it).
DESTINATION_HOSTNAME = "destination.migration.test"
CREDS_ID = "tls0"
AUTHZ_ID = "authz0"
# The source's certificate names only a CN (as QEMU's own tests), so its distinguished name reads the same in
# whichever order GnuTLS prints it: "CN=<name>" is what tls-authz's authz-simple identity is matched against.
CLIENT_NAME = "migration-source"
HOSTILE_CLIENT_NAME = "some-other-host"
PSK_USERNAME = "qemu"       # QEMU's default username for endpoint=client
_VALIDITY = datetime.timedelta(days=1)


class TlsUnavailable(RuntimeError):
    """This QEMU cannot create tls-creds-x509 (built without GnuTLS): QEMU's own message."""


@dataclass(frozen=True)
class Authority:
    """A CA: its name, key and self-signed certificate."""
    name: str
    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate

    @classmethod
    def create(cls, name: str) -> "Authority":
        key = ec.generate_private_key(ec.SECP256R1())
        subject = _name(name)
        cert = (_builder(subject, subject, key.public_key())
                .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
                .add_extension(_key_usage(cert_sign=True), critical=True)
                .sign(key, hashes.SHA256()))
        return cls(name, key, cert)

    def issue(self, common_name: str, server: bool, hostnames: tuple[str, ...] = ()) -> tuple[
            ec.EllipticCurvePrivateKey, x509.Certificate]:
        """A leaf certificate for a server (with `hostnames` in subjectAltName) or a client."""
        key = ec.generate_private_key(ec.SECP256R1())
        purpose = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
        subject = _name(common_name) if server else x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
        builder = (_builder(subject, self.cert.subject, key.public_key())
                   .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                   .add_extension(_key_usage(cert_sign=False), critical=True)
                   .add_extension(x509.ExtendedKeyUsage([purpose]), critical=True))
        if hostnames:
            builder = builder.add_extension(x509.SubjectAlternativeName([_general_name(h) for h in hostnames]),
                                            critical=False)
        return key, builder.sign(self.key, hashes.SHA256())


def write_endpoint_dir(directory: Path, ca: Authority, endpoint: str,
                       hostnames: tuple[str, ...] = (DESTINATION_HOSTNAME,), certificate: bool = True,
                       client_name: str = CLIENT_NAME) -> Path:
    """The directory one side's tls-creds-x509 reads: `ca`'s certificate (whom this side trusts) and a
    certificate for `endpoint` ("server" or "client") that `ca` issued — QEMU checks a side's own certificate
    against its CA file when the credentials are created, so the two always go together. `certificate=False`
    (a client only): the CA alone, an anonymous client."""
    if endpoint not in ("server", "client"):
        raise ValueError(f"endpoint must be server or client, not {endpoint!r}")
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    _write(directory / "ca-cert.pem", ca.cert.public_bytes(serialization.Encoding.PEM))
    if not certificate:
        return directory
    key, cert = ca.issue(f"migration {endpoint}" if endpoint == "server" else client_name,
                         server=endpoint == "server", hostnames=hostnames if endpoint == "server" else ())
    _write(directory / f"{endpoint}-cert.pem", cert.public_bytes(serialization.Encoding.PEM))
    _write(directory / f"{endpoint}-key.pem", key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()))
    return directory


def write_psk_dir(directory: Path, key: bytes) -> Path:
    """The directory tls-creds-psk reads: keys.psk, one `username:hex-key` line."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    _write(directory / "keys.psk", f"{PSK_USERNAME}:{key.hex()}\n".encode())
    return directory


def add_creds(machine: Any, directory: Path, endpoint: str, creds_id: str = CREDS_ID, kind: str = "x509",
              verify_peer: bool = True) -> None:
    """object-add the tls-creds-`kind` (x509 or psk) `creds_id` to a running QEMU (the migration's tls-creds
    parameter names it). A QEMU built without GnuTLS refuses with its own message: TlsUnavailable carries it."""
    arguments: dict[str, Any] = {"qom-type": f"tls-creds-{kind}", "id": creds_id, "dir": str(directory),
                                 "endpoint": endpoint}
    if kind == "x509":
        arguments["verify-peer"] = verify_peer
    try:
        machine.qmp.cmd("object-add", **arguments)
    except ExecuteError as error:
        if "GNUTLS" in str(error).upper():
            raise TlsUnavailable(f"QEMU lacks GnuTLS on the {machine.name}: {error}") from error
        raise


@dataclass(frozen=True)
class Credentials:
    """What one TLS scenario gives each side (plain data; `configure` carries it out)."""
    kind: str = "x509"                                       # x509 | psk
    # x509: the names in the destination certificate's subjectAltName, and the source's tls-hostname (None: unset,
    # so the source verifies the URI's host — or has none to verify over a unix socket).
    server_names: tuple[str, ...] = (DESTINATION_HOSTNAME,)
    tls_hostname: str | None = DESTINATION_HOSTNAME
    rogue_ca: bool = False          # the source trusts (and was issued by) another CA than the destination's
    client_certificate: bool = True  # the source presents a certificate (False: an anonymous client)
    client_name: str = CLIENT_NAME   # the CN of that certificate
    verify_client: bool = True       # the destination's verify-peer: it demands and checks the source's certificate
    authz_identity: str | None = None  # the destination's tls-authz: an authz-simple object allowing this DN only
    psk_mismatch: bool = False      # psk: the destination holds another key for the same username
    tls_sides: frozenset[str] = frozenset({"source", "destination"})  # which sides set tls-creds at all

    def replace(self, **changes: Any) -> "Credentials":
        return dataclasses.replace(self, **changes)


def configure(workdir: Path, source: Any, destination: Any, credentials: Credentials = Credentials(),
              expect: Outcome = Outcome.COMPLETED, **capabilities: bool) -> MigrationConfig:
    """Give each side the objects `credentials` declare (made in `workdir`) and return the MigrationConfig of a
    TCP migration with them (tls-creds on the sides in tls_sides; tls-hostname on the source when declared;
    tls-authz on the destination when declared). Raises TlsUnavailable on a QEMU without GnuTLS."""
    c = credentials
    source_params: dict[str, Any] = {}        # each set on its side only
    destination_params: dict[str, Any] = {}
    if c.kind == "psk":
        key = secrets.token_bytes(32)
        other = secrets.token_bytes(32) if c.psk_mismatch else key
        if "destination" in c.tls_sides:
            add_creds(destination, write_psk_dir(workdir / "tls-destination", other), "server", kind="psk")
        if "source" in c.tls_sides:
            add_creds(source, write_psk_dir(workdir / "tls-source", key), "client", kind="psk")
    elif c.kind == "x509":
        ca = Authority.create("migration test CA")
        source_ca = Authority.create("some other CA") if c.rogue_ca else ca
        if "destination" in c.tls_sides:
            add_creds(destination, write_endpoint_dir(workdir / "tls-destination", ca, "server", c.server_names),
                      "server", verify_peer=c.verify_client)
        if "source" in c.tls_sides:
            add_creds(source, write_endpoint_dir(workdir / "tls-source", source_ca, "client",
                                                 certificate=c.client_certificate, client_name=c.client_name),
                      "client")
    else:
        raise ValueError(f"credentials kind must be x509 or psk, not {c.kind!r}")
    if c.authz_identity is not None:
        destination.qmp.cmd("object-add", **{"qom-type": "authz-simple", "id": AUTHZ_ID,
                                             "identity": c.authz_identity})
        destination_params["tls-authz"] = AUTHZ_ID
    if "source" in c.tls_sides:
        source_params["tls-creds"] = CREDS_ID
        if c.tls_hostname is not None:
            source_params["tls-hostname"] = c.tls_hostname
    if "destination" in c.tls_sides:
        destination_params["tls-creds"] = CREDS_ID
    return MigrationConfig(capabilities=capabilities, transport="tcp",
                           parameters={**source_params, **destination_params},
                           source_only_parameters=frozenset(source_params.keys() - destination_params.keys()),
                           destination_only_parameters=frozenset(destination_params.keys() - source_params.keys()),
                           expect=expect)


def over_tls(workdir: Path, source: Any, destination: Any, hostname: str = DESTINATION_HOSTNAME,
             rogue_ca: bool = False, expect: Outcome = Outcome.COMPLETED, **capabilities: bool) -> MigrationConfig:
    """x509 credentials on both sides (made in `workdir`) and the MigrationConfig of a TCP migration over TLS that
    names the destination by `hostname`. `rogue_ca`: the source belongs to another CA, which it trusts and which
    issued its own certificate (QEMU checks a side's own certificate against its CA when the credentials are
    created), so neither side knows the other's issuer. Raises TlsUnavailable on a QEMU without GnuTLS."""
    return configure(workdir, source, destination, Credentials(tls_hostname=hostname, rogue_ca=rogue_ca),
                     expect, **capabilities)


# What counts each channel's TLS session. The source: 10.0's multifd_tls_outgoing_handshake_complete is never
# emitted (a multifd channel whose handshake completed is set up again as a qio-channel-tls instead). The
# destination: every incoming channel (main, multifd, preempt) goes through migration_tls_channel_process_incoming.
HANDSHAKE_ERRORS = ("migration_tls_outgoing_handshake_error", "multifd_tls_outgoing_handshake_error",
                    "multifd_new_send_channel_async_error")
INCOMING_EVENTS = ("migration_tls_incoming_handshake_complete", "migration_tls_incoming_handshake_error")
TRACE_EVENTS = ("migration_tls_outgoing_handshake_complete", "multifd_set_outgoing_channel",
                "postcopy_preempt_tls_handshake", *HANDSHAKE_ERRORS, *INCOMING_EVENTS)


def handshake_verdicts(source: Any, destination: Any | None = None, main: int = 1, multifd: int = 0,
                       preempt: int = 0) -> list[oracles.Verdict]:
    """TLS sessions per channel kind on the source, from its trace, against the channels the migration opens, and
    no handshake error; with `destination`, its completed incoming handshakes against the same total (each side's
    own trace: neither can count the other's). (The source trace's hostname arguments are the URI's host, traced
    before tls-hostname replaces it; the name verified shows in the outcome instead.)"""
    trace = parse_file(source.files.trace)
    sessions = {
        "main channel handshakes completed": (trace.count("migration_tls_outgoing_handshake_complete"), main),
        "multifd channels set up over TLS": (sum(r.fields.get("ioctype") == "qio-channel-tls"
                                                 for r in trace.named("multifd_set_outgoing_channel")), multifd),
        "preempt channel handshakes": (trace.count("postcopy_preempt_tls_handshake"), preempt),
    }
    if destination is not None and destination.files.trace.exists():
        incoming = parse_file(destination.files.trace)
        sessions["destination: incoming handshakes completed"] = (
            incoming.count("migration_tls_incoming_handshake_complete"), main + multifd + preempt)
    verdicts = [oracles.equals(name, measured, expected, why="mechanism: one TLS session per channel opened")
                for name, (measured, expected) in sessions.items()]
    errors = [r.name + " " + r.args for r in trace.named(*HANDSHAKE_ERRORS)]
    verdicts.append(oracles.equals("TLS handshake errors on the source", errors, []))
    return verdicts


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "qemu-migration-harness"),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _builder(subject: x509.Name, issuer: x509.Name, public_key: Any) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.timezone.utc)
    # Valid from an hour ago: a clock a little behind the one that made it must not find it "not yet activated".
    return (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer).public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1)).not_valid_after(now + _VALIDITY))


def _key_usage(cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(digital_signature=not cert_sign, content_commitment=False,
                         key_encipherment=not cert_sign, data_encipherment=False, key_agreement=False,
                         key_cert_sign=cert_sign, crl_sign=cert_sign, encipher_only=False, decipher_only=False)


def _general_name(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def _write(path: Path, data: bytes) -> None:
    path.touch(mode=0o600, exist_ok=True)
    path.write_bytes(data)

