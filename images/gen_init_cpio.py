#!/usr/bin/env python3
"""The kernel's usr/gen_init_cpio in Python: an initramfs (newc cpio) from a list, device nodes declared, not made.

    gen_init_cpio.py list-of DIR        the list lines for the tree under DIR (as usr/gen_initramfs.sh writes them)
    gen_init_cpio.py [-t EPOCH] LIST... the archive on stdout, entries in list order

List lines, as gen_init_cpio's (owner and group are numbers; modes octal):
    dir   NAME MODE UID GID
    file  NAME LOCATION MODE UID GID
    slink NAME TARGET MODE UID GID
    nod   NAME MODE UID GID c|b MAJOR MINOR
    pipe  NAME MODE UID GID
Why: only root can mknod, so the build writes the nodes (/dev/console, /dev/null) here as list lines and any user can
build the image. Reproducible: every entry has the same mtime (-t, default 0), inode numbers count up from 721 in list
order (as gen_init_cpio's do), and a tree's entries come in byte order of their names, so equal inputs give an equal
archive, byte for byte.
"""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path

TYPES = {"dir": stat.S_IFDIR, "file": stat.S_IFREG, "slink": stat.S_IFLNK, "nod": stat.S_IFCHR, "pipe": stat.S_IFIFO}


def list_of(root: Path) -> list[str]:
    """List lines for everything under root (root itself excluded), owned by root, modes as on disk."""
    lines = []
    names = sorted((p for p in root.rglob("*")), key=lambda p: os.fsencode(p.relative_to(root)))
    for path in names:
        name = "/" + path.relative_to(root).as_posix()
        st = path.lstat()
        mode = f"{stat.S_IMODE(st.st_mode):o}"
        if stat.S_ISLNK(st.st_mode):
            lines.append(f"slink {name} {os.readlink(path)} {mode} 0 0")
        elif stat.S_ISDIR(st.st_mode):
            lines.append(f"dir {name} {mode} 0 0")
        elif stat.S_ISREG(st.st_mode):
            lines.append(f"file {name} {path} {mode} 0 0")
        elif stat.S_ISFIFO(st.st_mode):
            lines.append(f"pipe {name} {mode} 0 0")
        else:
            raise SystemExit(f"gen_init_cpio.py: {path}: a device or socket on disk; declare it as a nod line")
    return lines


def _header(ino: int, mode: int, uid: int, gid: int, nlink: int, mtime: int, size: int, rdev: tuple[int, int],
            name: bytes) -> bytes:
    fields = (ino, mode, uid, gid, nlink, mtime, size, 0, 0, rdev[0], rdev[1], len(name) + 1, 0)
    header = b"070701" + b"".join(b"%08X" % f for f in fields) + name + b"\0"
    return header + b"\0" * (-len(header) % 4)


def archive(lines: list[str], mtime: int) -> bytes:
    out, ino = bytearray(), 721
    for number, line in enumerate(lines, 1):
        words = line.split()
        if not words or words[0].startswith("#"):
            continue
        kind, name = words[0], words[1].lstrip("/").encode()
        if kind not in TYPES:
            raise SystemExit(f"gen_init_cpio.py: line {number}: unknown type {kind!r}")
        data, rdev, nlink, file_type = b"", (0, 0), 1, TYPES[kind]
        if kind == "file":
            location, mode, uid, gid = words[2], words[3], words[4], words[5]
            data = Path(location).read_bytes()
        elif kind == "slink":
            data, mode, uid, gid = words[2].encode(), words[3], words[4], words[5]
        elif kind == "nod":
            mode, uid, gid, dev_type = words[2], words[3], words[4], words[5]
            rdev = (int(words[6]), int(words[7]))
            file_type = {"c": stat.S_IFCHR, "b": stat.S_IFBLK}[dev_type]
        else:
            mode, uid, gid = words[2], words[3], words[4]
            nlink = 2 if kind == "dir" else 1
        out += _header(ino, file_type | int(mode, 8), int(uid), int(gid), nlink, mtime, len(data), rdev, name)
        out += data + b"\0" * (-len(data) % 4)
        ino += 1
    out += _header(0, 0, 0, 0, 1, 0, 0, (0, 0), b"TRAILER!!!")
    return bytes(out)


def main(argv: list[str]) -> int:
    if len(argv) == 3 and argv[1] == "list-of":
        print("\n".join(list_of(Path(argv[2]))))
        return 0
    args, mtime = argv[1:], 0
    if args[:1] == ["-t"]:
        mtime, args = int(args[1]), args[2:]
    if not args:
        print(__doc__, file=sys.stderr)
        return 2
    lines = [line for path in args for line in Path(path).read_text().splitlines()]
    sys.stdout.buffer.write(archive(lines, mtime))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
