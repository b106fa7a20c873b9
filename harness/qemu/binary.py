"""A QEMU binary (installed or in a build tree) and the features its QMP schema reveals.

Feature presence is read from the schema of the binary in use, never inferred from its version string.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Iterable, Mapping

from harness.qemu.launch import Launch, LocalFiles, launch_for



class QemuNotFound(RuntimeError):
    pass


@dataclass(frozen=True)
class QemuBinary:
    path: Path

    @classmethod
    def locate(cls, spec: str | os.PathLike[str] | None, binary_name: str) -> "QemuBinary":
        """`spec` is a binary, a QEMU build tree (or source tree with build/), or None for PATH."""
        if spec is None or str(spec) == "":
            found = shutil.which(binary_name)
            if not found:
                raise QemuNotFound(f"{binary_name} not on PATH; pass --qemu-binary")
            return cls(Path(found).resolve())
        path = Path(spec).expanduser().resolve()
        if path.is_file():
            if not os.access(path, os.X_OK):
                raise QemuNotFound(f"{path} is not executable")
            return cls(path)
        if path.is_dir():
            for candidate in (path / binary_name, path / "build" / binary_name):
                if candidate.is_file() and os.access(candidate, os.X_OK):
                    return cls(candidate)
            raise QemuNotFound(f"no {binary_name} in build tree {path} (looked in . and build/)")
        if not path.exists():
            raise QemuNotFound(f"{path}: no such file or directory")
        raise QemuNotFound(f"{path} is neither a QEMU binary nor a build tree")

    def identify(self, arch: str, timeout: float = 30) -> str:
        """Check that this is a working QEMU system emulator for `arch` and return its version.

        `-version` must say "QEMU emulator version" (true, echo, qemu-img or a user-mode qemu-ARCH do not), and
        a machine-less QEMU must answer QMP's query-target with `arch`: a binary for another target would run
        every test against the wrong guest. Raises QemuNotFound with one line saying what is wrong."""
        try:
            out = subprocess.run(self.base_args() + ["-version"], capture_output=True, text=True, timeout=timeout,
                                 stdin=subprocess.DEVNULL)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise QemuNotFound(f"{self.path} cannot be run ({exc})") from None
        first = out.stdout.strip().splitlines()[0] if out.stdout.strip() else ""
        if not first.startswith("QEMU emulator version "):
            printed = f"printed {first[:60]!r}" if first else "printed nothing"
            raise QemuNotFound(f"{self.path} is not a QEMU system emulator (`-version` {printed}, "
                               f"exit {out.returncode})")
        try:
            [target] = _qmp_stdio(self, [{"execute": "query-target"}], timeout=timeout)
        except (OSError, subprocess.TimeoutExpired, RuntimeError, ValueError) as exc:
            detail = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
            raise QemuNotFound(f"{self.path}: QMP probe (query-target) failed: {detail[:200]}") from None
        emulated = target.get("arch") if isinstance(target, dict) else None
        if emulated != arch:
            raise QemuNotFound(f"{self.path} emulates {emulated} (QMP query-target), not {arch} (--arch)")
        return first.removeprefix("QEMU emulator version ").strip()

    @cached_property
    def launch(self) -> Launch:
        """Its environment, program and firmware search path (harness.qemu.launch), as any QEMU of it starts here."""
        return launch_for(str(self.path), LocalFiles())

    def base_args(self) -> list[str]:
        return self.launch.argv()

    @cached_property
    def version(self) -> str:
        out = subprocess.run(self.base_args() + ["-version"], capture_output=True, text=True, timeout=30)
        first = out.stdout.strip().splitlines()[0] if out.stdout.strip() else out.stderr.strip()
        return first.removeprefix("QEMU emulator version ").strip()

    @cached_property
    def features(self) -> "Features":
        return Features.probe(self)

    def __str__(self) -> str:
        return f"{self.path} ({self.version})"


def version_numbers(version: str) -> tuple[int, int, int] | None:
    """(major, minor, micro) at the start of a QemuBinary.version string ("7.2.22 (Debian 1:7.2+dfsg-7+deb12u18)";
    a missing micro is 0), None if it has none."""
    match = re.match(r"\s*(\d+)\.(\d+)(?:\.(\d+))?", version)
    return (int(match[1]), int(match[2]), int(match[3] or 0)) if match else None


def binary_key(binary: QemuBinary, *extra: str) -> str:
    """A cache key for what a probe learnt of this binary file: a rebuilt or replaced binary gets a new one."""
    stat = binary.path.stat()
    raw = "|".join([str(binary.path), str(stat.st_mtime_ns), str(stat.st_size), *extra])
    return hashlib.sha256(raw.encode()).hexdigest()[:24]


def _qmp_stdio(binary: QemuBinary, commands: list[dict[str, Any]], timeout: float = 60,
               accel: str | None = None) -> list[Any]:
    """Run QMP commands against a machine-less QEMU (under `accel`, else QEMU's default); returns each command's
    'return' (or error dict)."""
    script = [{"execute": "qmp_capabilities"}, *commands, {"execute": "quit"}]
    proc = subprocess.run(
        binary.base_args() + ["-machine", "none", *(["-accel", accel] if accel else []),
                              "-nodefaults", "-display", "none", "-qmp", "stdio"],
        input="".join(json.dumps(c) + "\n" for c in script),
        capture_output=True, text=True, timeout=timeout,
    )
    replies = []
    for line in proc.stdout.splitlines():
        line = line.strip()
        if not line:
            continue
        msg = json.loads(line)
        if "return" in msg:
            replies.append(msg["return"])
        elif "error" in msg:
            replies.append({"error": msg["error"]})
    # First reply answers qmp_capabilities, the last one quit.
    if len(replies) < len(commands) + 1:
        raise RuntimeError(f"QMP schema probe of {binary.path} failed: {proc.stderr.strip()[-500:]}")
    return replies[1:1 + len(commands)]


def _schema_fields(schema: list[dict[str, Any]], type_name: str, prefix: str = "",
                   seen: frozenset[str] = frozenset()) -> set[str]:
    by_name = {entry["name"]: entry for entry in schema}
    entry = by_name.get(type_name)
    if entry is None or entry.get("meta-type") != "object" or type_name in seen:
        return set()
    names: set[str] = set()
    for member in entry.get("members", []):
        path = prefix + member["name"]
        names.add(path)
        names |= _schema_fields(schema, member["type"], path + ".", seen | {type_name})
    for variant in entry.get("variants", []):
        names |= _schema_fields(schema, variant["type"], prefix, seen | {type_name})
    return names


def _enum_argument_values(schema: list[dict[str, Any]], command: str) -> set[str]:
    """"argument=value" for each enum-typed argument of `command` (the schema hides type names, not values)."""
    by_name = {entry["name"]: entry for entry in schema}
    arguments = by_name.get(by_name.get(command, {}).get("arg-type", ""), {})
    found: set[str] = set()
    for member in arguments.get("members", []):
        enum = by_name.get(member["type"], {})
        if enum.get("meta-type") == "enum":
            found |= {f"{member['name']}={value}" for value in enum.get("values", [])}
    return found


def _member_enum_values(by_name: dict[str, dict[str, Any]], object_type: str, member: str) -> list[str]:
    """The values of the enum-typed `member` of schema object `object_type` ([] if it is not one)."""
    for entry in by_name.get(object_type, {}).get("members", []):
        if entry["name"] == member:
            enum = by_name.get(entry["type"], {})
            return list(enum.get("values", [])) if enum.get("meta-type") == "enum" else []
    return []


@dataclass(frozen=True)
class Features:
    commands: frozenset[str]
    events: frozenset[str]
    capabilities: frozenset[str]
    parameters: frozenset[str]
    migrate_fields: frozenset[str]
    migration_properties: frozenset[str]
    trace_events: frozenset[str] = field(default_factory=frozenset)
    # "parameter=value" for every value of an enum-typed migration parameter (e.g. "multifd-compression=zstd"):
    # values behind a build option (zstd, qpl, uadk, qatzip) are in the schema only when QEMU was built with it.
    parameter_values: frozenset[str] = field(default_factory=frozenset)
    # "command.argument" for every argument of every command (e.g. "migrate.channels", QEMU 8.2+): what a test
    # passes besides the command itself.
    command_arguments: frozenset[str] = field(default_factory=frozenset)
    # The MigrationStatus values query-migrate can report (e.g. "postcopy-recover-setup", QEMU 9.1+): a state
    # machine's states, which also date what the code around them allows.
    migration_statuses: frozenset[str] = field(default_factory=frozenset)

    @classmethod
    def probe(cls, binary: QemuBinary) -> "Features":
        schema, caps, params, props = _qmp_stdio(binary, [
            {"execute": "query-qmp-schema"},
            {"execute": "query-migrate-capabilities"},
            {"execute": "query-migrate-parameters"},
            {"execute": "qom-list-properties", "arguments": {"typename": "migration"}},
        ])
        return cls.from_schema(schema, caps, params, props, _trace_events(binary))

    @classmethod
    def from_schema(cls, schema: list[dict[str, Any]], caps: Any, params: Any, props: Any,
                    trace_events: Iterable[str] = ()) -> "Features":
        by_name = {entry["name"]: entry for entry in schema}
        commands = {e["name"] for e in schema if e.get("meta-type") == "command"}
        events = {e["name"] for e in schema if e.get("meta-type") == "event"}
        query_migrate = by_name.get("query-migrate", {})
        fields = _schema_fields(schema, query_migrate.get("ret-type", "")) if query_migrate else set()
        return cls(
            commands=frozenset(commands),
            events=frozenset(events),
            capabilities=frozenset(c["capability"] for c in caps) if isinstance(caps, list) else frozenset(),
            parameters=frozenset(params) if isinstance(params, dict) else frozenset(),
            migrate_fields=frozenset(fields),
            migration_properties=frozenset(p["name"] for p in props) if isinstance(props, list) else frozenset(),
            trace_events=frozenset(trace_events),
            parameter_values=frozenset(_enum_argument_values(schema, "migrate-set-parameters")),
            command_arguments=frozenset(
                f"{e['name']}.{member['name']}" for e in schema if e.get("meta-type") == "command"
                for member in by_name.get(e.get("arg-type", ""), {}).get("members", [])),
            migration_statuses=frozenset(_member_enum_values(by_name, query_migrate.get("ret-type", ""), "status")),
        )

    def missing(self, *, capabilities: Iterable[str] = (), parameters: Iterable[str] = (),
                fields: Iterable[str] = (), commands: Iterable[str] = (),
                migration_properties: Iterable[str] = (), trace_events: Iterable[str] = (),
                parameter_values: Mapping[str, Iterable[str]] | None = None,
                command_arguments: Iterable[str] = (), migration_statuses: Iterable[str] = ()) -> list[str]:
        """Human-readable list of what this binary lacks among the given requirements."""
        wanted = [
            ("capability", capabilities, self.capabilities),
            ("parameter", parameters, self.parameters),
            ("query-migrate field", fields, self.migrate_fields),
            ("command", commands, self.commands),
            ("migration property", migration_properties, self.migration_properties),
            ("trace event", trace_events, self.trace_events),
            ("parameter value", [f"{parameter}={value}" for parameter, values in (parameter_values or {}).items()
                                 for value in values], self.parameter_values),
            ("command argument", command_arguments, self.command_arguments),
            ("migration status", migration_statuses, self.migration_statuses),
        ]
        return [f"{kind} {name!r}" for kind, names, have in wanted for name in names if name not in have]


def _trace_events(binary: QemuBinary) -> list[str]:
    out = subprocess.run(binary.base_args() + ["-trace", "help"], capture_output=True, text=True, timeout=30)
    return [line.strip() for line in out.stdout.splitlines()
            if line.strip() and " " not in line.strip() and not line.startswith("Possible")]
