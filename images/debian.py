#!/usr/bin/env python3
"""Debian packages without apt or dpkg: what images/build.sh needs of them, on any Linux with Python 3 and a mirror.

    debian.py edges ROOT...        "PKG DEP" per first-alternative (Pre-)Depends edge of the roots' closure, "PKG"
                                   alone for each package of it (the lines `apt-cache depends --recurse` gives there)
    debian.py candidates PKG...    "PKG VERSION" per package, (none) when no source has it (as `apt-cache policy`)
    debian.py fetch PKG=VERSION... the path of each .deb in the cache, downloaded when missing (apt-get download's name)
    debian.py extract DEB DIR      unpack the .deb's data archive into DIR (as `dpkg -x`)

Trust: each suite's InRelease is checked with gpgv against the Debian archive keyring when one is present
(DEBIAN_KEYRING, else /usr/share/keyrings/debian-archive-keyring.gpg; without one it says so on stderr and goes on);
the Packages index is checked against the SHA256 and size the InRelease gives, every .deb against the SHA256 and size
its Packages stanza gives (also a cached one, before each use). The candidate is the highest version any suite has,
as apt's is with the suites at one priority: bookworm, bookworm-updates and bookworm-security (not backports).

Environment: DEB_ARCH (amd64, s390x, ...), DEB_CACHE (downloads, indices), DEBIAN_MIRROR (http://deb.debian.org/debian),
DEBIAN_SECURITY_MIRROR (http://deb.debian.org/debian-security), DEBIAN_SUITE (bookworm), DEBIAN_INDEX_MAX_AGE (seconds an
InRelease is reused before it is fetched again, 86400: a cached image build then needs no network).
Standard library only: the host's python3 runs it, before any venv exists.
"""

from __future__ import annotations

import email.utils
import hashlib
import io
import lzma
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path


def log(message: str) -> None:
    print(f"debian.py: {message}", file=sys.stderr)


class Failure(Exception):
    """Anything that stops the build: a checksum mismatch, a bad signature, a missing package."""


# --- Debian version order (deb-version(7)) -------------------------------------------------------------------------

def _order(c: str) -> int:
    if c == "~":
        return -1
    if c.isdigit():
        return 0
    if c.isalpha():
        return ord(c)
    return ord(c) + 256


def _compare_part(a: str, b: str) -> int:
    while a or b:
        ta = re.match(r"\D*", a).group()
        tb = re.match(r"\D*", b).group()
        a, b = a[len(ta):], b[len(tb):]
        for i in range(max(len(ta), len(tb))):
            ca = _order(ta[i]) if i < len(ta) else 0
            cb = _order(tb[i]) if i < len(tb) else 0
            if ca != cb:
                return -1 if ca < cb else 1
        na = re.match(r"\d*", a).group()
        nb = re.match(r"\d*", b).group()
        a, b = a[len(na):], b[len(nb):]
        if int(na or 0) != int(nb or 0):
            return -1 if int(na or 0) < int(nb or 0) else 1
    return 0


def version_compare(a: str, b: str) -> int:
    """-1, 0 or 1 as a sorts before, with or after b in Debian's version order."""
    def split(v: str) -> tuple[int, str, str]:
        epoch, _, rest = v.rpartition(":") if ":" in v else ("0", "", v)
        upstream, _, revision = rest.rpartition("-") if "-" in rest else (rest, "", "0")
        return int(epoch or 0), upstream, revision
    ea, ua, ra = split(a)
    eb, ub, rb = split(b)
    if ea != eb:
        return -1 if ea < eb else 1
    return _compare_part(ua, ub) or _compare_part(ra, rb)


# --- Archive indices -----------------------------------------------------------------------------------------------

