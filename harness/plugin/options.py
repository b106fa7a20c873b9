"""The harness's command-line options and markers (pytest_addoption, the markers' one-line help)."""

from __future__ import annotations

import os

import pytest

from harness.plugin.session import SessionUnusable
from harness.qemu.arch import host_arch
from harness.qemu.known_bugs import KNOWN_BUGS

MARKERS = [
    "needs(**requirements): skip unless the QEMU binaries have these capabilities/parameters/fields/…",
    "needs_userfaultfd: skip unless postcopy can use userfaultfd here",
    "cold_boot: boot this test's guests cold, never from the session's warm boot (harness.migration.warm_boot)",
    "known_bug(key, ...): exposed to a known, fixed QEMU bug (harness.qemu.known_bugs): where a binary has it, "
    "its workaround, or the one verdict it spoils an expected failure, else an xfail",
    "guest(**overrides): MachineConfig overrides for the guest and pair fixtures",
    "slow: long matrix; run by `make test`, not by `make check`",
    "smoke: boot, precopy and postcopy with integrity; `make check` runs these on the other guest arch too",
    "link(rate=None, delay=None, loss=None): run over a shaped network-namespace link (harness.hosts.netns)",
    "cpus(n): the host CPUs the test needs while it runs (the CPU budget), instead of the derived count",
]

PLOTS_CHOICES = ("all", "failed")


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("qemu-migration", "QEMU migration harness")
    group.addoption("--qemu-binary", default=None,
                    help="QEMU binary or build tree for both sides (default: $QEMU_BINARY, $QTEST_QEMU_BINARY, "
                         "else qemu-system-ARCH on PATH)")
    group.addoption("--qemu-src", default=None,
                    help="QEMU binary or build tree for the source (cross-version; default $QTEST_QEMU_BINARY_SRC)")
    group.addoption("--qemu-dst", default=None,
                    help="QEMU binary or build tree for the destination (default $QTEST_QEMU_BINARY_DST)")
    group.addoption("--qemu-wrapper", default=None, metavar="CMD",
                    help="run QEMU under this command, e.g. 'gdb -batch -ex run --args', 'valgrind', 'rr record' "
                         "(timing verdicts are meaningless then)")
    group.addoption("--qemu-wrapper-side", default="both", choices=["source", "destination", "both"],
                    help="whose QEMU --qemu-wrapper wraps: the source's (Testbed.boot), the destination's "
                         "(Testbed.incoming) or both (default)")
    group.addoption("--keep-workdir", nargs="?", const="always", default="never",
                    choices=["never", "failed", "always"],
                    help="keep each test's work dir (migration streams and files, RAM dumps; not sockets) in its "
                         "artefacts as workdir/: always (the bare option) or only when the test failed")
    group.addoption("--machine", default=None,
                    help="machine type for both sides (default: the newest versioned one both binaries support "
                         "when they differ, else the arch's alias)")
    group.addoption("--cpu", default=None, help="CPU model for both sides (default: see harness.qemu.compat)")
    group.addoption("--accel", default=os.environ.get("HARNESS_ACCEL", "auto"), choices=["auto", "kvm", "tcg"],
                    help="auto = KVM only if a probe guest boots under it, else TCG")
    group.addoption("--arch", default=os.environ.get("HARNESS_ARCH", host_arch()), help="guest architecture")
    group.addoption("--image-dir", default=None, help="guest image directory (default: build/images/ARCH)")
    group.addoption("--assume-fixed", action="append", default=[], metavar="KEY",
                    help=f"this build carries the fix of a known QEMU bug (harness.qemu.known_bugs: "
                         f"{', '.join(sorted(KNOWN_BUGS))}): its tests are not expected to fail")
    group.addoption("--artefacts", default=os.environ.get("HARNESS_ARTEFACTS", "artefacts"),
                    help="where each run writes its per-test artefacts (a run-* subdir, 'latest' links to it)")
    group.addoption("--topology", default="loopback", choices=["loopback", "netns"],
                    help="loopback (default): both QEMUs in this network namespace, migrating over 127.0.0.1; "
                         "netns: each in a namespace of its own, migrating over TCP across a veth pair (root)")
    group.addoption("--link-rate", default=None, metavar="RATE",
                    help="netns link bandwidth, each direction, in tc units (100mbit, 1gbit): tc tbf")
    group.addoption("--link-delay", default=None, metavar="DELAY",
                    help="netns link one-way delay, each direction (5ms: 10 ms more round trip): tc netem")
    group.addoption("--link-loss", default=None, metavar="PERCENT",
                    help="netns link packet loss, each direction (1%%): tc netem")
    group.addoption("--hosts", default=None, metavar="FILE",
                    help="run the source and/or destination QEMU on other hosts over SSH: a TOML file with a "
                         "[source] and/or [destination] section (README, \"Remote QEMUs\")")
    group.addoption("--progress-interval", type=float, default=float(os.environ.get("HARNESS_PROGRESS", "10")),
                    help="seconds between progress lines of a long migration (0: none; default 10)")
    group.addoption("--plots", choices=PLOTS_CHOICES, default="all",
                    help="which tests' migrations are drawn as PNG (their series JSON is always kept): all "
                         "(default), or only those not passed (failed, xfailed, interrupted…; `make check` — "
                         "each plot costs 0.3–0.8 s of CPU)")
    group.addoption("--cold-boot", action="store_true",
                    help="boot every guest cold: no warm boots (a source guest restored from one saved, booted "
                         "guest per configuration and session, harness.migration.warm_boot)")
    group.addoption("--cpu-budget", type=int, default=None, metavar="N",
                    help="host CPUs this user's harness tests may use at once, shared by every run and xdist worker "
                         "(default: the CPUs this process may run on; 0: no budget)")


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    """The markers, and the options no later hook may meet malformed."""
    for line in MARKERS:
        config.addinivalue_line("markers", line)
    budget = config.getoption("--cpu-budget", None)
    if budget is not None and budget < 0:
        raise SessionUnusable(f"harness: --cpu-budget {budget}: not a CPU count (0: no budget)")
