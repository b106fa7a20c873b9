"""What a migration is asked to do (MigrationConfig), how it is declared to end (Outcome, as `result` in QEMU's
migration-test), and the errors a Migration raises when it ends otherwise — plain data a test builds before any
QEMU runs (the driver is harness.migration.migrate)."""

from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass, field
from typing import Any, Mapping


class MigrationError(AssertionError):
    """Base of the migration verdicts below (AssertionError: pytest reports them as test failures)."""


class MigrationFailed(MigrationError):
    pass


class MigrationStalled(MigrationError):
    pass


class MonitorLost(MigrationError):
    """A side's QMP connection broke while its QEMU kept running: the harness can no longer observe it."""


class CancelNotHonoured(MigrationError):
    """After migrate_cancel the migration ended some other way than the cancel (completed, or a non-channel
    failure)."""


class Outcome(enum.Enum):
    """How a migration is declared to end (as `result` in QEMU's migration-test): Migration.wait_outcome() waits
    for exactly that, and the waits take a side's 'failed' (and a destination's exit 1) as the declared outcome
    rather than as a failure of the test."""
    COMPLETED = "completed"                 # both sides complete (the default)
    FAILED = "failed"                       # the source reports failed (a destination then exits 1)
    DESTINATION_QUITS = "destination-quits"  # the destination refuses the stream and exits 1; the source fails


@dataclass(frozen=True)
class MigrationConfig:
    """What a migration is asked to do: capabilities and parameters (set on both sides through QMP before
    `migrate`/`migrate-incoming`), the transport (unix socket, TCP on 127.0.0.1, or a file in the work dir) and
    the outcome it is declared to have."""
    capabilities: Mapping[str, bool] = field(default_factory=dict)
    parameters: Mapping[str, Any] = field(default_factory=dict)
    transport: str = "unix"  # unix | tcp | file
    # Parameters that only make sense on one side (e.g. max-bandwidth is the source's business, but harmless on
    # the destination); everything is set on both unless listed here.
    source_only_parameters: frozenset[str] = frozenset()
    # ... and those only the destination may have (e.g. tls-authz; tls-creds when only it uses TLS).
    destination_only_parameters: frozenset[str] = frozenset()
    expect: Outcome = Outcome.COMPLETED
    # The source connects through a byte-counting relay (harness.migration.relay), so that what the transport
    # carried can be set beside what QEMU reports it sent: Migration.relay. Sockets on this host only.
    relay: bool = False
    # How the address reaches QEMU (harness.migration.endpoints): "uri" (the default), "channels" (the QAPI
    # `channels` argument), "fd" (getfd: a socket pair, or the file), "fdset" (add-fd: the file, by /dev/fdset/N),
    # "exec" (commands QEMU runs: cat into and out of the file, or a pipe through a FIFO for a socket).
    address: str = "uri"
    # A file migration's stream starts this many bytes into its file (`file:PATH,offset=N`).
    file_offset: int = 0

    def with_capabilities(self, **caps: bool) -> "MigrationConfig":
        return dataclasses.replace(self, capabilities={**self.capabilities,
                                                       **{k.replace("_", "-"): v for k, v in caps.items()}})

    def with_parameters(self, **params: Any) -> "MigrationConfig":
        return dataclasses.replace(self, parameters={**self.parameters,
                                                     **{k.replace("_", "-"): v for k, v in params.items()}})