def parse_stanzas(text: str) -> list[dict[str, str]]:
    """deb822 paragraphs; continuation lines are kept, joined with newlines."""
    stanzas, current, key = [], {}, None
    for line in text.splitlines():
        if not line.strip():
            if current:
                stanzas.append(current)
            current, key = {}, None
        elif line[0] in " \t" and key:
            current[key] += "\n" + line.strip()
        else:
            key, _, value = line.partition(":")
            current[key] = value.strip()
    if current:
        stanzas.append(current)
    return stanzas


def signed_text(inrelease: str) -> str:
    """The cleartext of a PGP clearsigned message (dash-escaping undone)."""
    if not inrelease.startswith("-----BEGIN PGP SIGNED MESSAGE-----"):
        raise Failure("InRelease is not a clearsigned message")
    body = inrelease.split("\n\n", 1)[1].split("\n-----BEGIN PGP SIGNATURE-----", 1)[0]
    return "\n".join(line[2:] if line.startswith("- ") else line for line in body.split("\n"))


def sha256_entries(release: str) -> dict[str, tuple[str, int]]:
    """path -> (sha256, size) of the Release file's SHA256 section."""
    field = parse_stanzas(release)[0].get("SHA256", "")
    entries = {}
    for line in field.splitlines():
        parts = line.split()
        if len(parts) == 3:
            entries[parts[2]] = (parts[0], int(parts[1]))
    return entries


def verified(data: bytes, sha256: str, size: int, what: str) -> bytes:
    if len(data) != size or hashlib.sha256(data).hexdigest() != sha256:
        raise Failure(f"{what}: size {len(data)} sha256 {hashlib.sha256(data).hexdigest()}, "
                      f"expected size {size} sha256 {sha256}")
    return data


def download(url: str) -> bytes:
    for attempt in range(3):
        try:
            with urllib.request.urlopen(url, timeout=60) as response:
                return response.read()
        except OSError as e:
            if attempt == 2:
                raise Failure(f"cannot fetch {url}: {e}") from e
            time.sleep(2)
    raise AssertionError


@dataclass(frozen=True)
class Suite:
    mirror: str
    name: str


@dataclass(frozen=True)
class Package:
    name: str
    version: str
    depends: tuple[str, ...]      # first alternative of each (Pre-)Depends entry
    provides: tuple[str, ...]
    filename: str
    sha256: str
    size: int
    suite: Suite


def first_alternatives(field: str) -> list[str]:
    """Names of the first alternative of each entry of a Depends field (version and arch qualifiers dropped)."""
    names = []
    for entry in filter(None, (e.strip() for e in field.split(","))):
        first = entry.split("|")[0].strip()
        names.append(re.split(r"[\s(:\[]", first, maxsplit=1)[0])
    return names


