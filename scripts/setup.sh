#!/usr/bin/env bash
# Host set-up for a fresh Debian 12 / Ubuntu machine, as root: QEMU (bookworm-backports on Debian 12, for the
# reference 10.0.x), and a Python venv with the harness installed. Idempotent. The guest image's own build tools
# are installed by images/build.sh, the QEMU build's by qemu-build/build.sh.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3}
APT_PACKAGES=(qemu-system-x86 qemu-utils python3-venv ca-certificates)

log() { printf '[setup %s] %s\n' "$(date +%T)" "$*"; }

if [ "$(id -u)" -ne 0 ]; then
    echo "setup.sh installs packages with apt-get and must run as root" >&2
    exit 1
fi

# Two `make check` at once on a fresh checkout would both install into one venv: the second waits for the first.
mkdir -p build
exec {SETUP_LOCK}>>build/.setup.lock
flock "$SETUP_LOCK"

. /etc/os-release
export DEBIAN_FRONTEND=noninteractive
apt_target=()
if [ "${ID:-}" = debian ] && [ "${VERSION_CODENAME:-}" = bookworm ]; then
    if ! grep -rqs 'bookworm-backports' /etc/apt/sources.list /etc/apt/sources.list.d/; then
        log "adding the bookworm-backports suite (QEMU 10.0.x)"
        cat > /etc/apt/sources.list.d/bookworm-backports.sources <<'SRC'
Types: deb
URIs: http://deb.debian.org/debian
Suites: bookworm-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
        rm -f /var/lib/apt/lists/*bookworm-backports* 2>/dev/null || true
    fi
    apt_target=(-t bookworm-backports)
fi

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
done
# On Debian 12 the reference QEMU is the backports one; a 7.2 from the main suite is replaced.
if [ ${#apt_target[@]} -gt 0 ] && ! qemu-system-x86_64 --version 2>/dev/null | grep -q 'version 10\.'; then
    missing+=(qemu-system-x86)
fi
if [ ${#missing[@]} -gt 0 ]; then
    log "installing ${missing[*]}"
    apt-get update -q
    apt-get install -y -q "${apt_target[@]}" qemu-system-x86 qemu-utils
    apt-get install -y -q python3-venv ca-certificates
fi
log "$(qemu-system-x86_64 --version | head -1)"

if [ ! -x "$VENV/bin/python" ]; then
    log "creating $VENV with $($PYTHON --version)"
    "$PYTHON" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install -q --upgrade pip
"$VENV/bin/python" -m pip install -q -e .
log "python venv ready: $("$VENV/bin/python" -c 'import qemu.qmp, paramiko, tenacity, pytest; print("ok")')"
