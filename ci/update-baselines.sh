#!/usr/bin/env bash
# Regenerates the committed baselines in results/baselines/ from a fresh suite run: the sim
# suite (seconds; deterministic per seed, one run each, tolerances already in a baseline file
# kept), or with `qemu` the QEMU suite in virtual time, each scenario repeated
# PHC_BASELINE_REPEATS times (default 48, seeds s..s+47; about 50 minutes; needs ci/setup-vm.sh and
# the guest agent, see ci/build-agent.sh): each metric's baseline is the runs' median, with a
# tolerance of two spreads (max - min) above the metric's resolution. 48 because rarer outcomes
# (a reboot half a second off the RTC second, chronyd a poll later) come about once in 50 runs:
# of 160 further runs, 6 landed outside baselines of 16 repeats, 1-3 outside 32, none outside 48. Baselines of scenarios
# that no longer exist are removed. Refuses to promote a suite that failed, unless
# PHC_BASELINE_ALLOW_FAIL=1 (the failure is then the baseline).
#
# Usage: ci/update-baselines.sh [sim|qemu]      then review `git diff results/baselines`
set -euo pipefail
cd "$(dirname "$0")/.."
backend=${1:-sim}
[[ $backend == sim || $backend == qemu ]] || { echo "usage: $0 [sim|qemu]" >&2; exit 2; }

cargo build --release --locked --quiet -p phc-harness
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
if [[ $backend == qemu ]]; then
    PHC_AGENT_BIN=${PHC_AGENT_BIN:-$(bash ci/build-agent.sh | tail -n1)}
    export PHC_AGENT_BIN
fi
repeats=1
if [[ $backend == qemu ]]; then
    repeats=${PHC_BASELINE_REPEATS:-48}
    [[ $repeats =~ ^[0-9]+$ && $repeats -ge 5 ]] || { echo "update-baselines: PHC_BASELINE_REPEATS must be 5 or more" >&2; exit 2; }
fi
set +e
./target/release/phc-harness suite scenarios --backend "$backend" --repeat "$repeats" --out "$out/suite" >/dev/null
rc=$?
set -e
if [[ $rc -ne 0 && ${PHC_BASELINE_ALLOW_FAIL:-0} != 1 ]]; then
    echo "update-baselines: the $backend suite exited $rc (see $out/suite/index.md); not promoted" >&2
    cat "$out/suite/index.md" >&2 || true
    exit "$rc"
fi
./target/release/phc-harness baseline "$out/suite" --baseline results/baselines --prune
echo "update-baselines: results/baselines/$backend regenerated; review with git diff results/baselines"
