#!/bin/bash
# images/build.sh ARCH OUTDIR
# images/build.sh --host-tools ARCH   (root: install the host tools only; make setup runs it)
#
# Build the test guest for ARCH from Debian packages only: kernel, initramfs
# (busybox, dropbear, the guest workloads, the virtio modules), per-build SSH
# keys and manifest.json, all in OUTDIR.  Any user, any Linux with python3 and
# a Debian mirror: on Debian apt resolves and downloads the packages (apt-cache,
# apt-get download, dpkg -x: the fast path), elsewhere -- or when apt does not
# know the guest's architecture, or DEBIAN_PACKAGES=python -- images/debian.py
# does (Packages index, checksums and signatures checked; see it).  Both give
# the same image byte for byte.  The initramfs is written by gen_init_cpio.py
# from a list with its device nodes declared (no mknod, no root), every entry
# with the same mtime: two builds from equal inputs give the same archive,
# byte for byte, but for its last part -- a second cpio archive the kernel
# unpacks on top, with the per-build SSH keys (manifest.json: initrd_base).
#
# Cached: a stamp holds the hash of every input (this script, init, the
# kernel extractor, the workload sources, the compiler, the package versions);
# when it matches and the outputs exist, nothing is done.  Downloaded .debs are
# kept in $(dirname OUTDIR)/cache, scratch files in $(dirname OUTDIR)/work-ARCH.
# Set FORCE=1 to rebuild anyway.
#
# The SSH keys are generated afresh by every build (never reused, never
# committed).  The initramfs carries the guest's host private key, so every host
# file this script writes is private to its owner (umask 077: files 0600,
# directories 0700); only the guest's own root filesystem keeps the usual modes.
# Concurrent builds of the same OUTDIR queue on a lock file beside it.
set -euo pipefail
umask 077

# Host tools (Debian package names), installed with apt-get by root when missing (make setup), and the command
# each provides (how a host without dpkg is checked).  The arch table below may add a cross compiler.
declare -A HOST_PACKAGES=(
    [binutils]=readelf      # ELF NEEDED/interpreter lookup, extract-vmlinux
    [xz-utils]=xz [zstd]=zstd [lz4]=lz4 [gzip]=gzip [bzip2]=bzip2  # kernel/module decompression
    [gcc]=gcc [make]=make [libc6-dev]=gcc  # static guest workloads
    [openssh-client]=ssh-keygen  # client key pair (OpenSSH format)
    [dropbear-bin]=dropbearkey   # host key in dropbear format (+ its OpenSSH public key)
    [python3]=python3            # manifest.json, the initramfs, images/debian.py
)

usage() {
    echo "usage: $0 ARCH OUTDIR   (ARCH: x86_64 or s390x)   |   $0 --host-tools ARCH" >&2
    exit 2
}
HOST_TOOLS_ONLY=
if [ "${1:-}" = --host-tools ]; then
    HOST_TOOLS_ONLY=1
    shift
    set -- "${1:-}" "${1:-}"
fi
[ $# -eq 2 ] || usage
ARCH=$1
OUTDIR=$2

log() { echo "build.sh[$ARCH]: $*" >&2; }
die() {
    echo "build.sh[$ARCH]: ERROR: $*" >&2
    exit 1
}

# ---------------------------------------------------------------------------
# Architecture table.  Everything architecture-specific lives here.
#   DEB_ARCH        Debian architecture of the guest packages
#   KERNEL_META     metapackage whose dependency names the kernel image package
#   KERNEL_SERIES   required kernel version prefix (the bookworm kernel, not backports)
#   KERNEL_FORMAT   vmlinux: extract the ELF (x86 PVH boot; vmlinuz is kept beside it as kernel.bzimage, booted
#                   through the Linux boot protocol by a test that needs S3 resume, which a PVH-booted kernel fails:
#                   SeaBIOS jumps to its wakeup vector and the machine resets); image: use vmlinuz as is
#   GNU_TRIPLET     the guest's GNU triplet: the static workloads are built with the native gcc on a host of
#                   the same Debian architecture, else with Debian's cross gcc for it (see CC below)
#   CONSOLE         kernel console device
#   MODULES         modules the guest needs (dependencies are added automatically,
#                   built-in ones skipped)
#   ARCH_CMDLINE    arch-specific boot options
#   INITRD_COMPRESS none | gzip | lz4   (what boots fastest, see measure-boot.py)
# ---------------------------------------------------------------------------
case "$ARCH" in
x86_64)
    DEB_ARCH=amd64
    KERNEL_META=linux-image-amd64
    KERNEL_SERIES=6.1.
    KERNEL_FORMAT=vmlinux
    GNU_TRIPLET=x86_64-linux-gnu
    CONSOLE=ttyS0
    MODULES="virtio_pci virtio_net virtio_blk virtio_console virtio_balloon"
    # 8250.nr_uarts=1: probe one UART only; tsc=reliable/no_timer_check/lpj:
    # skip TSC watchdog, timer check and delay-loop calibration.
    ARCH_CMDLINE="8250.nr_uarts=1 no_timer_check tsc=reliable lpj=4000000"
    INITRD_COMPRESS=none
    ;;
