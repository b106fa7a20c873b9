"""x509 credentials for migration over TLS: a CA and the certificates QEMU's tls-creds-x509 reads, made per test.

QEMU's `tls-creds-x509` object reads a directory: ca-cert.pem always, server-cert.pem + server-key.pem for
endpoint=server (the destination), client-cert.pem + client-key.pem for endpoint=client (the source; the server
verifies it, verify-peer defaults to on). QEMU checks each certificate when the object is created
(crypto/tlscredsx509.c: basic constraints, key usage and purpose, validity), so these carry exactly what it wants:
the CA may sign certificates, the leaves allow digital signature and key encipherment and name their purpose
(serverAuth / clientAuth), and the server's names its host in subjectAltName, which the source matches against
`tls-hostname` (or the URI's host) during the handshake.

Keys are EC P-256 (fast to make; GnuTLS accepts them), written 0600 in the test's 0700 work dir, never reused.
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from qemu.qmp import ExecuteError
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from harness.migration.config import MigrationConfig, Outcome

# The destination's name in its certificate: a name of the reserved .test TLD, resolvable nowhere, so it can
# only match through tls-hostname (a URI's 127.0.0.1 never matches it).
DESTINATION_HOSTNAME = "destination.migration.test"
CREDS_ID = "tls0"
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
        builder = (_builder(_name(common_name), self.cert.subject, key.public_key())
                   .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                   .add_extension(_key_usage(cert_sign=False), critical=True)
                   .add_extension(x509.ExtendedKeyUsage([purpose]), critical=True))
        if hostnames:
            builder = builder.add_extension(x509.SubjectAlternativeName([_general_name(h) for h in hostnames]),
                                            critical=False)
        return key, builder.sign(self.key, hashes.SHA256())


def write_endpoint_dir(directory: Path, ca: Authority, endpoint: str,
                       hostnames: tuple[str, ...] = (DESTINATION_HOSTNAME,)) -> Path:
    """The directory one side's tls-creds-x509 reads: `ca`'s certificate (whom this side trusts) and a
    certificate for `endpoint` ("server" or "client") that `ca` issued — QEMU checks a side's own certificate
    against its CA file when the credentials are created, so the two always go together."""
    if endpoint not in ("server", "client"):
        raise ValueError(f"endpoint must be server or client, not {endpoint!r}")
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    key, cert = ca.issue(f"migration {endpoint}", server=endpoint == "server",
                             hostnames=hostnames if endpoint == "server" else ())
    _write(directory / "ca-cert.pem", ca.cert.public_bytes(serialization.Encoding.PEM))
    _write(directory / f"{endpoint}-cert.pem", cert.public_bytes(serialization.Encoding.PEM))
    _write(directory / f"{endpoint}-key.pem", key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()))
    return directory


def add_creds(machine: Any, directory: Path, endpoint: str, creds_id: str = CREDS_ID) -> None:
    """object-add the tls-creds-x509 `creds_id` to a running QEMU (the migration's tls-creds parameter names it).
    A QEMU built without GnuTLS refuses with its own message: TlsUnavailable carries it."""
    try:
        machine.qmp.cmd("object-add", **{"qom-type": "tls-creds-x509", "id": creds_id, "dir": str(directory),
                                         "endpoint": endpoint, "verify-peer": True})
    except ExecuteError as error:
        if "GNUTLS" in str(error).upper():
            raise TlsUnavailable(f"QEMU lacks GnuTLS on the {machine.name}: {error}") from error
        raise


def over_tls(workdir: Path, source: Any, destination: Any, hostname: str = DESTINATION_HOSTNAME,
             rogue_ca: bool = False, expect: Outcome = Outcome.COMPLETED, **capabilities: bool) -> MigrationConfig:
    """Credentials on both sides (made in `workdir`) and the MigrationConfig of a TCP migration over TLS that names
    the destination by `hostname`. `rogue_ca`: the source belongs to another CA, which it trusts and which issued
    its own certificate (QEMU checks a side's own certificate against its CA when the credentials are created),
    so neither side knows the other's issuer. Raises TlsUnavailable on a QEMU without GnuTLS."""
    ca = Authority.create("migration test CA")
    source_ca = Authority.create("some other CA") if rogue_ca else ca
    add_creds(destination, write_endpoint_dir(workdir / "tls-destination", ca, "server"), "server")
    add_creds(source, write_endpoint_dir(workdir / "tls-source", source_ca, "client"), "client")
    return MigrationConfig(capabilities=capabilities, transport="tcp",
                           parameters={"tls-creds": CREDS_ID, "tls-hostname": hostname},
                           source_only_parameters=frozenset({"tls-hostname"}), expect=expect)


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

