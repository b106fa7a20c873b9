"""harness.migration.relay: bytes pass unchanged both ways and are counted per connection and direction."""

from __future__ import annotations

import os
import socket
import threading
from pathlib import Path

import pytest

from harness.migration.relay import StreamRelay


def serve(listener: socket.socket, replies: list[bytes], received: list[bytes]) -> None:
    """A stand-in destination: per connection, read to EOF, then answer and close."""
    for reply in replies:
        conn, _ = listener.accept()
        with conn:
            chunks = []
            while data := conn.recv(65536):
                chunks.append(data)
            received.append(b"".join(chunks))
            conn.sendall(reply)


@pytest.mark.parametrize("kind", ["unix", "tcp"])
def test_relay_copies_and_counts_each_connection(tmp_path: Path, kind: str) -> None:
    if kind == "unix":
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(str(tmp_path / "dest.sock"))
        target = f"unix:{tmp_path / 'dest.sock'}"
    else:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.bind(("127.0.0.1", 0))
        target = f"tcp:127.0.0.1:{listener.getsockname()[1]}"
    listener.listen(4)
    payloads, replies, received = [os.urandom(3 << 20), os.urandom(1000)], [b"ok" * 10, b""], []
    server = threading.Thread(target=serve, args=(listener, replies, received), daemon=True)
    server.start()
    relay = StreamRelay(target, tmp_path, "m")
    try:
        answers = []
        for payload in payloads:
            family = socket.AF_UNIX if kind == "unix" else socket.AF_INET
            address: object = relay.uri.removeprefix("unix:") if kind == "unix" else (
                "127.0.0.1", int(relay.uri.rsplit(":", 1)[1]))
            with socket.socket(family, socket.SOCK_STREAM) as client:
                client.connect(address)
                client.sendall(payload)
                client.shutdown(socket.SHUT_WR)
                answers.append(b"".join(iter(lambda: client.recv(65536), b"")))
        server.join(10)
        counts = relay.drain(10)
    finally:
        relay.close()
        listener.close()
    assert received == payloads and answers == replies
    assert counts.to_destination == (len(payloads[0]), len(payloads[1]))
    assert counts.to_source == (len(replies[0]), 0)
    assert counts.sent == sum(map(len, payloads)) and counts.open_connections == 0


def test_relay_refuses_a_file_target(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unix or tcp"):
        StreamRelay(f"file:{tmp_path / 'x'}", tmp_path, "m")
