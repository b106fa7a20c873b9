# shellcheck shell=bash
# Build steps for the harness' QEMU builds, as functions. Sourced by build.sh and usable
# from a bisect script:
#
#   source qemu-build/lib.sh
#   qb_init                      # paths, defaults (honours the QB_* variables below)
#   qb_lock                      # one builder at a time on the shared tree
#   qb_ensure_deps               # apt build deps (root; a user is told which) + tools venv (meson from PyPI)
#   qb_prepare_source            # fetch + extract + baseline commit of the pristine tree
#   qb_restore_pristine          # undo any applied patch (also after a killed run)
#   qb_configure                 # configure once (re-run only when the options change)
#   qb_apply_patch FILE          # patch -p1 into the source tree
#   qb_ninja                     # incremental build, progress lines on stderr
#   qb_install_variant NAME DIR [PATCH...]   # copy binary + firmware-dirs.txt + build-info.json
#
# Layout (all under the gitignored build/ of the repo unless overridden):
#   build/cache/qemu_10.0.2+ds.orig.tar.xz   source tarball (fetch-source.sh)
#   build/qemu/src/qemu-10.0.2               ONE pristine source tree (patched only while a
#                                            variant builds; restored by trap)
#   build/qemu/src.git                       git dir holding the pristine baseline (external
#                                            so QEMU's version script does not see a .git)
#   build/qemu/build                         ONE build tree per target arch (incremental ninja;
#                                            build-s390x for s390x)
#   build/qemu/tools-venv                    python venv with meson + pycotap from PyPI
#   build/qemu/ccache                        ccache dir (cheap re-compiles after restore)
#   build/qemu/logs/                         configure / ninja logs (logs-s390x for s390x)
#   build/qemu/variants/<variant>/           installed binaries (default --out; variants-s390x for s390x)
# The source tree, its baseline, the tools venv, ccache and the lock are shared by the arches.
#
# Variables (set before qb_init to override):
#   QB_ARCH       target arch: x86_64 (default) or s390x (QB_ARCHES); picks the target list, the binary
#                 qemu-system-$QB_ARCH, the firmware and the per-arch dirs above
#   QB_ROOT QB_SRC_PARENT QB_BUILD_DIR QB_VENV QB_CCACHE_DIR QB_LOG_DIR QB_VARIANTS_DIR QB_JOBS QB_PYTHON
#   QB_EXTRA_CONFIGURE_ARGS  appended to the configure line (own QB_BUILD_DIR + --out: e.g. --enable-gcov)
#   QB_NO_APT=1   never call apt-get (fail if something is missing; a user never calls it)

QB_QEMU_VERSION=${QB_QEMU_VERSION:-10.0.2}
QB_MESON_VERSION=${QB_MESON_VERSION:-1.5.0}     # = QEMU 10.0's bundled python/wheels meson
QB_PYCOTAP_VERSION=${QB_PYCOTAP_VERSION:-1.3.1}
QB_ARCHES=(x86_64 s390x)
QB_ARCH=${QB_ARCH:-x86_64}
# Minimal apt set for the configure line below (checked on Debian 12):
#   build-essential: cc/ld/make; ninja-build; pkg-config; python3-venv (tools venv);
#   libglib2.0-dev (mandatory); libpixman-1-dev (VGA/display devices of the pc machine);
#   libslirp-dev (-netdev user); libfdt-dev (--enable-fdt=system); libzstd-dev (multifd
#   zstd); libaio-dev (linux-aio); libgnutls28-dev (tls-creds-x509: migration over TLS);
#   ccache (fast re-compiles). No flex/bison: dtc is not
#   built from subprojects when fdt=system. s390x-softmmu needs nothing more (QEMU 10.0.2's
#   meson: no TARGET_NEED_FDT, hw/ and target/s390x link no further library; KVM only on an
#   s390x host, TCG elsewhere).
QB_APT_DEPS=(build-essential ninja-build pkg-config python3-venv libglib2.0-dev
             libpixman-1-dev libslirp-dev libfdt-dev libzstd-dev libaio-dev libgnutls28-dev ccache)
