"""The guest image produced by images/build.sh: kernel, initramfs, SSH keys and a manifest."""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SOURCES_LIST = "images/SOURCES"    # the repository files an image is built from (shared with images/build.sh)
UNRECORDED = "(unrecorded)"         # stale_sources() of an image built before SOURCES_LIST existed


class ImageMissing(RuntimeError):
    """The guest image cannot be used: absent, incomplete, or (ImageInsecure) its secrets are exposed."""


class ImageInsecure(ImageMissing):
    pass


class ImageStale(ImageMissing):
    """The image was built from other workload/image sources than this checkout's."""


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
    sources: dict[str, str] = field(default_factory=dict)   # repository path → sha256, as built
    # x86_64: the same kernel as a bzImage, booted through the Linux boot protocol instead of PVH (a PVH-booted
    # kernel cannot resume from S3: MachineConfig.bzimage); None where the image has none.
    bzimage: Path | None = None

    @classmethod
    def load(cls, directory: Path, hold: bool = False, current: bool = False) -> "GuestImage":
        """The image in `directory`, checked. hold=True first takes the image's use lock shared, for the rest of
        this process: images/build.sh replaces an image's files only under that lock held exclusively, so a
        rebuild waits for the sessions using the image instead of swapping its keys and initramfs under them.
        current=True also refuses (ImageStale) an image built from other sources than this checkout's."""
        if hold:
            _hold_use_lock(directory)
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
            sources=dict(manifest.get("sources") or {}),
            bzimage=directory / manifest["kernel_bzimage"] if manifest.get("kernel_bzimage") else None,
        )
        image.check()
        stale = image.stale_sources() if current else []
        if stale == [UNRECORDED]:
            raise ImageStale(f"guest image {directory} does not record the sources it was built from (built before "
                             f"images/SOURCES existed): run `make image`")
        if stale:
            raise ImageStale(f"guest image {directory} was built from other sources than this checkout "
                             f"({', '.join(stale[:4])}{' …' if len(stale) > 4 else ''}): run `make image`")
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

    def stale_sources(self, repo: Path = REPO) -> list[str]:
        """The repository files (per images/SOURCES) whose content differs from what this image was built from:
        changed, added or removed since the build. Empty when the image matches the checkout; [UNRECORDED]
        for an image built before sources were recorded. A checkout without images/SOURCES (the harness installed
        apart from its repository) cannot say, and reports nothing."""
        if not (repo / SOURCES_LIST).is_file():
            return []
        if not self.sources:
            return [UNRECORDED]
        current = checkout_sources(repo)
        return sorted(path for path in current.keys() | self.sources.keys()
                      if current.get(path) != self.sources.get(path))


def checkout_sources(repo: Path = REPO) -> dict[str, str]:
    """repository path → sha256 of every file images/SOURCES names, as images/build.sh records them."""
    patterns = [line.strip() for line in (repo / SOURCES_LIST).read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    paths = sorted({str(p.relative_to(repo)) for pattern in patterns for p in repo.glob(pattern)
                    if p.is_file() and not p.name.startswith(".")})
    return {path: hashlib.sha256((repo / path).read_bytes()).hexdigest() for path in paths}


_held_use_locks: dict[Path, int] = {}     # image directory → the fd whose shared flock this process holds


def _hold_use_lock(directory: Path) -> None:
    key = directory.resolve()
    if key in _held_use_locks or not directory.is_dir():
        return
    try:
        fd = os.open(directory / ".use.lock", os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError:
        return    # a read-only image directory is not rebuilt under us either
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        print(f"harness: waiting for the guest image build in {directory} to finish", file=sys.stderr, flush=True)
        fcntl.flock(fd, fcntl.LOCK_SH)
    _held_use_locks[key] = fd
