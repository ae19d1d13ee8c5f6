#!/usr/bin/env bash
# Idempotent setup of what the QEMU backend needs on a Debian bookworm host:
# QEMU 10 from bookworm-backports (for `-device igb`), busybox-static, chrony and linuxptp for the
# guest image, and two Debian kernel lines unpacked into cache folders (`--kernel-line`):
#   6.12  bookworm's 6.12 (bookworm-security / bookworm-backports)  ->  $PHC_CACHE/kernel
#   7.2   trixie-backports' 7.2 (the vmclock driver, ptp_vmclock)  ->  $PHC_CACHE/kernel-7.2
# A second run is a no-op. The 7.2 packages come from a private apt configuration under
# $PHC_CACHE/apt-trixie-backports: the host's own apt sources never name trixie, so nothing on
# this bookworm host can be upgraded from it by accident.
#
# Environment: PHC_CACHE (default /var/cache/phc-harness); PHC_KERNEL_LINES (default "6.12 7.2")
# picks the lines to set up; PHC_KERNEL_PKG pins the 6.12 package, PHC_KERNEL_72_VERSION the 7.2
# release (e.g. 7.2.12+deb13-amd64). Needs root (apt, /etc/apt).
set -euo pipefail

CACHE="${PHC_CACHE:-/var/cache/phc-harness}"
BPO_FILE=/etc/apt/sources.list.d/bookworm-backports.sources
BPO_PACKAGES=(qemu-system-x86)
PACKAGES=(busybox-static chrony linuxptp kmod cpio xz-utils zstd file binutils)
# The generic flavour only (not the -rt- or -cloud- ones). PHC_KERNEL_PKG pins a package.
KERNEL_PATTERN='^linux-image-6\.12\.[0-9]+\+[^-]+-amd64-unsigned$'
# 7.2 is split in trixie-backports: the image (linux-binary-unsigned-*), the modules
# (linux-modules-*) and config/System.map (linux-base-*). Generic flavour only.
KERNEL72_PATTERN='^linux-binary-unsigned-7\.2\.[0-9]+\+[^-]+-amd64$'
KERNEL_LINES=${PHC_KERNEL_LINES:-6.12 7.2}

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

# --- 3. guest kernels --------------------------------------------------------------------------
# unpack_kernel DIR KVER DEB...: unpacks the packages, checks the image and modules are there
# (bookworm's layout: boot/vmlinuz-KVER, lib/modules/KVER; trixie's merged /usr:
# usr/lib/modules/KVER/vmlinuz.unsigned) and swaps DIR in whole, so an interrupted run never
# leaves a half cache. DIR holds vmlinuz, config, VERSION, PACKAGE and lib/modules/KVER.
unpack_kernel() {
    local dir=$1 kver=$2 x deb m
    shift 2
    x=$(mktemp -d)
    for deb in "$@"; do dpkg-deb -x "$deb" "$x" || die "unpacking $deb failed"; done
    local stage="$dir.new"
    rm -rf "$stage"
    mkdir -p "$stage/lib/modules"
    for m in "$x/boot/vmlinuz-$kver" "$x/usr/lib/modules/$kver/vmlinuz.unsigned" \
        "$x/usr/lib/modules/$kver/vmlinuz"; do
        if [[ -f $m ]]; then mv "$m" "$stage/vmlinuz"; break; fi
    done
    for m in "$x/boot/config-$kver" "$x/usr/lib/modules/$kver/config"; do
        if [[ -f $m ]]; then cp "$m" "$stage/config"; break; fi
    done
    for m in "$x/lib/modules/$kver" "$x/usr/lib/modules/$kver"; do
        if [[ -d $m/kernel ]]; then mv "$m" "$stage/lib/modules/$kver"; break; fi
    done
    rm -rf "$x"
    [[ -f $stage/vmlinuz && -d $stage/lib/modules/$kver/kernel ]] \
        || die "$* do not contain a vmlinuz and lib/modules/$kver/kernel"
    rm -f "$stage/lib/modules/$kver/vmlinuz" "$stage/lib/modules/$kver/config"
    # The .debs ship no modules.dep (postinst runs depmod); the image builder needs it.
    depmod -b "$stage" "$kver" || die "depmod for $kver failed"
    printf '%s\n' "$kver" >"$stage/VERSION"
    for deb in "$@"; do
        printf '%s %s\n' "$(dpkg-deb -f "$deb" Package)" "$(dpkg-deb -f "$deb" Version)"
    done >"$stage/PACKAGE"
    rm -rf "$dir"
    mv "$stage" "$dir"
}

