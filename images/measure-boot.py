#!/usr/bin/env python3
"""Measure boot-to-SSH time of the test guest under TCG.

Boots the image built by images/build.sh N times and prints JSON
{median, p90, samples, ...}: seconds from starting qemu-system-* to the first
successful `ssh ... true` (OpenSSH client, key-only, host key pinned from
OUTDIR/ssh/host_key.pub).  QEMU user-mode networking accepts TCP connections
before the guest's sshd is up, so the console is watched for the ready marker
first and only then is ssh attempted (retried until it succeeds).

Python 3 standard library only. `make bench` (harness/tools/bench.py) loads this file and
calls measure() — the one implementation of the measurement.

  images/measure-boot.py [--image-dir build/images/x86_64] [-n 10] [--machine q35]
                         [--cmdline '...'] [--append-extra '...'] [--keep DIR]
"""

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field

# The one table of what differs between guest arches (binary, machine, CPU, NIC, console); stdlib only.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from harness.qemu.arch import arch_spec  # noqa: E402


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class BootOptions:
    """How to boot the guest; the defaults are the harness's (harness/qemu/arch.py's machine and CPU for the image's
    arch, 512 MiB, 1 vCPU, TCG)."""
    qemu: str = None             # binary (default: qemu-system-ARCH on PATH)
    accel: str = "tcg"
    machine: str = None          # default: the arch's
    cpu: str = None              # default: the arch's for this accelerator
    memory: int = 512            # MiB
    smp: int = 1
    initrd: str = None           # file in the image dir (default: the manifest's)
    qemu_arg: list = field(default_factory=list)   # extra QEMU arguments (e.g. -L DIR of a build tree)
    timeout: float = 60.0        # per boot, seconds


def qemu_command(args, manifest, image_dir, console, port, cmdline):
    arch = arch_spec(manifest["arch"])
    cmd = [
        args.qemu or arch.qemu_binary, "-accel", args.accel,
        "-machine", args.machine or arch.machine,
        "-cpu", args.cpu or (arch.cpu_kvm if args.accel == "kvm" else arch.cpu_tcg),
        "-m", str(args.memory), "-smp", str(args.smp), "-nodefaults", "-display", "none",
        "-no-user-config",
        "-kernel", os.path.join(image_dir, manifest["kernel"]),
        "-initrd", os.path.join(image_dir, args.initrd or manifest["initrd"]),
        "-append", cmdline,
        "-chardev", "file,id=console,path=" + console, *arch.console_args,
        "-netdev", "user,id=n0,hostfwd=tcp:127.0.0.1:%d-:22" % port,
        "-device", "%s,netdev=n0%s" % (arch.nic, arch.nic_options),
    ]
    return cmd + args.qemu_arg


def ssh_command(image_dir, known_hosts, port, user, timeout):
    return [
        "/usr/bin/ssh", "-F", "/dev/null",
        "-i", os.path.join(image_dir, "ssh", "id_ed25519"),
        "-o", "UserKnownHostsFile=" + known_hosts,
        "-o", "GlobalKnownHostsFile=/dev/null",
        "-o", "StrictHostKeyChecking=yes",
        "-o", "BatchMode=yes",
        "-o", "ConnectTimeout=%d" % timeout,
        "-o", "LogLevel=ERROR",
        "-p", str(port), "%s@127.0.0.1" % user, "true",
    ]


