#!/usr/bin/env bash
# Host set-up for a fresh Debian 12 / Ubuntu machine, as root: QEMU for both guest arches (x86_64 and s390x;
# bookworm-backports on Debian 12, for the reference 10.0.x — qemu-system-s390x is ~3 MB more, so it is always
# installed), and a Python venv with the harness installed. Idempotent. The guest image's own build tools
# are installed by images/build.sh, the QEMU build's by qemu-build/build.sh.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3}
# Emulators (from the backports suite on Debian 12) and the binary each package provides.
declare -A QEMU_PACKAGES=([qemu-system-x86]=qemu-system-x86_64 [qemu-system-s390x]=qemu-system-s390x)
# iproute2 (ip netns, tc), iputils-ping and iperf3: `--topology netns` builds the link between the two QEMUs and
# measures its round trip and throughput into each test's artefacts (harness/hosts/netns.py).
LINK_PACKAGES=(iproute2 iputils-ping iperf3)
# openssh-server: tests/behaviour/test_remote.py starts an sshd of its own inside a test namespace, the "remote
# host" of the remote-QEMU tests (harness/hosts/remote.py). The package's own system-wide sshd is never started here
# (see REMOTE_PACKAGES below).
REMOTE_PACKAGES=(openssh-server)
APT_PACKAGES=("${!QEMU_PACKAGES[@]}" qemu-utils python3-venv ca-certificates "${LINK_PACKAGES[@]}"
              "${REMOTE_PACKAGES[@]}")

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
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep 'install ok installed' >/dev/null || missing+=("$pkg")
done
# On Debian 12 the reference QEMU is the backports one; a 7.2 from the main suite is replaced.
for pkg in "${!QEMU_PACKAGES[@]}"; do
    if [ ${#apt_target[@]} -gt 0 ] && ! "${QEMU_PACKAGES[$pkg]}" --version 2>/dev/null | grep 'version 10\.' >/dev/null; then
        missing+=("$pkg")
    fi
done
if [ ${#missing[@]} -gt 0 ]; then
    log "installing ${missing[*]}"
    apt-get update -q
    apt-get install -y -q "${apt_target[@]}" "${!QEMU_PACKAGES[@]}" qemu-utils
    apt-get install -y -q python3-venv ca-certificates "${LINK_PACKAGES[@]}"
    # Installing openssh-server starts the system's sshd (port 22, every address) unless policy-rc.d says no:
    # the harness needs only the binary, so where no policy exists one denies service starts for this install.
    if [ -e /usr/sbin/policy-rc.d ]; then
        apt-get install -y -q "${REMOTE_PACKAGES[@]}"
    else
        printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
        chmod 755 /usr/sbin/policy-rc.d
        apt-get install -y -q "${REMOTE_PACKAGES[@]}" || { rm -f /usr/sbin/policy-rc.d; exit 1; }
        rm -f /usr/sbin/policy-rc.d
    fi
fi
for pkg in "${!QEMU_PACKAGES[@]}"; do
    log "$("${QEMU_PACKAGES[$pkg]}" --version | head -1) (${QEMU_PACKAGES[$pkg]})"
done

if [ ! -x "$VENV/bin/python" ]; then
    log "creating $VENV with $($PYTHON --version)"
    "$PYTHON" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install -q --upgrade pip
"$VENV/bin/python" -m pip install -q -c constraints.txt -e ".[dev]"
log "python venv ready: $("$VENV/bin/python" -c 'import qemu.qmp, paramiko, tenacity, pytest; print("ok")')"
