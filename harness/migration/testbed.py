"""What one test works with: the session's binaries, image and accelerator, plus machines and migrations whose
cleanup and recording happen whatever the test body does."""

from __future__ import annotations

import dataclasses
import logging
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from harness.core import workdirs
from harness.core.stats import covered_seconds
from harness.vm.accel import AccelChoice
from harness.qemu.arch import ArchSpec
from harness.qemu.compat import PlatformChoice
from harness.qemu.image import GuestImage
from harness.vm.exits import MachineError, QemuExited
from harness.vm.config import MachineConfig
from harness.vm.machine import Machine
from harness.migration import self_report
from harness.migration.migrate import Migration
from harness.migration.config import MigrationConfig
from harness.migration.warm_boot import RestoreFailed, WarmBoots, boot_warm, warm_key
from harness.hosts.netns import Link
from harness.hosts.hosts_file import RemoteHost
from harness.hosts.remote_qemu import RemoteQemu
from harness.hosts.ssh import Connection
from harness.migration.sampler import DEFAULT_SAMPLING_HZ
from harness.qemu.binary import QemuBinary
from harness.qemu.known_bugs import KnownBug
from harness.report.artefacts import Artefacts

log = logging.getLogger(__name__)

DEFAULT_MEMORY_MIB = 512
# Over a link (harness.hosts.netns): the destination's first migration port, and how many ports each migration may use
# (its listener plus one per recovery).
MIGRATION_PORT = 4444
PORTS_PER_MIGRATION = 10
BOOT_TIMEOUT = 60.0


@dataclass(frozen=True)
class Environment:
    """Session-wide choices, resolved once from the command line."""
    source_binary: QemuBinary
    destination_binary: QemuBinary
    image: GuestImage
    arch: ArchSpec
    accel: AccelChoice
    platform: PlatformChoice     # machine type + CPU model on both sides, and why (harness.qemu.compat)
    # --qemu-wrapper: the command each side's QEMU runs under ("source": boot, "destination": incoming).
    wrappers: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    # --hosts: the sides whose QEMU runs on another host over SSH (harness.hosts.remote_qemu), and where a remote source
    # reaches a local destination.
    remotes: Mapping[str, RemoteHost] = field(default_factory=dict)
    local_address: str | None = None


@dataclass(frozen=True)
class Pair:
    """A migrating pair: the booted source and the destination waiting for it (the `pair` and `paused_pair`
    fixtures)."""
    source: Machine
    destination: Machine


class AbnormalExits(MachineError):
    """Teardown found QEMUs that ended abnormally (crashed, exited non-zero, aborted on quit) without the test
    having been told. Everything was cleaned up before this was raised."""

    def __init__(self, exits: list[QemuExited]) -> None:
        self.exits = exits
        super().__init__(f"{len(exits)} QEMU process(es) ended abnormally:\n" + "\n---\n".join(map(str, exits)))


