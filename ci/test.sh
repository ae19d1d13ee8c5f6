#!/usr/bin/env bash
# The project's test command: lint, unit/property/snapshot tests, CLI tests, benchmarks run once,
# then in lanes (one per CPU): the fuzzer, the sim suite, the package and the VM tests.
# Usage: ci/test.sh                 (what CI runs: everything, VM stage included; needs root)
#        PHC_SKIP_VM=1 ci/test.sh   (no VM stage, for quick local runs; says so)
#        PHC_HOST_CHECKS=1 ci/test.sh  (adds the Debian 13 host check, ci/host-trixie.sh)
set -euo pipefail
cd "$(dirname "$0")/.."

# Each stage's header says how long the run has taken so far (PHC_CI_START: the whole ci/test.sh).
export PHC_CI_START=${PHC_CI_START:-$(date +%s)}
stage() { printf '\n== %s == (at %d s)\n' "$*" "$(($(date +%s) - PHC_CI_START))"; }

stage "toolchain"
cargo --version
# No incremental caches: a one-shot build gains nothing from them and they double target/.
export CARGO_INCREMENTAL=0
# The build, the guest images and the sim suite need about PHC_MIN_FREE_MB of disk; say so up
# front rather than fail in the linker with "No space left on device".
free_mb=$(df -Pm . | awk 'NR == 2 { print $4 }')
echo "disk: ${free_mb} MB free in $(pwd)"
if [ "$free_mb" -lt "${PHC_MIN_FREE_MB:-3000}" ]; then
  echo "ci/test.sh: only ${free_mb} MB free here; the tests need about ${PHC_MIN_FREE_MB:-3000} MB (set PHC_MIN_FREE_MB to override)" >&2
  exit 1
fi
rustup component list --installed 2>/dev/null | grep -E '^(clippy|rustfmt)' || true

stage "setup (system packages, guest kernel; a no-op when present): in the background until the tests"
# Downloads and unpacking, mostly waiting on the network and the disk: it runs beside the
# format, clippy and docs stages, which keep the CPUs busy, and is joined before the tests (the
# unit tests need cpio(1) too, not only the VM stage). Its output is printed when it is joined.
setup_log=$(mktemp)
# The headless browser for the suite's HTML too: where it cannot be installed, the XML checks
# still run (and say so).
{
  bash ci/setup-vm.sh &&
    { bash ci/setup-browser.sh || echo "setup-browser: could not install a headless browser; the browser check will say it skipped"; }
} >"$setup_log" 2>&1 &
setup_pid=$!
# A stage that fails before the join leaves no set-up running behind it.
trap '[[ -n ${setup_pid:-} ]] && { pkill -P "$setup_pid" 2>/dev/null; kill "$setup_pid" 2>/dev/null; }; rm -f "$setup_log"' EXIT
join_setup() {
  local rc=0
  wait "$setup_pid" || rc=$?
  setup_pid=
  stage "setup, joined"
  cat "$setup_log"
  if [ "$rc" -ne 0 ]; then
    echo "ci/test.sh: ci/setup-vm.sh failed (exit $rc); its output is above" >&2
    exit "$rc"
  fi
}

stage "format"
cargo fmt --all --check

stage "layers: imports in harness/src only run down"
bash ci/check-layers.sh

stage "clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

stage "docs"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --locked --quiet

join_setup

stage "tests"
cargo test --workspace --locked
# The criterion benchmarks, each run once (criterion's test mode: without --bench a benchmark
# runs one iteration and says Success), so that CI builds them and sees them run. `--bench '*'`,
# not `--benches`: that also takes the libraries and binaries (bench = true by default) and ran
# their unit tests a second time.
cargo test --workspace --locked --bench '*'

stage "the release build: the static harness, the guest agent a stripped copy of it"
# One release build: the static one the guest needs serves the host's jobs and the package too
# (a second, dynamic one took 95 s of CI). The fuzzer is the debug build the tests made (overflow
# checks on).
agent=$(bash ci/build-agent.sh | tail -n1)
[[ -x $agent ]] || { echo "ci/test.sh: ci/build-agent.sh printed no agent binary ('$agent')" >&2; exit 1; }
export PHC_AGENT_BIN=$agent PHC_HARNESS=${agent%-guest}
echo "PHC_AGENT_BIN=$PHC_AGENT_BIN"
echo "PHC_HARNESS=$PHC_HARNESS"

# The rest runs in lanes, one per CPU (ci/lanes.sh): the fuzzer (the CUSE request path, mutated
# requests for 20 s), the sim suite (against results/baselines/sim, KTAP, JUnit, HTML in a
# headless browser), the package (ci/build-deb.sh: its contents, run and probe from an extracted
# copy), and, unless PHC_SKIP_VM=1, every VM test (ci/vm-test.sh sets them up first).
jobs=(job:fuzz job:sim-suite job:package)
if [ "${PHC_SKIP_VM:-0}" = 1 ]; then
  stage "fuzz, sim suite, package: in lanes (ci/lanes.sh)"
  bash ci/lanes.sh "${TMPDIR:-/tmp}/phc-harness-ci-lanes" "${jobs[@]}"
  stage "VM stage"
  echo "skipped: PHC_SKIP_VM=1 (the VM tests did not run)"
else
  bash ci/vm-test.sh "${jobs[@]}"
fi

if [ "${PHC_HOST_CHECKS:-0}" = 1 ]; then
  # Off by default: it downloads a Debian 13 chroot, QEMU and the guest kernels (a few hundred MB).
  stage "hosts: Debian 13 (trixie) chroot: apt install the .deb, setup-vm.sh, a QEMU scenario"
  bash ci/host-trixie.sh
else
  stage "hosts"
  echo "skipped: PHC_HOST_CHECKS=1 runs ci/host-trixie.sh (a Debian 13 chroot: the package, the set-up, a QEMU scenario)"
fi

echo "ci/test.sh: every stage passed in $(($(date +%s) - PHC_CI_START)) s"