# Everything but the target list (qb_arch_config puts --target-list=$QB_ARCH-softmmu first).
QB_COMMON_CONFIGURE_ARGS=(
    --without-default-features
    --enable-kvm --enable-tcg
    --enable-slirp
    --enable-fdt=system
    --enable-zstd
    --enable-gnutls
    --enable-linux-aio
    --enable-pixman
    --enable-trace-backends=log
    --disable-docs --disable-rust
    --disable-download --disable-install-blobs
    --disable-werror
)

# Per target arch: the configure line, the binary, and the firmware the installed Debian QEMU of that arch
# uses (our binary gets the dirs via -L / --firmwarepath) with the packages holding it.
qb_arch_config() {
    case $QB_ARCH in
        x86_64)
            QB_FIRMWARE_DIRS=(/usr/share/qemu /usr/share/seabios /usr/lib/ipxe/qemu)
            QB_FIRMWARE_FILES=(/usr/share/qemu/pvh.bin /usr/share/qemu/linuxboot_dma.bin
                               /usr/share/qemu/kvmvapic.bin /usr/share/seabios/bios-256k.bin
                               /usr/lib/ipxe/qemu/efi-virtio.rom)
            QB_FIRMWARE_PACKAGES=(qemu-system-data seabios ipxe-qemu) ;;
        s390x)
            # s390-ccw.img: the IPL BIOS (network boot included since QEMU 9.1), from qemu-system-data;
            # nothing s390x is in seabios or ipxe-qemu.
            QB_FIRMWARE_DIRS=(/usr/share/qemu)
            QB_FIRMWARE_FILES=(/usr/share/qemu/s390-ccw.img)
            QB_FIRMWARE_PACKAGES=(qemu-system-data) ;;
        *) qb_die "unsupported target arch '$QB_ARCH' (one of: ${QB_ARCHES[*]})"; return 1 ;;
    esac
    QB_BINARY=qemu-system-$QB_ARCH
    QB_CONFIGURE_ARGS=(--target-list="$QB_ARCH-softmmu" "${QB_COMMON_CONFIGURE_ARGS[@]}")
    # QB_EXTRA_CONFIGURE_ARGS (space-separated): a differently built tree, e.g. `--enable-gcov` for qmh-mutate's
    # coverage build, which then needs its own QB_BUILD_DIR and --out (the configure stamp covers these args).
    if [[ -n ${QB_EXTRA_CONFIGURE_ARGS:-} ]]; then
        # shellcheck disable=SC2206
        QB_CONFIGURE_ARGS+=($QB_EXTRA_CONFIGURE_ARGS)
    fi
}

# BASE for x86_64 (the layout from before there were arches), BASE-ARCH for any other arch.
qb_arch_path() { if [[ $QB_ARCH == x86_64 ]]; then echo "$1"; else echo "$1-$QB_ARCH"; fi; }

qb_log() { printf '[qemu-build %s +%ss] %s\n' "$(date +%H:%M:%S)" "$((SECONDS - ${QB_T0:-0}))" "$*" >&2; }
qb_die() { qb_log "ERROR: $*"; return 1; }

