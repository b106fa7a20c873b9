"""What a run left behind, by owner: QEMU processes among a pid's descendants, qmh-* dirs it made, mounts in them,
network namespaces it made (--topology netns).
Shared by the fault suite's end-of-session check and the interrupt tests (which check a child pytest)."""

from __future__ import annotations

from pathlib import Path

from harness.hosts import netns

from harness.core import workdirs
def descendants(pid: int) -> list[int]:
    """Live descendants of `pid` (from /proc/*/stat ppid links)."""
    children: dict[int, list[int]] = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            stat = (proc / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(proc.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def qemu_processes(pids: list[int]) -> list[str]:
    found = []
    for pid in pids:
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argv and b"qemu-system" in argv[0]:
            found.append(f"{pid}: {b' '.join(argv[:3]).decode(errors='replace')}")
    return found


def owned_dirs(pid: int) -> list[Path]:
    """qmh-* directories made by process `pid` (workdirs.private_dir names them qmh-<what>-<pid>-XXXX)."""
    return [p for p in workdirs.temp_root().glob(f"{workdirs.PREFIX}*-{pid}-*") if p.is_dir()]


def mounts_in(dirs: list[Path], pid: int) -> list[Path]:
    found = [m for d in dirs for m in workdirs.mounts_under(d)]
    # A mount whose directory is already gone still shows in /proc/mounts under its old path.
    text = Path("/proc/self/mounts").read_text()
    found += [Path(line.split()[1]) for line in text.splitlines()
              if f"/{workdirs.PREFIX}" in line and f"-{pid}-" in line.split()[1]]
    return sorted(set(found))


def leftovers(pid: int) -> dict[str, list[str]]:
    dirs = owned_dirs(pid)
    return {"qemu processes": qemu_processes(descendants(pid)),
            "qmh directories": [str(d) for d in dirs],
            "mounts": [str(m) for m in mounts_in(dirs, pid)],
            "network namespaces": netns.owned_by(pid)}
