#!/usr/bin/env bash
# Host set-up for a fresh Debian 12 / Ubuntu machine, as root: QEMU for both guest arches (x86_64 and s390x;
# bookworm-backports on Debian 12, for the reference 10.0.x — qemu-system-s390x is ~3 MB more, so it is always
# installed), the guest image's build tools (images/build.sh --host-tools), and a Python venv with the harness
# installed. Idempotent. The QEMU build's tools are installed by qemu-build/build.sh.
# As root in a checkout owned by someone else, everything it creates there (build/, .venv, the egg-info, the stamp)
# is handed to the checkout's owner at the end: that user then builds the image and runs the tests.
# Without apt-get: dnf or zypper install the equivalent packages where found (not run here, see README "Hosts");
# else it names the commands that are missing. Run by a user, with every command present: the venv only.
# --packages-only: the packages and the image build tools, not the venv (make check builds the guest images while
# `make setup` makes the venv: the images need only the former).
set -euo pipefail
cd "$(dirname "$0")/.."
STAMP=build/.setup.stamp
PACKAGES_ONLY=false
[ "${1:-}" != --packages-only ] || PACKAGES_ONLY=true

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

# The commands the suite and the image build run (the Debian packages above, images/build.sh's host tools).
COMMANDS=(qemu-system-x86_64 qemu-system-s390x qemu-img ip ping iperf3 sshd ssh-keygen dropbearkey readelf xz zstd lz4
          gzip bzip2 gcc make python3 flock)
# Their packages on Fedora/RHEL and openSUSE (names from the distributions' package lists; not run here). Static
# glibc: the guest workloads are linked statically.
DNF_PACKAGES=(qemu-system-x86-core qemu-system-s390x-core qemu-img iproute iputils iperf3 openssh-server
              openssh-clients dropbear binutils xz zstd lz4 gzip bzip2 gcc make glibc-static python3 util-linux)
ZYPPER_PACKAGES=(qemu-x86 qemu-s390x qemu-tools iproute2 iputils iperf openssh-server openssh-clients dropbear
                 binutils xz zstd lz4 gzip bzip2 gcc make glibc-devel-static python3 util-linux)

# QEMU's own build (make validate; `make qemu-build-deps` installs it with apt): its Debian names, for a host that
# has no apt-get (the firmware dirs it builds against are Debian's too: qemu-build/lib.sh).
# (x86_64's firmware packages hold s390x's too.)
QEMU_BUILD_PACKAGES=$(bash -c 'source qemu-build/lib.sh && qb_arch_config && echo "${QB_APT_DEPS[*]} ${QB_FIRMWARE_PACKAGES[*]}"')

missing_commands() {
    local c
    for c in "${COMMANDS[@]}"; do
        PATH=$PATH:/usr/sbin:/sbin command -v "$c" >/dev/null || echo "$c"
    done
}

# Hand what this run created in the checkout to the checkout's owner (root in a user's checkout).
give_back() {
    local owner
    owner=$(stat -c %u:%g .)
    [ "$(id -u)" -eq 0 ] && [ "${owner%%:*}" != 0 ] || return 0
    find . \! -user "${owner%%:*}" -print0 | xargs -0 -r chown -h "$owner"
    log "checkout files handed back to its owner (uid:gid $owner)"
}

# Can the checkout's owner run this program? (root's own interpreter may live where no user can reach it,
# /root/.pyenv here: a venv made with it is of no use to the user the checkout is handed to.)
owner_can_run() {
    local owner name
    owner=$(stat -c %u:%g .)
    [ "$(id -u)" -eq 0 ] && [ "${owner%%:*}" != 0 ] || { [ -x "$1" ] || command -v "$1" >/dev/null; return; }
    # runuser, not setpriv: setpriv's exec still has root's capabilities and passes where the user cannot.
    name=$(getent passwd "${owner%%:*}" | cut -d: -f1)
    [ -z "$name" ] || runuser -u "$name" -- "$1" -c '' 2>/dev/null
}

venv() {
    PYTHON=$(command -v "$PYTHON")
    if ! owner_can_run "$PYTHON"; then
        log "the checkout's owner cannot run $PYTHON: the venv uses /usr/bin/python3"
        PYTHON=/usr/bin/python3
    fi
    if [ -e "$VENV" ] && ! owner_can_run "$VENV/bin/python"; then
        log "$VENV: its python is not one the checkout's owner can run: made afresh"
        rm -rf "$VENV"
    fi
    if [ ! -x "$VENV/bin/python" ]; then
        log "creating $VENV with $($PYTHON --version)"
        "$PYTHON" -m venv "$VENV"
    fi
    "$VENV/bin/python" -m pip install -q --upgrade pip
    "$VENV/bin/python" -m pip install -q -c constraints.txt -e ".[dev]"
    log "python venv ready: $("$VENV/bin/python" -c 'import qemu.qmp, paramiko, tenacity, pytest; print("ok")')"
    touch "$STAMP"
}

# Two `make check` at once on a fresh checkout would both install into one venv: the second waits for the first.
mkdir -p build
exec {SETUP_LOCK}>>build/.setup.lock
flock "$SETUP_LOCK"
trap give_back EXIT

if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null; then
    mapfile -t missing < <(missing_commands)
    if [ ${#missing[@]} -gt 0 ] && [ "$(id -u)" -eq 0 ] && command -v dnf >/dev/null; then
        log "no apt-get; installing with dnf: ${DNF_PACKAGES[*]}"
        dnf install -y "${DNF_PACKAGES[@]}"
    elif [ ${#missing[@]} -gt 0 ] && [ "$(id -u)" -eq 0 ] && command -v zypper >/dev/null; then
        log "no apt-get; installing with zypper: ${ZYPPER_PACKAGES[*]}"
        zypper --non-interactive install "${ZYPPER_PACKAGES[@]}"
    elif [ ${#missing[@]} -gt 0 ]; then
        echo "setup.sh: missing commands: ${missing[*]}" >&2
        if [ "$(id -u)" -ne 0 ]; then
            echo "  run \`make setup\` as root (it installs them), then again as this user" >&2
        else
            echo "  no apt-get, dnf or zypper here: install the packages that provide them (Debian names:" \
                "${APT_PACKAGES[*]} and images/build.sh's HOST_PACKAGES; Fedora: ${DNF_PACKAGES[*]})" >&2
        fi
        echo "  and for \`make validate\`'s QEMU build, the equivalents of (Debian names): $QEMU_BUILD_PACKAGES" >&2
        exit 1
    fi
    [ "$(id -u)" -ne 0 ] ||
        log "not installed without apt-get: \`make validate\`'s QEMU build needs the equivalents of (Debian names):" \
            "$QEMU_BUILD_PACKAGES"
    mapfile -t missing < <(missing_commands)
    [ ${#missing[@]} -eq 0 ] || { echo "setup.sh: still missing: ${missing[*]}" >&2; exit 1; }
    $PACKAGES_ONLY || venv
    exit 0
fi

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
    log "$("${QEMU_PACKAGES[$pkg]}" --version | sed -n 1p) (${QEMU_PACKAGES[$pkg]})"
done
# The guest images' build tools: the host arch's and s390x's (make check's smoke guest), so that a user needs none.
for arch in $(printf '%s\n' "$(uname -m)" s390x | sort -u); do
    bash images/build.sh --host-tools "$arch"
done

$PACKAGES_ONLY || venv