class Testbed:
    """A test's QEMUs and migrations on the session's Environment (binaries, image, accelerator, machine and CPU):
    boot() a source, incoming() a destination like it, migrate() between them. Everything it started is stopped,
    its exit checked and its work dir removed at close(), which the `testbed` fixture calls.

    With a `link` (--topology netns, harness.hosts.netns) the source boots in the link's source namespace and every
    destination starts in its destination namespace, and a socket migration goes over the link: tcp to the
    destination's link address (a unix socket is reachable across namespaces, so it would bypass the link; it is
    replaced by tcp, the same kind of stream). Without one, everything is on this namespace's loopback.

    A side in `remotes` (--hosts, or set by a test before it boots that side) runs its QEMU on that host over SSH
    (harness.hosts.remote_qemu): one connection per side for the whole test, closed at close() after its QEMUs are gone."""
    __test__ = False  # not a pytest test class, despite the name

    def __init__(self, env: Environment, artefacts: Artefacts, link: Link | None = None,
                 known_bugs: Sequence[KnownBug] = (), warm: WarmBoots | None = None, cold: bool = False) -> None:
        self.env = env
        self.artefacts = artefacts
        self.link = link
        # Known QEMU bugs of this test that this run's binaries have (harness.qemu.known_bugs): each QEMU gets the
        # workarounds (config()); all are recorded in platform.json with what the run does about them.
        self.known_bugs = tuple(known_bugs)
        self.workarounds = tuple(bug for bug in known_bugs if bug.workaround is not None)
        # Private (0700): sockets, RAM dumps, files. Removed at close; reaped by a later run after a SIGKILL.
        self.workdir = workdirs.private_dir("test")
        self._stack = ExitStack()
        self.migrations: list[Migration] = []
        self.machines: list[Machine] = []
        self.remotes: dict[str, RemoteHost] = dict(env.remotes)
        self._connections: dict[RemoteHost, Connection] = {}
        # The session's warm boots (harness.migration.warm_boot); None or `cold`: every boot is a cold one.
        self.warm = warm if warm is not None and warm.enabled and not cold else None
        # Where this test's fixed costs went (timings.json at close; harness.tools.bench_profile sums them).
        self.timings: dict[str, float] = {}
        self.write_platform()

    def write_platform(self) -> None:
        """platform.json: machine, CPU, accelerator, and per side its binary, where it runs (here or which remote
        host) and how it is launched there (harness.qemu.launch). Written again when a test makes a side remote."""
        env = self.env
        where = {side: remote.to_json() if (remote := self.remotes.get(side)) else "local" for side in
                 ("source", "destination")}
        launch = {side: (self.connection(self.remotes[side]).launch if side in self.remotes
                         else binary.launch).to_json()
                  for side, binary in (("source", env.source_binary), ("destination", env.destination_binary))}
        self.artefacts.write_json("platform", {
            **env.platform.to_json(), "accelerator": env.accel.describe(),
            "source": self.remotes["source"].qemu_binary if "source" in self.remotes else str(env.source_binary),
            "destination": (self.remotes["destination"].qemu_binary if "destination" in self.remotes
                            else str(env.destination_binary)),
            "runs_on": where, "launch": launch,
            "workarounds": {bug.key: bug.workaround.to_json() for bug in self.workarounds if bug.workaround},
            "known_bugs": {bug.key: {"handling": bug.handling, "verdict": bug.verdict, "fix": bug.fix}
                           for bug in self.known_bugs}})

    def make_remote(self, side: str, remote: RemoteHost) -> None:
        """`side`'s QEMUs from now on run on `remote` (a test's own remote host, e.g. an sshd it started)."""
        self.remotes[side] = remote
        self.write_platform()

    def connection(self, remote: RemoteHost) -> Connection:
        if remote not in self._connections:
            self._connections[remote] = Connection(remote)
        return self._connections[remote]

    def config(self, **overrides: Any) -> MachineConfig:
        base = MachineConfig(arch=self.env.arch, accel=self.env.accel.name, memory_mib=DEFAULT_MEMORY_MIB,
                             machine_type=self.env.platform.machine, cpu=self.env.platform.cpu)
        # A known bug's workaround is applied last: a test's own overrides (its RAM size) do not undo it.
        workaround = {k: v for bug in self.workarounds if bug.workaround for k, v in bug.workaround.machine.items()}
        return dataclasses.replace(base, **{**overrides, **workaround})

    def launch(self, name: str, config: MachineConfig, binary: QemuBinary | None = None,
               connect: bool = True) -> Machine:
        host = RemoteQemu(self.connection(config.remote)) if config.remote is not None else None
        machine = Machine(binary or self.env.source_binary, self.env.image, config, name, self.artefacts.directory,
                          host)
        self._stack.enter_context(machine)  # registered before launch: a failed launch is cleaned up too
        self.machines.append(machine)
        machine.launch(connect=connect)
        return machine

    def placement(self, side: str) -> dict[str, Any]:
        """MachineConfig fields that put a QEMU on `side` ("source" or "destination"): its --qemu-wrapper, and on a
        link its namespace, entered by prefixing `ip netns exec NAME` to the command line the way the wrapper is
        prefixed (outermost, so a debugger under the wrapper runs inside the namespace too)."""
        wrapper = self.env.wrappers.get(side, ())
        if side in self.remotes:   # started by the remote's sshd: wherever that runs (on a link: its namespace)
            return {"wrapper": wrapper, "netns": None, "remote": self.remotes[side]}
        if self.link is None:
            return {"wrapper": wrapper, "netns": None, "remote": None}
        return {"wrapper": (*self.link.exec_prefix(side), *wrapper), "netns": self.link.namespace(side),
                "remote": None}

    def boot(self, name: str = "source", binary: QemuBinary | None = None, **overrides: Any) -> Machine:
        """A running guest reachable over SSH: restored from the session's warm boot of its configuration when it
        has one (harness.migration.warm_boot), else booted cold."""
        overrides = {**self.placement("source"), **overrides}
        config = self.config(**overrides)
        binary = binary or self.env.source_binary
        started = time.monotonic()
        key = warm_key(binary, config) if self.warm is not None and not self.env.wrappers.get("source") else None
        if self.warm is not None and key is not None and self.warm.worth_restoring(key):
            try:
                machine = boot_warm(self.warm, key, config, name, lambda n, c: self.launch(n, c, binary),
                                    lambda n, c: self._cold_boot(n, c, binary), lambda m: m.shutdown())
                self._add_time("boot_warm_s", started)
                return machine
            except RestoreFailed as exc:
                log.warning("%s: warm boot unusable, booting cold (and for the rest of the session): %s", name, exc)
                self.warm.unusable[key] = str(exc)
                self.artefacts.write_json("warm-boot-failed", {"machine": name, "key": key, "why": str(exc)})
                started = time.monotonic()
        machine = self._cold_boot(name, config, binary)
        self._add_time("boot_cold_s", started)
        return machine

    def _cold_boot(self, name: str, config: MachineConfig, binary: QemuBinary) -> Machine:
        machine = self.launch(name, config, binary)
        machine.wait_booted(BOOT_TIMEOUT)
        return machine

    def _add_time(self, what: str, since: float) -> None:
        self.timings[what] = round(self.timings.get(what, 0.0) + time.monotonic() - since, 3)

    def incoming(self, like: Machine, name: str = "destination", paused: bool = False,
                 binary: QemuBinary | None = None, connect: bool = True, **overrides: Any) -> Machine:
        """A destination for `like`: same devices and memory, `-incoming defer`, optionally `-S`; connect=False
        leaves its QMP to `Machine.connect()` (a cpr-transfer destination opens its monitor only later).

        Trace events are the source's (the tests read the source's trace); the destination traces those of them its
        binary has, so an older destination without one still starts (`needs(trace_events=…)` asks the source only)."""
        binary = binary or self.env.destination_binary
        traced = tuple(event for event in like.config.trace_events if event in binary.features.trace_events)
        settings: dict[str, Any] = {"trace_events": traced, **self.placement("destination"), **overrides}
        config = dataclasses.replace(like.config, **{"incoming": "defer", "start_paused": paused, **settings})
        return self.launch(name, config, binary, connect)

    def prepare_migration(self, source: Machine, destination: Machine | None, config: MigrationConfig,
                          name: str = "migration", hz: float = DEFAULT_SAMPLING_HZ,
                          workdir: Path | None = None) -> Migration:
        """A Migration registered with the test (recorded, finished at teardown), not started: for a test that
        configures or expects a refusal before `start()`. `migrate()` is this plus `start()`. Its sockets and files
        go in the test's work dir unless `workdir` names another (e.g. a small filesystem the test mounted)."""
        tcp: dict[str, Any] = {}
        # A remote host of the hosts file (not one a test made on its link, which has a namespace to connect from).
        across_hosts = destination is not None and any(
            m.config.remote is not None and m.config.remote.netns is None for m in (source, destination))
        if across_hosts:
            # Across hosts: tcp to the destination's address (a remote's migration_address, or --hosts'
            # local_address for a local one), port 0 bound by the destination itself and read back.
            assert destination is not None
            if config.transport == "file":
                raise MachineError("a file migration with a remote side: the file would be on one host only")
            host = (destination.config.remote.listen_address if destination.config.remote is not None
                    else self.env.local_address)
            if host is None:
                raise MachineError("a remote source needs local_address in the hosts file to reach this host")
            tcp = {"tcp_host": host, "tcp_port": 0}
            if config.transport == "unix":
                config = dataclasses.replace(config, transport="tcp")
        elif self.link is not None and destination is not None:
            # A fixed port, each migration of the test its own range: only this test's QEMUs listen in the link's
            # destination namespace, so none can be taken. Needed with recovery: after migrate-recover the
            # destination's main loop may be blocked on a page until the source is back, so query-migrate could
            # not tell which port a port-0 listener bound.
            tcp = {"tcp_host": self.link.address("destination"),
                   "tcp_port": MIGRATION_PORT + PORTS_PER_MIGRATION * len(self.migrations)}
            if config.transport == "unix":
                config = dataclasses.replace(config, transport="tcp")
        if config.relay and destination is not None:
            config, counting = self._byte_count(source, destination, config, across_hosts)
        else:
            counting = {}
        migration = Migration(source, destination, config, workdir or self.workdir, name=name, hz=hz,
                              on_finish=self._finished,
                              on_note=self.artefacts.write_json, **tcp, **counting)
        self.migrations.append(migration)
        return migration

    def _byte_count(self, source: Machine, destination: Machine, config: MigrationConfig,
                    across_hosts: bool) -> tuple[MigrationConfig, dict[str, Any]]:
        """How a migration that asks for a byte-counting relay gets a count of what its transport carried: the relay
        on this host's loopback (the default), the relay between two hosts, the link's veth counter instead of a
        relay, or no count, with the reason (the config without the relay, and Migration's keyword arguments)."""
        counting: dict[str, Any] = {}
        remote_on_link = not across_hosts and any(
            m.config.remote is not None for m in (source, destination))
        if remote_on_link:
            config = dataclasses.replace(config, relay=False)
            counting = {"unmeasured_bytes": "a remote QEMU reached over the link: a relay here would take the stream "
                                            "off the link, and the veth also carries that QEMU's SSH session"}
        elif self.link is not None and not across_hosts:
            # A relay here would take the stream off the link: the link's own counter stands in for it (the source
            # veth's tx bytes, headers included: Migration.link_sent).
            link = self.link
            config = dataclasses.replace(config, relay=False)
            counting = {"link_counter": lambda: link.sent_bytes("source")}
        elif across_hosts:
            # The relay runs here, between the hosts: a local source reaches it on loopback, a remote one at the
            # address the hosts file gives this host (local_address), the same one it would reach a destination at.
            if source.config.remote is None:
                counting = {"relay_host": "127.0.0.1"}
            elif self.env.local_address is not None:
                counting = {"relay_host": self.env.local_address}
            else:
                config = dataclasses.replace(config, relay=False)
                counting = {"unmeasured_bytes": f"the source runs on {source.config.remote.address} and the hosts "
                                                f"file names no local_address it could reach a relay at"}
        return config, counting

    def _finished(self, migration: Migration) -> None:
        """A migration's end: its series recorded, and QEMU's timing figures held to the host clock
        (harness.migration.self_report) — for every completed migration, whatever the test checks besides."""
        self.artefacts.add_series(migration.name, migration.series)
        clock, verdicts = self_report.timing_verdicts(migration)
        if clock:
            self.artefacts.write_json(f"{migration.name}.host-clock", clock)
        if verdicts:
            self.artefacts.verdict(*verdicts)

    def finish_migrations(self) -> None:
        """Finish every started migration (idempotent): the plugin calls it once the test body has ended, so the
        verdicts recorded at a migration's end are judged with the test's own."""
        for migration in self.migrations:
            if migration.started:
                migration.finish()

    def migrate(self, source: Machine, destination: Machine | None, config: MigrationConfig,
                name: str = "migration", hz: float = DEFAULT_SAMPLING_HZ, workdir: Path | None = None) -> Migration:
        """prepare_migration() and start(): the migration runs (sampled at `hz`) when this returns."""
        return self.prepare_migration(source, destination, config, name, hz, workdir).start()

    def close(self, keep_workdir: bool = False) -> None:
        """Finish every migration, shut every QEMU down, remove the work dir (unmounting anything inside) —
        always all of it; with `keep_workdir` its files are first copied to the artefacts as workdir/ — then raise
        AbnormalExits if a QEMU ended abnormally and the test was not already failed by that same exit
        (QemuExited raised during the test). timings.json records where the test's fixed costs went."""
        started = time.monotonic()
        try:
            self._close(keep_workdir)
        finally:
            self._add_time("close_s", started)
            digests = covered_seconds(span for m in self.machines for span in m.ram_digest_spans)
            self.artefacts.write_json("timings", {**self.timings, "ram_digest_s": round(digests, 3)})
        abnormal = [exit for machine in self.machines
                    if not machine.exit_reported and (exit := machine.abnormal_exit()) is not None]
        if abnormal:
            for machine in self.machines:
                machine.exit_reported = True  # close() may be called again; say it once
            raise AbnormalExits(abnormal)

    def _close(self, keep_workdir: bool) -> None:
        try:
            self.finish_migrations()
        finally:
            try:
                self._stack.close()
            finally:
                for connection in self._connections.values():
                    connection.close()
                self._connections.clear()
                if keep_workdir:
                    log.warning("work dir kept in %s", workdirs.keep(self.workdir, self.artefacts.path("workdir")))
                else:
                    workdirs.remove(self.workdir)
