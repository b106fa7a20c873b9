"""A byte-counting relay between a migration's source and destination: the transport's own count of what it carried.

QEMU reports what it believes it sent (`ram.transferred`, `ram.multifd-bytes`, the precopy/downtime/postcopy byte
counters); a verdict must not rest on that alone. The relay listens where the source connects, opens one connection
to the destination per connection it accepts (the main channel, each multifd channel, the postcopy preempt
channel) and copies bytes both ways, counting them per connection and direction. Those counts come from the
sockets, outside QEMU: a counter that counts what was not sent, or misses what was, shows as a difference.

Bytes are copied, never parsed or changed, so TLS streams pass through (the relay counts their ciphertext).
The relay lives in the harness process (threads), listens on a unix socket for a unix destination and on
127.0.0.1 port 0 for a tcp one (for a source QEMU on another host: this host's address it reaches us at), and is
closed with its Migration.
"""

from __future__ import annotations

import logging
import socket
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

BUFFER = 1 << 20


@dataclass(frozen=True)
class RelayCounts:
    """Bytes the relay carried so far: per accepted connection, source → destination and back."""
    to_destination: tuple[int, ...]
    to_source: tuple[int, ...]
    open_connections: int

    @property
    def connections(self) -> int:
        return len(self.to_destination)

    @property
    def sent(self) -> int:
        """Everything the source sent to the destination, over all channels."""
        return sum(self.to_destination)

    def to_json(self) -> dict[str, Any]:
        return {"to_destination": list(self.to_destination), "to_source": list(self.to_source),
                "sent": self.sent, "received": sum(self.to_source), "connections": self.connections,
                "open_connections": self.open_connections}


class _Connection:
    """One accepted connection and its peer towards the destination, pumped by two threads."""

    def __init__(self, accepted: socket.socket, upstream: socket.socket) -> None:
        self.sockets = (accepted, upstream)
        self.counts = [0, 0]             # [source → destination, destination → source]
        self.threads = [threading.Thread(target=self._pump, args=(i,), daemon=True, name=f"relay-pump-{i}")
                        for i in (0, 1)]
        for thread in self.threads:
            thread.start()

    def _pump(self, direction: int) -> None:
        src, dst = self.sockets[direction], self.sockets[1 - direction]
        buffer = memoryview(bytearray(BUFFER))
        try:
            while True:
                n = src.recv_into(buffer)
                if n == 0:
                    break
                dst.sendall(buffer[:n])
                self.counts[direction] += n   # one writer per slot: readers see whole ints
        except OSError:
            pass  # the other end went away (a closed or reset channel ends the copy, as it would the stream)
        finally:
            try:
                dst.shutdown(socket.SHUT_WR)  # pass the end of the stream on
            except OSError:
                pass

    def done(self) -> bool:
        return not self.threads[0].is_alive()

    def join(self, timeout: float) -> None:
        for thread in self.threads:
            thread.join(timeout)

    def close(self) -> None:
        for sock in self.sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()
        self.join(5.0)


class StreamRelay:
    """Listens on `uri` (unix:PATH or tcp:LISTEN_HOST:PORT, the kind of `target`) and relays every connection to
    `target`, the destination's bound URI. `counts()` at any time; `drain()` waits until every connection's source
    side has ended (after completion QEMU closes its channels), so the counts are final."""

    def __init__(self, target: str, workdir: Path, name: str, listen_host: str = "127.0.0.1") -> None:
        self.target = target
        kind = target.split(":", 1)[0]
        if kind == "unix":
            path = workdir / f"{name}.relay.sock"
            self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self._listener.bind(str(path))
            self.uri = f"unix:{path}"
        elif kind == "tcp":
            self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            self._listener.bind((listen_host, 0))
            self.uri = f"tcp:{listen_host}:{self._listener.getsockname()[1]}"
        else:
            raise ValueError(f"a relay needs a unix or tcp destination, not {target!r}")
        self._listener.listen(16)
        self._lock = threading.Lock()
        self._connections: list[_Connection] = []
        self._closed = False
        self._accepter = threading.Thread(target=self._accept, daemon=True, name=f"relay-accept-{name}")
        self._accepter.start()

    def _connect_target(self) -> socket.socket:
        kind, rest = self.target.split(":", 1)
        if kind == "unix":
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.connect(rest)
        else:
            host, port = rest.rsplit(":", 1)
            sock = socket.create_connection((host, int(port)))
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock

    def _accept(self) -> None:
        while not self._closed:
            try:
                accepted, _ = self._listener.accept()
            except OSError:
                return  # listener closed
            try:
                upstream = self._connect_target()
            except OSError as exc:
                log.warning("relay: cannot reach %s (%s): dropping a connection", self.target, exc)
                accepted.close()
                continue
            if accepted.family == socket.AF_INET:
                accepted.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                self._connections.append(_Connection(accepted, upstream))

    def counts(self) -> RelayCounts:
        with self._lock:
            connections = list(self._connections)
        return RelayCounts(tuple(c.counts[0] for c in connections), tuple(c.counts[1] for c in connections),
                           sum(not c.done() for c in connections))

    def drain(self, timeout: float) -> RelayCounts:
        """Wait up to `timeout` for every source → destination copy to reach its end of stream; the counts then."""
        with self._lock:
            connections = list(self._connections)
        for connection in connections:
            connection.threads[0].join(timeout)
        return self.counts()

    def close(self) -> None:
        """Stop listening and cut every connection (idempotent)."""
        if self._closed:
            return
        self._closed = True
        try:
            self._listener.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._listener.close()
        self._accepter.join(5.0)
        with self._lock:
            connections = list(self._connections)
        for connection in connections:
            connection.close()
