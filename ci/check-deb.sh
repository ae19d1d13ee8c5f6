#!/usr/bin/env bash
# Checks the .deb ci/build-deb.sh made: its control fields, that every file a maintainer needs is
# in it (the binary, the static agent and mock, the set-up, the scenarios, the man page, the
# README), and that the binary of an extracted copy (dpkg-deb -x into a temp root) runs
# `run azure-pause-30s` and `probe --backend sim --driver hyperv`. Cheap: no install, no QEMU.
# Usage: ci/check-deb.sh [FILE.deb]   (default: ci/build-deb.sh builds one)
set -euo pipefail
cd "$(dirname "$0")/.."

die() { printf 'check-deb: error: %s\n' "$*" >&2; exit 1; }
deb=${1:-$(bash ci/build-deb.sh | tail -n1)}
[[ -f $deb ]] || die "no .deb at '$deb'"

[[ $(dpkg-deb -f "$deb" Package) == phc-harness ]] || die "$deb: Package is not phc-harness"
# Static binaries: no dependency, not even libc6.
[[ -z $(dpkg-deb -f "$deb" Depends) ]] || die "$deb: depends on $(dpkg-deb -f "$deb" Depends)"
[[ $(dpkg-deb -f "$deb" Recommends) == *'qemu-system-x86 (>= 1:10)'* ]] || die "$deb: QEMU 10 not recommended"

root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
dpkg-deb -x "$deb" "$root"
for f in usr/bin/phc-harness usr/lib/phc-harness/phc-harness-guest usr/lib/phc-harness/mock-phc-guest \
    usr/lib/phc-harness/setup-vm.sh usr/lib/phc-harness/build-shim.sh usr/lib/phc-harness/kernel-matrix.sh; do
    [[ -x $root/$f ]] || die "$deb: no executable /$f"
done
for f in usr/share/man/man1/phc-harness.1.gz usr/share/doc/phc-harness/README.md \
    usr/share/doc/phc-harness/copyright usr/share/phc-harness/scenarios/azure-pause-30s.toml \
    usr/share/phc-harness/scenarios/nested/kvm-pause-30s.toml usr/share/phc-harness/vmbus-shim/shim_bus.c \
    usr/share/phc-harness/vmbus-shim/Makefile usr/lib/phc-harness/debian-mirror.sh; do
    [[ -s $root/$f ]] || die "$deb: no /$f"
done
# Every built-in scenario is there as a file.
for s in $("$root/usr/bin/phc-harness" scenarios | awk '{ print $1 }'); do
    [[ -n $(find "$root/usr/share/phc-harness/scenarios" -name "$s.toml") ]] || die "$deb: scenario $s missing"
done
for f in usr/bin/phc-harness usr/lib/phc-harness/phc-harness-guest usr/lib/phc-harness/mock-phc-guest; do
    # grep reads the whole pipe (no -q): under pipefail an early exit is the writer's SIGPIPE.
    file -b "$root/$f" | grep -E 'static(-pie)? linked' >/dev/null || die "/$f is not static"
done
zcat "$root/usr/share/man/man1/phc-harness.1.gz" | grep '^\.SH "phc-harness run"' >/dev/null || die "the man page has no run section"
if command -v man >/dev/null; then
    man_out=$(man -l "$root/usr/share/man/man1/phc-harness.1.gz" 2>&1 >/dev/null || true)
    [[ -z $man_out ]] || die "man(1) warns about the page: $man_out"
fi

"$root/usr/bin/phc-harness" run azure-pause-30s --out "$root/runs" >"$root/run.txt" 2>&1 \
    || die "run azure-pause-30s failed: $(cat "$root/run.txt")"
[[ -s $root/runs/azure-pause-30s-sim-seed1/report.json ]] || die "run azure-pause-30s wrote no report"
"$root/usr/bin/phc-harness" probe --backend sim --driver hyperv >"$root/probe.txt" \
    || die "probe --backend sim --driver hyperv failed: $(cat "$root/probe.txt")"
echo "check-deb: $(basename "$deb") ($(stat -c %s "$deb") bytes): contents, man page, run azure-pause-30s and probe --backend sim --driver hyperv from an extracted copy: ok"
