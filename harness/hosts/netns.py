"""`--topology netns`: the source and destination QEMU each in a network namespace of its own, joined by a veth
pair, the link optionally shaped (bandwidth with tc tbf; delay and loss with tc netem where the kernel has it).

Layout of one link (one per test, made before its QEMUs boot and removed after they are gone):

    namespace qmh-<pid>-<start>-<n>-src              namespace qmh-<pid>-<start>-<n>-dst
      lo 127.0.0.1   (the guest's SSH hostfwd)         lo 127.0.0.1   (the guest's SSH hostfwd)
      mig0 198.18.0.1/30  <------- veth ------->       mig0 198.18.0.2/30   (the migration listens here)

198.18.0.0/15 is the range RFC 2544 sets aside for benchmarking: never routed, so a test address cannot clash with
a real network; the addresses exist only inside the two namespaces (nothing is added to the root namespace), so
concurrent runs can all use the same ones. The device is created inside the namespaces directly, so its name never
meets the root namespace's devices either.

The guest's SSH path. Each guest keeps user-mode networking with `hostfwd=tcp:127.0.0.1:PORT-:22`; QEMU runs inside
its namespace, so the forwarded port is bound on *that namespace's* loopback. The harness reaches it by opening the
TCP connection from inside the namespace (setns(2) in a short-lived thread, `connect_in`) and handing the connected
socket to paramiko; the rest of the SSH session runs in the harness as always. Rejected alternative: forwarding on a
veth address reachable from the root namespace through a third veth — it would put the test's addresses and a
route into the root namespace (shared with other jobs), and the guest's SSH traffic would then share a namespace
with the link under test. This way SSH never crosses the veth: a link cut or a shaped link leaves SSH untouched,
and the only traffic on the veth is the migration's (and the measurement's, before the QEMUs start).

Owners and reaping (as harness.core.workdirs for temp dirs): a namespace's name carries the pid and start time of the
run that made it. Removed at the end of each test (also after a failure, Ctrl-C or SIGTERM, and at exit); a run
killed with SIGKILL cannot, so the next run's `reap_stale()` deletes every qmh- namespace whose owner is gone.
Deleting a namespace destroys its veth end (and with it the pair) and every qdisc on it.
"""

from __future__ import annotations

import atexit
import ctypes
import itertools
import json
import logging
import os
import re
import shutil
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Callable, Iterable

from harness.core import workdirs
from harness.core.process import die_with_parent
from harness.hosts.capabilities import HostCapability
from harness.analysis.latency import LatencySummary

log = logging.getLogger(__name__)

PREFIX = "qmh-"
DEVICE = "mig0"
ADDRESSES = {"source": "198.18.0.1", "destination": "198.18.0.2"}
PREFIX_LEN = 30
ROLES = {"source": "src", "destination": "dst"}
NAME_RE = re.compile(r"^qmh-(\d+)-(\d+)-(\d+)-(src|dst|probe)$")
CLONE_NEWNET = 0x40000000
NETNS_DIR = "/var/run/netns"
# What a kernel without netem says (iproute2's tc, "Specified qdisc kind is unknown."): the probe's reason names it.
NETEM_KERNEL_OPTION = "CONFIG_NET_SCH_NETEM"
IPERF_PORT = 5201           # inside the destination namespace: nothing else can hold it there


class NetnsError(RuntimeError):
    """An ip/tc command the link needs failed (the message has the command and its stderr)."""


# -- configuration (pure) ----------------------------------------------------------------------------------------
_RATE_UNITS = {"bit": 1, "kbit": 10**3, "mbit": 10**6, "gbit": 10**9}
_DELAY_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def parse_rate(text: str) -> int:
    """A bandwidth in tc's units (bit, kbit, mbit, gbit; decimal) → bits per second. ValueError if malformed."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(bit|kbit|mbit|gbit)\s*", text.lower())
    if not match or float(match[1]) <= 0:
        raise ValueError(f"{text!r}: not a bandwidth (e.g. 100mbit, 1gbit, 500kbit)")
    return int(float(match[1]) * _RATE_UNITS[match[2]])


def parse_delay(text: str) -> float:
    """A one-way delay (us, ms, s; a bare number is ms) → milliseconds. ValueError if malformed."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(us|ms|s)?\s*", text.lower())
    if not match:
        raise ValueError(f"{text!r}: not a delay (e.g. 5ms, 250us)")
    return float(match[1]) * _DELAY_UNITS[match[2] or "ms"]