# True when DIR holds a complete cached kernel.
kernel_cached() {
    local dir=$1
    [[ -s $dir/VERSION && -f $dir/vmlinuz && -f $dir/lib/modules/$(<"$dir/VERSION")/modules.dep ]]
}

# A scratch folder that user _apt (apt-get download drops to it) may write to.
download_dir() {
    local t
    t=$(mktemp -d)
    if id _apt >/dev/null 2>&1; then chown _apt "$t"; fi
    printf '%s\n' "$t"
}

# --- 3a. 6.12 (bookworm) -> $CACHE/kernel -----------------------------------------------------
setup_612() {
    local dir="$CACHE/kernel" pkg p policy kver tmp
    if kernel_cached "$dir"; then
        log "kernel 6.12: already cached ($(<"$dir/VERSION") in $dir)"
        return
    fi
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
    log "kernel 6.12: downloading $pkg"
    tmp=$(download_dir)
    (cd "$tmp" && apt-get download -qq "$pkg") || die "apt-get download $pkg failed"
    mkdir -p "$CACHE"
    unpack_kernel "$dir" "$kver" "$tmp"/*.deb
    rm -rf "$tmp"
    log "kernel 6.12: $kver cached in $dir"
}

# --- 3b. 7.2 (trixie-backports, private apt configuration) -> $CACHE/kernel-7.2 ---------------
setup_72() {
    local dir="$CACHE/kernel-7.2" apt="$CACHE/apt-trixie-backports" kver p policy tmp
    if kernel_cached "$dir"; then
        log "kernel 7.2: already cached ($(<"$dir/VERSION") in $dir)"
        return
    fi
    local mirror
    mirror=$(debian_mirror | head -n1)
    [[ -n $mirror ]] || die "no apt source for suite 'bookworm' found; cannot derive a mirror"
    mkdir -p "$apt/etc/sources.list.d" "$apt/etc/preferences.d" "$apt/lists/partial" \
        "$apt/cache/archives/partial"
    : >"$apt/etc/sources.list"
    cat >"$apt/etc/sources.list.d/trixie-backports.sources" <<EOF
Types: deb
URIs: $mirror
Suites: trixie-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
    local -a o=(-o "Dir::Etc::SourceList=$apt/etc/sources.list"
        -o "Dir::Etc::SourceParts=$apt/etc/sources.list.d" -o "Dir::State::Lists=$apt/lists"
        -o "Dir::Cache=$apt/cache" -o "Dir::Etc::Preferences=/dev/null"
        -o "Dir::Etc::PreferencesParts=$apt/etc/preferences.d" -o "APT::Architectures::=amd64")
    log "kernel 7.2: apt-get update (trixie-backports, private lists in $apt)"
    apt-get "${o[@]}" update -qq || die "apt-get update of trixie-backports failed"
    kver=${PHC_KERNEL_72_VERSION:-}
    if [[ -z $kver ]]; then
        for p in $(apt-cache "${o[@]}" pkgnames linux-binary-unsigned-7.2 | grep -E "$KERNEL72_PATTERN" \
            | sort -rV); do
            policy=$(apt-cache "${o[@]}" policy "$p")
            if [[ $policy =~ Candidate:\ [0-9] ]]; then kver=${p#linux-binary-unsigned-}; break; fi
        done
    fi
    [[ -n $kver ]] || die "trixie-backports offers no linux-binary-unsigned-7.2.*-amd64 package"
    local -a pkgs=("linux-binary-unsigned-$kver" "linux-modules-$kver" "linux-base-$kver")
    log "kernel 7.2: downloading ${pkgs[*]}"
    tmp=$(download_dir)
    (cd "$tmp" && apt-get "${o[@]}" download -qq "${pkgs[@]}") \
        || die "apt-get download ${pkgs[*]} failed"
    unpack_kernel "$dir" "$kver" "$tmp"/*.deb
    rm -rf "$tmp"
    log "kernel 7.2: $kver cached in $dir"
}

ready=()
for line in $KERNEL_LINES; do
    case $line in
        6.12) setup_612; ready+=("6.12=$(<"$CACHE/kernel/VERSION")") ;;
        7.2) setup_72; ready+=("7.2=$(<"$CACHE/kernel-7.2/VERSION")") ;;
        *) die "unknown kernel line '$line' in PHC_KERNEL_LINES (known: 6.12 7.2)" ;;
    esac
done

log "ready: qemu $qemu_ver, kernels ${ready[*]} in $CACHE"
