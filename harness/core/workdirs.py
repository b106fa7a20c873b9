"""Private working directories (QMP sockets, migration streams and files, RAM dumps) and reaping of those a dead
run left behind.

Every directory is made 0700 under the system temp dir as `qmh-<what>-<pid>-XXXX` with an `.owner` file naming the
creating process and its start time (so a recycled pid is not mistaken for the owner). A run killed with SIGKILL
cannot clean up after itself; the next run's `reap_stale()` removes what no live owner and no live process refers to,
after unmounting anything mounted inside (the fault suite mounts small tmpfs there).
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

log = logging.getLogger(__name__)

PREFIX = "qmh-"
OWNER_FILE = ".owner"
# The owner file is written just after mkdtemp: a directory younger than this without one may be still being made.
GRACE_S = 60.0


def start_time(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (field 22 of /proc/PID/stat), None if it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def temp_root() -> Path:
    return Path(tempfile.gettempdir())


def private_dir(what: str) -> Path:
    """A fresh 0700 directory owned by this process, reaped by a later run if this one dies without removing it."""
    path = Path(tempfile.mkdtemp(prefix=f"{PREFIX}{what}-{os.getpid()}-", dir=temp_root()))
    (path / OWNER_FILE).write_text(f"{os.getpid()} {start_time(os.getpid())}\n")
    return path


def owner_alive(path: Path) -> bool:
    """The process that made `path` is still running. Without an owner record (a legacy directory, or one being
    made right now) the directory counts as owned while it is younger than GRACE_S."""
    try:
        pid_text, start = (path / OWNER_FILE).read_text().split()
        pid = int(pid_text)
    except (OSError, ValueError):
        try:
            return time.time() - path.stat().st_mtime < GRACE_S
        except OSError:
            return False
    return process_alive(pid, start)


def process_alive(pid: int, start: str) -> bool:
    """Process `pid` runs and is the one that started at `start` (clock ticks since boot; see start_time), not a
    later process that was given the same pid. Owner records (here and in harness.hosts.netns's namespace names) say so."""
    return start_time(pid) == start


def _referenced_by_live_process(path: Path) -> bool:
    """Some live process names `path` on its command line (e.g. a QEMU whose QMP socket lives there)."""
    needle = str(path).encode()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if needle in (proc / "cmdline").read_bytes():
                return True
        except OSError:
            continue
    return False


def mounts_under(path: Path) -> list[Path]:
    """Mount points at or below `path`, deepest first."""
    found = []
    try:
        lines = Path("/proc/self/mounts").read_text().splitlines()
    except OSError:
        return []
    for line in lines:
        fields = line.split()
        if len(fields) < 2:
            continue
        mount_point = Path(fields[1].replace("\\040", " "))
        if mount_point == path or path in mount_point.parents:
            found.append(mount_point)
    return sorted(found, key=lambda p: len(p.parts), reverse=True)


def remove(path: Path) -> None:
    """Unmount whatever is mounted inside `path`, then delete it."""
    for mount_point in mounts_under(path):
        subprocess.run(["umount", "-l", str(mount_point)], check=False, capture_output=True)
    shutil.rmtree(path, ignore_errors=True)


def keep(path: Path, destination: Path) -> Path:
    """--keep-workdir: copy what `path` holds (streams, files, RAM dumps; not sockets, FIFOs or the owner
    record, meaningless once the QEMUs are gone) to `destination` in the artefacts, then remove `path` as
    always. Returns `destination`."""
    def unkept(directory: str, names: list[str]) -> set[str]:
        return {name for name in names if name == OWNER_FILE
                or not (os.path.isfile(os.path.join(directory, name)) or os.path.isdir(os.path.join(directory, name)))}
    try:
        shutil.copytree(path, destination, ignore=unkept, symlinks=True, dirs_exist_ok=True)
    finally:
        remove(path)
    return destination


def stale_dirs(root: Path | None = None) -> list[Path]:
    root = root or temp_root()
    stale = []
    for path in sorted(root.glob(PREFIX + "*")):
        if not path.is_dir() or path.is_symlink():
            continue
        if owner_alive(path) or _referenced_by_live_process(path):
            continue
        stale.append(path)
    return stale


def reap_stale(root: Path | None = None) -> list[Path]:
    """Remove directories left by runs that died (SIGKILL, SIGHUP, power loss); returns what was removed."""
    removed = []
    for path in stale_dirs(root):
        try:
            remove(path)
        except OSError as exc:
            log.warning("could not reap %s: %s", path, exc)
            continue
        removed.append(path)
    return removed
