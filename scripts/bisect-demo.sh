#!/usr/bin/env bash
# Demonstrate bisecting with the harness on a synthetic QEMU history.
#
#   scripts/bisect-demo.sh [--patch regressions/X.patch] [--commits 20] [--bad-at 13] [--repeats 3]
#
# Builds a local git repo of the reference QEMU source (the Debian orig tarball, see qemu-build/) with COMMITS
# commits on top: harmless comment edits in migration/*.c, except commit BAD_AT, which applies the regression
# patch (as a plausible bad commit would). Then runs
#     git bisect start HEAD BASELINE && git bisect run qmh-bisect-step ... <the patch's Tests:>
# and checks that the first bad commit git reports is the planted one. Output: build/bisect-demo/result.json
# (planted vs found commit, steps with their votes and seconds) and the bisect log. Exit 0 when found.
# Set BISECT_STEP_WRAPPER (e.g. "flock /tmp/qmh-cpu.lock") to serialize the CPU-heavy steps with other jobs.
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PATCH=$REPO/regressions/B0-pending-exact-must-precopy-only.patch COMMITS=20 BAD_AT=13 REPEATS=3
while (($#)); do
    case $1 in
        --patch) PATCH=$(realpath "$2"); shift 2 ;;
        --commits) COMMITS=$2; shift 2 ;;
        --bad-at) BAD_AT=$2; shift 2 ;;
        --repeats) REPEATS=$2; shift 2 ;;
        *) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2; exit 2 ;;
    esac
done
((BAD_AT >= 1 && BAD_AT <= COMMITS)) || { echo "--bad-at must be within 1..$COMMITS" >&2; exit 2; }
DEMO=${DEMO_DIR:-$REPO/build/bisect-demo}
PY=$REPO/.venv/bin/python
log() { printf '[bisect-demo %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
# The patch header names the tests that must fail on it.
mapfile -t TESTS < <(sed -n '/^diff /q; s/^Tests: *//p' "$PATCH" | tr ' ' '\n' | sed '/^$/d')
((${#TESTS[@]})) || { echo "$PATCH has no Tests: header" >&2; exit 2; }

# shellcheck source=qemu-build/lib.sh
source "$REPO/qemu-build/lib.sh"
qb_init
qb_ensure_deps
qb_prepare_source

log "synthetic history: $COMMITS commits on the 10.0.2 baseline, commit $BAD_AT applies $(basename "$PATCH")"
rm -rf "$DEMO/qemu" "$DEMO/steps.jsonl"
mkdir -p "$DEMO"
git clone -q "$QB_GIT_DIR" "$DEMO/qemu"
cd "$DEMO/qemu"
git config user.name "Synthetic Developer"; git config user.email dev@example.invalid
BASELINE=$(git rev-parse HEAD)
FILES=(migration/options.c migration/savevm.c migration/qemu-file.c migration/multifd.c migration/postcopy-ram.c)
PLANTED=""
for ((i = 1; i <= COMMITS; i++)); do
    if ((i == BAD_AT)); then
        patch -p1 --batch -s < "$PATCH"
        git commit -q -am "migration: tidy up the iteration exit condition" \
            -m "$(sed -n 's/^Description: //p' "$PATCH")" -m "(planted by scripts/bisect-demo.sh)"
        PLANTED=$(git rev-parse HEAD)
    else
        f=${FILES[$((i % ${#FILES[@]}))]}
        printf '/* synthetic history: harmless change %d */\n' "$i" >> "$f"
        git commit -q -am "$(basename "$f" .c): harmless change $i"
    fi
done
log "planted bad commit $(git log -1 --format='%h %s' "$PLANTED")"

started=$SECONDS
git bisect start HEAD "$BASELINE"
STEP=("$PY" -m harness.tools.bisect --source "$DEMO/qemu" --build-dir "$DEMO/build" --repeats "$REPEATS"
      --artefacts "$DEMO/artefacts" --log "$DEMO/steps.jsonl" "${TESTS[@]}")
# shellcheck disable=SC2086
git bisect run ${BISECT_STEP_WRAPPER:-} "${STEP[@]}" | tee "$DEMO/bisect-run.log" && run_status=0 || run_status=$?
FOUND=$(git rev-parse refs/bisect/bad)
git bisect log > "$DEMO/bisect.log"
git bisect reset >/dev/null
seconds=$((SECONDS - started))
# An aborted bisect (a step exited 128: the harness could not run) leaves refs/bisect/bad at some commit that was
# never found to be the first bad one: say so instead of comparing it with the planted commit.
if ((run_status != 0)); then
    log "git bisect run stopped (exit $run_status) before finding a first bad commit: see $DEMO/bisect-run.log"
    exit 1
fi

ok=false; [[ $FOUND == "$PLANTED" ]] && ok=true
"$PY" - "$DEMO" "$PLANTED" "$FOUND" "$ok" "$seconds" "$COMMITS" "$BAD_AT" "$(basename "$PATCH")" <<'PYEOF'
import json, sys
from pathlib import Path
demo, planted, found, ok, seconds, commits, bad_at, patch = sys.argv[1:]
steps = [json.loads(line) for line in (Path(demo) / "steps.jsonl").read_text().splitlines() if line.strip()]
result = {"ok": ok == "true", "planted": planted, "found": found, "patch": patch, "commits": int(commits),
          "bad_at": int(bad_at), "seconds": int(seconds), "steps": steps}
(Path(demo) / "result.json").write_text(json.dumps(result, indent=1) + "\n")
print(json.dumps({k: v for k, v in result.items() if k != "steps"}))
for s in steps:
    print(f"  {s['revision']}: {s['verdict']:<5} votes={s['votes']} {s['seconds']}s {s['why']}")
PYEOF
$ok || { log "bisect found $FOUND, planted $PLANTED"; exit 1; }
log "bisect found the planted commit in ${seconds}s"
