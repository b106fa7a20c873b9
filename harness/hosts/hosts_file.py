"""The hosts file (`--hosts FILE`, TOML, README "Remote QEMUs"): which side's QEMU runs on which remote host, parsed
and checked into RemoteHost records (pure: no connection is made here; harness.hosts.ssh connects)."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

SIDES = ("source", "destination")
REQUIRED_KEYS = ("address", "key", "qemu_binary", "image_dir", "work_dir")
OPTIONAL_KEYS = {"port": int, "user": str, "host_key": str, "migration_address": str}
TOP_LEVEL_KEYS = {"local_address": str}


class HostsFileError(ValueError):
    """The hosts file cannot be used (its message is one line, naming the file and the key)."""


@dataclass(frozen=True)
class RemoteHost:
    """One side's remote host, as the hosts file describes it. `netns` (not in the file): the SSH connection is
    made from inside this network namespace (tests whose remote host is an sshd in a test namespace)."""
    side: str
    address: str
    key: Path
    qemu_binary: str
    image_dir: str
    work_dir: str
    port: int = 22
    user: str = "root"
    host_key: Path | None = None       # the host's public key (OpenSSH .pub); None: ~/.ssh/known_hosts
    migration_address: str | None = None
    netns: str | None = None
    version: str | None = None         # the remote QEMU's `-version` line, once checked


    @property
    def listen_address(self) -> str:
        """Where this host's QEMU listens for an incoming migration."""
        return self.migration_address or self.address

    def describe(self) -> str:
        version = f" ({self.version.removeprefix('QEMU emulator version ')})" if self.version else ""
        return (f"{self.side} remote: {self.user}@{self.address}:{self.port}, QEMU {self.qemu_binary}{version}, images "
                f"{self.image_dir}, work dir {self.work_dir}" + (f" (ssh from netns {self.netns})" if self.netns
                                                                 else ""))

    def to_json(self) -> dict[str, Any]:
        return {"address": self.address, "port": self.port, "user": self.user, "qemu_binary": self.qemu_binary,
                "version": self.version,
                "image_dir": self.image_dir, "work_dir": self.work_dir, "migration_address": self.listen_address,
                "netns": self.netns}


@dataclass(frozen=True)
class HostsFile:
    remotes: Mapping[str, RemoteHost]
    local_address: str | None = None     # where a remote source reaches a local destination


def parse_hosts(text: str, origin: Path) -> HostsFile:
    """The hosts file's TOML → its remote sides; HostsFileError (one line) if malformed. Relative key paths are
    relative to the file's directory."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise HostsFileError(f"not TOML: {exc}") from None
    unknown = sorted(set(data) - set(SIDES) - set(TOP_LEVEL_KEYS))
    if unknown:
        raise HostsFileError(f"unknown key or section {unknown[0]!r} (sections: [source], [destination]; "
                             f"top-level keys: {', '.join(TOP_LEVEL_KEYS)})")
    local_address = data.get("local_address")
    if local_address is not None and not isinstance(local_address, str):
        raise HostsFileError("local_address: must be a string")
    remotes = {side: _parse_side(side, data[side], origin.parent) for side in SIDES if side in data}
    if not remotes:
        raise HostsFileError("no [source] or [destination] section: nothing would be remote")
    if "source" in remotes and "destination" not in remotes and local_address is None:
        raise HostsFileError("a remote [source] with a local destination needs local_address (where the remote "
                             "source reaches this host's destination QEMU)")
    return HostsFile(remotes, local_address)


def _parse_side(side: str, section: Any, base: Path) -> RemoteHost:
    if not isinstance(section, dict):
        raise HostsFileError(f"[{side}] must be a table")
    unknown = sorted(set(section) - set(REQUIRED_KEYS) - set(OPTIONAL_KEYS))
    if unknown:
        raise HostsFileError(f"[{side}] unknown key {unknown[0]!r} (known: "
                             f"{', '.join([*REQUIRED_KEYS, *OPTIONAL_KEYS])})")
    missing = [key for key in REQUIRED_KEYS if key not in section]
    if missing:
        raise HostsFileError(f"[{side}] missing {missing[0]!r}")
    for key in REQUIRED_KEYS:
        if not isinstance(section[key], str) or not section[key]:
            raise HostsFileError(f"[{side}] {key}: must be a non-empty string")
    for key, kind in OPTIONAL_KEYS.items():
        if key in section and (not isinstance(section[key], kind) or isinstance(section[key], bool)):
            raise HostsFileError(f"[{side}] {key}: must be {'an integer' if kind is int else 'a string'}")
    port = section.get("port", 22)
    if not 0 < port < 65536:
        raise HostsFileError(f"[{side}] port: {port} is not a TCP port")
    for key in ("image_dir", "work_dir", "qemu_binary"):
        if not section[key].startswith("/"):
            raise HostsFileError(f"[{side}] {key}: {section[key]!r} must be an absolute path on the remote host")

    def local(key: str) -> Path | None:
        value = section.get(key)
        return None if value is None else (base / Path(value).expanduser()).resolve()

    return RemoteHost(side=side, address=section["address"], key=local("key") or Path(),
                      qemu_binary=section["qemu_binary"], image_dir=section["image_dir"],
                      work_dir=section["work_dir"], port=port, user=section.get("user", "root"),
                      host_key=local("host_key"), migration_address=section.get("migration_address"))


def load_hosts(path: Path) -> HostsFile:
    try:
        text = path.read_text()
    except OSError as exc:
        raise HostsFileError(f"cannot read it ({exc.strerror or exc})") from None
    return parse_hosts(text, path)
