#!/usr/bin/env bash
# Build whatever commit is checked out in a QEMU source tree, incrementally, for `git bisect run`.
#
#   qemu-build/build-checkout.sh SRC BUILD
#
# Configures BUILD once (same minimal configuration as build.sh, for QB_ARCH: x86_64 by default) and afterwards
# only runs ninja, so a bisect step recompiles just the files the checkout changed (ccache, with paths made
# relative to SRC, covers the rest). Leaves BUILD/qemu-system-ARCH and BUILD/firmware-dirs.txt, which
# --qemu-binary BUILD understands.
#
# Exit: 0 built; 125 the commit does not configure or compile ("skip" for git bisect); 128 the build host is
# not usable (missing tools: abort the bisect rather than mark commits).
set -euo pipefail
[[ $# -eq 2 ]] || { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2; exit 128; }
QB_SRC=$(cd "$1" && pwd)
mkdir -p "$2"
QB_BUILD_DIR=$(cd "$2" && pwd)
QB_LOG_DIR=$QB_BUILD_DIR.logs   # beside BUILD: a reconfigure empties BUILD
QB_STAMP_REVISION=0
QB_T0=$SECONDS
# shellcheck source=qemu-build/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
qb_init || exit 128     # a tree not this user's to write: the host is not usable, no commit is to blame
export CCACHE_BASEDIR=$QB_SRC CCACHE_NOHASHDIR=1
# One build per BUILD at a time (two bisect runs pointed at the same build dir would interleave ninja runs).
exec {QB_CHECKOUT_LOCK}>"$QB_BUILD_DIR.lock"
flock "$QB_CHECKOUT_LOCK"

qb_ensure_deps || exit 128
[[ -x $QB_SRC/configure ]] || { qb_log "no QEMU source at $QB_SRC"; exit 128; }
# Same tweak as qb_prepare_source: a +ds tarball has no edk2 blobs to unpack (no-op on a full checkout).
if grep -q 'unpack_edk2_blobs = bzip2.found()' "$QB_SRC/meson.build" && [[ ! -e $QB_SRC/pc-bios/edk2-x86_64-code.fd.bz2 ]]; then
    qb_log "no edk2 blobs in this tree: building without unpacking them"
    sed -i 's/^\(\s*\)unpack_edk2_blobs = bzip2.found()/\1unpack_edk2_blobs = false/' "$QB_SRC/meson.build"
fi
qb_log "building $(git -C "$QB_SRC" log -1 --format='%h %s' 2>/dev/null || echo "$QB_SRC") in $QB_BUILD_DIR"
qb_configure || exit 125
qb_ninja bisect || exit 125
printf '%s\n' "${QB_FIRMWARE_DIRS[@]}" > "$QB_BUILD_DIR/firmware-dirs.txt"
qb_log "built $QB_BUILD_DIR/$QB_BINARY"
