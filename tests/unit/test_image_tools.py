"""images/debian.py (packages without apt) and images/gen_init_cpio.py (the initramfs without mknod), on a
mirror made in a temporary directory (file:// URLs: no network) and a small tree. The real mirror and the real
image: `make image` with apt and dpkg hidden from PATH gives the same bytes (README "Hosts")."""

from __future__ import annotations

import hashlib
import importlib.util
import io
import lzma
import stat
import sys
import tarfile
from pathlib import Path
from types import ModuleType

import pytest

IMAGES = Path(__file__).resolve().parents[2] / "images"


def load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"images_{name}", IMAGES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[f"images_{name}"] = module   # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


debian = load("debian")
gen_init_cpio = load("gen_init_cpio")


@pytest.mark.parametrize("lower, higher", [("1.0~rc1", "1.0"), ("2.0", "1:1.0"), ("1.0-1", "1.0-1+deb12u1"),
                                           ("2.36-9+deb12u9", "2.36-9+deb12u14"), ("6.1.176-1", "6.1.192-3"),
                                           ("1.0", "1.0a"), ("1.0-1~bpo12+1", "1.0-1")])
def test_debian_version_order(lower: str, higher: str) -> None:
    assert debian.version_compare(lower, higher) == -1 and debian.version_compare(higher, lower) == 1
    assert debian.version_compare(higher, higher) == 0


def deb(files: dict[str, bytes], links: dict[str, str]) -> bytes:
    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w:xz") as tar:
        for name, content in files.items():
            info = tarfile.TarInfo(f"./{name}")
            info.size, info.mode = len(content), 0o755
            tar.addfile(info, io.BytesIO(content))
        for name, target in links.items():
            info = tarfile.TarInfo(f"./{name}")
            info.type, info.linkname = tarfile.SYMTYPE, target
            tar.addfile(info)
    out = b"!<arch>\n"
    for name, payload in [("debian-binary", b"2.0\n"), ("data.tar.xz", data.getvalue())]:
        out += f"{name:<16}{0:<12}{0:<6}{0:<6}{'100644':<8}{len(payload):<10}`\n".encode() + payload
        out += b"\n" * (len(payload) & 1)
    return out


def mirror(root: Path, packages: list[tuple[str, str, str, bytes]]) -> None:
    """A one-suite mirror (bookworm, amd64) with an unsigned InRelease; packages: (name, version, depends, .deb)."""
    stanzas = []
    for name, version, depends, payload in packages:
        pool = root / "pool" / f"{name}_{version}_amd64.deb"
        pool.parent.mkdir(parents=True, exist_ok=True)
        pool.write_bytes(payload)
        stanzas.append(f"Package: {name}\nVersion: {version}\nDepends: {depends}\nFilename: pool/{pool.name}\n"
                       f"Size: {len(payload)}\nSHA256: {hashlib.sha256(payload).hexdigest()}\n")
    index = lzma.compress("\n".join(stanzas).encode())
    dists = root / "dists" / "bookworm"
    (dists / "main" / "binary-amd64").mkdir(parents=True)
    (dists / "main" / "binary-amd64" / "Packages.xz").write_bytes(index)
    release = (f"Suite: bookworm\nArchitectures: amd64\nSHA256:\n {hashlib.sha256(index).hexdigest()} {len(index)} "
               "main/binary-amd64/Packages.xz\n")
    (dists / "InRelease").write_text("-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA512\n\n" + release +
                                     "-----BEGIN PGP SIGNATURE-----\n\nxx\n-----END PGP SIGNATURE-----\n")


def archive(root: Path, cache: Path) -> "debian.Archive":
    return debian.Archive([debian.Suite(f"file://{root}", "bookworm")], "amd64", cache, None, 86400)


