"""qemu-build/ per target arch, without building anything: lib.sh's layout and configure line per arch, the "up to
date" check across arches (and for variants recorded before there were arches), build.sh's --arch parsing."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from harness.tools import validate
REPO = Path(__file__).resolve().parents[2]
LIB = REPO / "qemu-build" / "lib.sh"


def lib(tmp_path: Path, script: str, arch: str | None = None) -> str:
    """Run `script` after `source lib.sh; qb_init` with everything under tmp_path; its stdout."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("QB_", "CCACHE"))}
    env |= {"QB_ROOT": str(tmp_path / "qemu"), "QB_NO_APT": "1"} | ({"QB_ARCH": arch} if arch else {})
    proc = subprocess.run(["bash", "-euo", "pipefail", "-c", f'source "{LIB}"; qb_init; {script}'], env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


LAYOUT = 'printf "%s\\n" "$QB_BUILD_DIR" "$QB_LOG_DIR" "$QB_VARIANTS_DIR" "$QB_BINARY" "${QB_FIRMWARE_DIRS[*]}" ' \
         '"${QB_FIRMWARE_FILES[*]}" "${QB_CONFIGURE_ARGS[*]}"'


def test_each_arch_has_its_build_tree_binary_firmware_and_target_and_x86_64_keeps_its_dirs(tmp_path) -> None:
    root = tmp_path / "qemu"
    default = lib(tmp_path, LAYOUT).splitlines()
    x86 = lib(tmp_path, LAYOUT, "x86_64").splitlines()
    s390x = lib(tmp_path, LAYOUT, "s390x").splitlines()
    assert default == x86
    assert x86[:5] == [str(root / "build"), str(root / "logs"), str(root / "variants"), "qemu-system-x86_64",
                       "/usr/share/qemu /usr/share/seabios /usr/lib/ipxe/qemu"]
    assert s390x[:6] == [str(root / "build-s390x"), str(root / "logs-s390x"), str(root / "variants-s390x"),
                         "qemu-system-s390x", "/usr/share/qemu", "/usr/share/qemu/s390-ccw.img"]
    # the same minimal configuration, only the target differs (and comes first, as it always did for x86_64)
    assert x86[6].startswith("--target-list=x86_64-softmmu --without-default-features ")
    assert s390x[6] == x86[6].replace("x86_64-softmmu", "s390x-softmmu", 1)
    # validate's default variants dir per arch is build.sh's
    for arch, layout in (("x86_64", x86), ("s390x", s390x)):
        assert validate.per_arch(root / "variants", arch) == Path(layout[2])


FAKE_TREE = r'''
mkdir -p "$QB_SRC" "$QB_BUILD_DIR"; echo source > "$QB_SRC/f"
git init -q --bare "$QB_GIT_DIR"; qb_git config core.bare false; qb_git add -A
qb_git -c user.name=t -c user.email=t@localhost commit -q -m base
printf '#!/bin/sh\necho "QEMU emulator version 10.0.2"\n' > "$QB_BUILD_DIR/$QB_BINARY"; chmod +x "$QB_BUILD_DIR/$QB_BINARY"
'''
# "ARCH VARIANT: fresh|stale" for both arches' view of OUT/VARIANT
VIEW = r'''
view() { for a in x86_64 s390x; do QB_ARCH=$a; qb_arch_config
    qb_variant_uptodate "$1" "$2" ${3:+"$3"} && echo "$a $1: fresh" || echo "$a $1: stale"; done; QB_ARCH=$ARCH0; qb_arch_config; }
ARCH0=$QB_ARCH
'''


@pytest.mark.parametrize("arch", ["x86_64", "s390x"])
def test_a_variant_is_up_to_date_only_for_the_arch_it_was_built_for(tmp_path, arch) -> None:
    patch = tmp_path / "X.patch"
    patch.write_text("Description: x\nGuards: B0\n\ndiff --git a/f b/f\n")
    out = tmp_path / "out"
    script = FAKE_TREE + VIEW + f'''
qb_install_variant pristine "{out}" 1; qb_install_variant X "{out}" 1 "{patch}"
# the other arch's binary beside it must not make the variant that arch's
other=qemu-system-$([[ $QB_ARCH == x86_64 ]] && echo s390x || echo x86_64)
cp "{out}/pristine/$QB_BINARY" "{out}/pristine/$other"; cp "{out}/X/$QB_BINARY" "{out}/X/$other"
view pristine "{out}"; view X "{out}" "{patch}"; grep '"arch"' "{out}/X/build-info.json"
'''
    other = "s390x" if arch == "x86_64" else "x86_64"
    assert lib(tmp_path, script, arch).splitlines() == [
        f"x86_64 pristine: {'fresh' if arch == 'x86_64' else 'stale'}",
        f"s390x pristine: {'fresh' if arch == 's390x' else 'stale'}",
        f"x86_64 X: {'fresh' if arch == 'x86_64' else 'stale'}",
        f"s390x X: {'fresh' if arch == 's390x' else 'stale'}",
        f'  "arch": "{arch}",']
    assert other not in (out / "X" / "build-info.json").read_text()


def test_a_variant_recorded_before_there_were_arches_is_an_x86_64_one(tmp_path) -> None:
    """build-info.json of the variants built before --arch has no "arch": x86_64 keeps them, s390x does not."""
    out = tmp_path / "out"
    script = FAKE_TREE + VIEW + f'''
qb_install_variant pristine "{out}" 1
sed -i '/"arch": /d' "{out}/pristine/build-info.json"
cp "{out}/pristine/$QB_BINARY" "{out}/pristine/qemu-system-s390x"
view pristine "{out}"
'''
    assert lib(tmp_path, script, "x86_64").splitlines() == ["x86_64 pristine: fresh", "s390x pristine: stale"]


def build_sh(*args: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("QB_")} | {"QB_ROOT": str(tmp_path / "qemu")}
    return subprocess.run(["bash", str(REPO / "qemu-build" / "build.sh"), *args], env=env, capture_output=True,
                          text=True, timeout=60)


def test_build_sh_refuses_an_unknown_arch_before_doing_anything(tmp_path) -> None:
    for args, name in ((["--arch", "arm"], "arm"), (["--arch=aarch64"], "aarch64")):
        proc = build_sh(*args, "--no-apt", tmp_path=tmp_path)
        assert proc.returncode == 2, proc.stderr
        assert proc.stderr.startswith(f"unknown --arch: {name} (one of: x86_64 s390x)")
    assert not (tmp_path / "qemu").exists()
    usage = build_sh("--help", tmp_path=tmp_path).stdout
    assert "--arch ARCH" in usage and "variants-s390x" in usage
