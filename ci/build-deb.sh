#!/usr/bin/env bash
# Builds a Debian package of the harness with dpkg-deb (no debhelper, no new Rust dependency), for
# `apt install ./phc-harness_*.deb` on a test machine:
#   /usr/bin/phc-harness                         the harness: the static release build (the agent's)
#   /usr/lib/phc-harness/phc-harness-guest       the static guest agent (ci/build-agent.sh), found
#   /usr/lib/phc-harness/mock-phc-guest          by default there; the static CUSE mock beside it
#   /usr/lib/phc-harness/setup-vm.sh             the QEMU backend's host set-up (ci/setup-vm.sh)
#   /usr/lib/phc-harness/build-shim.sh           the VMBus shim's build (ci/build-shim.sh)
#   /usr/lib/phc-harness/kernel-matrix.sh        the kernel matrix (ci/kernel-matrix.sh)
#   /usr/lib/phc-harness/debian-mirror.sh        the Debian archive both take kernels from
#   /usr/share/phc-harness/vmbus-shim/           the shim's source (kmod/vmbus-shim, GPL-2.0)
#   /usr/share/phc-harness/scenarios/            the built-in scenarios as files (also built in)
#   /usr/share/man/man1/phc-harness.1.gz         the man page, made from every command's --help
#   /usr/share/doc/phc-harness/README.md(.gz), JSON.md.gz, copyright
# The harness is the static build the guest agent is a stripped copy of (ci/build-agent.sh): one
# release build serves both, and the package depends on nothing (the harness resolves no names
# and loads no modules, so a static glibc misses nothing). QEMU 10, chrony, linuxptp and
# busybox-static (what the QEMU backend's guest image copies) are recommended: the sim backend
# needs none of them. Prints the .deb's path on the last line of stdout. Honours
# CARGO_TARGET_DIR; PHC_DEB_OUT is the output folder (default $CARGO_TARGET_DIR/deb).
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf 'build-deb: %s\n' "$*" >&2; }
die() { printf 'build-deb: error: %s\n' "$*" >&2; exit 1; }
for t in cargo dpkg-deb gzip file; do
    command -v "$t" >/dev/null || die "$t not found"
done

target_dir=$(mkdir -p "${CARGO_TARGET_DIR:-target}" && cd "${CARGO_TARGET_DIR:-target}" && pwd)
out=${PHC_DEB_OUT:-$target_dir/deb}
version=$(awk -F'"' '/^\[workspace.package\]/ { w = 1 } w && /^version *=/ { print $2; exit }' Cargo.toml)
[[ -n $version ]] || die "no [workspace.package] version in Cargo.toml"
arch=$(dpkg --print-architecture)

log "the static harness, guest agent and mock (ci/build-agent.sh)"
agent=$(bash ci/build-agent.sh | tail -n1)
mock=$(dirname "$agent")/mock-phc-guest
bin=$(dirname "$agent")/phc-harness
[[ -x $agent && -x $mock && -x $bin ]] || die "ci/build-agent.sh left no $bin, $agent and $mock"
file -b "$bin" | grep -E 'static(-pie)? linked' >/dev/null || die "$bin is not static"

root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
install -d "$root/DEBIAN" "$root/usr/bin" "$root/usr/lib/phc-harness" \
    "$root/usr/share/phc-harness/scenarios" "$root/usr/share/man/man1" "$root/usr/share/doc/phc-harness"