def boot_once(args, manifest, image_dir, workdir, index, cmdline):
    port = free_port()
    console = os.path.join(workdir, "console-%d.log" % index)
    known_hosts = os.path.join(workdir, "known_hosts-%d" % index)
    with open(os.path.join(image_dir, "ssh", "host_key.pub")) as f:
        keytype, key = f.read().split()[:2]
    with open(known_hosts, "w") as f:
        f.write("[127.0.0.1]:%d %s %s\n" % (port, keytype, key))
    marker = manifest["ready_marker"].encode()
    cmd = qemu_command(args, manifest, image_dir, console, port, cmdline)
    ssh = ssh_command(image_dir, known_hosts, port, manifest["ssh_user"], 5)

    t0 = time.monotonic()
    qemu = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    t_marker = t_ssh = None
    attempts = 0
    deadline = t0 + args.timeout
    try:
        while time.monotonic() < deadline:
            if qemu.poll() is not None:
                raise RuntimeError("qemu exited with %s: %s" % (
                    qemu.returncode, qemu.stderr.read().decode(errors="replace")))
            try:
                with open(console, "rb") as f:
                    if marker in f.read():
                        t_marker = time.monotonic() - t0
                        break
            except FileNotFoundError:
                pass
            time.sleep(0.005)
        else:
            raise RuntimeError("no %s on the console within %ss (see %s)" % (
                marker.decode(), args.timeout, console))
        while time.monotonic() < deadline:
            attempts += 1
            r = subprocess.run(ssh, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE)
            if r.returncode == 0:
                t_ssh = time.monotonic() - t0
                break
            time.sleep(0.02)
        else:
            raise RuntimeError("ssh never succeeded: %s" % r.stderr.decode(errors="replace"))
    finally:
        qemu.kill()
        qemu.wait()
    return {"boot_to_ssh_s": round(t_ssh, 3), "marker_s": round(t_marker, 3),
            "ssh_attempts": attempts}


def percentile(values, q):
    """Nearest-rank percentile."""
    v = sorted(values)
    rank = max(1, -(-len(v) * q // 100))
    return v[int(rank) - 1]


def measure(image_dir, boots=10, options=None, cmdline=None, append_extra="", keep=None,
            progress=None):
    """Boot the image `boots` times; returns {median, p90, samples, marker_median, ...} in seconds.

    `progress(i, result)` is called after each boot (the script prints it to stderr)."""
    options = options or BootOptions()
    if boots < 1:
        raise ValueError("boots must be at least 1")
    with open(os.path.join(image_dir, "manifest.json")) as f:
        manifest = json.load(f)
    cmdline = (cmdline or manifest["cmdline"]) + (" " + append_extra if append_extra else "")
    workdir = keep or tempfile.mkdtemp(prefix="measure-boot-")
    os.makedirs(workdir, exist_ok=True)
    runs = []
    try:
        for i in range(boots):
            r = boot_once(options, manifest, image_dir, workdir, i, cmdline)
            runs.append(r)
            if progress:
                progress(i, r)
    finally:
        if not keep:
            shutil.rmtree(workdir, ignore_errors=True)
    samples = [r["boot_to_ssh_s"] for r in runs]
    markers = [r["marker_s"] for r in runs]
    return {
        "median": round(statistics.median(samples), 3),
        "p90": round(percentile(samples, 90), 3),
        "samples": samples,
        "marker_median": round(statistics.median(markers), 3),
        "marker_samples": markers,
        "accel": options.accel,
        "machine": options.machine or arch_spec(manifest["arch"]).machine,
        "cmdline": cmdline,
        "initrd": options.initrd or manifest["initrd"],
    }


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--image-dir", default="build/images/x86_64")
    p.add_argument("-n", "--boots", type=int, default=10)
    p.add_argument("--machine", help="machine type (default: the arch's, harness/qemu/arch.py)")
    p.add_argument("--cpu", help="CPU model (default: the arch's for --accel)")
    p.add_argument("--accel", default="tcg", help="tcg or kvm")
    p.add_argument("--memory", type=int, default=512, help="MiB")
    p.add_argument("--smp", type=int, default=1)
    p.add_argument("--qemu", help="QEMU binary (default by the manifest's arch)")
    p.add_argument("--cmdline", help="kernel command line (default: the manifest's)")
    p.add_argument("--append-extra", default="", help="appended to the command line")
    p.add_argument("--initrd", help="initrd file in the image dir (default: the manifest's)")
    p.add_argument("--qemu-arg", action="append", default=[], help="extra QEMU argument")
    p.add_argument("--timeout", type=float, default=60.0, help="per boot, seconds")
    p.add_argument("--keep", help="keep console logs in this directory")
    args = p.parse_args()

    if args.boots < 1:
        p.error("-n must be at least 1")
    options = BootOptions(qemu=args.qemu, accel=args.accel, machine=args.machine, cpu=args.cpu,
                          memory=args.memory, smp=args.smp, initrd=args.initrd,
                          qemu_arg=args.qemu_arg, timeout=args.timeout)
    result = measure(args.image_dir, args.boots, options, args.cmdline, args.append_extra, args.keep,
                     progress=lambda i, r: print("boot %d: %s" % (i + 1, json.dumps(r)), file=sys.stderr))
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
