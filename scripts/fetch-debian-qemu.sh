#!/usr/bin/env bash
# Unpack another Debian build of qemu-system-x86 next to the installed one, for cross-version runs and for tests
# that must report a behaviour as absent (e.g. B4 on QEMU 7.2, Debian 12's own version).
#
#   scripts/fetch-debian-qemu.sh [VERSION]      # default: the newest 7.2 in the configured Debian suites
#
# Prints the path of the unpacked binary, build/qemu/debian-<version>/usr/bin/qemu-system-x86_64, which
# --qemu-binary / --qemu-src / --qemu-dst accept. The harness starts it (here or on a --hosts remote) with the same
# version's modules (QEMU_MODULE_DIR: 7.2 loads TCG as a module; the installed QEMU's do not fit it) and the host's
# firmware (-L), both decided by harness/qemu/launch.py. Only Debian's archive is used (apt-get download + dpkg -x
# of qemu-system-x86 and qemu-system-common); the installed libraries and firmware serve the rest.
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VERSION=${1:-$(apt-cache madison qemu-system-x86 | awk -F'|' '!found && $2 ~ /7\.2\+dfsg/ {gsub(/ /, "", $2); print $2; found = 1}')}
[[ -n $VERSION ]] || { echo "no qemu-system-x86 7.2 in the apt sources (run apt-get update?)" >&2; exit 1; }
DEST=$REPO/build/qemu/debian-${VERSION#*:}
BIN=$DEST/usr/bin/qemu-system-x86_64
MODULE=$DEST/usr/lib/x86_64-linux-gnu/qemu/accel-tcg-x86_64.so
if [[ ! -x $BIN || ! -f $MODULE ]]; then
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    (cd "$tmp" && apt-get download -q "qemu-system-x86=$VERSION" "qemu-system-common=$VERSION" >&2)
    mkdir -p "$DEST"
    for deb in "$tmp"/*.deb; do dpkg -x "$deb" "$DEST"; done
fi
if ! missing=$(ldd "$BIN" | grep 'not found'); then :; fi
[[ -z $missing ]] || { echo "$BIN lacks libraries: $missing" >&2; exit 1; }
QEMU_MODULE_DIR=$(dirname "$MODULE") "$BIN" -version | sed -n 1p >&2
echo "$BIN"
