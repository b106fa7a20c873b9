"""`make bench`: what the harness costs and how well its instruments measure, against the project's targets.

  python -m harness.tools.bench [--qemu-binary PATH] [--accel auto|kvm|tcg] [--out artefacts/bench.json] [--quick]

Measures, on the guest image and QEMU the suite uses:
  boot        boot-to-SSH median/p90 (images/measure-boot.py's measure(): OpenSSH client, console marker first);
              for a guest arch other than the host's (--arch s390x), the host arch's guest is timed in the same run
              too (--baseline-arch) and the ratio reported
  overhead    a harness-driven boot + precopy migration of an idle guest (Testbed, 100 Hz sampler, artefacts,
              plots) vs the same guest and migration driven bare (subprocess + plain qemu.qmp calls, MIGRATION
              events): median seconds of each, the ratio and the absolute overhead per test
  sampler     achieved query-migrate rate (Hz, per side) and its cost to the guest: the `dirty` workload's
              flat-out rate in windows with the Sampler on (source 100 Hz, destination 10 Hz outside postcopy) vs
              off, with no migration and then (judged) during a non-converging one (harness/tools/bench_sampler.py)
  workload    `dirty` at 8/32/64 MiB/s requested vs achieved (its own accounting)
  parallel    one small selection of behaviour tests (--parallel-selection) run by pytest serially, then with
              pytest-xdist -n N (--workers, default 2), back to back: the wall-time speedup and its efficiency
              (speedup / N), and whether every test id got the same verdict (pass/fail/skip/…) both times
              (harness/tools/bench_parallel.py)
  warm        a test's guest ready (Testbed.boot to SSH) cold-booted vs restored from a warm boot
              (harness/tools/bench_warm.py), target ≤ 1 s warm
  suite       wall time of the last `make check` (artefacts/junit.xml), if there is one, and its profile: where
              the time went — suites, CPU waits, boots, RAM digests, teardown, test bodies
              (harness/tools/bench_profile.py; artefacts/latest's per-test records)
Prints a table with PASS/MISS against the targets and writes everything as JSON. Exit status 0 unless a
measurement could not run at all: 2 (or, with --strict, 1 when a target was missed); 4 when bench could not start
(a bad --qemu-binary/--arch/--image-dir, or OUT's directory holds a `bench` it did not make: only a directory
carrying its marker file is ever deleted).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any, Callable

from qemu.qmp import EventListener, QMPClient

from harness.analysis import oracles

from harness.core import workdirs

from harness.vm import workloads
from harness.vm.accel import choose_accel
from harness.qemu.arch import ARCHES, arch_spec, host_arch
from harness.qemu.compat import choose_platform
from harness.qemu.image import GuestImage, ImageMissing
from harness.core.process import die_with_parent, free_tcp_port
from harness.vm.machine import Machine
from harness.hosts.parallel import CpuBudget
from harness.migration.config import MigrationConfig
from harness.qemu.binary import QemuBinary, QemuNotFound
from harness.report.artefacts import Artefacts
from harness.tools.bench_parallel import PARALLEL_WORKERS, bench_parallel, parallel_rows, suite_wall_time
from harness.tools.bench_profile import profile, rows as profile_rows
from harness.tools.bench_warm import bench_warm, warm_rows
from harness.migration.sampler import SLOW_SIDE_HZ
from harness.tools.bench_sampler import SAMPLER_PAIR_WINDOW_S, SAMPLER_PAIRS, bench_sampler, sampler_rows
from harness.migration.testbed import DEFAULT_MEMORY_MIB, Environment, Testbed
from harness.vm.workloads import Dirty

REPO = Path(__file__).resolve().parents[2]

# Targets (README "Benchmark").
BOOT_TARGET_S = 3.0
WORKLOAD_MAX_ERROR = 0.05
OVERHEAD_MAX_S = 1.0

WORKLOAD_RATES_MIBPS = (8, 32, 64)
RATE_WINDOW_S = 5.0
HOT_SET_MIB = 64                  # the workload-rate part's dirtier


# Written into the scratch directory bench makes: only a directory carrying it is ever deleted by a later bench.
SCRATCH_MARKER = ".qmh-bench-scratch"
COULD_NOT_RUN = 4


class BenchUnusable(RuntimeError):
    """A bad input: bench stops with this one line and exit 4 before measuring anything."""


def log(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


def load_measure_boot() -> ModuleType:
    """images/measure-boot.py is a stand-alone stdlib script (hyphenated name): load it from its path."""
    spec = importlib.util.spec_from_file_location("measure_boot", REPO / "images" / "measure-boot.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve the module by name
    spec.loader.exec_module(module)
    return module


# -- boot ----------------------------------------------------------------------------------------------------------
def measure_boots(env: Environment, boots: int) -> dict[str, Any]:
    measure_boot = load_measure_boot()
    accel = env.accel.name
    options = measure_boot.BootOptions(
        qemu=str(env.source_binary.path), accel=accel, machine=env.arch.machine,
        cpu=env.arch.cpu_kvm if accel == "kvm" else env.arch.cpu_tcg, memory=DEFAULT_MEMORY_MIB,
        qemu_arg=env.source_binary.launch.firmware_args())
    return measure_boot.measure(str(env.image.directory), boots, options, progress=lambda i, r: log(
        f"{env.arch.name} boot {i + 1}/{boots}: {r['boot_to_ssh_s']} s"))


def bench_boot(env: Environment, boots: int, baseline: Environment | None = None) -> dict[str, Any]:
    """`env`'s boot-to-SSH; with a baseline (another arch's guest), that one's too, measured right after on the
    same host load, and the ratios of the medians and p90s."""
    result = measure_boots(env, boots)
    result = {**result, "arch": env.arch.name, "target_s": BOOT_TARGET_S, "pass": result["median"] <= BOOT_TARGET_S}
    if baseline is not None:
        base = measure_boots(baseline, boots)
        result["baseline"] = {"arch": baseline.arch.name, **{k: base[k] for k in ("median", "p90", "samples")}}
        result["ratio_median"] = round(result["median"] / base["median"], 2)
        result["ratio_p90"] = round(result["p90"] / base["p90"], 2)
    return result


# -- harness overhead ------------------------------------------------------------------------------------------
def harness_trial(env: Environment, directory: Path) -> dict[str, float]:
    """What a simple test does: boot a source to SSH, start a destination, migrate, record, report, clean up."""
    t0 = time.monotonic()
    artefacts = Artefacts(directory, "bench::harness")
    bed = Testbed(env, artefacts)
    try:
        source = bed.boot("source")
        t_booted = time.monotonic()
        destination = bed.incoming(source)
        migration = bed.migrate(source, destination, MigrationConfig())
        final = migration.wait_completed(120)
        t_migrated = time.monotonic()
        migration.finish()
        artefacts.verdict(oracles.completed(final))
        artefacts.raise_first_failure()
    finally:
        bed.close()
    t_closed = time.monotonic()
    artefacts.finalize("passed")
    t_end = time.monotonic()
    return {"total_s": t_end - t0, "boot_s": t_booted - t0, "migrate_s": t_migrated - t_booted,
            "teardown_s": t_closed - t_migrated, "report_s": t_end - t_closed}


def bare_argv(env: Environment, qmp_socket: Path, console: Path, ssh_port: int | None,
              incoming: bool) -> list[str]:
    """The same guest as harness.vm.machine builds, written out by hand."""
    arch, accel = env.arch, env.accel.name
    argv = env.source_binary.base_args() + [
        "-machine", arch.machine, "-accel", accel, "-cpu", arch.cpu_kvm if accel == "kvm" else arch.cpu_tcg,
        "-smp", "1", "-m", f"{DEFAULT_MEMORY_MIB}M", "-nodefaults", "-no-user-config", "-display", "none",
        "-qmp", f"unix:{qmp_socket},server=on,wait=off",
        "-chardev", f"file,id=console,path={console}", *arch.console_args,
        "-kernel", str(env.image.kernel), "-initrd", str(env.image.initrd), "-append", env.image.cmdline]
    if ssh_port is not None:
        argv += ["-netdev", f"user,id=net0,hostfwd=tcp:127.0.0.1:{ssh_port}-:22",
                 "-device", f"{arch.nic},netdev=net0{arch.nic_options}"]
    return argv + (["-incoming", "defer"] if incoming else [])


def _wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"bare trial: {what} not within {timeout}s")
        time.sleep(0.005)


def _bare_ssh(env: Environment, workdir: Path, port: int, timeout: float) -> None:
    measure_boot = load_measure_boot()
    keytype, key = env.image.host_key_pub.read_text().split()[:2]
    known_hosts = workdir / "known_hosts"
    known_hosts.write_text(f"[127.0.0.1]:{port} {keytype} {key}\n")
    command = measure_boot.ssh_command(str(env.image.directory), str(known_hosts), port, env.image.ssh_user, 5)
    deadline = time.monotonic() + timeout
    while subprocess.run(command, stdin=subprocess.DEVNULL, capture_output=True).returncode != 0:
        if time.monotonic() > deadline:
            raise TimeoutError("bare trial: ssh never succeeded")
        time.sleep(0.02)


async def _bare_migrate(source_socket: Path, destination_socket: Path, uri: str, timeout: float) -> None:
    source, destination = QMPClient("bare-source"), QMPClient("bare-destination")
    await source.connect(str(source_socket))
    await destination.connect(str(destination_socket))
    try:
        listeners = {client: EventListener("MIGRATION") for client in (source, destination)}
        for client, listener in listeners.items():
            client.register_listener(listener)
            await client.execute("migrate-set-capabilities",
                                 {"capabilities": [{"capability": "events", "state": True}]})
        await destination.execute("migrate-incoming", {"uri": uri})
        await source.execute("migrate", {"uri": uri})

        async def completed(listener: EventListener) -> None:
            async for event in listener:
                status = event["data"]["status"]
                if status == "completed":
                    return
                if status in ("failed", "cancelled"):
                    raise RuntimeError(f"bare migration {status}")

        await asyncio.wait_for(asyncio.gather(*(completed(lst) for lst in listeners.values())), timeout)
        for client in (source, destination):
            try:
                await client.execute("quit")
            except Exception:  # QEMU may close the socket before its answer arrives
                pass
    finally:
        for client in (source, destination):
            try:
                await client.disconnect()
            except EOFError:  # after `quit` the connection ends with EOF: expected
                pass


def bare_trial(env: Environment, directory: Path) -> dict[str, float]:
    """The same boot + migration with nothing but subprocess, a console poll, ssh and qemu.qmp."""
    directory.mkdir(parents=True, exist_ok=True)
    # A private dir with an owner record: a concurrent run's reap_stale() leaves it alone while this one lives.
    workdir = workdirs.private_dir("bare")
    processes: list[subprocess.Popen[bytes]] = []
    try:
        t0 = time.monotonic()
        port = free_tcp_port()
        source_socket, destination_socket = workdir / "source.qmp", workdir / "destination.qmp"
        console = directory / "source.console.log"
        # The bare arm bypasses Machine, but its QEMUs must die with bench as Machine's do (even on SIGKILL).
        processes.append(subprocess.Popen(bare_argv(env, source_socket, console, port, incoming=False),
                                          stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                          stderr=subprocess.DEVNULL, start_new_session=True,
                                          preexec_fn=die_with_parent))
        marker = env.image.ready_marker
        _wait_for(lambda: console.exists() and marker in console.read_text(errors="replace"), 60, "ready marker")
        _bare_ssh(env, workdir, port, 30)
        t_booted = time.monotonic()
        processes.append(subprocess.Popen(
            bare_argv(env, destination_socket, directory / "destination.console.log", free_tcp_port(),
                      incoming=True),
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True, preexec_fn=die_with_parent))
        _wait_for(lambda: source_socket.exists() and destination_socket.exists(), 30, "QMP sockets")
        asyncio.run(_bare_migrate(source_socket, destination_socket, f"unix:{workdir / 'migration.sock'}", 120))
        t_migrated = time.monotonic()
        for process in processes:
            process.wait(30)
        t_end = time.monotonic()
        return {"total_s": t_end - t0, "boot_s": t_booted - t0, "migrate_s": t_migrated - t_booted,
                "teardown_s": t_end - t_migrated, "report_s": 0.0}
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
        shutil.rmtree(workdir, ignore_errors=True)


def _median_phases(trials: list[dict[str, float]]) -> dict[str, float]:
    return {key: round(statistics.median(t[key] for t in trials), 3) for key in trials[0]}


def bench_overhead(env: Environment, directory: Path, trials: int) -> dict[str, Any]:
    import matplotlib.pyplot  # noqa: F401  # a session imports it once; per test it costs nothing
    harness, bare = [], []
    for i in range(trials):  # interleaved, so drift on a shared host hits both alike
        harness.append(harness_trial(env, directory / f"harness-{i}"))
        log(f"overhead trial {i + 1}/{trials}: harness {harness[-1]['total_s']:.2f} s")
        bare.append(bare_trial(env, directory / f"bare-{i}"))
        log(f"overhead trial {i + 1}/{trials}: bare {bare[-1]['total_s']:.2f} s")
    h, b = _median_phases(harness), _median_phases(bare)
    overhead = round(h["total_s"] - b["total_s"], 3)
    return {"harness_median": h, "bare_median": b, "ratio": round(h["total_s"] / b["total_s"], 3),
            "overhead_s": overhead, "overhead_by_phase_s": {k: round(h[k] - b[k], 3) for k in h},
            "harness_trials": harness, "bare_trials": bare, "target_s": OVERHEAD_MAX_S,
            "pass": overhead <= OVERHEAD_MAX_S}


# -- workload rate accuracy ------------------------------------------------------------------------------------
def bench_workload_rates(source: Machine) -> dict[str, Any]:
    rates = []
    for requested in WORKLOAD_RATES_MIBPS:
        running = workloads.start(source, Dirty(size_mib=HOT_SET_MIB, rate_mibps=requested, order="random"),
                                  name=f"rate{requested}")
        time.sleep(RATE_WINDOW_S)  # the measurement window itself, not a wait for a condition
        result = running.stop(source)
        achieved = float(result["achieved_mibps"])
        error = achieved / requested - 1
        rates.append({"requested_mibps": requested, "achieved_mibps": round(achieved, 3),
                      "elapsed_s": result.get("elapsed_s"), "error": round(error, 4),
                      "pass": abs(error) <= WORKLOAD_MAX_ERROR})
        log(f"dirty at {requested} MiB/s: achieved {achieved:.2f} MiB/s")
    return {"rates": rates, "target_error": WORKLOAD_MAX_ERROR, "pass": all(r["pass"] for r in rates)}


# -- report ----------------------------------------------------------------------------------------------------
def verdict(ok: bool | None) -> str:
    return "—" if ok is None else "PASS" if ok else "MISS"


def table(results: dict[str, Any]) -> str:
    rows: list[tuple[str, str, str, str]] = []
    boot = results.get("boot")
    if boot:
        where = ", ".join(filter(None, [boot.get("arch", results.get("arch")), boot["accel"]]))
        rows.append((f"boot-to-SSH ({where})",
                     f"median {boot['median']:.2f} s, p90 {boot['p90']:.2f} s", f"≤ {BOOT_TARGET_S:g} s",
                     verdict(boot["pass"])))
        base = boot.get("baseline")
        if base:
            rows.append((f"  vs {base['arch']} in the same run", f"median {base['median']:.2f} s, p90 "
                         f"{base['p90']:.2f} s: ×{boot['ratio_median']:.2f} (median), ×{boot['ratio_p90']:.2f} (p90)",
                         "", ""))
    overhead = results.get("overhead")
    if overhead:
        h, b = overhead["harness_median"], overhead["bare_median"]
        rows.append(("harness overhead per test", f"{overhead['overhead_s']:+.2f} s (harness {h['total_s']:.2f} s "
                     f"vs bare {b['total_s']:.2f} s, ×{overhead['ratio']:.2f})", f"≤ {OVERHEAD_MAX_S:g} s",
                     verdict(overhead["pass"])))
        phases = overhead["overhead_by_phase_s"]
        rows.append(("  by phase", ", ".join(f"{k.removesuffix('_s')} {v:+.2f} s" for k, v in phases.items()
                                             if k != "total_s"), "", ""))
    if results.get("warm"):
        rows += warm_rows(results["warm"], verdict)
    if results.get("sampler"):
        rows += sampler_rows(results["sampler"], verdict)
    workload = results.get("workload")
    if workload:
        for r in workload["rates"]:
            rows.append((f"dirty rate {r['requested_mibps']} MiB/s", f"achieved {r['achieved_mibps']:.2f} MiB/s "
                         f"({r['error']:+.1%})", f"within {WORKLOAD_MAX_ERROR:.0%}", verdict(r["pass"])))
    if results.get("parallel"):
        rows += parallel_rows(results["parallel"], verdict)
    suite = results.get("suite")
    rows.append(("suite wall time (last junit.xml)",
                 f"{suite['total_s']:.0f} s total, behaviour tests {suite['behaviour_tests_s']:.0f} s "
                 f"({suite['tests']} tests, {suite['written']})" if suite else "null (no artefacts/junit.xml)",
                 "", ""))
    if results.get("profile"):
        rows += profile_rows(results["profile"])
    for name, error in results.get("errors", {}).items():
        rows.append((name, f"ERROR: {error}"[:100], "", "MISS"))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = [" | ".join(cell.ljust(widths[i]) for i, cell in enumerate(r)).rstrip() for r in rows]
    rule = "-" * max(len(line) for line in lines)
    return "\n".join([rule, *lines, rule])


def fresh_scratch(path: Path) -> Path:
    """An empty scratch directory at `path`. Deletes only what an earlier bench made (it carries SCRATCH_MARKER);
    a file, a symlink or a non-empty directory bench did not make is refused, never deleted."""
    if path.is_symlink() or (path.exists() and not path.is_dir()):
        raise BenchUnusable(f"{path} exists and is not a directory bench made: move it, or pass another --out")
    if path.is_dir():
        if (path / SCRATCH_MARKER).is_file():
            shutil.rmtree(path)
        elif any(path.iterdir()):
            raise BenchUnusable(f"{path} is a non-empty directory bench did not make (no {SCRATCH_MARKER}): "
                                f"move it, or pass another --out")
        else:
            path.rmdir()
    path.mkdir(parents=True)
    (path / SCRATCH_MARKER).write_text(f"made by harness.tools.bench (pid {os.getpid()}); deleted by the next bench\n")
    return path


def environment(args: argparse.Namespace, scratch: Path, arch_name: str | None = None,
                image_dir: str | None = None, accel: str | None = None) -> Environment:
    """--arch's guest (or `arch_name`'s, e.g. the boot baseline's, from its default image directory and on the
    accelerator `accel` instead of --accel's choice)."""
    arch_name = arch_name or args.arch
    if arch_name not in ARCHES:
        raise BenchUnusable(f"--arch {arch_name}: unsupported guest arch; known: {', '.join(sorted(ARCHES))}")
    arch = arch_spec(arch_name)
    try:
        image = GuestImage.load(Path(image_dir or REPO / "build" / "images" / arch_name), hold=True, current=True)
        binary = QemuBinary.locate(args.qemu_binary if arch_name == args.arch else None, arch.qemu_binary)
        binary.identify(arch.name)
    except (ImageMissing, QemuNotFound) as exc:
        raise BenchUnusable(str(exc)) from None
    choice = choose_accel(accel or args.accel, binary, image, scratch / "accel-probe",
                          cache_dir=REPO / "build" / "cache")
    return Environment(binary, binary, image, arch, choice, choose_platform(arch, choice.name, None, None,
                                                                            same_binary=True))


