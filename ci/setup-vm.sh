#!/usr/bin/env bash
# Idempotent setup of what the QEMU backend needs on a Debian bookworm host:
# QEMU 10 from bookworm-backports (for `-device igb`), busybox-static, chrony and linuxptp for the
# guest image, and Debian's 6.12 kernel unpacked into a cache folder. A second run is a no-op.
#
# Environment: PHC_CACHE (default /var/cache/phc-harness). Needs root (apt, /etc/apt).
set -euo pipefail

CACHE="${PHC_CACHE:-/var/cache/phc-harness}"
KDIR="$CACHE/kernel"
BPO_FILE=/etc/apt/sources.list.d/bookworm-backports.sources
BPO_PACKAGES=(qemu-system-x86)
PACKAGES=(busybox-static chrony linuxptp kmod cpio xz-utils zstd file binutils)
# The generic flavour only (not the -rt- or -cloud- ones). PHC_KERNEL_PKG pins a package.
KERNEL_PATTERN='^linux-image-6\.12\.[0-9]+\+[^-]+-amd64-unsigned$'

log() { printf 'setup-vm: %s\n' "$*"; }
die() { printf 'setup-vm: error: %s\n' "$*" >&2; exit 1; }
trap 'die "failed at line $LINENO: $BASH_COMMAND"' ERR

[[ $(id -u) -eq 0 ]] || die "must run as root (installs packages)"
command -v apt-get >/dev/null || die "apt-get not found: this script supports Debian only"
# shellcheck source=/dev/null
codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
[[ $codename == bookworm ]] || die "expected Debian bookworm, found '${codename:-unknown}'"

export DEBIAN_FRONTEND=noninteractive
apt_updated=0
apt_update() {
    if [[ $apt_updated -eq 0 ]]; then
        log "apt-get update"
        apt-get update -qq || die "apt-get update failed"
        apt_updated=1
    fi
}

# True when any configured apt source already names bookworm-backports.
backports_configured() {
    grep -rqsE '(^|[[:space:]])bookworm-backports([[:space:]]|$)' \
        /etc/apt/sources.list /etc/apt/sources.list.d/ 2>/dev/null
}