s390x)
    # QEMU's s390 IPL loads the kernel image (vmlinuz) as it is. On another host arch the .debs are only
    # downloaded (foreign architecture added) and unpacked: nothing s390x is installed on the host.
    DEB_ARCH=s390x
    KERNEL_META=linux-image-s390x
    KERNEL_SERIES=6.1.
    KERNEL_FORMAT=image
    GNU_TRIPLET=s390x-linux-gnu
    CONSOLE=ttysclp0
    # virtio_ccw (the CCW transport) and the virtio core are built into Debian's s390x kernel.
    MODULES="virtio_net virtio_blk virtio_console"
    ARCH_CMDLINE=""
    INITRD_COMPRESS=none
    ;;
*)
    die "unsupported ARCH '$ARCH' (supported: x86_64, s390x)"
    ;;
esac

# The workloads' compiler and its Debian packages: native, or the cross gcc plus the cross libc it links against
# (gcc-TRIPLET only recommends libc6-dev-ARCH-cross, and host tools are installed without recommends). An s390x
# host builds its own guest with its gcc; Debian 12 has no x86_64 cross gcc for s390x, so the x86_64 guest is
# built on x86_64 hosts only (apt-get says it cannot find gcc-x86-64-linux-gnu).
# The host's Debian architecture (dpkg's name; without dpkg, from the machine name).
host_deb_arch() {
    if command -v dpkg >/dev/null; then
        dpkg --print-architecture
        return
    fi
    case "$(uname -m)" in
    x86_64) echo amd64 ;;
    aarch64) echo arm64 ;;
    *) uname -m ;;
    esac
}
HOST_DEB_ARCH=$(host_deb_arch)
if [ "$DEB_ARCH" = "$HOST_DEB_ARCH" ]; then
    CC=gcc
    CC_PACKAGES="gcc"
else
    CC=$GNU_TRIPLET-gcc
    CC_PACKAGES="gcc-${GNU_TRIPLET//_/-} libc6-dev-$DEB_ARCH-cross"
fi

# Options common to every arch, all for boot speed under TCG:
#   quiet loglevel=1     printing to an emulated UART is slow
#   cryptomgr.notests    no crypto self-tests at boot
#   init_on_alloc=0      no page zeroing at allocation (Debian turns it on)
#   audit=0 mitigations=off nowatchdog   nothing the tests need
#   random.trust_cpu=on  crng ready at once (RDRAND), dropbear never waits
#   noreplace-smp        do not patch LOCK prefixes away on a 1-CPU guest (~0.15 s)
#   ipv6.disable=1       IPv6 is not used (user networking is IPv4)
#   rodata=off           skips the W+X page table walk at the end of boot
#   initcall_blacklist=  initcalls the guest does not need; most of them
#                        register BPF kfuncs, and the first one to run parses
#                        the whole vmlinux BTF (~0.1 s); without cubic (and the
#                        attempt to load it) TCP uses reno.
COMMON_CMDLINE="quiet loglevel=1 cryptomgr.notests init_on_alloc=0 audit=0 mitigations=off nowatchdog"
COMMON_CMDLINE+=" random.trust_cpu=on noreplace-smp ipv6.disable=1 rodata=off"
COMMON_CMDLINE+=" initcall_blacklist=init_kprobe_trace,crypto_kdf108_init,init_encrypted,cubictcp_register"
COMMON_CMDLINE+=",tcp_congestion_default,bpf_rstat_kfunc_init,bpf_key_sig_kfuncs_init,kfunc_init"
COMMON_CMDLINE+=",bpf_prog_test_run_init,bpf_tcp_ca_kfunc_init"
CMDLINE="console=$CONSOLE $COMMON_CMDLINE${ARCH_CMDLINE:+ $ARCH_CMDLINE}"

# Strip the BTF (and so the signature) from the modules: faster insmod.
MODULE_STRIP_BTF=${MODULE_STRIP_BTF-1}
OBJCOPY=${CC%gcc}objcopy

