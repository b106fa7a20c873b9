"""In-guest workloads (guest-workloads/*.c): what to run, as data, and control over SSH.

A workload runs detached in the guest and moves with it; every call names the machine to reach the guest
through, so after a migration the test simply asks the destination.
"""

from __future__ import annotations

import json
import shlex
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

from harness.vm.guest import GuestCommandError
from harness.core.units import MiB

RUN_DIR = "/run/wl"


class HasShell(Protocol):
    @property
    def shell(self) -> Any: ...


@dataclass(frozen=True)
class Dirty:
    """Dirty `size_mib` at `rate_mibps` MiB/s (0 = flat out) with non-zero, changing data."""
    size_mib: int
    rate_mibps: float = 0
    order: str = "random"
    seed: int = 1
    full_page: bool = False
    prefill: bool = False     # every page non-zero before it starts (and before start() returns)
    program: str = field(default="dirty", init=False)

    def argv(self) -> list[str]:
        args = ["--size-mib", str(self.size_mib), "--rate-mibps", f"{self.rate_mibps:g}",
                "--order", self.order, "--seed", str(self.seed)]
        return args + (["--full-page"] if self.full_page else []) + (["--prefill"] if self.prefill else [])


# Where LoggedDirty writes its progress: tmpfs, read back once at the end (one SSH command, not one per sample).
RATE_LOG = f"{RUN_DIR}/dirty.rate"


@dataclass(frozen=True)
class LoggedDirty(Dirty):
    """`dirty` that also logs its own progress every 100 ms (guest-workloads/dirty.c --rate-log): lines
    "<CLOCK_MONOTONIC ns> <pages so far>", parsed by analysis.parse_rate_log and placed on the host's clock with
    analysis.ClockMap from guest_clock_reading()s taken before and after."""
    rate_log: str = RATE_LOG

    def argv(self) -> list[str]:
        return [*super().argv(), "--rate-log", self.rate_log]


def guest_clock_reading(machine: HasShell) -> tuple[float, float]:
    """(guest CLOCK_BOOTTIME s — = CLOCK_MONOTONIC in a guest that never suspends —, host time.monotonic() at the
    middle of the SSH command that read it)."""
    before = time.monotonic()
    uptime = float(machine.shell.run("cat /proc/uptime").stdout.split()[0])
    return uptime, (before + time.monotonic()) / 2


@dataclass(frozen=True)
class SeqInc:
    """The sequential-increment pattern whose invariant `seqcheck` verifies after any migration."""
    size_mib: int
    rate_passes: float = 0
    file: str = "/dev/shm/seqinc"
    program: str = field(default="seqinc", init=False)

    def argv(self) -> list[str]:
        return ["--size-mib", str(self.size_mib), "--rate-passes", f"{self.rate_passes:g}", "--file", self.file]


@dataclass(frozen=True)
class Heartbeat:
    """One byte every `period_us` on the virtio-serial port named "heartbeat" (MachineConfig(heartbeat=True)),
    which the host timestamps (harness.vm.heartbeat)."""
    period_us: int = 1000
    program: str = field(default="heartbeat", init=False)

    def argv(self) -> list[str]:
        return ["--period-us", str(self.period_us)]


@dataclass(frozen=True)
class Probe:
    """Touch pages of a region in a seeded random order, recording per-access latency."""
    size_mib: int
    seed: int = 1
    rounds: int = 1
    wait_signal: bool = True
    raw_file: str | None = None   # per-access records {u64 t_ns, u32 page, u32 latency_ns} (harness.analysis.latency)
    start_delay_ms: int = 0       # with wait_signal: guest time from SIGUSR1 to the first access
    program: str = field(default="probe", init=False)

    def argv(self) -> list[str]:
        args = ["--size-mib", str(self.size_mib), "--seed", str(self.seed), "--rounds", str(self.rounds)]
        args += ["--raw", self.raw_file] if self.raw_file else []
        args += ["--start-delay-ms", str(self.start_delay_ms)] if self.start_delay_ms else []
        return args + (["--wait-signal"] if self.wait_signal else [])