# The mirror URL the host already uses for the main bookworm suite (deb822 or one-line format).
debian_mirror() {
    local f
    for f in /etc/apt/sources.list.d/*.sources; do
        [[ -f $f ]] || continue
        awk '
            /^[[:space:]]*$/ { if (uri != "" && suite) { print uri; exit } uri = ""; suite = 0; next }
            /^URIs:/ { uri = $2 }
            /^Suites:/ { for (i = 2; i <= NF; i++) if ($i == "bookworm") suite = 1 }
            END { if (uri != "" && suite) print uri }
        ' "$f" | head -n1
    done
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [[ -f $f ]] || continue
        awk '$1 == "deb" { for (i = 2; i <= NF; i++) if ($i !~ /^\[/ && $i ~ /:\/\//) {
                 if ($(i + 1) == "bookworm") print $i; break } }' "$f"
    done
}

# --- 1. bookworm-backports -------------------------------------------------------------------
if backports_configured; then
    log "bookworm-backports: already configured"
else
    mirror=$(debian_mirror | head -n1)
    [[ -n $mirror ]] || die "no apt source for suite 'bookworm' found; cannot derive a mirror"
    log "bookworm-backports: adding $BPO_FILE (mirror $mirror)"
    cat >"$BPO_FILE" <<EOF
Types: deb
URIs: $mirror
Suites: bookworm-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
    apt_updated=0
    apt_update
fi

# --- 2. packages -------------------------------------------------------------------------------
installed() { [[ $(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null) == installed ]]; }

missing_bpo=()
for p in "${BPO_PACKAGES[@]}"; do installed "$p" || missing_bpo+=("$p"); done
missing=()
for p in "${PACKAGES[@]}"; do installed "$p" || missing+=("$p"); done

chronyd_before=$(pgrep -x chronyd || true)
if ((${#missing_bpo[@]} + ${#missing[@]} == 0)); then
    log "packages: already installed (${BPO_PACKAGES[*]} ${PACKAGES[*]})"
else
    apt_update
    if ((${#missing_bpo[@]})); then
        log "installing from bookworm-backports: ${missing_bpo[*]}"
        apt-get install -y -qq --no-install-recommends -t bookworm-backports "${missing_bpo[@]}" \
            >/dev/null || die "installing ${missing_bpo[*]} from bookworm-backports failed"
    fi
    if ((${#missing[@]})); then
        log "installing: ${missing[*]}"
        apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null \
            || die "installing ${missing[*]} failed"
    fi
fi

# chrony is installed for its binaries (copied into the guest image). Where the package's
# maintainer scripts started the host's own chronyd, stop it again: the tests must never steer
# the host clock.
if [[ -z $chronyd_before ]] && pgrep -x chronyd >/dev/null; then
    log "stopping the host chronyd the chrony package just started"
    invoke-rc.d chrony stop >/dev/null 2>&1 || pkill -x chronyd || true
fi

qemu_ver=$(dpkg-query -W -f='${Version}' qemu-system-x86)
if ! [[ $qemu_ver =~ ^([0-9]+:)?([0-9]+) ]] || ((BASH_REMATCH[2] < 10)); then
    die "qemu-system-x86 $qemu_ver is older than 10 (no -device igb)"
fi
devices=$(qemu-system-x86_64 -device help 2>/dev/null) || die "qemu-system-x86_64 does not run"
[[ $devices == *'"igb"'* ]] || die "qemu-system-x86_64 has no igb device"

# --- 3. guest kernel ---------------------------------------------------------------------------
if [[ -s $KDIR/VERSION && -f $KDIR/vmlinuz && -f $KDIR/lib/modules/$(<"$KDIR/VERSION")/modules.dep ]]
then
    log "kernel: already cached ($(<"$KDIR/VERSION") in $KDIR)"
else
    apt_update
    # Newest 6.12 unsigned image that a configured suite still offers (bookworm-security or
    # bookworm-backports); the package lists also name superseded ones with no candidate.
    pkg=${PHC_KERNEL_PKG:-}
    if [[ -z $pkg ]]; then
        for p in $(apt-cache pkgnames linux-image-6.12 | grep -E "$KERNEL_PATTERN" | sort -rV); do
            # Captured, not piped into grep -q: with pipefail an early grep exit fails the pipe.
            policy=$(apt-cache policy "$p")
            if [[ $policy =~ Candidate:\ [0-9] ]]; then pkg=$p; break; fi
        done
    fi
    [[ -n $pkg ]] || die "no linux-image-6.12.*-amd64-unsigned package available"
    kver=${pkg#linux-image-}
    kver=${kver%-unsigned}
    log "kernel: downloading $pkg"
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    # apt-get download drops to user _apt, which must be able to write here.
    if id _apt >/dev/null 2>&1; then chown _apt "$tmp"; fi
    (cd "$tmp" && apt-get download -qq "$pkg") || die "apt-get download $pkg failed"
    deb=$(ls "$tmp"/*.deb)
    mkdir -p "$tmp/x"
    dpkg-deb -x "$deb" "$tmp/x" || die "unpacking $deb failed"
    [[ -f $tmp/x/boot/vmlinuz-$kver && -d $tmp/x/lib/modules/$kver ]] \
        || die "$pkg does not contain boot/vmlinuz-$kver and lib/modules/$kver"
    # Build next to the final place and swap in, so an interrupted run never leaves a half cache.
    mkdir -p "$CACHE"
    stage="$CACHE/kernel.new"
    rm -rf "$stage"
    mkdir -p "$stage/lib"
    mv "$tmp/x/boot/vmlinuz-$kver" "$stage/vmlinuz"
    cp "$tmp/x/boot/config-$kver" "$stage/config" 2>/dev/null || true
    mv "$tmp/x/lib/modules" "$stage/lib/modules"
    # The .deb ships no modules.dep (its postinst runs depmod); the image builder needs it.
    depmod -b "$stage" "$kver" || die "depmod for $kver failed"
    printf '%s\n' "$kver" >"$stage/VERSION"
    printf '%s\n' "$(dpkg-deb -f "$deb" Package) $(dpkg-deb -f "$deb" Version)" >"$stage/PACKAGE"
    rm -rf "$KDIR"
    mv "$stage" "$KDIR"
    log "kernel: $kver cached in $KDIR"
fi

log "ready: qemu $qemu_ver, kernel $(<"$KDIR/VERSION") at $KDIR"
