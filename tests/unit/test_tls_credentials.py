"""harness.migration.tls.configure gives each side exactly what a Credentials declares (no QEMU: a recording monitor),
and the files it writes are what QEMU's tls-creds objects read."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cryptography import x509

from harness.migration import tls
from harness.migration.config import Outcome
from harness.migration.migrate import Migration
from harness.migration.tls import Credentials


class RecordingMonitor:
    def __init__(self) -> None:
        self.commands: list[tuple[str, dict[str, Any]]] = []

    def cmd(self, command: str, **arguments: Any) -> None:
        self.commands.append((command, arguments))


class FakeMachine:
    def __init__(self, name: str) -> None:
        self.name, self.qmp = name, RecordingMonitor()

    def objects(self) -> dict[str, dict[str, Any]]:
        return {a["qom-type"]: a for c, a in self.qmp.commands if c == "object-add"}


def side_parameters(config: Any, side: str) -> dict[str, Any]:
    """What Migration.configure sets on `side` (migrate-set-parameters), capabilities aside."""
    machine = FakeMachine(side)
    Migration(machine, None, config, Path("/nonexistent")).configure(machine, side)  # type: ignore[arg-type]
    return next((a for c, a in machine.qmp.commands if c == "migrate-set-parameters"), {})


def configure(tmp_path: Path, credentials: Credentials) -> tuple[FakeMachine, FakeMachine, Any]:
    source, destination = FakeMachine("source"), FakeMachine("destination")
    return source, destination, tls.configure(tmp_path, source, destination, credentials, Outcome.FAILED)


def test_default_x509_sets_creds_on_both_sides_and_the_hostname_on_the_source_only(tmp_path: Path) -> None:
    source, destination, config = configure(tmp_path, Credentials())
    assert side_parameters(config, "source") == {"tls-creds": tls.CREDS_ID, "tls-hostname": tls.DESTINATION_HOSTNAME}
    assert side_parameters(config, "destination") == {"tls-creds": tls.CREDS_ID}
    assert destination.objects()["tls-creds-x509"]["verify-peer"] is True
    assert config.expect is Outcome.FAILED and config.transport == "tcp"


def test_tls_on_one_side_leaves_the_other_plain(tmp_path: Path) -> None:
    source, destination, config = configure(tmp_path, Credentials(tls_sides=frozenset({"destination"})))
    assert side_parameters(config, "source") == {}
    assert source.qmp.commands == []
    assert side_parameters(config, "destination") == {"tls-creds": tls.CREDS_ID}
    source, destination, config = configure(tmp_path / "other", Credentials(tls_sides=frozenset({"source"})))
    assert "tls-creds" not in side_parameters(config, "destination") and destination.qmp.commands == []


def test_authz_is_the_destinations_and_names_the_clients_distinguished_name(tmp_path: Path) -> None:
    source, destination, config = configure(tmp_path, Credentials(authz_identity=f"CN={tls.CLIENT_NAME}",
                                                                 client_name=tls.HOSTILE_CLIENT_NAME))
    assert destination.objects()["authz-simple"]["identity"] == "CN=migration-source"
    assert side_parameters(config, "destination")["tls-authz"] == tls.AUTHZ_ID
    assert "tls-authz" not in side_parameters(config, "source")
    cert = x509.load_pem_x509_certificate((tmp_path / "tls-source" / "client-cert.pem").read_bytes())
    assert cert.subject.rfc4514_string() == f"CN={tls.HOSTILE_CLIENT_NAME}"   # CN only: one order in any printing


def test_an_anonymous_client_has_only_the_ca(tmp_path: Path) -> None:
    _, destination, _ = configure(tmp_path, Credentials(client_certificate=False, verify_client=False))
    assert sorted(p.name for p in (tmp_path / "tls-source").iterdir()) == ["ca-cert.pem"]
    assert destination.objects()["tls-creds-x509"]["verify-peer"] is False


def test_psk_files_match_unless_declared_not_to(tmp_path: Path) -> None:
    source, destination, _ = configure(tmp_path, Credentials(kind="psk"))
    source_key = (tmp_path / "tls-source" / "keys.psk").read_text()
    assert source_key == (tmp_path / "tls-destination" / "keys.psk").read_text()
    assert source_key.startswith(f"{tls.PSK_USERNAME}:") and len(source_key.strip().split(":")[1]) == 64
    assert "verify-peer" not in source.objects()["tls-creds-psk"]
    configure(tmp_path / "mismatch", Credentials(kind="psk", psk_mismatch=True))
    assert ((tmp_path / "mismatch" / "tls-source" / "keys.psk").read_text()
            != (tmp_path / "mismatch" / "tls-destination" / "keys.psk").read_text())
