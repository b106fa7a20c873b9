#!/usr/bin/env bash
# Smoke-check built QEMU variants: each DIR/<variant>/qemu-system-* must print its
# version and answer QMP (qmp_capabilities + quit) with -machine none.
#
#   qemu-build/check-variants.sh [DIR]      (default: <repo>/build/qemu/variants; variants-s390x for s390x)
#
# Prints one line per variant and 'N passed, N failed'; exit 1 if any failed.
set -uo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DIR=${1:-$REPO/build/qemu/variants}
pass=0 fail=0
for bin in "$DIR"/*/qemu-system-*; do
    [[ -x $bin ]] || continue
    v=$(basename "$(dirname "$bin")")
    ver=$("$bin" -version 2>&1 | sed -n 1p)
    L=()
    while IFS= read -r d; do [[ -n $d ]] && L+=(-L "$d"); done < "$(dirname "$bin")/firmware-dirs.txt"
    out=$(printf '{"execute":"qmp_capabilities"}\n{"execute":"query-version"}\n{"execute":"quit"}\n' |
          timeout 30 "$bin" "${L[@]}" -machine none -accel tcg -nodefaults -display none -qmp stdio 2>&1)
    if [[ $ver == "QEMU emulator version "* ]] && [[ $(grep -c '"return"' <<<"$out") -eq 3 ]]; then
        echo "ok    $v: $ver"; pass=$((pass + 1))
    else
        echo "FAIL  $v: version='$ver'"; sed 's/^/      /' <<<"$out" | sed -n 1,10p; fail=$((fail + 1))
    fi
done
echo "$pass passed, $fail failed"
((fail == 0 && pass > 0))
