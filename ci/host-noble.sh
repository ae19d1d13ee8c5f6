#!/usr/bin/env bash
# The Ubuntu 24.04 (noble) host check, as far as it goes without a QEMU 10 for noble: in a noble
# chroot (debootstrap from archive.ubuntu.com, main and universe) ci/setup-vm.sh must
#   1. stop with its one line about QEMU (noble's is 8.2), installing nothing, and
#   2. with a stand-in `qemu-system-x86_64` first in PATH that reports version 10 and an igb
#      device (the chroot's /usr/local/bin only), install chrony, linuxptp, busybox-static and
#      debian-archive-keyring from noble and cache both guest kernels from Debian's archive.
# No guest boots: there is no real QEMU 10. Not in ci/test.sh; run it by hand (root; a few
# hundred MB). Environment: PHC_NOBLE_ROOT (default /var/tmp/phc-noble; reused when it exists).
set -euo pipefail
cd "$(dirname "$0")/.."

ROOT=${PHC_NOBLE_ROOT:-/var/tmp/phc-noble}
MIRROR=${PHC_UBUNTU_MIRROR:-http://archive.ubuntu.com/ubuntu}
log() { printf 'host-noble: %s\n' "$*" >&2; }
die() { printf 'host-noble: error: %s\n' "$*" >&2; exit 1; }
[[ $(id -u) -eq 0 ]] || die "must run as root (debootstrap, chroot, mounts)"

mounts=()
cleanup() {
    local i
    for ((i = ${#mounts[@]} - 1; i >= 0; i--)); do umount -l "${mounts[i]}" 2>/dev/null || true; done
}
trap cleanup EXIT

if [[ ! -x $ROOT/usr/bin/apt-get ]]; then
    export DEBIAN_FRONTEND=noninteractive
    command -v debootstrap >/dev/null || apt-get install -y -qq debootstrap >/dev/null
    [[ -f /usr/share/keyrings/ubuntu-archive-keyring.gpg ]] || apt-get install -y -qq ubuntu-keyring >/dev/null
    # Debian 12's debootstrap has no noble script; gutsy's is the one every Ubuntu release uses.
    log "debootstrap --variant=minbase noble $ROOT $MIRROR"
    debootstrap --variant=minbase --keyring=/usr/share/keyrings/ubuntu-archive-keyring.gpg \
        noble "$ROOT" "$MIRROR" /usr/share/debootstrap/scripts/gutsy >&2
fi
grep -q 'VERSION_CODENAME=noble' "$ROOT/etc/os-release" || die "$ROOT is no noble root"
printf 'deb %s noble main universe\ndeb %s noble-updates main universe\n' "$MIRROR" "$MIRROR" \
    >"$ROOT/etc/apt/sources.list"
printf '#!/bin/sh\nexit 101\n' >"$ROOT/usr/sbin/policy-rc.d"
chmod 0755 "$ROOT/usr/sbin/policy-rc.d"
cp /etc/resolv.conf "$ROOT/etc/resolv.conf" 2>/dev/null || true
for m in proc sys dev; do
    mount --bind "/$m" "$ROOT/$m"
    mounts+=("$ROOT/$m")
done
install -m 0755 ci/setup-vm.sh "$ROOT/root/setup-vm.sh"
install -m 0644 ci/debian-mirror.sh "$ROOT/root/debian-mirror.sh"
rm -f "$ROOT/usr/local/bin/qemu-system-x86_64"

run() { chroot "$ROOT" /usr/bin/env -i HOME=/root PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin PHC_CACHE=/var/cache/phc-harness "$@"; }

log "1. setup-vm.sh without a QEMU 10"
set +e
out=$(run bash /root/setup-vm.sh 2>&1)
rc=$?
set -e
printf '%s\n' "$out" >&2
[[ $rc -ne 0 && $out == *"needs 10 or newer"* ]] || die "expected the one QEMU line and a failure (rc $rc)"

log "2. setup-vm.sh with a stand-in QEMU 10 first in PATH (no guest boots)"
cat >"$ROOT/usr/local/bin/qemu-system-x86_64" <<'EOF'
#!/bin/sh
# A stand-in for ci/host-noble.sh: the version and device list a QEMU 10 prints.
case "$*" in
    --version) echo "QEMU emulator version 10.0.0 (stand-in)" ;;
    "-device help") echo 'name "igb", bus PCI, desc "Intel 82576 Gigabit Ethernet Controller"' ;;
    *) echo "stand-in QEMU: cannot run guests" >&2; exit 1 ;;
esac
EOF
chmod 0755 "$ROOT/usr/local/bin/qemu-system-x86_64"
run bash /root/setup-vm.sh >&2
run bash /root/setup-vm.sh >&2
for p in chrony linuxptp busybox-static debian-archive-keyring; do
    v=$(run dpkg-query -W -f='${Version}' "$p") || die "$p not installed"
    log "installed from noble: $p $v"
done
rm -f "$ROOT/usr/local/bin/qemu-system-x86_64"
log "PASS: Ubuntu 24.04 chroot: the QEMU line, noble's packages, both guest kernels (no guest booted)"
