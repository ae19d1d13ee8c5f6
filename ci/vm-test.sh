#!/usr/bin/env bash
# The VM test stage: set up QEMU and the guest kernel, build the static guest agent, then run the
# tests that boot real guests under QEMU (TCG). Prints all test output; exits non-zero on any
# failure. Needs root (ci/setup-vm.sh installs packages). Takes a few minutes on 2 cores.
#
# Environment: CARGO_TARGET_DIR (honoured), PHC_CACHE (kernel cache, see ci/setup-vm.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

stage() { printf '\n== %s ==\n' "$*"; }

stage "vm: setup (QEMU, guest kernel)"
bash ci/setup-vm.sh

stage "vm: static guest agent"
agent=$(bash ci/build-agent.sh | tail -n1)
[[ -x $agent ]] || { echo "vm-test: ci/build-agent.sh printed no agent binary ('$agent')" >&2; exit 1; }
export PHC_AGENT_BIN=$agent
echo "PHC_AGENT_BIN=$PHC_AGENT_BIN"

stage "vm: phc-qemu guest tests"
start=$(date +%s)
# One guest at a time: the machine has 2 cores and TCG is CPU-bound; parallel guests would
# only make every timing worse. --nocapture puts the measured figures (boot_to_ready_s ...) in
# the CI log.
cargo test --locked -p phc-qemu --test vm -- --ignored --test-threads=1 --nocapture
echo "phc-qemu VM tests: $(( $(date +%s) - start )) s wall"

stage "vm: harness scenarios, probe and latency on the qemu backend"
# After the phc-qemu tests, so that a broken guest fails there first, with the narrower message.
start=$(date +%s)
cargo test --locked -p phc-harness --test vm_scenarios -- --ignored --test-threads=1 --nocapture
echo "harness VM tests: $(( $(date +%s) - start )) s wall"

stage "vm: acceleration decided once (trial guest, cache)"
cargo test --locked -p phc-harness --test vm_accel -- --ignored --test-threads=1 --nocapture

stage "vm: ptp_kvm (under KVM, or nested: KVM inside a TCG guest)"
# Where KVM runs guests the ptp_kvm test runs under it; elsewhere it runs nested (the guest as L2
# under KVM inside a TCG guest, qemu/src/nested.rs). vm_nested forces the nesting: ptp_kvm in L2,
# probe against the kvm row, latency, a host step of L1's clock.
accel=$(cargo run --locked --quiet --release -p phc-harness -- accel)
echo "accel check: $accel"
start=$(date +%s)
cargo test --locked -p phc-harness --test vm_nested --test vm_kvm -- --ignored --test-threads=1 --nocapture
echo "ptp_kvm VM tests: $(( $(date +%s) - start )) s wall"

stage "vm: no QEMU left behind"
# A guest's folder is phc-qemu-<owner pid>-<role>-<random> (phc_qemu::tmp). A QEMU whose owner is gone has leaked (the
# launcher kills and reaps on drop, PR_SET_PDEATHSIG covers crashes). Guests of other, still
# running processes (a concurrent local run) are not ours to judge.
leaked=0
while read -r pid owner; do
    if [[ ! -d /proc/$owner ]]; then
        echo "vm-test: leaked QEMU pid $pid (owner $owner is gone)" >&2
        leaked=1
    fi
done < <(pgrep -af 'qemu-system' | sed -nE 's/^([0-9]+) .*phc-qemu-([0-9]+)-.*/\1 \2/p')
[[ $leaked -eq 0 ]] || exit 1
echo "none"