@dataclass(frozen=True)
class PageLife:
    """Pages through the lifecycle migration handles on separate paths (guest-workloads/pagelife.c): zeroed after
    being sent, discarded and reused, unmapped and remapped, zero then written, sparsely changed, zeroed and
    restored; `thp` madvises the region for transparent huge pages (in 2 MiB runs per class, so huge pages are
    dropped or rewritten whole). Each next_phase() runs one more step; stop() checks every page and returns the
    verdict (`result`, `bad_pages`, `listed`, per-class counts)."""
    size_mib: int = 32
    thp: bool = False
    seed: int = 1
    program: str = field(default="pagelife", init=False)

    PHASES = 3

    def argv(self) -> list[str]:
        args = ["--size-mib", str(self.size_mib), "--seed", str(self.seed)]
        return args + (["--thp", "--chunk-kib", "2048"] if self.thp else [])


WorkloadSpec = Dirty | SeqInc | Probe | Heartbeat | PageLife


@dataclass(frozen=True)
class RunningWorkload:
    name: str
    spec: WorkloadSpec
    pid: int

    def _path(self, suffix: str) -> str:
        return f"{RUN_DIR}/{self.name}.{suffix}"

    def status(self, on: HasShell) -> dict[str, Any]:
        """The workload's periodic status file (dirty writes one about every second)."""
        text = on.shell.run(f"cat {self._path('status.json')} 2>/dev/null || echo '{{}}'", idempotent=True).stdout
        return json.loads(text or "{}")

    def wait_progress(self, on: HasShell, key: str = "pages_dirtied", timeout: float = 15.0) -> tuple[float, float]:
        """Wait until the status counter `key` moves; returns (first, last) values seen (equal on timeout)."""
        first = float(self.status(on).get(key, 0))
        deadline = time.monotonic() + timeout
        last = first
        while last <= first and time.monotonic() < deadline:
            time.sleep(0.2)
            last = float(self.status(on).get(key, 0))
        return first, last

    def dirty_rate_over(self, on: HasShell, seconds: float) -> float:
        """MiB/s a `dirty` workload achieved over about `seconds`, from its own status file (updated every second):
        its byte counter over its own clock, whatever the host's clock did meanwhile."""
        first = self.status(on)
        time.sleep(seconds)  # the measurement window itself
        last = self.status(on)
        elapsed = float(last["elapsed_s"]) - float(first["elapsed_s"])
        return (float(last["bytes_dirtied"]) - float(first["bytes_dirtied"])) / MiB / elapsed

    def next_phase(self, on: HasShell, timeout: float = 30.0) -> dict[str, Any]:
        """PageLife: run its next phase (SIGUSR1) and wait, in the guest, until its status says it is done; that
        status."""
        want = int(self.status(on).get("phase", 0)) + 1
        loops = int(timeout * 10)
        status = self._path("status.json")
        # Not re-run on a lost session: a second SIGUSR1 would run a second phase.
        script = (f"kill -USR1 {self.pid}; i=0; while ! grep -q '\"phase\": {want},' {status} && "
                  f"[ $i -lt {loops} ]; do sleep 0.1; i=$((i+1)); done; cat {status}")
        reached = json.loads(on.shell.run(script, timeout=timeout + 10).stdout)
        if reached.get("phase") != want:
            raise RuntimeError(f"{self.name}: phase {want} not done within {timeout}s (status {reached})")
        return dict(reached)

    def is_alive(self, on: HasShell) -> bool:
        return on.shell.run(f"kill -0 {self.pid}", check=False, idempotent=True).ok

    def signal(self, on: HasShell, sig: str) -> None:
        # Not idempotent (a second USR1 would start a second probe round): a lost connection is raised.
        on.shell.run(f"kill -{sig} {self.pid}")

    def stop(self, on: HasShell, timeout: float = 30.0) -> dict[str, Any]:
        """SIGTERM the workload and return its final JSON result (it writes one on exit)."""
        return self.wait_exit(on, timeout, terminate=True)

    def wait_exit(self, on: HasShell, timeout: float = 60.0, terminate: bool = False) -> dict[str, Any]:
        """Wait (in the guest, polling every 0.1 s) for the workload to end — by itself, or after SIGTERM when
        `terminate` — and return its JSON result."""
        loops = int(timeout * 10)
        script = ((f"kill -TERM {self.pid} 2>/dev/null; " if terminate else "") +
                  f"i=0; while kill -0 {self.pid} 2>/dev/null && [ $i -lt {loops} ]; do sleep 0.1; i=$((i+1)); done; "
                  f"if kill -0 {self.pid} 2>/dev/null; then echo '{self.name} still running after {timeout}s' >&2; "
                  f"exit 1; fi; cat {self._path('json')}")
        try:
            # Idempotent: SIGTERM to a workload already terminating changes nothing, and waiting again is harmless.
            return json.loads(on.shell.run(script, timeout=timeout + 10, idempotent=True).stdout)
        except GuestCommandError as exc:
            raise GuestCommandError(exc.result) from RuntimeError(f"{self.name} log:\n{self.log(on)}")

    def log(self, on: HasShell) -> str:
        return str(on.shell.run(f"cat {self._path('log')} 2>/dev/null", check=False, idempotent=True).stdout)


