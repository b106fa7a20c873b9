"""The guest image produced by images/build.sh: kernel, initramfs, SSH keys and a manifest."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path


class ImageMissing(RuntimeError):
    pass


@dataclass(frozen=True)
class GuestImage:
    directory: Path
    arch: str
    kernel: Path
    initrd: Path
    cmdline: str
    ready_marker: str
    ssh_user: str
    client_key: Path
    host_key_pub: Path
    inputs_hash: str

    @classmethod
    def load(cls, directory: Path) -> "GuestImage":
        manifest_path = directory / "manifest.json"
        if not manifest_path.is_file():
            raise ImageMissing(f"no guest image in {directory} (run `make image`)")
        manifest = json.loads(manifest_path.read_text())
        return cls(
            directory=directory,
            arch=manifest["arch"],
            kernel=directory / manifest["kernel"],
            initrd=directory / manifest["initrd"],
            cmdline=manifest["cmdline"],
            ready_marker=manifest.get("ready_marker", "HARNESS-GUEST-READY"),
            ssh_user=manifest.get("ssh_user", "root"),
            client_key=directory / "ssh" / "id_ed25519",
            host_key_pub=directory / "ssh" / "host_key.pub",
            inputs_hash=manifest.get("inputs_hash") or hashlib.sha256(manifest_path.read_bytes()).hexdigest(),
        )