def parse_loss(text: str) -> float:
    """A packet loss in percent ("1%", "0.5") → percent, 0 ≤ loss < 100. ValueError if malformed."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*%?\s*", text)
    if not match or float(match[1]) >= 100:
        raise ValueError(f"{text!r}: not a loss percentage below 100 (e.g. 1%, 0.1)")
    return float(match[1])


@dataclass(frozen=True)
class Shaping:
    """What the link is set to, in each direction: bandwidth (tbf), one-way delay and loss (netem). The round trip
    a delay adds is twice `delay_ms` (both ends delay what they send)."""
    rate_bit: int | None = None
    delay_ms: float = 0.0
    loss_pct: float = 0.0

    @property
    def needs_netem(self) -> bool:
        return self.delay_ms > 0 or self.loss_pct > 0

    @classmethod
    def for_rtt(cls, rtt_ms: float, rate_bit: int | None = None) -> "Shaping":
        """A link whose delay adds `rtt_ms` to the round trip (half of it each way)."""
        return cls(rate_bit=rate_bit, delay_ms=rtt_ms / 2)

    def describe(self) -> str:
        parts = [f"rate {self.rate_bit / 1e6:g} Mbit/s" if self.rate_bit else "rate unlimited",
                 f"delay {self.delay_ms:g} ms each way", f"loss {self.loss_pct:g} %"]
        return ", ".join(parts)

    def to_json(self) -> dict[str, Any]:
        return {"rate_bit_per_s": self.rate_bit, "delay_ms_each_way": self.delay_ms,
                "added_rtt_ms": 2 * self.delay_ms, "loss_pct_each_way": self.loss_pct}


PARSERS: dict[str, Callable[[str], Any]] = {"rate": parse_rate, "delay": parse_delay, "loss": parse_loss}


def shaping_from(rate: str | None = None, delay: str | None = None, loss: str | None = None,
                 base: Shaping = Shaping()) -> Shaping:
    """`base` with the given fields (strings as on the command line or in a `link` marker) replacing its own."""
    return Shaping(rate_bit=parse_rate(rate) if rate is not None else base.rate_bit,
                   delay_ms=parse_delay(delay) if delay is not None else base.delay_ms,
                   loss_pct=parse_loss(loss) if loss is not None else base.loss_pct)


def tbf_burst_bytes(rate_bit: int) -> int:
    """tbf's bucket: at least one timer tick's worth of bytes at `rate_bit` (10 ms covers HZ ≥ 100), else the
    rate is not reached; never below 32 KiB (a few full-size packets)."""
    return max(32 * 1024, rate_bit // 8 // 100)


def shaping_commands(namespace: str, device: str, shaping: Shaping) -> list[list[str]]:
    """tc commands that shape what `device` in `namespace` sends: netem (delay, loss) at the root with tbf under
    it when both are asked for, tbf alone for a bandwidth, nothing for an unshaped link."""
    tc = ["tc", "-n", namespace, "qdisc", "add", "dev", device]
    tbf = ["tbf", "rate", f"{shaping.rate_bit}bit", "burst", str(tbf_burst_bytes(shaping.rate_bit or 0)),
           "latency", "50ms"]
    commands = []
    if shaping.needs_netem:
        netem = ["netem"]
        if shaping.delay_ms > 0:
            netem += ["delay", f"{shaping.delay_ms * 1000:.0f}us"]
        if shaping.loss_pct > 0:
            netem += ["loss", f"{shaping.loss_pct:g}%"]
        commands.append([*tc, "root", "handle", "1:", *netem])
        if shaping.rate_bit:
            commands.append([*tc, "parent", "1:", "handle", "2:", *tbf])
    elif shaping.rate_bit:
        commands.append([*tc, "root", "handle", "1:", *tbf])
    return commands


def namespace_name(pid: int, start: str, serial: int, role: str) -> str:
    return f"{PREFIX}{pid}-{start}-{serial}-{role}"


def owner_of(name: str) -> tuple[int, str] | None:
    """(pid, start time) of the run that made namespace `name`, or None if it is not one of the harness's."""
    match = NAME_RE.match(name)
    return (int(match[1]), match[2]) if match else None


def stale_namespaces(names: Iterable[str], alive: Callable[[int, str], bool]) -> list[str]:
    """The harness's namespaces among `names` whose owning run is gone (`alive(pid, start)` is False)."""
    return [name for name in names if (owner := owner_of(name)) is not None and not alive(*owner)]


def parse_netns_list(text: str) -> list[str]:
    """Names from `ip netns list` ("NAME" or "NAME (id: N)" per line)."""
    return [line.split()[0] for line in text.splitlines() if line.strip()]


