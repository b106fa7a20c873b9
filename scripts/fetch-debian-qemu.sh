#!/usr/bin/env bash
# Unpack another Debian build of qemu-system-x86 next to the installed one, for cross-version runs and for tests
# that must report a behaviour as absent (e.g. B4 on QEMU 7.2, Debian 12's own version).
#
#   scripts/fetch-debian-qemu.sh [VERSION]      # default: the newest 7.2 in the configured Debian suites
#
# Prints the path of a launcher, build/qemu/debian-<version>/qemu-system-x86_64, which --qemu-binary /
# --qemu-src / --qemu-dst accept: it execs the unpacked binary with QEMU_MODULE_DIR pointing at the same version's
# modules (7.2 loads TCG as a module; the installed QEMU's modules do not fit it). Only Debian's archive is used
# (apt-get download + dpkg -x of qemu-system-x86 and qemu-system-common); the installed libraries and firmware
# serve the rest.
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VERSION=${1:-$(apt-cache madison qemu-system-x86 | awk -F'|' '$2 ~ /7\.2\+dfsg/ {gsub(/ /, "", $2); print $2; exit}')}
[[ -n $VERSION ]] || { echo "no qemu-system-x86 7.2 in the apt sources (run apt-get update?)" >&2; exit 1; }
DEST=$REPO/build/qemu/debian-${VERSION#*:}
BIN=$DEST/usr/bin/qemu-system-x86_64
LAUNCHER=$DEST/qemu-system-x86_64
if [[ ! -x $LAUNCHER ]]; then
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    (cd "$tmp" && apt-get download -q "qemu-system-x86=$VERSION" "qemu-system-common=$VERSION" >&2)
    mkdir -p "$DEST"
    for deb in "$tmp"/*.deb; do dpkg -x "$deb" "$DEST"; done
    modules=$(dirname "$(find "$DEST/usr/lib" -name 'accel-*.so' -print -quit 2>/dev/null || true)")
    cat > "$LAUNCHER.tmp" <<SH
#!/bin/sh
# Debian QEMU $VERSION unpacked by scripts/fetch-debian-qemu.sh: its own modules, the host's libraries.
${modules:+QEMU_MODULE_DIR=$modules }exec "$BIN" "\$@"
SH
    chmod +x "$LAUNCHER.tmp"
    mv "$LAUNCHER.tmp" "$LAUNCHER"
fi
if ! missing=$(ldd "$BIN" | grep 'not found'); then :; fi
[[ -z $missing ]] || { echo "$BIN lacks libraries: $missing" >&2; exit 1; }
"$LAUNCHER" -version | head -n1 >&2
echo "$LAUNCHER"