class Archive:
    def __init__(self, suites: list[Suite], arch: str, cache: Path, keyring: Path | None, max_age: float) -> None:
        self.arch, self.cache, self.keyring, self.max_age = arch, cache, keyring, max_age
        self.packages: dict[str, list[Package]] = {}
        self.providers: dict[str, list[str]] = {}
        for suite in suites:
            self._load(suite)

    def _inrelease(self, suite: Suite) -> str:
        key = re.sub(r"[^A-Za-z0-9.-]+", "_", f"{suite.mirror}/{suite.name}")
        path = self.cache / "indices" / f"{key}_InRelease"
        if not path.exists() or time.time() - path.stat().st_mtime > self.max_age:
            path.parent.mkdir(parents=True, exist_ok=True)
            data = download(f"{suite.mirror}/dists/{suite.name}/InRelease")
            tmp = path.with_suffix(".tmp")
            tmp.write_bytes(data)
            tmp.replace(path)
        if self.keyring is not None:
            check = subprocess.run(["gpgv", "--keyring", str(self.keyring), str(path)], capture_output=True, text=True)
            if check.returncode != 0:
                path.unlink(missing_ok=True)
                raise Failure(f"{suite.name} InRelease: bad signature ({check.stderr.strip()})")
        return signed_text(path.read_text())

    def _load(self, suite: Suite) -> None:
        release = self._inrelease(suite)
        fields = parse_stanzas(release)[0]
        if self.arch not in fields.get("Architectures", "").split():
            log(f"{suite.name} has no {self.arch} packages (Architectures: {fields.get('Architectures')})")
            return
        valid_until = fields.get("Valid-Until")
        if valid_until and email.utils.parsedate_to_datetime(valid_until).timestamp() < time.time():
            raise Failure(f"{suite.name} InRelease expired on {valid_until} (a stale mirror or a replayed file)")
        entries = sha256_entries(release)
        index = f"main/binary-{self.arch}/Packages.xz"
        if index not in entries:
            raise Failure(f"{suite.name}: its Release lists no {index}")
        sha256, size = entries[index]
        cached = self.cache / "indices" / f"Packages-{sha256}.xz"
        if cached.exists():
            data = verified(cached.read_bytes(), sha256, size, f"cached {suite.name} {index}")
        else:
            data = verified(download(f"{suite.mirror}/dists/{suite.name}/{index}"), sha256, size,
                            f"{suite.name} {index}")
            for old in cached.parent.glob("Packages-*.xz"):
                if time.time() - old.stat().st_mtime > 30 * 86400:
                    old.unlink()
            cached.write_bytes(data)
        for stanza in parse_stanzas(lzma.decompress(data).decode()):
            depends = first_alternatives(stanza.get("Pre-Depends", "")) + first_alternatives(stanza.get("Depends", ""))
            package = Package(stanza["Package"], stanza["Version"], tuple(depends),
                              tuple(first_alternatives(stanza.get("Provides", "").replace("|", ","))),
                              stanza["Filename"], stanza["SHA256"], int(stanza["Size"]), suite)
            self.packages.setdefault(package.name, []).append(package)
            for virtual in package.provides:
                self.providers.setdefault(virtual, []).append(package.name)

    def candidate(self, name: str) -> Package | None:
        best = None
        for package in self.packages.get(name, []):
            if best is None or version_compare(package.version, best.version) > 0:
                best = package
        return best

    def real_name(self, name: str) -> str | None:
        """A real package's own name, else (a virtual one) its first provider by name, as apt-cache would name it."""
        if name in self.packages:
            return name
        providers = sorted(set(self.providers.get(name, [])))
        return providers[0] if providers else None

    def edges(self, roots: list[str]) -> list[str]:
        lines, seen, queue = [], set(), list(roots)
        while queue:
            name = queue.pop(0)
            if name in seen:
                continue
            seen.add(name)
            package = self.candidate(name)
            if package is None:
                continue
            lines.append(name)
            for dep in package.depends:
                real = self.real_name(dep)
                if real is not None:
                    lines.append(f"{name} {real}")
                    queue.append(real)
        return lines

    def fetch(self, name: str, version: str) -> Path:
        matches = [p for p in self.packages.get(name, []) if p.version == version]
        if not matches:
            raise Failure(f"no {name}={version} for {self.arch} in the mirror's indices")
        package = matches[0]
        arch = self.arch if package.filename.endswith(f"_{self.arch}.deb") else "all"
        path = self.cache / f"{name}_{version.replace(':', '%3a')}_{arch}.deb"
        if path.exists():
            verified(path.read_bytes(), package.sha256, package.size, f"cached {path.name}")
            return path
        log(f"downloading {name}={version}")
        data = verified(download(f"{package.suite.mirror}/{package.filename}"), package.sha256, package.size,
                        package.filename)
        tmp = path.with_suffix(".part")
        tmp.write_bytes(data)
        tmp.replace(path)
        return path


# --- .deb unpacking ------------------------------------------------------------------------------------------------