def start(on: HasShell, spec: WorkloadSpec, name: str | None = None, timeout: float = 30.0) -> RunningWorkload:
    """Start `spec` detached (setsid) unless a workload of that name already runs; wait for its pidfile."""
    name = name or spec.program
    base = f"{RUN_DIR}/{name}"
    command = shlex.join([spec.program, *spec.argv(), "--pidfile", f"{base}.pid", "--out", f"{base}.json",
                          *(["--status", f"{base}.status.json"] if isinstance(spec, (Dirty, PageLife)) else [])])
    loops = int(timeout * 10)
    # Never re-run (GuestShell.run's default): if the session breaks after the script was sent, the workload may
    # already be starting without its pidfile written yet, and a second run would start a second one. The
    # pidfile check still keeps a caller's deliberate second start() from doubling a running workload.
    script = (f"mkdir -p {RUN_DIR}; "
              f"if ! {{ [ -s {base}.pid ] && kill -0 $(cat {base}.pid) 2>/dev/null; }}; then "
              f"rm -f {base}.pid {base}.json; setsid {command} </dev/null >{base}.log 2>&1 & fi; "
              f"i=0; while [ ! -s {base}.pid ] && [ $i -lt {loops} ]; do sleep 0.1; i=$((i+1)); done; "
              f"if [ -s {base}.pid ]; then cat {base}.pid; else echo 'no pidfile' >&2; cat {base}.log >&2; exit 1; fi")
    pid = int(on.shell.run(script, timeout=timeout + 10).stdout.strip())
    return RunningWorkload(name, spec, pid)


def seqinc_counter(on: HasShell, workload: RunningWorkload) -> int:
    """seqinc's own pass counter, read in the guest from the first page of its file (its u64 header: the passes
    the writer completed over that page). That it advances is the guest making progress, by its own work."""
    assert isinstance(workload.spec, SeqInc), f"{workload.name} is not a seqinc workload"
    out = on.shell.run(f"od -An -tu8 -N8 {shlex.quote(workload.spec.file)}", idempotent=True).stdout.split()
    return int(out[0])


def wait_seqinc_advances(on: HasShell, workload: RunningWorkload, timeout: float = 15.0) -> tuple[int, int]:
    """(first, last) seqinc counter read in the guest, polling until it moves or `timeout` passes."""
    first = last = seqinc_counter(on, workload)
    deadline = time.monotonic() + timeout
    while last <= first and time.monotonic() < deadline:
        time.sleep(0.3)
        last = seqinc_counter(on, workload)
    return first, last


@dataclass(frozen=True)
class SeqCheck:
    passed: bool
    line: str
    details: dict[str, Any]


def seqcheck(on: HasShell, workload: RunningWorkload | None = None, file: str = "/dev/shm/seqinc") -> SeqCheck:
    """Verify the seqinc invariant in the guest (freezing the writer during the check)."""
    out = f"{RUN_DIR}/seqcheck.json"
    args = ["seqcheck", "--file", file, "--out", out]
    if workload is not None:
        args += ["--pidfile", f"{RUN_DIR}/{workload.name}.pid"]
    result = on.shell.run(shlex.join(args), check=False, timeout=120)
    if result.exit_status not in (0, 1):
        raise GuestCommandError(result)
    details = json.loads(on.shell.run(f"cat {out}", idempotent=True).stdout)
    line = (result.stdout.strip().splitlines() or [""])[-1]
    return SeqCheck(result.exit_status == 0, line, details)