READY_MARKER=HARNESS-GUEST-READY
WORKLOADS=(dirty seqinc seqcheck probe heartbeat pagelife)
GUEST_PACKAGES_FIXED=(busybox-static dropbear-bin)

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
# The package tool: apt on Debian (when it knows the guest's architecture), else images/debian.py (set in
# choose_package_tool; DEBIAN_PACKAGES=python forces it).
PACKAGE_TOOL=
debian_py() { DEB_ARCH=$DEB_ARCH DEB_CACHE=$CACHE python3 "$HERE/debian.py" "$@"; }

# ---------------------------------------------------------------------------
# Host tools
# ---------------------------------------------------------------------------
installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep 'install ok installed' >/dev/null; }

# Root on Debian: install what is missing (make setup). Anyone else: say what is missing, by name, and stop.
host_setup() {
    local missing=() p
    if command -v dpkg-query >/dev/null; then
        for p in "${!HOST_PACKAGES[@]}" $CC_PACKAGES; do
            installed "$p" || missing+=("$p")
        done
    else
        for p in "${!HOST_PACKAGES[@]}"; do
            command -v "${HOST_PACKAGES[$p]}" >/dev/null || missing+=("$p (command ${HOST_PACKAGES[$p]})")
        done
        command -v "$CC" >/dev/null || missing+=("$CC_PACKAGES (command $CC)")
    fi
    if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null; then
        [ ${#missing[@]} -eq 0 ] ||
            die "missing host tools: ${missing[*]} (Debian package names; install them as root -- on Debian \`make setup\` does, elsewhere see README \"Hosts\")"
        return 0
    fi
    if [ "$DEB_ARCH" != "$HOST_DEB_ARCH" ] &&
        ! dpkg --print-foreign-architectures | grep -x "$DEB_ARCH" >/dev/null; then
        log "adding foreign architecture $DEB_ARCH"
        dpkg --add-architecture "$DEB_ARCH"
        apt-get update -qq
    fi
    if [ ${#missing[@]} -gt 0 ]; then
        log "installing host tools: ${missing[*]}"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
            "${missing[@]}" >/dev/null ||
            { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
                --no-install-recommends "${missing[@]}" >/dev/null; }
    fi
}
if [ -n "$HOST_TOOLS_ONLY" ]; then
    host_setup
    exit 0
fi

mkdir -p "$OUTDIR"
OUTDIR=$(cd "$OUTDIR" && pwd)
BASE=$(dirname "$OUTDIR")
CACHE=$BASE/cache
WORK=$BASE/work-$ARCH

# One build of this arch at a time: two would share WORK and interleave the outputs and the stamp.
exec {LOCK_FD}>"$BASE/.build-$ARCH.lock"
if ! flock -n "$LOCK_FD"; then
    echo "build.sh[$ARCH]: waiting for another image build (lock $BASE/.build-$ARCH.lock)" >&2
    flock "$LOCK_FD"
fi

# ---------------------------------------------------------------------------
# Package resolution (no download).  Each apt-cache call costs about a second
# here (no pkgcache.bin), each debian.py call a few (it parses the indices), so
# everything is asked in two calls.
# ---------------------------------------------------------------------------
declare -A PKGVER # package -> version
PKGS=()           # guest packages, in a stable order

# Dependency graph of the roots, one "PKG DEP" line per first-alternative
# (Pre-)Depends edge, "PKG" alone for a package without dependencies.
dependency_edges() {
    if [ "$PACKAGE_TOOL" = python ]; then
        debian_py edges "$@"
        return
    fi
    apt-cache depends --recurse --no-recommends --no-suggests --no-conflicts --no-breaks \
        --no-replaces --no-enhances "${@/%/:$DEB_ARCH}" 2>/dev/null |
        awk '/^[^ ]/ {pkg = $1; sub(/:.*/, "", pkg); print pkg; skip = 0; next}
             /^ *\|(Pre)?Depends:/ { if (!skip) {d = $2; sub(/:.*/, "", d); print pkg, d}; skip = 1; next }
             /^ *(Pre)?Depends:/ { if (!skip) {d = $2; sub(/:.*/, "", d); print pkg, d}; skip = 0; next }'
}

# Candidate versions of the given packages: "PKG VERSION" lines ((none) when missing).
candidates() {
    if [ "$PACKAGE_TOOL" = python ]; then
        debian_py candidates "$@"
        return
    fi
    apt-cache policy "${@/%/:$DEB_ARCH}" 2>/dev/null |
        awk '/^[^ ].*:$/ {pkg = $1; sub(/:$/, "", pkg); sub(/:.*/, "", pkg); next}
             /^  Candidate:/ {print pkg, $2}'
}

# apt where it can answer: present, not overridden, and knowing the guest's kernel (root refreshes its lists once
# when it does not); debian.py otherwise.
choose_package_tool() {
    PACKAGE_TOOL=python
    if [ "${DEBIAN_PACKAGES:-}" = python ] || ! command -v apt-cache >/dev/null || ! command -v dpkg >/dev/null; then
        log "packages: images/debian.py ($([ "${DEBIAN_PACKAGES:-}" = python ] && echo DEBIAN_PACKAGES=python || echo no apt/dpkg here))"
        return
    fi
    PACKAGE_TOOL=apt
    dependency_edges "$KERNEL_META" | grep . >/dev/null && return
    if [ "$(id -u)" -eq 0 ]; then
        log "apt knows no $KERNEL_META:$DEB_ARCH, running apt-get update"
        apt-get update -qq
        dependency_edges "$KERNEL_META" | grep . >/dev/null && return
    fi
    PACKAGE_TOOL=python
    log "packages: images/debian.py (apt knows no $KERNEL_META:$DEB_ARCH)"
}

resolve_packages() {
    local -A deps=() seen=()
    local line p d queue=() image_pkg
    choose_package_tool
    while read -r p d; do
        [ -n "$d" ] && deps[$p]+=" $d"
    done < <(dependency_edges "$KERNEL_META" "${GUEST_PACKAGES_FIXED[@]}")

    image_pkg=$(for d in ${deps[$KERNEL_META]:-}; do echo "$d"; done | grep '^linux-image-' | sed -n 1p)
    [ -n "$image_pkg" ] || die "cannot find the kernel image package behind $KERNEL_META"

    # the userland packages and, recursively, what they depend on (shared libraries)
    PKGS=()
    queue=("${GUEST_PACKAGES_FIXED[@]}")
    while [ ${#queue[@]} -gt 0 ]; do
        p=${queue[0]}
        queue=("${queue[@]:1}")
        [ -z "${seen[$p]:-}" ] || continue
        seen[$p]=1
        PKGS+=("$p")
        for d in ${deps[$p]:-}; do queue+=("$d"); done
    done

    while read -r p d; do
        [ "$d" = "(none)" ] || PKGVER[$p]=$d
    done < <(candidates "$image_pkg" "$image_pkg-unsigned" "${PKGS[@]}")
    # prefer the unsigned build (same kernel, no signature wrapper)
    if [ -n "${PKGVER[$image_pkg-unsigned]:-}" ]; then
        KERNEL_PKG=$image_pkg-unsigned
    else
        KERNEL_PKG=$image_pkg
    fi
    PKGS=("$KERNEL_PKG" "${PKGS[@]}")
    for p in "${PKGS[@]}"; do
        [ -n "${PKGVER[$p]:-}" ] || die "no candidate version for package $p:$DEB_ARCH"
    done
    case "${PKGVER[$KERNEL_PKG]}" in
    "$KERNEL_SERIES"*) ;;
    *) die "kernel $KERNEL_PKG ${PKGVER[$KERNEL_PKG]} is not from the $KERNEL_SERIES series (backports pinned?)" ;;
    esac
}

# ---------------------------------------------------------------------------
# Input hash and cache check
# ---------------------------------------------------------------------------
inputs_hash() {
    {
        echo "arch=$ARCH cmdline=$CMDLINE modules=$MODULES compress=$INITRD_COMPRESS strip=$MODULE_STRIP_BTF"
        for p in "${PKGS[@]}"; do echo "pkg $p=${PKGVER[$p]}"; done
        "$CC" --version | sed -n 1p
        source_digests
    } | sha256sum | cut -d' ' -f1
}

# "SHA256  PATH" for every repository file images/SOURCES names (manifest.json keeps them: harness/qemu/image.py compares).
source_digests() {
    local pattern
    (cd "$REPO" && grep -v -e '^#' -e '^[[:space:]]*$' images/SOURCES | while read -r pattern; do
        compgen -G "$pattern" || die "images/SOURCES: nothing matches $pattern"
    done | LC_ALL=C sort -u | xargs sha256sum)
}

INITRD_NAME=initramfs.cpio
case "$INITRD_COMPRESS" in
none) ;;
gzip) INITRD_NAME=initramfs.cpio.gz ;;
lz4) INITRD_NAME=initramfs.cpio.lz4 ;;
*) die "bad INITRD_COMPRESS $INITRD_COMPRESS" ;;
esac
KERNEL_FILES=(kernel)
[ "$KERNEL_FORMAT" != vmlinux ] || KERNEL_FILES+=(kernel.bzimage)
OUTPUTS=("${KERNEL_FILES[@]}" "$INITRD_NAME" manifest.json ssh/id_ed25519 ssh/id_ed25519.pub ssh/host_key.pub
    ssh/dropbear_ed25519_host_key)