def setup_commands(source_ns: str, destination_ns: str, shaping: Shaping) -> list[list[str]]:
    """ip/tc commands that build a link between two existing namespaces: the veth pair made inside them, loopback
    up in each (the SSH hostfwd binds there), the test addresses, the shaping on both ends."""
    commands = [["ip", "link", "add", DEVICE, "netns", source_ns, "type", "veth",
                 "peer", "name", DEVICE, "netns", destination_ns]]
    for side, ns in (("source", source_ns), ("destination", destination_ns)):
        commands += [["ip", "-n", ns, "link", "set", "lo", "up"],
                     ["ip", "-n", ns, "addr", "add", f"{ADDRESSES[side]}/{PREFIX_LEN}", "dev", DEVICE],
                     ["ip", "-n", ns, "link", "set", DEVICE, "up"],
                     *shaping_commands(ns, DEVICE, shaping)]
    return commands


def link_state_command(namespace: str, up: bool) -> list[str]:
    """Bring the veth end in `namespace` up or down (down also takes the peer's carrier away: the link is cut)."""
    return ["ip", "-n", namespace, "link", "set", "dev", DEVICE, "up" if up else "down"]


# -- measurements (pure parsing) ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class PingResult:
    """iputils ping's view of the link: one RTT per reply, and the loss it counted."""
    sent: int
    received: int
    rtts_ms: tuple[float, ...]

    @property
    def rtt(self) -> LatencySummary:
        return LatencySummary.of(ms * 1000 for ms in self.rtts_ms)

    def to_json(self) -> dict[str, Any]:
        return {"sent": self.sent, "received": self.received,
                "loss_pct": 100.0 * (self.sent - self.received) / self.sent if self.sent else None,
                "rtt": self.rtt, "rtts_ms": list(self.rtts_ms)}


def parse_ping(text: str) -> PingResult:
    """iputils-ping output → its per-reply RTTs and counts; ValueError without the summary line."""
    rtts = tuple(float(m) for m in re.findall(r"\btime=([\d.]+) ms", text))
    summary = re.search(r"(\d+) packets transmitted, (\d+) received", text)
    if summary is None:
        raise ValueError(f"no ping summary in: {text[-300:]!r}")
    return PingResult(int(summary[1]), int(summary[2]), rtts)


def parse_iperf3(text: str) -> float:
    """iperf3 -J client output → the receiver's throughput in bit/s; ValueError if iperf3 reported an error."""
    data = json.loads(text)
    if data.get("error"):
        raise ValueError(f"iperf3: {data['error']}")
    return float(data["end"]["sum_received"]["bits_per_second"])


def parse_tx_bytes(text: str) -> int:
    """`ip -j -s link show dev X` → X's transmitted bytes."""
    return int(json.loads(text)[0]["stats64"]["tx"]["bytes"])


@dataclass(frozen=True)
class LinkMeasurement:
    """The link as measured before the QEMUs start: ping RTT (iputils-ping, source → destination) and TCP
    throughput (iperf3, client in the source namespace, server in the destination's)."""
    ping: PingResult
    throughput_bit_per_s: float
    iperf_seconds: float

    def to_json(self) -> dict[str, Any]:
        return {"ping": self.ping, "throughput_bit_per_s": self.throughput_bit_per_s,
                "throughput_mbit_per_s": self.throughput_bit_per_s / 1e6, "iperf3_seconds": self.iperf_seconds,
                "direction": "source → destination (the migration's)"}