def ar_members(data: bytes) -> dict[str, bytes]:
    if not data.startswith(b"!<arch>\n"):
        raise Failure("not an ar archive")
    members, pos = {}, 8
    while pos + 60 <= len(data):
        header = data[pos:pos + 60]
        name = header[:16].decode().strip().rstrip("/")
        size = int(header[48:58].decode().strip())
        members[name] = data[pos + 60:pos + 60 + size]
        pos += 60 + size + (size & 1)
    return members


def data_tar(deb: Path) -> tarfile.TarFile:
    members = ar_members(deb.read_bytes())
    for name, payload in members.items():
        if name == "data.tar.zst":
            payload = subprocess.run(["zstd", "-dc"], input=payload, capture_output=True, check=True).stdout
            return tarfile.open(fileobj=io.BytesIO(payload), mode="r:")
        if name.startswith("data.tar"):
            return tarfile.open(fileobj=io.BytesIO(payload), mode="r:*")
    raise Failure(f"{deb.name}: no data.tar member")


def extract(deb: Path, target: Path) -> None:
    """Unpack the data archive as `dpkg -x` does: modes kept, owner the caller, existing files replaced."""
    target = target.resolve()
    with data_tar(deb) as tar:
        for member in tar:
            relative = Path(os.path.normpath(member.name.lstrip("/")))
            if relative.parts and relative.parts[0] == "..":
                raise Failure(f"{deb.name}: member {member.name} leaves the target")
            path = target / relative
            if member.isdir():
                path.mkdir(parents=True, exist_ok=True)
                path.chmod(member.mode & 0o7777 | 0o700)
                continue
            path.parent.mkdir(parents=True, exist_ok=True)
            if path.is_symlink() or path.exists():
                path.unlink()
            if member.issym():
                path.symlink_to(member.linkname)
            elif member.islnk():
                os.link(target / os.path.normpath(member.linkname.lstrip("/")), path)
            elif member.isfile():
                with tar.extractfile(member) as source, open(path, "wb") as sink:
                    shutil.copyfileobj(source, sink)
                path.chmod(member.mode & 0o7777)
                os.utime(path, (member.mtime, member.mtime))
            # devices and FIFOs: none in the packages the image takes; dpkg -x as a user skips them too


# --- command line --------------------------------------------------------------------------------------------------

def archive() -> Archive:
    suite = os.environ.get("DEBIAN_SUITE", "bookworm")
    mirror = os.environ.get("DEBIAN_MIRROR", "http://deb.debian.org/debian").rstrip("/")
    security = os.environ.get("DEBIAN_SECURITY_MIRROR", "http://deb.debian.org/debian-security").rstrip("/")
    keyring = Path(os.environ.get("DEBIAN_KEYRING", "/usr/share/keyrings/debian-archive-keyring.gpg"))
    if not keyring.exists() or shutil.which("gpgv") is None:
        log(f"the Release signatures are NOT checked: no keyring at {keyring} or no gpgv "
            "(the indices and packages are still checked against the Release checksums)")
        keyring = None
    cache = Path(os.environ["DEB_CACHE"])
    cache.mkdir(parents=True, exist_ok=True)
    suites = [Suite(mirror, suite), Suite(mirror, f"{suite}-updates"), Suite(security, f"{suite}-security")]
    return Archive(suites, os.environ["DEB_ARCH"], cache, keyring, float(os.environ.get("DEBIAN_INDEX_MAX_AGE", 86400)))


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    command, args = argv[1], argv[2:]
    try:
        if command == "extract" and len(args) == 2:
            extract(Path(args[0]), Path(args[1]))
        elif command == "edges":
            print("\n".join(archive().edges(args)))
        elif command == "candidates":
            packages = archive()
            for name in args:
                package = packages.candidate(name)
                print(name, package.version if package else "(none)")
        elif command == "fetch" and args:
            packages = archive()
            for arg in args:
                name, _, version = arg.partition("=")
                print(packages.fetch(name, version))
        else:
            print(__doc__, file=sys.stderr)
            return 2
    except Failure as e:
        log(f"ERROR: {e}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