up_to_date() {
    local f
    [ -z "${FORCE:-}" ] || return 1
    [ -f "$OUTDIR/.stamp" ] && [ "$(cat "$OUTDIR/.stamp")" = "$1" ] || return 1
    for f in "${OUTPUTS[@]}"; do [ -s "$OUTDIR/$f" ] || return 1; done
}

# ---------------------------------------------------------------------------
# Download and extract
# ---------------------------------------------------------------------------
deb_file() { # PKG -> cached .deb of the resolved version (downloads it when missing; apt)
    local p=$1 v=${PKGVER[$1]} f
    for f in "$CACHE/${p}_"*"_$DEB_ARCH.deb" "$CACHE/${p}_"*"_all.deb"; do
        [ -f "$f" ] && [ "$(dpkg-deb -f "$f" Version)" = "$v" ] && { echo "$f"; return; }
    done
    log "downloading $p=$v"
    (cd "$CACHE" && apt-get download -qq -o APT::Sandbox::User=root "$p:$DEB_ARCH=$v" >&2) ||
        die "apt-get download $p:$DEB_ARCH=$v failed"
    for f in "$CACHE/${p}_"*"_$DEB_ARCH.deb" "$CACHE/${p}_"*"_all.deb"; do
        [ -f "$f" ] && [ "$(dpkg-deb -f "$f" Version)" = "$v" ] && { echo "$f"; return; }
    done
    die "downloaded $p but cannot find its .deb in $CACHE"
}

