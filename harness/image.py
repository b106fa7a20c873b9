"""The guest image produced by images/build.sh: kernel, initramfs, SSH keys and a manifest."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path


class ImageMissing(RuntimeError):
    """The guest image cannot be used: absent, incomplete, or (ImageInsecure) its secrets are exposed."""


class ImageInsecure(ImageMissing):
    pass


# Files that hold private keys: the client key, the guest's host key, and the initramfs (which carries a copy of
# the host key). Readable by another local user, they let that user impersonate the guest or log into it.
def _secret_files(directory: Path, initrd: Path) -> list[Path]:
    return [initrd, directory / "ssh" / "id_ed25519", directory / "ssh" / "dropbear_ed25519_host_key"]


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
            raise ImageMissing(f"no guest image in {directory} (run `make image`, or pass --image-dir)")
        try:
            manifest = json.loads(manifest_path.read_text())
        except ValueError as exc:
            raise ImageMissing(f"guest image {directory}: manifest.json does not parse ({exc}); run `make image`")
        image = cls(
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
        image.check()
        return image

    def check(self) -> None:
        """Every file a boot needs is there, and no private key is readable by group or others."""
        for path in (self.kernel, self.initrd, self.client_key, self.host_key_pub):
            if not path.is_file():
                raise ImageMissing(f"guest image {self.directory} is incomplete: no {path.name} (run `make image`)")
        for path in _secret_files(self.directory, self.initrd):
            if not path.exists():
                continue
            mode = path.stat().st_mode & 0o777
            if mode & 0o077:
                raise ImageInsecure(f"guest image {self.directory}: {path.relative_to(self.directory)} has mode "
                                    f"{mode:04o}, but holds an SSH private key: rebuild with `make image` "
                                    f"(or chmod go= it)")