def baseline_arch(args: argparse.Namespace) -> str | None:
    """The arch whose boot is timed beside --arch's: --baseline-arch, else the host's when --arch is another."""
    name = args.baseline_arch if args.baseline_arch is not None else host_arch()
    return None if name in ("", "none", args.arch) or "boot" not in (args.only or ["boot"]) else name


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.tools.bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--qemu-binary", default=os.environ.get("QEMU_BINARY"))
    parser.add_argument("--accel", default=os.environ.get("HARNESS_ACCEL", "auto"), choices=["auto", "kvm", "tcg"])
    parser.add_argument("--arch", default=os.environ.get("HARNESS_ARCH", host_arch()))
    parser.add_argument("--image-dir", default=None)
    parser.add_argument("--baseline-arch", default=None,
                        help="also time this arch's guest boot (its image in build/images/ARCH) and report the ratio; "
                             "default: the host's arch when --arch is another; 'none': no baseline")
    parser.add_argument("--out", default="artefacts/bench.json", help="JSON results (default artefacts/bench.json)")
    parser.add_argument("--junit", default="artefacts/junit.xml", help="the last make check's JUnit XML")
    parser.add_argument("--durations", default=None,
                        help="a log of the last make check with pytest's --durations=0 report (the profile's "
                             "setup/call/teardown split)")
    parser.add_argument("--boots", type=int, default=5)
    parser.add_argument("--trials", type=int, default=3, help="harness/bare overhead trials (each)")
    parser.add_argument("--pairs", type=int, default=SAMPLER_PAIRS,
                        help=f"sampled/unsampled window pairs of {SAMPLER_PAIR_WINDOW_S:g} s each while migrating "
                             f"(the judged phase; the idle phase gets a quarter of them)")
    parser.add_argument("--slow-side-hz", type=float, default=SLOW_SIDE_HZ,
                        help=f"sampler part: the destination's rate outside postcopy (default {SLOW_SIDE_HZ:g}; "
                             f"100 measures the sampler as it was before session 14)")
    parser.add_argument("--workers", type=int, default=PARALLEL_WORKERS, help="parallel part: pytest-xdist -n N")
    parser.add_argument("--parallel-selection", action="append", metavar="NODEID",
                        help="parallel part: a test (node id or file) of the selection, repeatable (default: "
                             "a few short behaviour tests)")
    parser.add_argument("--only", action="append",
                        choices=["boot", "warm", "overhead", "workload", "sampler", "parallel"],
                        help="run only these parts (repeatable)")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    args = parser.parse_args(argv)

    out = Path(args.out)
    reaped = workdirs.reap_stale()
    if reaped:
        log(f"reaped {len(reaped)} temp dir(s) left by dead runs: {' '.join(map(str, reaped))}")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        scratch = fresh_scratch(out.parent / "bench")
        env = environment(args, scratch)
        baseline = baseline_arch(args)
        # The baseline boots on the same accelerator: a TCG s390x guest against a KVM x86 one would be no ratio.
        baseline_env = environment(args, scratch, baseline, accel=env.accel.name) if baseline else None
    except (BenchUnusable, OSError) as exc:
        print(f"bench: could not run: {exc}", file=sys.stderr, flush=True)
        return COULD_NOT_RUN
    parts = set(args.only or ["boot", "warm", "overhead", "workload", "sampler", "parallel"])
    t0 = time.monotonic()
    results: dict[str, Any] = {"qemu": str(env.source_binary), "accel": env.accel.describe(), "arch": env.arch.name,
                               "image": env.image.inputs_hash, "started": time.strftime("%Y-%m-%d %H:%M:%S"),
                               "errors": {}}
    log(f"{env.accel.describe()}; QEMU {env.source_binary}")

    def run(name: str, action: Callable[[], Any]) -> None:
        if name not in parts:
            return
        started = time.monotonic()
        try:
            results[name] = action()
        except Exception as exc:  # one failed measurement must not hide the others
            results["errors"][name] = f"{type(exc).__name__}: {exc}".splitlines()[0]
            log(f"{name} failed: {exc!r}")
        log(f"{name}: {time.monotonic() - started:.0f} s")

    # The timed parts hold every host CPU token (harness.hosts.parallel), as a test holds its own and as mutate's
    # builds do: without them another run's tests shared the cores (session 13, a shared host: cold boots 4.0 s
    # instead of ~2.4 s, a warm restore to a command 1.06 s instead of 0.69 s with the tokens held). The parallel
    # part's pytest runs take their own tokens, so it runs after they are given back.
    budget = CpuBudget()
    if parts - {"parallel"}:
        log(f"taking the host's {budget.size} CPU tokens (waits while other runs' tests hold them)")
    with budget.acquire(budget.size if parts - {"parallel"} else 0) as grant:
        results["cpu_wait_s"] = round(grant.waited_s, 1)
        run("boot", lambda: bench_boot(env, args.boots, baseline_env))
        run("warm", lambda: bench_warm(env, scratch / "warm", args.boots, log))
        run("overhead", lambda: bench_overhead(env, scratch / "overhead", args.trials))
        if parts & {"workload", "sampler"}:
            bed = Testbed(env, Artefacts(scratch / "guest", "bench::guest"))
            try:
                source = bed.boot("source")
                run("workload", lambda: bench_workload_rates(source))
                run("sampler", lambda: bench_sampler(bed, source, args.pairs, log, args.slow_side_hz))
            except Exception as exc:
                results["errors"]["guest"] = f"{type(exc).__name__}: {exc}".splitlines()[0]
            finally:
                bed.close()
    run("parallel", lambda: bench_parallel(env, args, scratch / "parallel", log))
    results["suite"] = suite_wall_time(Path(args.junit))
    if results["suite"] is not None:
        run_dir = Path(args.junit).parent / "latest"
        results["profile"] = profile(Path(args.junit), run_dir if run_dir.is_dir() else None,
                                     Path(args.durations) if args.durations else None)
    results["bench_wall_s"] = round(time.monotonic() - t0, 1)
    out.write_text(json.dumps(results, indent=1, default=str) + "\n")
    print(table(results))
    print(f"bench: {results['bench_wall_s']:.0f} s; JSON in {out}; {shlex.quote(str(scratch))} has the trials")
    if results["errors"]:
        return 2
    missed = [k for k in ("boot", "warm", "overhead", "workload", "sampler", "parallel")
              if k in results and results[k]["pass"] is False]
    return 1 if args.strict and missed else 0


if __name__ == "__main__":
    sys.exit(main())
