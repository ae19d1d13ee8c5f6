#!/usr/bin/env bash
# The project's test command: lint, unit/property/snapshot tests, CLI tests, benchmarks built.
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
bash ci/setup-vm.sh >"$setup_log" 2>&1 &
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

stage "fuzz: CUSE request path (mutated requests, 20 s)"
cargo run --release --locked --quiet -p mock-phc --example fuzz_decode -- 20

stage "benchmarks build"
cargo bench --workspace --no-run --locked --quiet

stage "sim suite (release): suite, baselines, KTAP, JUnit, HTML in a headless browser"
cargo build --release --locked --quiet -p phc-harness
suite_dir="${TMPDIR:-/tmp}/phc-harness-ci-suite"
start=$(date +%s%N)
set +e
./target/release/phc-harness suite scenarios --out "$suite_dir" >/tmp/phc-harness-suite.ktap
rc=$?
set -e
end=$(date +%s%N)
cat /tmp/phc-harness-suite.ktap
echo "whole scenarios/ suite on the sim backend: $(( (end - start) / 1000000 )) ms wall"
if [ "$rc" -ne 0 ]; then
  cat "$suite_dir/index.md"
  echo "sim suite: a scenario failed its verdicts (exit $rc)" >&2
  exit "$rc"
fi
# Against the committed baselines (results/baselines/sim); ci/update-baselines.sh regenerates them.
./target/release/phc-harness compare "$suite_dir"
# A headless browser opens index.html where one can be installed; without one the XML checks
# still run (and say so).
bash ci/setup-browser.sh || echo "setup-browser: could not install a headless browser; the browser check will say it skipped"
bash ci/check-suite.sh "$suite_dir"

stage "package: the .deb (ci/build-deb.sh), its contents, run and probe from an extracted copy"
start=$(date +%s)
bash ci/check-deb.sh
echo "package stage: $(( $(date +%s) - start )) s wall"

if [ "${PHC_HOST_CHECKS:-0}" = 1 ]; then
  # Off by default: it downloads a Debian 13 chroot, QEMU and the guest kernels (a few hundred MB).
  stage "hosts: Debian 13 (trixie) chroot: apt install the .deb, setup-vm.sh, a QEMU scenario"
  bash ci/host-trixie.sh
else
  stage "hosts"
  echo "skipped: PHC_HOST_CHECKS=1 runs ci/host-trixie.sh (a Debian 13 chroot: the package, the set-up, a QEMU scenario)"
fi

if [ "${PHC_SKIP_VM:-0}" = 1 ]; then
  stage "VM stage"
  echo "skipped: PHC_SKIP_VM=1 (the VM tests did not run)"
else
  bash ci/vm-test.sh
fi

echo "ci/test.sh: every stage passed in $(($(date +%s) - PHC_CI_START)) s"
