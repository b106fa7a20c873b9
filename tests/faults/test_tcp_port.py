"""tcp migrations: the destination binds the port itself (tcp:127.0.0.1:0) and the source is given the port
QEMU reports, so a port taken by a concurrent run between a probe and QEMU's bind cannot break the migration."""

from __future__ import annotations

import socket
from typing import Iterator

import pytest

from harness.migration import migrate as migration_module
from harness.migration.config import MigrationConfig
from harness.migration.testbed import Pair
from harness.migration.testbed import Testbed


@pytest.fixture
def taken_port(monkeypatch: pytest.MonkeyPatch) -> Iterator[int]:
    """Every probe for a free port answers with one another process holds: what losing the race looks like."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = int(sock.getsockname()[1])
        monkeypatch.setattr(migration_module, "free_tcp_port", lambda: port, raising=False)
        yield port


@pytest.mark.timeout(120)
@pytest.mark.guest(memory_mib=256)
def test_tcp_migration_uses_the_port_the_destination_bound(testbed: Testbed, pair: Pair, taken_port: int) -> None:
    migration = testbed.migrate(pair.source, pair.destination, MigrationConfig(transport="tcp"))
    bound = [f"tcp:{a['host']}:{a['port']}" for a in
             pair.destination.qmp.cmd("query-migrate").get("socket-address", [])]
    assert migration.uri in bound and migration.uri != f"tcp:127.0.0.1:{taken_port}", (migration.uri, bound)
    final = migration.wait_completed(90)
    assert final["status"] == "completed"
