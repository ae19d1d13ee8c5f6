#!/usr/bin/env bash
# Virtual time's speed, as the speed work measures it (not a test: it asserts nothing and is not
# run by CI; these machines are noisy, so it prints medians of several runs and the ratios of
# runs taken side by side). Needs what ci/vm-test.sh needs (ci/setup-vm.sh, ci/build-agent.sh).
#
#   azure-pause-30s as written (600 s): booted (--no-snapshot) and restored, RUNS each, in turn
#   the whole QEMU suite: --jobs 1 and --jobs 2
#
# Usage: ci/bench-speed.sh [RUNS]        (default 3)
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-3}
[[ $runs =~ ^[1-9][0-9]?$ ]] || { echo "bench-speed: RUNS must be 1-99, not '$runs'" >&2; exit 2; }
agent=$(bash ci/build-agent.sh | tail -n1)
export PHC_AGENT_BIN=$agent
cargo build --release --locked --quiet -p phc-harness
bin=./target/release/phc-harness
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

wall() { # prints the wall seconds of one command; a failed verdict (exit 1) is said, not fatal
    local t0 t1 rc=0
    t0=$(date +%s%N)
    "$@" >/dev/null 2>"$out/stderr" || rc=$?
    t1=$(date +%s%N)
    if [[ $rc -eq 1 ]]; then
        echo "bench-speed: a verdict failed in: $*" >&2
    elif [[ $rc -ne 0 ]]; then
        cat "$out/stderr" >&2
        return "$rc"
    fi
    awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f\n", (b - a) / 1e9 }'
}
median() { sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }

# One restored run first, so that the cache has this guest.
$bin run azure-pause-30s --backend qemu --out "$out/warm" >/dev/null 2>&1
booted=() restored=()
for i in $(seq "$runs"); do
    booted+=("$(wall $bin run azure-pause-30s --backend qemu --no-snapshot --out "$out/b$i")")
    restored+=("$(wall $bin run azure-pause-30s --backend qemu --out "$out/r$i")")
    echo "run $i: booted ${booted[-1]} s, restored ${restored[-1]} s"
done
b=$(printf '%s\n' "${booted[@]}" | median)
r=$(printf '%s\n' "${restored[@]}" | median)
awk -v b="$b" -v r="$r" -v n="$runs" 'BEGIN { printf "azure-pause-30s (600 s), median of %d: booted %.2f s (%.1fx real time), restored %.2f s (%.1fx); restored/booted %.3f\n", n, b, 600 / b, r, 600 / r, r / b }'
python3 - "$out/r1" <<'PY'
import json, pathlib, sys
r = json.loads(next(pathlib.Path(sys.argv[1]).glob("*/report.json")).read_text())
bi = r["backend_info"]
print("  restored run:", json.dumps({k: bi.get(k) for k in ("boot_to_ready_s", "wall_s", "guest_wakeups", "boot_snapshot")}))
PY
s1=$(wall $bin suite scenarios --backend qemu --jobs 1 --out "$out/s1")
s2=$(wall $bin suite scenarios --backend qemu --jobs 2 --out "$out/s2")
echo "QEMU suite (every scenario virtual time runs): --jobs 1 $s1 s, --jobs 2 $s2 s"
