#!/usr/bin/env bash
# Fetch the QEMU 10.0.2 upstream source from Debian's source package and unpack it.
#
#   qemu-build/fetch-source.sh DEST
#   qemu-build/fetch-source.sh --apt-source   as root: only the deb-src entry below and its apt-get update (what a
#                                             user's fetch needs: `make qemu-build-deps`); nothing in the checkout
#   qemu-build/fetch-source.sh --check        can this user fetch (tarball cached, or apt's deb-src index present,
#                                             the cache dir writable)? One line and exit 1 when not; fetches nothing
#
# Only Debian's archive is used: a deb-src entry for bookworm-backports is written to
# /etc/apt/sources.list.d/harness-src.sources, then `apt-get source --download-only`
# downloads the source package. Only the orig tarball (qemu_10.0.2+ds.orig.tar.xz)
# is needed (and in practice the only file that downloads); we build plain upstream
# from it. The tarball is cached under build/cache/ so repeated runs do nothing.
#
# DEST receives the extracted tree (DEST/qemu-10.0.2/...). If DEST already holds a
# complete extraction (marker file), nothing is done.
#
# Environment:
#   QEMU_DEB_VERSION  source package version (default 1:10.0.2+ds-2+deb13u1~bpo12+1)
#   QEMU_CACHE_DIR    tarball cache (default <repo>/build/cache)
set -euo pipefail

usage() { echo "usage: $0 DEST | --apt-source | --check" >&2; exit 2; }
[[ $# -eq 1 ]] || usage
DEST=$1

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DEB_VERSION=${QEMU_DEB_VERSION:-1:10.0.2+ds-2+deb13u1~bpo12+1}
UPSTREAM_VERSION=${DEB_VERSION#*:}          # 10.0.2+ds-2+deb13u1~bpo12+1
UPSTREAM_VERSION=${UPSTREAM_VERSION%%-*}    # 10.0.2+ds
QEMU_VERSION=${UPSTREAM_VERSION%%+*}        # 10.0.2
ORIG=qemu_${UPSTREAM_VERSION}.orig.tar.xz
CACHE=${QEMU_CACHE_DIR:-$REPO/build/cache}
SRC_LIST=/etc/apt/sources.list.d/harness-src.sources

log() { printf '[fetch-source %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

die() { log "ERROR: $*"; exit 1; }

# One line and exit 1 when DIR (or, not made yet, its nearest existing parent) is not this user's to write: a
# build/cache left root-owned would otherwise stop mktemp or tar with a message about some file in it.
ensure_writable() {
    local p=$1
    while [[ ! -e $p && $p != / ]]; do p=$(dirname "$p"); done
    [[ -w $p ]] || die "$p is owned by $(stat -c %U "$p"), not $(id -un): cannot write the QEMU source there --" \
        "as root: chown -R $(id -un): $p"
}

DEB_SRC_WANT=$(cat <<SRC
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: bookworm-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
)
deb_src_ready() {
    [[ -f $SRC_LIST ]] && [[ "$(cat "$SRC_LIST")" == "$DEB_SRC_WANT" ]] \
        && compgen -G '/var/lib/apt/lists/*bookworm-backports_main_source_Sources*' >/dev/null
}
tarball_cached() { [[ -s $CACHE/$ORIG ]] && xz -t "$CACHE/$ORIG" 2>/dev/null; }

ensure_deb_src() {
    deb_src_ready && return 0
    [[ $(id -u) -eq 0 ]] || die "no deb-src for bookworm-backports in apt -- as root: make qemu-build-deps (it" \
        "writes $SRC_LIST and runs apt-get update), or put $ORIG in $CACHE"
    log "writing $SRC_LIST and running apt-get update"
    printf '%s\n' "$DEB_SRC_WANT" > "$SRC_LIST"
    apt-get update -qq
}

fetch_tarball() {
    ensure_writable "$CACHE"
    mkdir -p "$CACHE"
    if tarball_cached; then
        log "cached: $CACHE/$ORIG"
        return 0
    fi
    ensure_deb_src
    local tmp
    tmp=$(mktemp -d "$CACHE/.dl.XXXXXX")
    log "apt-get source --download-only qemu=$DEB_VERSION (into $tmp)"
    # The .dsc / debian tarball may fail to download; only the orig tarball matters.
    ( cd "$tmp" && apt-get source --download-only "qemu=$DEB_VERSION" ) || \
        log "apt-get source returned non-zero; checking for the orig tarball anyway"
    chmod -R a+rX "$tmp" 2>/dev/null || true
    if [[ ! -s $tmp/$ORIG ]]; then
        log "ERROR: $ORIG was not downloaded"; ls -la "$tmp" >&2; rm -rf "$tmp"; exit 1
    fi
    xz -t "$tmp/$ORIG"
    mv "$tmp/$ORIG" "$CACHE/$ORIG"
    # keep whatever else came along (dsc, debian tarball) for reference
    for f in "$tmp"/*; do [[ -e $f ]] && mv -f "$f" "$CACHE/" ; done
    rm -rf "$tmp"
    (cd "$CACHE" && sha256sum "$ORIG" > "$ORIG.sha256")
    log "downloaded $CACHE/$ORIG ($(du -h "$CACHE/$ORIG" | cut -f1))"
}

extract() {
    local tree=$DEST/qemu-$QEMU_VERSION marker
    marker=$tree/.harness-extracted
    if [[ -f $marker ]] && [[ "$(cat "$marker")" == "$(cat "$CACHE/$ORIG.sha256" 2>/dev/null || echo x)" ]]; then
        log "already extracted: $tree"
        echo "$tree"
        return 0
    fi
    log "extracting $ORIG into $DEST"
    rm -rf "$tree" "$DEST/.extract"
    mkdir -p "$DEST/.extract"
    tar -xJf "$CACHE/$ORIG" -C "$DEST/.extract"
    local top
    top=$(find "$DEST/.extract" -mindepth 1 -maxdepth 1 -type d | sed -n 1p)
    [[ -f $top/VERSION ]] || { log "ERROR: no VERSION in $top"; exit 1; }
    [[ "$(cat "$top/VERSION")" == "$QEMU_VERSION" ]] || log "WARNING: VERSION is $(cat "$top/VERSION"), expected $QEMU_VERSION"
    mv "$top" "$tree"
    rmdir "$DEST/.extract"
    [[ -f $CACHE/$ORIG.sha256 ]] || (cd "$CACHE" && sha256sum "$ORIG" > "$ORIG.sha256")
    cat "$CACHE/$ORIG.sha256" > "$marker"
    log "extracted: $tree"
    echo "$tree"
}

case $DEST in
    --apt-source)
        [[ $(id -u) -eq 0 ]] || die "--apt-source writes $SRC_LIST: run it as root"
        ensure_deb_src
        log "apt has the deb-src for bookworm-backports: a user can fetch $ORIG" ;;
    --check)
        if tarball_cached; then
            log "ready: $CACHE/$ORIG is cached"
        else
            ensure_writable "$CACHE"
            deb_src_ready || die "no deb-src for bookworm-backports in apt, and $ORIG is not in $CACHE -- as" \
                "root: make qemu-build-deps"
            log "ready: apt can fetch $ORIG into $CACHE"
        fi ;;
    -*) usage ;;
    *)
        fetch_tarball
        ensure_writable "$DEST"
        mkdir -p "$DEST"
        extract ;;
esac
