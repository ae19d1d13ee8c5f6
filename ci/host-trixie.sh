#!/usr/bin/env bash
# The Debian 13 (trixie) host check: in a fresh trixie chroot (debootstrap, minbase) install the
# harness's .deb (ci/build-deb.sh) with apt, run the README's two commands for a packaged install
# (the set-up, then a QEMU scenario in virtual time) and the sim probe. Downloads a few hundred
# MB (the chroot, QEMU and its dependencies, the guest kernels), so ci/test.sh runs it only with
# PHC_HOST_CHECKS=1. Needs root; takes about 10 minutes here (2 cores), most of it apt.
#
# Environment: PHC_TRIXIE_ROOT (the chroot, default /var/tmp/phc-trixie; reused when it exists,
# removed first with PHC_TRIXIE_FRESH=1), PHC_DEBIAN_MIRROR (default http://deb.debian.org/debian),
# PHC_DEB (a built .deb; default: ci/build-deb.sh builds one).
set -euo pipefail
cd "$(dirname "$0")/.."

ROOT=${PHC_TRIXIE_ROOT:-/var/tmp/phc-trixie}
MIRROR=${PHC_DEBIAN_MIRROR:-http://deb.debian.org/debian}
log() { printf 'host-trixie: %s\n' "$*" >&2; }
die() { printf 'host-trixie: error: %s\n' "$*" >&2; exit 1; }
[[ $(id -u) -eq 0 ]] || die "must run as root (debootstrap, chroot, mounts)"

deb=${PHC_DEB:-}
if [[ -z $deb ]]; then
    deb=$(bash ci/build-deb.sh | tail -n1)
fi
[[ -f $deb ]] || die "no .deb at '$deb'"

if ! command -v debootstrap >/dev/null; then
    log "installing debootstrap"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
fi

mounts=()
cleanup() {
    local i
    for ((i = ${#mounts[@]} - 1; i >= 0; i--)); do umount -l "${mounts[i]}" 2>/dev/null || true; done
}
trap cleanup EXIT

if [[ ${PHC_TRIXIE_FRESH:-0} == 1 && -d $ROOT ]]; then
    log "removing $ROOT (PHC_TRIXIE_FRESH=1)"
    rm -rf --one-file-system "$ROOT"
fi
if [[ ! -x $ROOT/usr/bin/apt-get ]]; then
    log "debootstrap --variant=minbase trixie $ROOT $MIRROR"
    start=$(date +%s)
    rm -rf --one-file-system "$ROOT"
    debootstrap --variant=minbase trixie "$ROOT" "$MIRROR" >&2
    log "debootstrap: $(($(date +%s) - start)) s"
fi
grep -q 'VERSION_CODENAME=trixie' "$ROOT/etc/os-release" || die "$ROOT is no trixie root"

# Nothing a package installs may start in the chroot: its chronyd would steer the host's clock.
printf '#!/bin/sh\nexit 101\n' >"$ROOT/usr/sbin/policy-rc.d"
chmod 0755 "$ROOT/usr/sbin/policy-rc.d"
cp /etc/resolv.conf "$ROOT/etc/resolv.conf" 2>/dev/null || true
for m in proc sys dev dev/pts; do
    mkdir -p "$ROOT/$m"
    case $m in
        proc) mount -t proc proc "$ROOT/proc" ;;
        sys) mount -t sysfs sys "$ROOT/sys" ;;
        *) mount --bind "/$m" "$ROOT/$m" ;;
    esac
    mounts+=("$ROOT/$m")
done

mkdir -p "$ROOT/root/pkg"
rm -f "$ROOT"/root/pkg/*.deb
cp "$deb" "$ROOT/root/pkg/"
name=$(basename "$deb")

# The README's packaged form, inside the chroot: apt install the .deb, the set-up, a scenario.
# A chroot's own PHC_CACHE (inside it): nothing of the host's cache is used.
# shellcheck disable=SC2016
script='
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
t() { local s=$(date +%s); "$@"; echo "host-trixie: [$(( $(date +%s) - s )) s] $*" >&2; }
. /etc/os-release; echo "host-trixie: chroot: $PRETTY_NAME" >&2
t apt-get update -qq
t apt-get install -y -qq --no-install-recommends ./root/pkg/'"$name"' >/dev/null
dpkg -s phc-harness | sed -n "s/^\(Version\|Status\): /host-trixie: phc-harness \1: /p" >&2
cd /root
t phc-harness probe --backend sim --driver hyperv >/tmp/probe.txt
t phc-harness run azure-pause-30s --out /tmp/sim-runs >/dev/null
t /usr/lib/phc-harness/setup-vm.sh
t /usr/lib/phc-harness/setup-vm.sh >/tmp/setup-again.txt
grep -q "already cached" /tmp/setup-again.txt
t phc-harness run azure-pause-30s --backend qemu --out /tmp/qemu-runs
ls /tmp/qemu-runs/*/report.json
'
log "in the chroot: apt install ./$name, setup-vm.sh (twice), run azure-pause-30s --backend qemu"
start=$(date +%s)
chroot "$ROOT" /usr/bin/env -i HOME=/root TERM=dumb PHC_CACHE=/var/cache/phc-harness /bin/bash -c "$script"
log "PASS: Debian 13 chroot: package, set-up and a QEMU scenario in $(($(date +%s) - start)) s"
