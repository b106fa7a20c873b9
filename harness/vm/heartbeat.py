"""The guest heartbeat, as the host hears it: a virtio-serial port the guest's `heartbeat` workload writes one
byte to every millisecond, read here by a thread that stamps every arrival with the host's clock.

A Machine booted with MachineConfig(heartbeat=True) has a port named "heartbeat" whose chardev is a unix socket
in its private temp dir; Machine.launch starts a HeartbeatReader on it and Machine.kill stops it. The guest
carries its heartbeat with it when it migrates: the source's reader hears it until the source stops, the
destination's from when the destination runs. harness.analysis.blackout turns the two into the blackout the guest lived
through.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from pathlib import Path

log = logging.getLogger(__name__)

PORT_NAME = "heartbeat"


def device_args(arch_serial_device: str, socket_path: str) -> list[str]:
    """QEMU arguments for the heartbeat port: a listening unix-socket chardev (nothing blocks until the
    harness connects: a guest write waits while no host side is connected), the arch's virtio-serial bus and
    a port named PORT_NAME on it."""
    return ["-chardev", f"socket,id={PORT_NAME},path={socket_path},server=on,wait=off",
            "-device", f"{arch_serial_device},id={PORT_NAME}-bus",
            "-device", f"virtserialport,bus={PORT_NAME}-bus.0,chardev={PORT_NAME},name={PORT_NAME}"]


class HeartbeatReader:
    """Reads a heartbeat chardev socket and keeps the host time.monotonic() of every read that brought ticks.

    `arrivals` is a list of (t, bytes) — one entry per recv, so a batch of ticks that arrived together (the
    reader was descheduled) counts as one arrival at the time it was read, which is when the host knew of it."""

    def __init__(self, name: str, path: Path) -> None:
        self.name, self.path = name, path
        self.arrivals: list[tuple[float, int]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._socket: socket.socket | None = None
        self._thread: threading.Thread | None = None

    def start(self, timeout: float = 10.0) -> "HeartbeatReader":
        """Connect (QEMU creates the socket file while it starts) and start reading."""
        deadline = time.monotonic() + timeout
        while True:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.connect(str(self.path))
                break
            except OSError as exc:
                sock.close()
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{self.name}: heartbeat socket {self.path} not connectable: {exc!r}") from exc
                time.sleep(0.02)
        sock.settimeout(0.2)
        self._socket = sock
        self._thread = threading.Thread(target=self._run, name=f"heartbeat-{self.name}", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        assert self._socket is not None
        while not self._stop.is_set():
            try:
                data = self._socket.recv(4096)
            except socket.timeout:
                continue
            except OSError:
                return
            if not data:
                return  # QEMU closed its side (it exited)
            t = time.monotonic()
            with self._lock:
                self.arrivals.append((t, len(data)))

    def snapshot(self) -> list[tuple[float, int]]:
        with self._lock:
            return list(self.arrivals)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(2.0)
        if self._socket is not None:
            self._socket.close()
            self._socket = None