extract_packages() {
    local p deb debs=() wanted=()
    SYSROOT=$WORK/sysroot
    mkdir -p "$SYSROOT"
    if [ "$PACKAGE_TOOL" = python ]; then
        for p in "${PKGS[@]}"; do wanted+=("$p=${PKGVER[$p]}"); done
        mapfile -t debs < <(debian_py fetch "${wanted[@]}") && [ ${#debs[@]} -eq ${#PKGS[@]} ] ||
            die "images/debian.py could not fetch ${wanted[*]}"
        for deb in "${debs[@]}"; do debian_py extract "$deb" "$SYSROOT" || die "cannot unpack $deb"; done
        return
    fi
    for p in "${PKGS[@]}"; do
        deb=$(deb_file "$p")
        dpkg -x "$deb" "$SYSROOT"
    done
}

# Resolve a path inside SYSROOT, following symlinks (absolute ones relative to SYSROOT).
sysroot_resolve() {
    local path=$1 n=0 target
    while [ -L "$SYSROOT$path" ]; do
        target=$(readlink "$SYSROOT$path")
        case "$target" in
        /*) path=$target ;;
        *) path=$(dirname "$path")/$target ;;
        esac
        n=$((n + 1))
        [ $n -lt 40 ] || die "symlink loop at $1"
    done
    [ -e "$SYSROOT$path" ] || return 1
    echo "$path"
}

# ---------------------------------------------------------------------------
# Kernel and modules
# ---------------------------------------------------------------------------
build_kernel() {
    local vmlinuz
    KVER=$(basename "$(ls -d "$SYSROOT"/lib/modules/*/ | sed -n 1p)")
    [ -n "$KVER" ] || die "no /lib/modules/<version> in $KERNEL_PKG"
    vmlinuz=$(ls "$SYSROOT/boot/vmlinuz-$KVER" 2>/dev/null || ls "$SYSROOT/boot/vmlinu"*"-$KVER" | sed -n 1p)
    case "$KERNEL_FORMAT" in
    vmlinux) "$HERE/extract-vmlinux" "$vmlinuz" "$WORK/out/kernel"; cp "$vmlinuz" "$WORK/out/kernel.bzimage" ;;
    image) cp "$vmlinuz" "$WORK/out/kernel" ;;
    esac
}

# One field of a module's .modinfo (NUL-separated key=value strings).
modinfo_field() { tr '\0' '\n' <"$1" | sed -n "s/^$2=//p" | sed -n 1p; }