def test_resolves_fetches_verifies_and_unpacks_like_dpkg(tmp_path: Path) -> None:
    tool = deb({"usr/bin/tool": b"#!/bin/sh\n"}, {"bin/tool": "../usr/bin/tool"})
    mirror(tmp_path / "m", [("tool", "1.0-1", "libx (>= 2) | liby, libz:any", tool),
                            ("libx", "2.0", "", deb({"lib/libx.so.2": b"x"}, {})),
                            ("libz", "1:0.1", "", deb({"lib/libz.so": b"z"}, {}))])
    packages = archive(tmp_path / "m", tmp_path / "cache")
    assert packages.edges(["tool"]) == ["tool", "tool libx", "tool libz", "libx", "libz"]
    assert packages.candidate("libz").version == "1:0.1" and packages.candidate("nothing") is None
    path = packages.fetch("tool", "1.0-1")
    assert path.name == "tool_1.0-1_amd64.deb" and path.read_bytes() == tool
    debian.extract(path, tmp_path / "root")
    assert (tmp_path / "root/usr/bin/tool").read_bytes() == b"#!/bin/sh\n"
    assert stat.S_IMODE((tmp_path / "root/usr/bin/tool").stat().st_mode) == 0o755
    assert (tmp_path / "root/bin/tool").readlink() == Path("../usr/bin/tool")


def test_a_package_or_index_that_does_not_match_its_checksum_is_refused(tmp_path: Path) -> None:
    mirror(tmp_path / "m", [("tool", "1.0", "", deb({"a": b"a"}, {}))])
    evil = deb({"a": b"b"}, {})   # the same size: only the digest tells
    assert len(evil) == len((tmp_path / "m/pool/tool_1.0_amd64.deb").read_bytes())
    (tmp_path / "m/pool/tool_1.0_amd64.deb").write_bytes(evil)
    with pytest.raises(debian.Failure, match="sha256"):
        archive(tmp_path / "m", tmp_path / "cache").fetch("tool", "1.0")
    (tmp_path / "m/dists/bookworm/main/binary-amd64/Packages.xz").write_bytes(lzma.compress(b"Package: x\n"))
    with pytest.raises(debian.Failure, match="Packages.xz"):
        archive(tmp_path / "m", tmp_path / "cache2")


def read_newc(data: bytes) -> list[tuple[str, int, int, tuple[int, int], bytes]]:
    """(name, mode, mtime, rdev, data) per entry, trailer excluded."""
    entries, pos = [], 0
    while True:
        assert data[pos:pos + 6] == b"070701" and pos % 4 == 0
        f = [int(data[pos + 6 + 8 * i:pos + 14 + 8 * i], 16) for i in range(13)]
        name = data[pos + 110:pos + 110 + f[11] - 1].decode()
        pos += 110 + f[11]
        pos += -pos % 4
        content = data[pos:pos + f[6]]
        pos += f[6] + (-f[6] % 4)
        if name == "TRAILER!!!":
            return entries
        entries.append((name, f[1], f[5], (f[9], f[10]), content))


def test_initramfs_declares_its_nodes_and_is_the_same_bytes_every_time(tmp_path: Path) -> None:
    root = tmp_path / "rootfs"
    (root / "bin").mkdir(parents=True)
    (root / "bin/busybox").write_bytes(b"\x7fELF")
    (root / "bin/busybox").chmod(0o755)
    (root / "bin/sh").symlink_to("busybox")
    lines = gen_init_cpio.list_of(root) + ["nod /dev/console 600 0 0 c 5 1"]
    first = gen_init_cpio.archive(lines, 0)
    (root / "bin/busybox").touch()   # a new mtime on disk changes nothing
    assert gen_init_cpio.archive(gen_init_cpio.list_of(root) + ["nod /dev/console 600 0 0 c 5 1"], 0) == first
    entries = {name: (mode, mtime, rdev, content) for name, mode, mtime, rdev, content in read_newc(first)}
    assert list(entries) == ["bin", "bin/busybox", "bin/sh", "dev/console"]
    assert entries["dev/console"][0] == stat.S_IFCHR | 0o600 and entries["dev/console"][2] == (5, 1)
    assert stat.S_IFMT(entries["bin/sh"][0]) == stat.S_IFLNK and entries["bin/sh"][3] == b"busybox"
    assert entries["bin/busybox"][0] == stat.S_IFREG | 0o755 and entries["bin/busybox"][3] == b"\x7fELF"
    assert {mtime for _, mtime, _, _ in entries.values()} == {0}
