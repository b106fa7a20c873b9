"""The host's own page-request round trip: a reference for postcopy page-fault latency that no QEMU code can move
(B2's link RTT), measured in a child interpreter (statistics: harness.analysis.latency)."""

from __future__ import annotations

import json
import subprocess
import sys

# Run in a child interpreter (never in the test process, whose QMP/sampler threads would contend for the GIL): a
# socketpair between it and a forked echo process; each round trip sends an 8-byte request and reads back a
# `reply`-byte answer (a page), as a postcopy page request does over the migration transport.
_PINGER = r"""
import json, os, socket, sys, time
count, warmup, reply = (int(a) for a in sys.argv[1:4])
a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
pid = os.fork()
if pid == 0:
    a.close()
    page = b"p" * reply
    while True:
        if not b.recv(8):
            os._exit(0)
        b.sendall(page)
b.close()
out = []
for i in range(warmup + count):
    t = time.perf_counter_ns()
    a.sendall(b"request!")
    got = 0
    while got < reply:
        got += len(a.recv(reply - got))
    if i >= warmup:
        out.append((time.perf_counter_ns() - t) / 1e3)
a.close()
os.waitpid(pid, 0)
print(json.dumps(out))
"""


def transport_round_trips_us(count: int = 2000, reply_bytes: int = 4096, warmup: int = 200) -> list[float]:
    """Host round trips (µs) over a unix stream socket between two processes: request 8 bytes, answer
    `reply_bytes`. A reference for page-request latency that no QEMU code path can move (B2's link RTT)."""
    result = subprocess.run([sys.executable, "-c", _PINGER, str(count), str(warmup), str(reply_bytes)],
                            capture_output=True, text=True, timeout=120, check=True)
    return [float(v) for v in json.loads(result.stdout)]
