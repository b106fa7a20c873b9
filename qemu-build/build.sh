#!/usr/bin/env bash
# Build the reference QEMU 10.0.2 (ARCH-softmmu, minimal) and regression variants.
#
#   qemu-build/build.sh [--arch ARCH] [--pristine] [--patch FILE]... [--out DIR] [options]
#
# Each --patch FILE is one variant, built as pristine 10.0.2 + that patch and installed
# to DIR/<patch-stem>/qemu-system-ARCH. --pristine (implied when no --patch is given)
# installs the unpatched build to DIR/pristine/. Next to each binary:
#   firmware-dirs.txt   one directory per line, pass each as -L (the binary is also
#                       configured with --firmwarepath set to the same directories)
#   build-info.json     variant, arch, patch (+ sha256), qemu version, build seconds, ...
#
# How: ONE pristine extracted source tree and ONE build tree per arch. Per variant the patch is
# applied, ninja rebuilds incrementally (ccache makes the compile after restore a cache
# hit), the binary is copied out, and the source is restored to the pristine baseline
# (git checkout from an external git dir) -- also when the build fails or the script is
# interrupted (trap), and at the start of the next run if a previous run was killed.
# The build tree is brought back to pristine lazily, by the next build.
#
# Options:
#   --arch ARCH      target: x86_64 (default, or $QB_ARCH) or s390x; s390x builds in
#                    build/qemu/build-s390x with the firmware of Debian's qemu-system-s390x
#   --out DIR        where variants go (default: <repo>/build/qemu/variants, variants-s390x for s390x)
#   --pristine       also build the unpatched variant
#   --patch FILE     add a variant (repeatable)
#   --name NAME      with exactly one --patch: install under NAME instead of the stem
#   --force          rebuild even if DIR/<variant> is up to date
#   --jobs N         ninja -j (default: nproc)
#   --bisect         for `git bisect run`: a tree/variant that does not build (patch does not
#                    apply, configure or compile fails) exits 125 ("skip") instead of 1
#   --no-apt         never call apt-get (fail when a build dependency is missing; a user never calls it)
#   --deps-only      as root: install the build's Debian packages and apt's deb-src entry for the source
#                    (`make qemu-build-deps`), then stop; creates nothing in the checkout. As a user: --check
#   --check          build nothing, install nothing, create nothing: are the packages installed, is the tree
#                    (build/qemu) this user's to write, can the source be fetched? One line per problem, exit 1
#   -h, --help
#
# Exit: 0 all requested variants built; 1 some failed; 125 with --bisect on build failure.
set -euo pipefail

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }

QB_T0=$SECONDS
# shellcheck source=qemu-build/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

OUT="" PRISTINE=0 FORCE=0 BISECT=0 NAME="" CHECK=0 DEPS_ONLY=0
PATCHES=()
while (($#)); do
    case $1 in
        --arch) QB_ARCH=$2; shift 2 ;;
        --arch=*) QB_ARCH=${1#*=}; shift ;;
        --out) OUT=$2; shift 2 ;;
        --out=*) OUT=${1#*=}; shift ;;
        --patch) PATCHES+=("$2"); shift 2 ;;
        --patch=*) PATCHES+=("${1#*=}"); shift ;;
        --pristine) PRISTINE=1; shift ;;
        --name) NAME=$2; shift 2 ;;
        --force) FORCE=1; shift ;;
        --jobs) QB_JOBS=$2; shift 2 ;;
        --bisect) BISECT=1; shift ;;
        --no-apt) QB_NO_APT=1; shift ;;
        --check) CHECK=1; shift ;;
        --deps-only) DEPS_ONLY=1; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "unknown argument: $1" >&2; usage >&2; exit 2 ;;
    esac
done
((${#PATCHES[@]})) || PRISTINE=1
if [[ -n $NAME && ${#PATCHES[@]} -ne 1 ]]; then echo "--name needs exactly one --patch" >&2; exit 2; fi
if [[ " ${QB_ARCHES[*]} " != *" $QB_ARCH "* ]]; then
    echo "unknown --arch: $QB_ARCH (one of: ${QB_ARCHES[*]})" >&2; exit 2
fi

if ((CHECK || DEPS_ONLY)); then
    qb_init --no-create
    if ((DEPS_ONLY)) && [[ $(id -u) -eq 0 ]]; then
        qb_install_packages
        "$QB_LIBDIR/fetch-source.sh" --apt-source
        qb_log "build dependencies installed: a user can now run qemu-build/build.sh (make validate)"
        exit 0
    fi
    qb_preflight ${OUT:+"$OUT"}
    exit
fi

qb_init
OUT=${OUT:-$QB_VARIANTS_DIR}
qb_check_tree "$OUT"
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)

# variant list: "name<TAB>patchfile" (empty patch = pristine)
VARIANTS=()
((PRISTINE)) && VARIANTS+=("pristine"$'\t')
for p in "${PATCHES[@]}"; do
    [[ -f $p ]] || { echo "no such patch: $p" >&2; exit 2; }
    p=$(cd "$(dirname "$p")" && pwd)/$(basename "$p")
    stem=$(basename "$p"); stem=${stem%.patch}; stem=${stem%.diff}
    VARIANTS+=("${NAME:-$stem}"$'\t'"$p")
done

fail_code=1
((BISECT)) && fail_code=125

qb_lock
on_exit() {
    local rc=$?
    trap - EXIT INT TERM
    qb_restore_pristine || rc=1
    exit "$rc"
}
trap on_exit EXIT
trap 'qb_log "interrupted"; exit 130' INT TERM

qb_ensure_deps
qb_prepare_source
qb_restore_pristine      # in case a previous run was killed mid-variant
if ! qb_configure; then
    exit "$fail_code"
fi

build_one() {   # runs in a subshell with set -e
    local name=$1 patch=$2 t0=$SECONDS
    if [[ -n $patch ]]; then qb_apply_patch "$patch"; fi
    qb_ninja "$name"
    if [[ -n $patch ]]; then
        qb_install_variant "$name" "$OUT" "$((SECONDS - t0))" "$patch"
    else
        qb_install_variant "$name" "$OUT" "$((SECONDS - t0))"
    fi
}

FAILED=() BUILT=() CACHED=()
for v in "${VARIANTS[@]}"; do
    name=${v%%$'\t'*} patch=${v#*$'\t'}
    if ((!FORCE)) && qb_variant_uptodate "$name" "$OUT" ${patch:+"$patch"}; then
        qb_log "variant $name: up to date ($OUT/$name)"
        CACHED+=("$name")
        continue
    fi
    qb_log "variant $name: start${patch:+ (patch $(basename "$patch"))}"
    set +e
    ( set -e; build_one "$name" "$patch" )
    rc=$?
    set -e
    qb_restore_pristine
    if ((rc == 0)); then
        BUILT+=("$name")
    else
        qb_log "variant $name: FAILED (rc=$rc)"
        FAILED+=("$name")
        if ((BISECT)); then exit 125; fi
    fi
done

qb_log "done ($QB_ARCH): built=${BUILT[*]:-none} cached=${CACHED[*]:-none} failed=${FAILED[*]:-none} out=$OUT"
((${#FAILED[@]} == 0)) || exit "$fail_code"