module_path() { # NAME -> path of NAME.ko* under the kernel tree (names: _ and - are equal)
    local re=${1//[_-]/[_-]}
    find "$SYSROOT/lib/modules/$KVER/kernel" -regextype posix-extended \
        -regex ".*/$re\\.ko(\\.(xz|zst|gz))?" | sed -n 1p
}

module_builtin() {
    local re=${1//[_-]/[_-]}
    grep -Eq "/$re\\.ko\$" "$SYSROOT/lib/modules/$KVER/modules.builtin"
}

declare -A MOD_SEEN
MOD_ORDER=()
module_add() { # NAME: copy NAME and its dependencies, dependencies first
    local m=$1 src ko d
    [ -z "${MOD_SEEN[$m]:-}" ] || return 0
    MOD_SEEN[$m]=1
    if module_builtin "$m"; then
        log "module $m is built in"
        return 0
    fi
    src=$(module_path "$m")
    [ -n "$src" ] || die "module $m not found in $KERNEL_PKG"
    ko=$ROOTFS/lib/modules/$m.ko
    case "$src" in
    *.xz) xz -dc "$src" >"$ko" ;;
    *.zst) zstd -qdc "$src" >"$ko" ;;
    *.gz) gzip -dc "$src" >"$ko" ;;
    *) cp "$src" "$ko" ;;
    esac
    if [ -n "$MODULE_STRIP_BTF" ]; then
        # Loading a module's BTF makes the kernel parse the whole vmlinux BTF
        # first (slow under TCG).  Rewriting the file also drops the appended
        # signature: the kernel loads it anyway (sig_enforce is off) and
        # only marks itself tainted (E).
        "$OBJCOPY" --remove-section=.BTF "$ko"
    fi
    for d in $(modinfo_field "$ko" depends | tr ',' ' '); do
        module_add "$d"
    done
    MOD_ORDER+=("$m")
}