# qb_init [--no-create]: paths and defaults; then, unless --no-create, the tree's directories. Before anything is
# created or locked there, a user is told in one line when the tree is not theirs to write (qb_check_tree).
qb_init() {
    QB_T0=${QB_T0:-$SECONDS}
    local here create=1
    [[ ${1:-} == --no-create ]] && create=0
    here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
    QB_REPO=${QB_REPO:-$(cd "$here/.." && pwd)}
    QB_LIBDIR=$here
    qb_arch_config || return 1
    QB_ROOT=${QB_ROOT:-$QB_REPO/build/qemu}
    ((create)) && { qb_check_tree "$QB_ROOT" || return 1; mkdir -p "$QB_ROOT"; }
    # The real path: a clone whose build/qemu is a symlink to a shared tree must record the same configure stamp
    # (it names the source path) as the tree's owner, or every build from another clone reconfigures the tree.
    [[ -d $QB_ROOT ]] && QB_ROOT=$(cd "$QB_ROOT" && pwd -P)
    QB_SRC_PARENT=${QB_SRC_PARENT:-$QB_ROOT/src}
    QB_SRC=${QB_SRC:-$QB_SRC_PARENT/qemu-$QB_QEMU_VERSION}
    QB_GIT_DIR=${QB_GIT_DIR:-$QB_ROOT/src.git}
    QB_BUILD_DIR=${QB_BUILD_DIR:-$(qb_arch_path "$QB_ROOT/build")}
    QB_VENV=${QB_VENV:-$QB_ROOT/tools-venv}
    QB_CCACHE_DIR=${QB_CCACHE_DIR:-$QB_ROOT/ccache}
    QB_LOG_DIR=${QB_LOG_DIR:-$(qb_arch_path "$QB_ROOT/logs")}
    QB_VARIANTS_DIR=${QB_VARIANTS_DIR:-$(qb_arch_path "$QB_ROOT/variants")}
    QB_JOBS=${QB_JOBS:-$(nproc)}
    if ((create)); then
        # whatever of the tree an override put outside QB_ROOT (checked above)
        local d elsewhere=()
        for d in "$QB_SRC_PARENT" "$QB_GIT_DIR" "$QB_BUILD_DIR" "$QB_VENV" "$QB_CCACHE_DIR" "$QB_LOG_DIR" \
                 "$QB_VARIANTS_DIR"; do
            [[ $d == "$QB_ROOT"/* ]] || elsewhere+=("$d")
        done
        ((${#elsewhere[@]} == 0)) || qb_check_tree "${elsewhere[@]}" || return 1
        mkdir -p "$QB_LOG_DIR"
    fi
    export CCACHE_DIR=$QB_CCACHE_DIR CCACHE_MAXSIZE=${CCACHE_MAXSIZE:-5G}
    # the mtime of a restored file is "now", so ccache's default direct mode is fine;
    # sloppiness lets it ignore __DATE__/__TIME__ and pch noise.
    export CCACHE_SLOPPINESS=${CCACHE_SLOPPINESS:-time_macros,include_file_mtime,include_file_ctime}
}

# qb_foreign_path UID DIR...: the first path in the way of a build as UID — anything under an existing DIR that
# is not UID's (a build/qemu, or one file in it, left by a root build in a user's checkout: ninja, ccache and git
# would stop midway on it), or, for a DIR not made yet, its nearest existing parent when this process cannot write
# there. Nothing printed: the way is clear.
qb_foreign_path() {
    local uid=$1 d p found; shift
    for d in "$@"; do
        p=$d
        while [[ ! -e $p && $p != / ]]; do p=$(dirname "$p"); done
        if [[ $p != "$d" ]]; then
            [[ -w $p ]] || { echo "$p"; return 0; }
            continue
        fi
        found=$(find "$d" \! -user "$uid" -print -quit 2>/dev/null)
        [[ -z $found ]] || { echo "$found"; return 0; }
    done
}

# qb_check_tree DIR...: for a user, one line and status 1 when a DIR is not theirs to build in (root builds anywhere).
qb_check_tree() {
    local uid foreign
    uid=$(id -u)
    ((uid != 0)) || return 0
    foreign=$(qb_foreign_path "$uid" "$@")
    [[ -n $foreign ]] || return 0
    local fix=$foreign d
    for d in "$@"; do [[ $foreign == "$d" || $foreign == "$d"/* ]] && fix=$d; done
    qb_die "$foreign is owned by $(stat -c %U "$foreign"), not $(id -un): the QEMU build cannot write there --" \
        "as root: chown -R $(id -un): $fix (or remove it)"
}

# qb_preflight [OUT]: what a build as this user would stop on, found without building, installing or creating
# anything (build.sh --check): a missing package, a tree (or OUT) that is not this user's, a source that cannot be
# fetched. One line per problem; status 1 when there is any.
qb_preflight() {
    local ok=0 missing packages="its packages"
    missing=$(qb_missing_packages)
    if ! command -v dpkg-query >/dev/null; then
        qb_log "no dpkg-query (not a Debian host): packages not checked (Debian names: ${QB_APT_DEPS[*]})"
        packages="(packages not checked)"
    elif [[ -n $missing ]]; then
        qb_die "missing packages: $missing -- as root: make qemu-build-deps" || ok=1
    fi
    qb_check_tree "$QB_ROOT" "$QB_SRC_PARENT" "$QB_GIT_DIR" "$QB_BUILD_DIR" "$QB_VENV" "$QB_CCACHE_DIR" \
        "$QB_LOG_DIR" "$QB_VARIANTS_DIR" "$@" || ok=1
    [[ -f $QB_SRC/.harness-extracted ]] || "$QB_LIBDIR/fetch-source.sh" --check || ok=1
    ((ok == 0)) || return 1
    qb_log "ready: a $QB_ARCH build as $(id -un) in $QB_ROOT has $packages, its tree and its source"
}

# flock on a file descriptor: one builder per tree at a time.
qb_lock() {
    exec {QB_LOCK_FD}>"$QB_ROOT/.lock"
    if ! flock -n "$QB_LOCK_FD"; then
        qb_log "waiting for another qemu-build run to finish (lock $QB_ROOT/.lock)"
        flock "$QB_LOCK_FD"
    fi
}

qb_git() { git --git-dir="$QB_GIT_DIR" --work-tree="$QB_SRC" -c core.autocrlf=false "$@"; }

# The build's Debian packages (and the firmware's) that are not installed, on one line; nothing when all are.
# Without dpkg-query (not a Debian host) nothing can be checked here: configure names what it misses.
qb_missing_packages() {
    command -v dpkg-query >/dev/null || return 0
    local missing=() p f
    for p in "${QB_APT_DEPS[@]}"; do
        dpkg-query -W -f '${Status}\n' "$p" 2>/dev/null | grep '^install ok installed' >/dev/null || missing+=("$p")
    done
    for f in "${QB_FIRMWARE_FILES[@]}"; do
        [[ -e $f ]] || { missing+=("${QB_FIRMWARE_PACKAGES[@]}"); break; }
    done
    echo "${missing[*]}"
}

# Root installs what is missing with apt-get (QB_NO_APT=1: never); a user, who cannot, is told in one line which
# packages root must install (`make qemu-build-deps`), and the build stops there.
qb_install_packages() {
    local missing
    if ! command -v dpkg-query >/dev/null; then
        qb_log "no dpkg-query (not a Debian host): build dependencies not checked; the Debian names are" \
            "${QB_APT_DEPS[*]} ${QB_FIRMWARE_PACKAGES[*]} (configure names what it misses)"
        return 0
    fi
    missing=$(qb_missing_packages)
    [[ -n $missing ]] || return 0
    local apt_missing=() firmware=() p
    [[ ${QB_NO_APT:-0} == 1 ]] && { qb_die "missing packages: $missing"; return 1; }
    [[ $(id -u) -ne 0 ]] && { qb_die "missing packages: $missing -- as root: make qemu-build-deps (or apt-get" \
        "install --no-install-recommends $missing)"; return 1; }
    command -v apt-get >/dev/null || { qb_die "missing packages: $missing, and no apt-get to install them"; return 1; }
    for p in "${QB_FIRMWARE_PACKAGES[@]}"; do
        [[ " $missing " == *" $p "* ]] && firmware+=("$p")
    done
    for p in "${QB_APT_DEPS[@]}"; do
        [[ " $missing " == *" $p "* ]] && apt_missing+=("$p")
    done
    if ((${#apt_missing[@]})); then
        qb_log "phase deps: apt-get install ${apt_missing[*]}"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${apt_missing[@]}" >&2 || {
            qb_log "apt-get install failed, running apt-get update and retrying"
            apt-get update -qq >&2
            DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${apt_missing[@]}" >&2
        }
    fi
    if ((${#firmware[@]})); then
        # firmware blobs (x86_64: pvh.bin, linuxboot_dma.bin, kvmvapic.bin, bios, option ROMs;
        # s390x: s390-ccw.img)
        qb_log "phase deps: installing firmware packages (${firmware[*]})"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
            -t bookworm-backports "${firmware[@]}" >&2 || \
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${firmware[@]}" >&2
    fi
}

qb_ensure_deps() {
    qb_install_packages || return 1
    # tools venv: meson (+ pycotap, which QEMU's configure wants in the same group) from PyPI.
    local py=${QB_PYTHON:-}
    if [[ -z $py ]]; then
        if [[ -x /usr/bin/python3 ]]; then py=/usr/bin/python3; else py=$(command -v python3); fi
    fi
    # A venv is not relocatable: its scripts (pip, meson) name the interpreter by the path it was created at, so a
    # build dir that was moved or renamed (a checkout renamed) keeps a working python3 but dead scripts.
    local shebang
    shebang=$(head -n1 "$QB_VENV/bin/pip" 2>/dev/null || true)
    shebang=${shebang#\#!}
    if [[ ! -x $QB_VENV/bin/python3 ]] || ! "$QB_VENV/bin/python3" -c 'import sys' 2>/dev/null || [[ ! -x $shebang ]]; then
        qb_log "phase deps: creating tools venv $QB_VENV (python $py)"
        rm -rf "$QB_VENV"
        "$py" -m venv "$QB_VENV"
    fi
    if [[ "$("$QB_VENV/bin/meson" --version 2>/dev/null)" != "$QB_MESON_VERSION" ]] || \
       ! "$QB_VENV/bin/python3" -c 'import pycotap' 2>/dev/null; then
        qb_log "phase deps: pip install meson==$QB_MESON_VERSION pycotap==$QB_PYCOTAP_VERSION"
        "$QB_VENV/bin/pip" install -q --disable-pip-version-check \
            "meson==$QB_MESON_VERSION" "pycotap==$QB_PYCOTAP_VERSION" >&2
    fi
}

# Fetch + extract (fetch-source.sh is idempotent), apply the build tweak, and record the
# pristine baseline in an external git dir so that any patch can be undone exactly.
qb_prepare_source() {
    if [[ -d $QB_GIT_DIR ]] && [[ -f $QB_SRC/.harness-extracted ]] && qb_git rev-parse -q --verify HEAD >/dev/null; then
        return 0
    fi
    qb_log "phase source: fetch + extract"
    "$QB_LIBDIR/fetch-source.sh" "$QB_SRC_PARENT" >/dev/null
    [[ -f $QB_SRC/VERSION ]] || qb_die "no source tree at $QB_SRC"
    # The +ds tarball has no pc-bios/edk2-*.fd.bz2; never try to unpack them.
    sed -i 's/^\(\s*\)unpack_edk2_blobs = bzip2.found()/\1unpack_edk2_blobs = false/' "$QB_SRC/meson.build"
    grep -q 'unpack_edk2_blobs = bzip2.found()' "$QB_SRC/meson.build" && qb_die "edk2 sed did not apply"
    qb_log "phase source: recording pristine baseline in $QB_GIT_DIR"
    rm -rf "$QB_GIT_DIR"
    git init -q --bare "$QB_GIT_DIR"
    qb_git config core.bare false
    qb_git config gc.auto 0
    qb_git add -A -f .
    qb_git -c user.name=qemu-build -c user.email=qemu-build@localhost \
        commit -q -m "qemu $QB_QEMU_VERSION from Debian orig tarball (+ unpack_edk2_blobs=false)"
    qb_log "phase source: baseline $(qb_git rev-parse --short HEAD)"
}

# Bring the source tree back to the baseline. Only files that differ are rewritten
# (their mtime becomes "now", so ninja rebuilds exactly those).
qb_restore_pristine() {
    [[ -d $QB_GIT_DIR ]] || return 0
    if [[ -n "$(qb_git status --porcelain --untracked-files=all 2>/dev/null)" ]]; then
        qb_log "restoring pristine source tree"
        qb_git checkout -q -f HEAD -- . && qb_git clean -q -f -d -x -e .harness-extracted
    fi
    [[ -z "$(qb_git status --porcelain --untracked-files=all)" ]] || qb_die "source tree is not pristine after restore"
    rm -f "$QB_ROOT/.applied"
}

# The pristine tree's stamp includes its baseline commit; a bisected checkout (QB_STAMP_REVISION=0) must not
# reconfigure at every step: ninja itself re-runs meson when a meson.build changes.
qb_configure_stamp() {
    local revision=""
    [[ ${QB_STAMP_REVISION:-1} == 1 ]] && revision=$(qb_git rev-parse HEAD)
    printf '%s\n' "${QB_CONFIGURE_ARGS[@]}" "firmwarepath=$(IFS=:; echo "${QB_FIRMWARE_DIRS[*]}")" \
        "meson=$QB_MESON_VERSION" "src=$QB_SRC" "$revision" | sha256sum | cut -c1-16
}

qb_configure() {
    local stamp
    stamp=$(qb_configure_stamp)
    if [[ -f $QB_BUILD_DIR/build.ninja ]] && [[ "$(cat "$QB_BUILD_DIR/.harness-configured" 2>/dev/null)" == "$stamp" ]]; then
        return 0
    fi
    qb_log "phase configure: $QB_BUILD_DIR (log $QB_LOG_DIR/configure.log)"
    rm -rf "$QB_BUILD_DIR"
    mkdir -p "$QB_BUILD_DIR"
    local cc=cc
    [[ -x /usr/lib/ccache/cc ]] && cc=/usr/lib/ccache/cc
    local fwpath
    fwpath=$(IFS=:; echo "${QB_FIRMWARE_DIRS[*]}")
    if ! (cd "$QB_BUILD_DIR" && "$QB_SRC/configure" \
            --python="$QB_VENV/bin/python3" \
            --cc="$cc" --firmwarepath="$fwpath" \
            "${QB_CONFIGURE_ARGS[@]}") >"$QB_LOG_DIR/configure.log" 2>&1; then
        tail -n 40 "$QB_LOG_DIR/configure.log" >&2
        qb_die "configure failed (full log: $QB_LOG_DIR/configure.log)"
        return 1
    fi
    echo "$stamp" > "$QB_BUILD_DIR/.harness-configured"
    qb_log "phase configure: done"
}

# Apply one patch (patch -p1). Records it in $QB_ROOT/.applied for restore diagnostics.
qb_apply_patch() {
    local p=$1
    [[ -f $p ]] || qb_die "no such patch: $p"
    echo "$p" >> "$QB_ROOT/.applied"
    qb_log "phase patch: applying $(basename "$p")"
    if ! patch -p1 --forward --batch --no-backup-if-mismatch -r - -d "$QB_SRC" < "$p" >"$QB_LOG_DIR/patch.log" 2>&1; then
        cat "$QB_LOG_DIR/patch.log" >&2
        qb_die "patch does not apply: $p"
        return 1
    fi
}

# Incremental ninja build of the system emulator, printing a progress line every
# QB_PROGRESS_SECS seconds (and the step counter) so a human sees it is alive.
qb_ninja() {
    local log=$QB_LOG_DIR/ninja-${1:-build}.log target=$QB_BINARY
    local every=${QB_PROGRESS_SECS:-20} last=$SECONDS start=$SECONDS line step="" rc
    qb_log "phase build: ninja -j$QB_JOBS $target (log $log)"
    : > "$log"
    local had_e=0
    [[ $- == *e* ]] && had_e=1
    set +e
    ninja -C "$QB_BUILD_DIR" -j "$QB_JOBS" "$target" 2>&1 | {
        while IFS= read -r line; do
            printf '%s\n' "$line" >> "$log"
            if [[ $line =~ ^\[([0-9]+/[0-9]+)\] ]]; then step=${BASH_REMATCH[1]}; fi
            if (( SECONDS - last >= every )); then
                qb_log "phase build: step ${step:-?}, ninja running for $((SECONDS - start))s"
                last=$SECONDS
            fi
        done
    }
    rc=${PIPESTATUS[0]}
    ((had_e)) && set -e
    step=$(grep -oE '^\[[0-9]+/[0-9]+\]' "$log" | tail -n1 | tr -d '[]' || true)
    if ((rc != 0)); then
        grep -E -A12 'FAILED|error:' "$log" | sed -n 1,60p >&2
        qb_die "ninja failed (rc=$rc, log $log)"
        return 1
    fi
    qb_log "phase build: done in $((SECONDS - start))s (ninja steps: ${step:-none, up to date})"
}

# What a variant is built from: the patch's diff, not its header (editing a description or the Tests: line must
# not force a rebuild).
qb_patch_sha() { sed -n '/^diff /,$p' "$1" | sha256sum | cut -d' ' -f1; }

# qb_install_variant NAME OUTDIR BUILD_SECONDS [PATCH...]
qb_install_variant() {
    local name=$1 out=$2 secs=$3; shift 3
    local dir=$out/$name bin=$QB_BUILD_DIR/$QB_BINARY
    [[ -x $bin ]] || qb_die "no binary at $bin"
    mkdir -p "$dir"
    # copy to a temp name then rename: a running test never sees a half-written binary
    cp -f "$bin" "$dir/.$QB_BINARY.tmp"
    mv -f "$dir/.$QB_BINARY.tmp" "$dir/$QB_BINARY"
    printf '%s\n' "${QB_FIRMWARE_DIRS[@]}" > "$dir/firmware-dirs.txt"
    local version patches_json="" p sha first=1
    version=$("$dir/$QB_BINARY" -version | sed -n '1s/.*version //p')
    for p in "$@"; do
        sha=$(qb_patch_sha "$p")
        ((first)) || patches_json+=", "
        first=0
        patches_json+="{\"file\": \"$(basename "$p")\", \"sha256\": \"$sha\"}"
    done
    local psha=null
    if (($# == 1)); then psha="\"$(qb_patch_sha "$1")\""; fi
    cat > "$dir/build-info.json" <<JSON
{
  "variant": "$name",
  "arch": "$QB_ARCH",
  "patch": $( (($# == 1)) && echo "\"$(basename "$1")\"" || echo null ),
  "patch_sha256": $psha,
  "patches": [$patches_json],
  "qemu_version": "$version",
  "source": "qemu_${QB_QEMU_VERSION}+ds.orig.tar.xz (Debian source package)",
  "source_baseline": "$(qb_git rev-parse HEAD)",
  "configure_stamp": "$(qb_configure_stamp)",
  "configure_args": "$(echo "${QB_CONFIGURE_ARGS[*]}")",
  "binary_sha256": "$(sha256sum "$dir/$QB_BINARY" | cut -d' ' -f1)",
  "build_seconds": $secs,
  "built_at": "$(date -u +%Y-%m-%dT%H:%M:%SZ)"
}
JSON
    qb_log "installed $dir/$QB_BINARY ($version)"
}

# Is OUTDIR/NAME already built from these inputs? (binary present, same arch, patch + config)
qb_variant_uptodate() {
    local name=$1 out=$2; shift 2
    local info=$out/$name/build-info.json p
    [[ -x $out/$name/$QB_BINARY && -f $info ]] || return 1
    if grep -q '"arch": ' "$info"; then
        grep -q "\"arch\": \"$QB_ARCH\"" "$info" || return 1
    else
        [[ $QB_ARCH == x86_64 ]] || return 1     # recorded before there were arches: an x86_64 build
    fi
    grep -q "\"configure_stamp\": \"$(qb_configure_stamp)\"" "$info" || return 1
    grep -q "\"source_baseline\": \"$(qb_git rev-parse HEAD)\"" "$info" || return 1
    grep -q "\"binary_sha256\": \"$(sha256sum "$out/$name/$QB_BINARY" | cut -d' ' -f1)\"" "$info" || return 1
    local n=0
    for p in "$@"; do
        n=$((n + 1))
        grep -q "\"sha256\": \"$(qb_patch_sha "$p")\"" "$info" || return 1
    done
    [[ $(grep -o '"sha256"' "$info" | wc -l) -eq $n ]]
}