strip --strip-debug -o "$root/usr/bin/phc-harness" "$bin"
install -m 0755 "$agent" "$root/usr/lib/phc-harness/phc-harness-guest"
install -m 0755 "$mock" "$root/usr/lib/phc-harness/mock-phc-guest"
install -m 0755 ci/setup-vm.sh "$root/usr/lib/phc-harness/setup-vm.sh"
# The VMBus shim (--phc hyperv: the kernel's own hv_utils) and its build, which setup-vm.sh runs.
install -m 0755 ci/build-shim.sh "$root/usr/lib/phc-harness/build-shim.sh"
install -m 0755 ci/kernel-matrix.sh "$root/usr/lib/phc-harness/kernel-matrix.sh"
install -m 0644 ci/debian-mirror.sh "$root/usr/lib/phc-harness/debian-mirror.sh"
install -d "$root/usr/share/phc-harness/vmbus-shim"
install -m 0644 kmod/vmbus-shim/* "$root/usr/share/phc-harness/vmbus-shim/"
# The scenario files, folders included (nested/), as the binary embeds them.
(cd harness/scenarios && find . -name '*.toml' -print0 | cpio -0pdm --quiet "$root/usr/share/phc-harness/scenarios")
install -m 0644 README.md "$root/usr/share/doc/phc-harness/README.md"
install -m 0644 harness/JSON.md "$root/usr/share/doc/phc-harness/JSON.md"
gzip -9n "$root/usr/share/doc/phc-harness/JSON.md"
cat >"$root/usr/share/doc/phc-harness/copyright" <<EOF
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: phc-harness

Files: *
License: MIT or Apache-2.0
 The harness, its guest agent and mock-phc are licensed under the MIT license or the
 Apache License 2.0, at your option. On Debian systems the Apache License 2.0 is in
 /usr/share/common-licenses/Apache-2.0.

Files: usr/share/phc-harness/vmbus-shim/*
License: GPL-2.0
 The VMBus shim is a Linux kernel module and uses GPL-only kernel exports: GPL version 2.
 On Debian systems the GPL version 2 is in /usr/share/common-licenses/GPL-2.
EOF

# The man page: NAME, SYNOPSIS and each command's --help, preformatted (no help2man needed).
man_escape() { sed -e 's/\\/\\e/g' -e 's/^\./\\\&./' -e "s/^'/\\\\\\&'/"; }
{
    printf '.TH PHC-HARNESS 1 "" "phc-harness %s" "User Commands"\n' "$version"
    printf '.SH NAME\nphc-harness \\- test harness for PTP hardware clocks in virtual machines\n'
    printf '.SH SYNOPSIS\n.B phc-harness\n.I COMMAND\n[\\fIOPTIONS\\fR]\n'
    printf '.SH DESCRIPTION\n.nf\n'
    "$bin" --help | man_escape
    printf '.fi\n'
    for cmd in $("$bin" --help | awk '/^Commands:/ { c = 1; next } c && /^  [a-z]/ { print $1 } /^$/ { c = 0 }'); do
        [[ $cmd == help ]] && continue
        printf '.SH "phc-harness %s"\n.nf\n' "$cmd"
        "$bin" "$cmd" --help | man_escape
        printf '.fi\n'
    done
    printf '.SH FILES\n.TP\n.I /usr/lib/phc-harness/phc-harness-guest\n'
    printf 'the static guest agent the QEMU backend installs in its guest image (\\fB--agent-bin\\fR or \\fBPHC_AGENT_BIN\\fR override it)\n'
    printf '.TP\n.I /usr/lib/phc-harness/setup-vm.sh\nthe QEMU backend'"'"'s host set-up: QEMU 10, chrony, linuxptp, busybox-static, ntpd and timesyncd for the guest, and the guest kernels (run as root)\n'
    printf '.TP\n.I /usr/share/phc-harness/scenarios\nthe built-in scenarios as files\n'
    printf '.TP\n.I /var/cache/phc-harness\nthe guest kernels (\\fBPHC_CACHE\\fR)\n'
    printf '.SH SEE ALSO\n/usr/share/doc/phc-harness/README.md\n'
} | gzip -9n >"$root/usr/share/man/man1/phc-harness.1.gz"

size=$(du -sk --exclude=DEBIAN "$root" | awk '{ print $1 }')
cat >"$root/DEBIAN/control" <<EOF
Package: phc-harness
Version: $version
Architecture: $arch
Maintainer: phc-harness developers <phc-harness@localhost>
Installed-Size: $size
Recommends: qemu-system-x86 (>= 1:10), chrony, linuxptp, busybox-static, kmod
Section: utils
Priority: optional
Homepage: https://github.com/phc-harness/phc-harness
Description: test harness for PTP hardware clocks in virtual machines
 Measures how long every way of reading a PHC (/dev/ptpN) takes, checks a device
 against what its kernel driver should do (Azure's hyperv clock, ptp_kvm, vmclock,
 NIC clocks) and runs recovery scenarios (a maintenance pause, a reboot, stale host
 samples, a migration) on a deterministic simulator or in a real Linux guest under
 QEMU with the real chronyd.
 .
 The simulator needs nothing else. The QEMU backend needs QEMU 10 or newer, chrony,
 linuxptp, busybox-static and Debian guest kernels: run
 /usr/lib/phc-harness/setup-vm.sh as root once to install and cache them.
EOF
mkdir -p "$out"
deb="$out/phc-harness_${version}_${arch}.deb"
dpkg-deb --root-owner-group -Zxz --build "$root" "$deb" >&2
log "$(dpkg-deb -f "$deb" Package Version | tr '\n' ' ')"
printf '%s\n' "$deb"
