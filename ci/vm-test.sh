#!/usr/bin/env bash
# The VM test stage: set up QEMU and the guest kernel, build the static guest agent, then run the
# tests that boot real guests under QEMU (TCG), in lanes (ci/lanes.sh). Prints all test output;
# exits non-zero on any failure. Needs root (ci/setup-vm.sh installs packages). The lanes take
# about 10 minutes on 2 cores.
#
# Usage: ci/vm-test.sh [JOB...]   JOBs (ci/lanes.sh's) run in the lanes beside the VM tests
#                                 (ci/test.sh gives its fuzzer, sim suite and package)
#
# Environment: CARGO_TARGET_DIR (honoured), PHC_CACHE (kernel cache, see ci/setup-vm.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

# Each stage's header says how long the run has taken so far (PHC_CI_START: the whole ci/test.sh).
export PHC_CI_START=${PHC_CI_START:-$(date +%s)}
stage() { printf '\n== %s == (at %d s)\n' "$*" "$(($(date +%s) - PHC_CI_START))"; }

stage "vm: setup (QEMU, guest kernel)"
bash ci/setup-vm.sh

stage "vm: the VMBus shim for the kernel's own hv_utils (a no-op when setup-vm.sh built it)"
# setup-vm.sh carries on where the shim cannot be built; the hv_utils tests cannot, so here a
# failure stops the stage with build-shim.sh's own reason.
bash ci/build-shim.sh

stage "vm: static guest agent"
agent=$(bash ci/build-agent.sh | tail -n1)
[[ -x $agent ]] || { echo "vm-test: ci/build-agent.sh printed no agent binary ('$agent')" >&2; exit 1; }
export PHC_AGENT_BIN=$agent
echo "PHC_AGENT_BIN=$PHC_AGENT_BIN"
# The harness the suite, the kernel matrix and the accel check run: the static release build the
# agent is a copy of (ci/test.sh's), unless PHC_HARNESS names another.
export PHC_HARNESS=${PHC_HARNESS:-${agent%-guest}}
echo "PHC_HARNESS=$PHC_HARNESS"

stage "vm: ptp_kvm's accel check"
# Where KVM runs guests the ptp_kvm test runs under it; elsewhere it runs nested (the guest as L2
# under KVM inside a TCG guest, qemu/src/nested.rs). Decided once here (a trial guest, cached).
echo "accel check: $("$PHC_HARNESS" accel)"
# Bookworm's 6.1 kernels (generic and cloud) and their headers, which the kernel matrix and
# vm_kernel both use: downloaded here, once, not by two lanes at the same time.
bash ci/kernel-matrix.sh --fetch

stage "vm: the guest tests, in lanes (one per CPU, longest first; ci/lanes.sh)"
# What runs, each test of a binary a job of its own:
#   phc-qemu vm, vm_cuse, vm_lines     the guest itself, the CUSE mock, the kernel lines
#                                      (6.12, 7.2: modules, igb's PHC, /dev/vmclock0 on 7.2)
#   vm_vmclock                         a 7.2 guest saved and restored, the snapshot-restore scenario
#                                      shortened, in real time. The rest runs on 6.12 only (7.2 is
#                                      a subset, for CI time).
#   vm_scenarios                       harness scenarios, probe and latency on the qemu backend
#   vm_hyperv                          Azure's hyperv clock: the kernel's own hv_utils on the VMBus
#                                      shim (6.12 module, 7.2 livepatch) and the CUSE mock, with
#                                      the real chronyd
#   vm_kernel                          your own kernel (--kernel-deb, --kernel/--modules)
#   vm_judging                         five real runs against the sim's model, and against it broken
#   vm_ntp                             the guide's NTP configurations (chronyd NTP+PHC prefer
#                                      either way, ntpd, timesyncd) and a misbehaving server
#   vm_accel                           acceleration decided once (trial guest, cache)
#   vm_nested, vm_kvm                  ptp_kvm under KVM, or nested (KVM inside a TCG guest)
#   job:kernel-matrix                  bookworm's 6.1 beside 6.12, each kernel's own hv_utils
#   job:qemu-suite                     the whole QEMU suite against results/baselines/qemu
# One guest at a time per lane: TCG is CPU-bound, and a lane has its CPU to itself.
bash ci/lanes.sh "${TMPDIR:-/tmp}/phc-harness-ci-lanes" "$@" \
    test:phc-qemu:vm test:phc-qemu:vm_cuse test:phc-qemu:vm_lines \
    test:phc-harness:vm_vmclock test:phc-harness:vm_scenarios test:phc-harness:vm_hyperv \
    test:phc-harness:vm_kernel test:phc-harness:vm_judging test:phc-harness:vm_ntp \
    test:phc-harness:vm_accel test:phc-harness:vm_nested test:phc-harness:vm_kvm \
    job:kernel-matrix job:qemu-suite

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