# ---------------------------------------------------------------------------
# Root filesystem
# ---------------------------------------------------------------------------
copy_elf_with_libs() { # SYSROOT_PATH DEST_PATH: copy a dynamic ELF, its NEEDED closure and loader
    local src=$1 dst=$2 interp lib found dir
    install -D -m 0755 "$SYSROOT$src" "$ROOTFS$dst"
    interp=$(readelf -lW "$SYSROOT$src" | sed -n 's/.*Requesting program interpreter: \(.*\)]/\1/p')
    if [ -n "$interp" ] && [ ! -e "$ROOTFS$interp" ]; then
        found=$(sysroot_resolve "$interp") || die "loader $interp of $src not in the packages"
        install -D -m 0755 "$SYSROOT$found" "$ROOTFS$interp"
    fi
    for lib in $(readelf -dW "$SYSROOT$src" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p'); do
        found=
        for dir in /lib/$TRIPLET /usr/lib/$TRIPLET /lib /usr/lib /lib64 /usr/lib64; do
            if found=$(sysroot_resolve "$dir/$lib"); then
                found=$dir/$lib
                break
            fi
            found=
        done
        [ -n "$found" ] || die "$src needs $lib, not found in the extracted packages (${PKGS[*]})"
        [ -e "$ROOTFS$found" ] && continue
        copy_elf_with_libs "$(sysroot_resolve "$found")" "$found"
    done
}

build_rootfs() {
    local d applet
    # The guest's own files get the usual modes (the private WORK dir keeps them from other host users).
    umask 022
    ROOTFS=$WORK/rootfs
    mkdir -p "$ROOTFS"
    for d in bin sbin usr/bin usr/sbin lib/modules etc/dropbear etc/harness proc sys dev run \
        tmp root/.ssh var/log mnt; do
        mkdir -p "$ROOTFS/$d"
    done
    chmod 1777 "$ROOTFS/tmp"
    chmod 0700 "$ROOTFS/root" "$ROOTFS/root/.ssh"
    ln -s ../run "$ROOTFS/var/run"

    # busybox and its applet links (listed at build time when the binary runs
    # here, otherwise created by init at boot)
    install -m 0755 "$SYSROOT/bin/busybox" "$ROOTFS/bin/busybox"
    ln -s busybox "$ROOTFS/bin/sh"
    if "$ROOTFS/bin/busybox" --list-full >"$WORK/applets" 2>/dev/null; then
        while read -r applet; do
            [ -e "$ROOTFS/$applet" ] || [ -L "$ROOTFS/$applet" ] ||
                ln -s /bin/busybox "$ROOTFS/$applet"
        done <"$WORK/applets"
    else
        touch "$ROOTFS/etc/harness/busybox-install-at-boot"
    fi
    # No modprobe: there is no modules.dep, and without /sbin/modprobe the
    # kernel's own module requests fail at once instead of spawning a helper.
    rm -f "$ROOTFS/sbin/modprobe" "$ROOTFS/sbin/depmod"

    # dropbear with its shared libraries and the dynamic loader
    TRIPLET=$(ls "$SYSROOT/lib" | grep -- '-linux-gnu' | sed -n 1p)
    copy_elf_with_libs /usr/sbin/dropbear /usr/sbin/dropbear

    # workloads
    for d in "${WORKLOADS[@]}"; do
        install -m 0755 "$WORK/workloads/$d" "$ROOTFS/usr/bin/$d"
    done

    # modules, dependencies first
    for d in $MODULES; do module_add "$d"; done
    printf '%s\n' "${MOD_ORDER[@]}" >"$ROOTFS/etc/harness/modules"

    # configuration
    echo 'root:x:0:0:root:/root:/bin/sh' >"$ROOTFS/etc/passwd"
    echo 'root:*:19000:0:99999:7:::' >"$ROOTFS/etc/shadow"
    chmod 0600 "$ROOTFS/etc/shadow"
    echo 'root:x:0:' >"$ROOTFS/etc/group"
    echo '/bin/sh' >"$ROOTFS/etc/shells"
    echo 'guest' >"$ROOTFS/etc/hostname"
    printf '127.0.0.1 localhost\n10.0.2.15 guest\n' >"$ROOTFS/etc/hosts"
    echo 'export PATH=/usr/sbin:/usr/bin:/sbin:/bin' >"$ROOTFS/etc/profile"
    echo "$READY_MARKER" >"$ROOTFS/etc/harness/ready-marker"
    mkfifo "$ROOTFS/etc/harness/tick" # init's sleep: read -t on a FIFO nobody writes
    install -m 0755 "$HERE/init" "$ROOTFS/init"
    umask 077
}

# The device nodes the kernel needs before init mounts devtmpfs (its console, init's stdin/stdout), declared.
DEVICE_NODES="nod /dev/console 600 0 0 c 5 1
nod /dev/null 666 0 0 c 1 3"

# Two cpio archives, one after the other (the kernel unpacks both): the tree and the nodes -- the same bytes
# whenever the inputs are the same -- then the keys of this build.  manifest.json records the first's size and sha256.
make_initramfs() {
    local out=$WORK/out/$INITRD_NAME s=$WORK/out/ssh mtime=${SOURCE_DATE_EPOCH:-0}
    { python3 "$HERE/gen_init_cpio.py" list-of "$ROOTFS" && echo "$DEVICE_NODES"; } >"$WORK/base.list"
    printf '%s\n' "file /etc/dropbear/dropbear_ed25519_host_key $s/dropbear_ed25519_host_key 600 0 0" \
        "file /root/.ssh/authorized_keys $s/id_ed25519.pub 600 0 0" >"$WORK/keys.list"
    python3 "$HERE/gen_init_cpio.py" -t "$mtime" "$WORK/base.list" >"$WORK/base.cpio"
    python3 "$HERE/gen_init_cpio.py" -t "$mtime" "$WORK/keys.list" >"$WORK/keys.cpio"
    INITRD_BASE="$(stat -c %s "$WORK/base.cpio") $(sha256sum "$WORK/base.cpio" | cut -d' ' -f1)"
    cat "$WORK/base.cpio" "$WORK/keys.cpio" >"$WORK/initramfs.cpio"
    case "$INITRD_COMPRESS" in
    none) mv "$WORK/initramfs.cpio" "$out" ;;
    gzip) gzip -9 -n -c "$WORK/initramfs.cpio" >"$out" ;;
    lz4) lz4 -l -9 -q -c "$WORK/initramfs.cpio" >"$out" ;;
    esac
}