# -- doing it ----------------------------------------------------------------------------------------------------
def run(command: list[str], timeout: float = 30.0, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(command, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    if check and proc.returncode != 0:
        raise NetnsError(f"`{' '.join(command)}` failed (exit {proc.returncode}): "
                         f"{(proc.stderr or proc.stdout).strip()[:300]}")
    return proc


def exec_prefix(namespace: str) -> tuple[str, ...]:
    """The command prefix that runs a program inside `namespace` (as --qemu-wrapper prefixes QEMU)."""
    return ("ip", "netns", "exec", namespace)


def connect_in(namespace: str, host: str, port: int, timeout: float) -> socket.socket:
    """A TCP connection to host:port made from inside `namespace`. A socket belongs to the namespace it was created
    in for its whole life, whichever thread uses it later; setns(2) changes only the calling thread, so a
    short-lived thread enters the namespace, connects, and ends — the harness's own threads never move."""
    result: dict[str, Any] = {}

    def connect() -> None:
        try:
            with open(os.path.join(NETNS_DIR, namespace)) as ns:
                if ctypes.CDLL(None, use_errno=True).setns(ns.fileno(), CLONE_NEWNET) != 0:
                    err = ctypes.get_errno()
                    raise OSError(err, f"setns into network namespace {namespace}: {os.strerror(err)}")
            result["socket"] = socket.create_connection((host, port), timeout=timeout)
        except BaseException as exc:   # handed to the caller's thread, which raises it
            result["error"] = exc

    thread = threading.Thread(target=connect, name=f"connect-in-{namespace}", daemon=True)
    thread.start()
    thread.join()
    if "error" in result:
        raise result["error"]
    return result["socket"]


_serial = itertools.count(1)
_LIVE: "set[Link]" = set()


@dataclass(eq=False)
class Link:
    """A created link: the source's and destination's namespaces and the veth between them, shaped as asked.
    `close()` deletes both namespaces (the veth and its qdiscs go with them); it is idempotent."""
    source_ns: str
    destination_ns: str
    shaping: Shaping
    measured: LinkMeasurement | None = None
    cut_count: int = field(default=0)

    def namespace(self, side: str) -> str:
        return self.source_ns if side == "source" else self.destination_ns

    @staticmethod
    def address(side: str) -> str:
        return ADDRESSES[side]

    def exec_prefix(self, side: str) -> tuple[str, ...]:
        return exec_prefix(self.namespace(side))

    def cut(self) -> None:
        """Take the link down (the source's end: the peer loses its carrier too). Nothing is sent or received
        over it until restore(): a side's TCP notices only when its retransmissions of unacknowledged data run
        out (set_tcp_retries); a side that sends nothing notices nothing."""
        run(link_state_command(self.source_ns, up=False))
        self.cut_count += 1

    def restore(self) -> None:
        """Bring the link back up; the addresses and qdiscs stayed on the devices, the routes come back with it."""
        run(link_state_command(self.source_ns, up=True))

    def sent_bytes(self, side: str) -> int:
        """Bytes `side`'s end of the veth has sent so far (its tx counter: the migration stream, the return path,
        and before the QEMUs the measurement's traffic)."""
        out = run(["ip", "-n", self.namespace(side), "-j", "-s", "link", "show", "dev", DEVICE]).stdout
        return parse_tx_bytes(out)

    def set_tcp_retries(self, retries: int) -> None:
        """net.ipv4.tcp_retries2 in both namespaces (it is per namespace): how many retransmissions a TCP
        connection makes before it gives up on a silent peer. The default 15 is ~15 minutes; 3 is ~3 s at the
        200 ms minimum RTO, a host tuned to notice a dead link."""
        for ns in (self.source_ns, self.destination_ns):
            run([*exec_prefix(ns), "sysctl", "-q", "-w", f"net.ipv4.tcp_retries2={retries}"])

    def measure(self, pings: int = 20, iperf_seconds: float = 2.0) -> LinkMeasurement:
        """Ping RTT and iperf3 throughput, source → destination; call before the QEMUs start (iperf3 fills the
        link, and the QEMUs would share the CPUs with it)."""
        destination = self.address("destination")
        ping = run([*exec_prefix(self.source_ns), "ping", "-n", "-c", str(pings), "-i", "0.02", "-W", "2",
                    destination], timeout=pings * 2 + 10, check=False)
        throughput = self._iperf3(destination, iperf_seconds)
        self.measured = LinkMeasurement(parse_ping(ping.stdout), throughput, iperf_seconds)
        return self.measured

    def _iperf3(self, address: str, seconds: float) -> float:
        server = subprocess.Popen([*exec_prefix(self.destination_ns), "iperf3", "--server", "--one-off",
                                   "--bind", address, "--port", str(IPERF_PORT)],
                                  stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                  start_new_session=True, preexec_fn=die_with_parent)
        try:
            deadline = time.monotonic() + 10
            while True:   # the server listens within moments; until then the client is refused
                client = run([*exec_prefix(self.source_ns), "iperf3", "--client", address, "--port",
                              str(IPERF_PORT), "--time", f"{seconds:g}", "--json"], timeout=seconds + 30,
                             check=False)
                # (iperf3 3.12 exits 0 even then, with the error in its JSON)
                if "Connection refused" not in client.stdout + client.stderr or time.monotonic() > deadline:
                    break
                time.sleep(0.1)
            try:
                return parse_iperf3(client.stdout)
            except ValueError as exc:
                raise NetnsError(f"iperf3 over the link failed (exit {client.returncode}): {exc}; "
                                 f"{client.stderr.strip()[-300:]}") from None
        finally:
            if server.poll() is None:
                server.kill()
            server.wait(10)
            if server.stderr is not None:
                server.stderr.close()

    def close(self) -> None:
        for ns in (self.destination_ns, self.source_ns):
            delete_namespace(ns)
        _LIVE.discard(self)

    def to_json(self) -> dict[str, Any]:
        return {"topology": "netns", "namespaces": {"source": self.source_ns, "destination": self.destination_ns},
                "device": DEVICE, "addresses": {s: f"{a}/{PREFIX_LEN}" for s, a in ADDRESSES.items()},
                "configured": self.shaping, "measured": self.measured,
                "ssh": "through each namespace's own loopback (hostfwd 127.0.0.1), never over the veth"}


def delete_namespace(name: str) -> None:
    proc = run(["ip", "netns", "delete", name], check=False)
    if proc.returncode != 0 and os.path.exists(os.path.join(NETNS_DIR, name)):
        log.warning("could not delete network namespace %s: %s", name, proc.stderr.strip())


def _new_names(role_suffixes: Iterable[str]) -> list[str]:
    pid, serial = os.getpid(), next(_serial)
    start = workdirs.start_time(pid) or "0"
    return [namespace_name(pid, start, serial, role) for role in role_suffixes]


def create(shaping: Shaping) -> Link:
    """Two fresh namespaces of this process and the link between them; on any failure nothing is left."""
    source_ns, destination_ns = _new_names((ROLES["source"], ROLES["destination"]))
    link = Link(source_ns, destination_ns, shaping)
    _LIVE.add(link)
    try:
        for ns in (source_ns, destination_ns):
            run(["ip", "netns", "add", ns])
        for command in setup_commands(source_ns, destination_ns, shaping):
            run(command)
    except BaseException:
        link.close()
        raise
    return link


def _close_all_live() -> None:
    for link in list(_LIVE):
        link.close()


atexit.register(_close_all_live)


@lru_cache(maxsize=1)
def netem_available() -> HostCapability:
    """Whether this kernel can delay and drop packets: add a netem qdisc to a scratch veth in a scratch namespace
    (once per process). The reason names the missing kernel feature."""
    (scratch,) = _new_names(["probe"])
    try:
        run(["ip", "netns", "add", scratch])
        run(["ip", "-n", scratch, "link", "add", "probe0", "type", "veth", "peer", "name", "probe1"])
        proc = run(["tc", "-n", scratch, "qdisc", "add", "dev", "probe0", "root", "netem", "delay", "1ms"],
                   check=False)
    except NetnsError as exc:
        return HostCapability(False, f"link delay/loss: could not probe for netem: {exc}")
    finally:
        delete_namespace(scratch)
    if proc.returncode == 0:
        return HostCapability(True, "netem qdisc available")
    return HostCapability(False, f"link delay/loss need the kernel's netem qdisc ({NETEM_KERNEL_OPTION}, module "
                                 f"sch_netem), which this kernel lacks: tc says {proc.stderr.strip()!r}")


def usable() -> HostCapability:
    """Namespaces can be made here: root (CAP_SYS_ADMIN and CAP_NET_ADMIN) and iproute2's `ip` and `tc`."""
    if os.geteuid() != 0:
        return HostCapability(False, "network namespaces (--topology netns, `link` tests) need root")
    missing = [tool for tool in ("ip", "tc") if shutil.which(tool) is None]
    if missing:
        return HostCapability(False, f"network namespaces (--topology netns, `link` tests) need "
                                     f"{' and '.join(missing)} (package iproute2: make setup)")
    return HostCapability(True, "network namespaces available")


def measuring_tools_missing() -> str | None:
    """Why the link cannot be measured (ping from iputils-ping, iperf3), or None."""
    missing = {tool: package for tool, package in (("ping", "iputils-ping"), ("iperf3", "iperf3"))
               if shutil.which(tool) is None}
    if not missing:
        return None
    return ("the link is measured with " + " and ".join(f"{t} (package {p})" for t, p in missing.items())
            + ", not installed here: run `make setup`")


def list_namespaces() -> list[str]:
    proc = run(["ip", "netns", "list"], check=False)
    return parse_netns_list(proc.stdout) if proc.returncode == 0 else []


def reap_stale() -> list[str]:
    """Delete the namespaces of runs that died (SIGKILL, power loss); returns their names. A no-op where
    namespaces cannot be made (not root, no `ip`)."""
    if not usable().available:
        return []
    stale = stale_namespaces(list_namespaces(), workdirs.process_alive)
    for name in stale:
        delete_namespace(name)
    return stale


def owned_by(pid: int) -> list[str]:
    """The namespaces process `pid` made (for the fault suite's leftovers check)."""
    return [name for name in list_namespaces() if (owner := owner_of(name)) is not None and owner[0] == pid]