# ---------------------------------------------------------------------------
# SSH keys: generated afresh by every build (into WORK, moved into OUTDIR with
# the initramfs that carries them), never committed, readable by the owner only
# ---------------------------------------------------------------------------
make_keys() {
    local s=$WORK/out/ssh
    mkdir -p "$s"
    chmod 0700 "$s"
    log "generating the guest's dropbear host key and the harness client key"
    dropbearkey -t ed25519 -f "$s/dropbear_ed25519_host_key" >/dev/null 2>&1
    dropbearkey -y -f "$s/dropbear_ed25519_host_key" 2>/dev/null |
        awk '/^ssh-ed25519 / {print $1, $2, "harness-guest-host-key"}' >"$s/host_key.pub"
    grep -q '^ssh-ed25519 AAAA' "$s/host_key.pub" || die "could not write host_key.pub"
    ssh-keygen -q -t ed25519 -N '' -C harness-client -f "$s/id_ed25519"
    chmod 0600 "$s"/*
}

write_manifest() {
    local pkgs="" p mods
    for p in "${PKGS[@]}"; do pkgs+="$p=${PKGVER[$p]}"$'\n'; done
    mods=$(printf '%s\n' "${MOD_ORDER[@]}")
    ARCH=$ARCH INITRD=$INITRD_NAME INITRD_BASE=$INITRD_BASE CMDLINE=$CMDLINE KVER=$KVER PKGS=$pkgs MARKER=$READY_MARKER \
        WORKLOADS="${WORKLOADS[*]}" KERNEL_FILES="${KERNEL_FILES[*]}" HASH=$1 MODS=$mods CONSOLE=$CONSOLE \
        SOURCES=$(source_digests) \
        python3 - >"$WORK/out/manifest.json" <<'EOF'
import json, os
e = os.environ
pk = dict(l.split("=", 1) for l in e["PKGS"].splitlines() if l)
print(json.dumps({
    "arch": e["ARCH"],
    "kernel": "kernel",
    "kernel_bzimage": "kernel.bzimage" if "kernel.bzimage" in e["KERNEL_FILES"].split() else None,
    "initrd": e["INITRD"],
    # the uncompressed initramfs's first archive (all but the keys): equal inputs, equal bytes
    "initrd_base": dict(zip(("bytes", "sha256"), (int(e["INITRD_BASE"].split()[0]), e["INITRD_BASE"].split()[1]))),
    "cmdline": e["CMDLINE"],
    "console": e["CONSOLE"],
    "kernel_version": e["KVER"],
    "packages": pk,
    "ssh_user": "root",
    "ssh_key": "ssh/id_ed25519",
    "host_key": "ssh/host_key.pub",
    "guest_ip": "10.0.2.15",
    "ssh_port": 22,
    "ready_marker": e["MARKER"],
    "workloads": e["WORKLOADS"].split(),
    "workload_dir": "/usr/bin",
    "modules": e["MODS"].split(),
    "inputs_hash": e["HASH"],
    "sources": {path: digest for digest, path in (l.split(None, 1) for l in e["SOURCES"].splitlines())},
}, indent=2, sort_keys=False))
EOF
}

# ---------------------------------------------------------------------------
main() {
    local hash start=$SECONDS f
    host_setup
    resolve_packages
    hash=$(inputs_hash)
    if up_to_date "$hash"; then
        log "up to date ($OUTDIR, inputs $hash)"
        return 0
    fi
    log "building into $OUTDIR (inputs $hash)"
    rm -f "$OUTDIR/.stamp"
    mkdir -p "$CACHE"
    rm -rf "$WORK"
    mkdir -p "$WORK/out"

    make_keys
    extract_packages
    build_kernel
    make -s -C "$REPO/guest-workloads" OUT="$WORK/workloads" CC="$CC" >&2
    build_rootfs
    make_initramfs
    write_manifest "$hash"

    # The keys and the initramfs that carries them are replaced together; the old ones go. Test sessions hold
    # OUTDIR/.use.lock shared while they use the image (harness/qemu/image.py): the swap waits for them to end, so
    # none ever sees the new keys beside the old initramfs.
    exec {USE_FD}>>"$OUTDIR/.use.lock"
    if ! flock -n -x "$USE_FD"; then
        log "waiting for the test sessions using $OUTDIR to end (lock $OUTDIR/.use.lock)"
        flock -x "$USE_FD"
    fi
    rm -rf "$OUTDIR/ssh.old"
    [ ! -e "$OUTDIR/ssh" ] || mv "$OUTDIR/ssh" "$OUTDIR/ssh.old"
    mv "$WORK/out/ssh" "$OUTDIR/ssh"
    for f in "${KERNEL_FILES[@]}" "$INITRD_NAME" manifest.json; do
        mv -f "$WORK/out/$f" "$OUTDIR/$f"
    done
    rm -rf "$OUTDIR/ssh.old"
    echo "$hash" >"$OUTDIR/.stamp"
    flock -u "$USE_FD"
    rm -rf "$WORK"
    log "done in $((SECONDS - start)) s: kernel $KVER, $INITRD_NAME $(du -k "$OUTDIR/$INITRD_NAME" | cut -f1) KiB, modules: ${MOD_ORDER[*]}"
}

main
