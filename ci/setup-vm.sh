#!/usr/bin/env bash
# Idempotent setup of what the QEMU backend needs on its host: QEMU 10 or newer (for `-device igb`
# with its PHC, and `-device vmclock`), busybox-static, chrony and linuxptp for the guest image,
# and two Debian kernel lines unpacked into cache folders (`--kernel-line`):
#   6.12  bookworm's 6.12 (bookworm-security)                      ->  $PHC_CACHE/kernel
#   7.2   trixie-backports' 7.2 (the vmclock driver, ptp_vmclock)  ->  $PHC_CACHE/kernel-7.2
# Hosts (the host's own packages; the kernels are the guest's, always from Debian's archive):
#   Debian 12 bookworm  QEMU from bookworm-backports, the rest from bookworm
#   Debian 13 trixie    everything from trixie
#   Ubuntu 24.04 noble  chrony, linuxptp (universe), busybox-static from noble; noble's QEMU is
#                       8.2, so a QEMU 10 or newer must be first in PATH (see README.md)
# A qemu-system-x86_64 of version 10 or newer already first in PATH is used on any supported
# host, whatever its source. Any other host stops with one line saying what to provide.
# A second run is a no-op. The kernels come through private apt configurations under
# $PHC_CACHE/apt-* (on a bookworm host the 6.12 from its own sources): the host's own apt sources
# never name another release, so nothing on the host can be upgraded from it by accident.
#
# Last, ci/build-shim.sh builds the VMBus shim (kmod/vmbus-shim) into each kernel's cache; where
# it cannot, this script still succeeds and says why (PHC_BUILD_SHIM=0 skips it).
# Environment: PHC_CACHE (default /var/cache/phc-harness); PHC_KERNEL_LINES (default "6.12 7.2")
# picks the lines to set up; PHC_KERNEL_PKG pins the 6.12 package, PHC_KERNEL_72_VERSION the 7.2
# release (e.g. 7.2.12+deb13-amd64); PHC_DEBIAN_MIRROR and PHC_DEBIAN_SECURITY_MIRROR the Debian
# archive the kernels come from (default: the host's Debian mirror, else deb.debian.org).
# Needs root (apt, /etc/apt).
set -euo pipefail

CACHE="${PHC_CACHE:-/var/cache/phc-harness}"
PACKAGES=(busybox-static chrony linuxptp kmod cpio xz-utils zstd file binutils)
# The generic flavour only (not the -rt- or -cloud- ones). PHC_KERNEL_PKG pins a package.
KERNEL_PATTERN='^linux-image-6\.12\.[0-9]+\+[^-]+-amd64-unsigned$'
# 7.2 is split in trixie-backports: the image (linux-binary-unsigned-*), the modules
# (linux-modules-*) and config/System.map (linux-base-*). Generic flavour only.
KERNEL72_PATTERN='^linux-binary-unsigned-7\.2\.[0-9]+\+[^-]+-amd64$'
KERNEL_LINES=${PHC_KERNEL_LINES:-6.12 7.2}
QEMU_MIN=10

log() { printf 'setup-vm: %s\n' "$*"; }
die() { printf 'setup-vm: error: %s\n' "$*" >&2; exit 1; }
trap 'die "failed at line $LINENO: $BASH_COMMAND"' ERR

[[ $(id -u) -eq 0 ]] || die "must run as root (installs packages)"

# --- 0. the host -------------------------------------------------------------------------------
os_id=unknown
codename=
pretty=unknown
if [[ -r /etc/os-release ]]; then
    # shellcheck source=/dev/null
    os_id=$(. /etc/os-release && echo "${ID:-unknown}")
    # shellcheck source=/dev/null
    codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
    # shellcheck source=/dev/null
    pretty=$(. /etc/os-release && echo "${PRETTY_NAME:-$os_id}")
fi

# The major version of the qemu-system-x86_64 first in PATH, or nothing.
qemu_major() {
    local v
    v=$(qemu-system-x86_64 --version 2>/dev/null | head -n1) || return 0
    if [[ $v =~ version\ ([0-9]+)\. ]]; then printf '%s\n' "${BASH_REMATCH[1]}"; fi
    return 0
}
qemu_path_ok() {
    local m
    m=$(qemu_major)
    [[ -n $m ]] && ((m >= QEMU_MIN))
}

# How this host gets QEMU: an apt suite (bookworm-backports), "main" (the default suites), or
# "path" (a QEMU 10 or newer already first in PATH, or required there).
UNSUPPORTED_HELP="the QEMU backend's set-up supports Debian 12 (bookworm), Debian 13 (trixie) and \
Ubuntu 24.04 (noble); elsewhere provide it yourself: QEMU $QEMU_MIN or newer as \
qemu-system-x86_64 first in PATH, chronyd/chronyc and phc2sys/phc_ctl in /usr/sbin and /usr/bin, \
a static busybox at /bin/busybox, and the guest kernels in PHC_CACHE (copy a PHC_CACHE this \
script prepared on a supported host, or give each command --kernel-deb FILE.deb)"
qemu_from=
case "$os_id/$codename" in
    debian/bookworm) qemu_from=bookworm-backports ;;
    debian/trixie) qemu_from=main ;;
    ubuntu/noble) qemu_from=path ;;
    *) die "unsupported host '$pretty': $UNSUPPORTED_HELP" ;;
esac
command -v apt-get >/dev/null || die "apt-get not found on '$pretty': $UNSUPPORTED_HELP"
if qemu_path_ok; then
    qemu_from=path
elif [[ $qemu_from == path ]]; then
    have=$(qemu_major)
    die "'$pretty' ships QEMU 8.2 (qemu-system-x86_64 in PATH: ${have:-none}); the QEMU backend \
needs $QEMU_MIN or newer: put a qemu-system-x86_64 of version $QEMU_MIN or newer first in PATH \
(QEMU's source: ./configure --target-list=x86_64-softmmu && make && make install, into \
/usr/local/bin) and run this script again"
fi
if [[ $qemu_from == path ]]; then
    log "host: $pretty; QEMU: $(command -v qemu-system-x86_64) (first in PATH)"
else
    log "host: $pretty; QEMU: qemu-system-x86 from $qemu_from"
fi

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

# debian_mirror, kernel_mirror, security_mirror: the Debian archive the kernels come from.
# shellcheck source=ci/debian-mirror.sh
. "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/debian-mirror.sh"

# --- 1. bookworm-backports (Debian 12 only) --------------------------------------------------
if [[ $qemu_from == bookworm-backports ]]; then
    if backports_configured; then
        log "bookworm-backports: already configured"
    else
        BPO_FILE=/etc/apt/sources.list.d/bookworm-backports.sources
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
fi

# --- 2. packages -------------------------------------------------------------------------------
installed() { [[ $(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null) == installed ]]; }

# Ubuntu: the Debian archive's keyring (universe), for the guest kernels' private apt sources.
if [[ $os_id == ubuntu ]]; then PACKAGES+=(debian-archive-keyring); fi
want_qemu=0
if [[ $qemu_from != path ]] && ! installed qemu-system-x86; then want_qemu=1; fi
missing=()
for p in "${PACKAGES[@]}"; do installed "$p" || missing+=("$p"); done

# Running chronyd processes, from /proc (a minimal system has no pgrep before procps).
chronyd_pids() { grep -lx chronyd /proc/[0-9]*/comm 2>/dev/null || true; }
chronyd_before=$(chronyd_pids)
if ((want_qemu + ${#missing[@]} == 0)); then
    log "packages: already installed (${PACKAGES[*]})"
else
    apt_update
    if ((want_qemu)); then
        target=()
        if [[ $qemu_from != main ]]; then target=(-t "$qemu_from"); fi
        log "installing qemu-system-x86 from $qemu_from"
        apt-get install -y -qq --no-install-recommends "${target[@]}" qemu-system-x86 \
            >/dev/null || die "installing qemu-system-x86 from $qemu_from failed"
    fi
    if ((${#missing[@]})); then
        hint=
        if [[ $os_id == ubuntu ]]; then hint=" (linuxptp and debian-archive-keyring are in universe: enable it)"; fi
        log "installing: ${missing[*]}"
        apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null \
            || die "installing ${missing[*]} failed$hint"
    fi
fi

# chrony is installed for its binaries (copied into the guest image). Where the package's
# maintainer scripts started the host's own chronyd, stop it again: the tests must never steer
# the host clock.
if [[ -z $chronyd_before && -n $(chronyd_pids) ]]; then
    log "stopping the host chronyd the chrony package just started"
    if ! invoke-rc.d chrony stop >/dev/null 2>&1; then
        for c in $(chronyd_pids); do
            c=${c#/proc/}
            kill "${c%/comm}" 2>/dev/null || true
        done
    fi
fi

qemu_ver=$(qemu-system-x86_64 --version 2>/dev/null | head -n1) || die "qemu-system-x86_64 does not run"
qemu_path_ok || die "$qemu_ver: older than $QEMU_MIN (the QEMU backend needs $QEMU_MIN or newer)"
qemu_ver=${qemu_ver#QEMU emulator version }
devices=$(qemu-system-x86_64 -device help 2>/dev/null) || die "qemu-system-x86_64 does not run"
[[ $devices == *'"igb"'* ]] || die "qemu-system-x86_64 has no igb device"
for b in /bin/busybox /usr/sbin/chronyd /usr/bin/chronyc /usr/sbin/phc2sys /usr/sbin/phc_ctl; do
    [[ -x $b ]] || die "$b missing after the install (the guest image copies it)"
done

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

# private_apt NAME URI SUITE: a private apt configuration under $CACHE/apt-NAME naming only
# SUITE of the Debian archive at URI, its lists updated; sets APT_O to the options that use it.
# The host's own sources and preferences never see it.
APT_O=()
private_apt() {
    local name=$1 uri=$2 suite=$3 apt="$CACHE/apt-$1"
    mkdir -p "$apt/etc/sources.list.d" "$apt/etc/preferences.d" "$apt/lists/partial" \
        "$apt/cache/archives/partial"
    : >"$apt/etc/sources.list"
    printf 'Types: deb\nURIs: %s\nSuites: %s\nComponents: main\nSigned-By: %s\n' "$uri" "$suite" \
        /usr/share/keyrings/debian-archive-keyring.gpg >"$apt/etc/sources.list.d/$name.sources"
    APT_O=(-o "Dir::Etc::SourceList=$apt/etc/sources.list"
        -o "Dir::Etc::SourceParts=$apt/etc/sources.list.d" -o "Dir::State::Lists=$apt/lists"
        -o "Dir::Cache=$apt/cache" -o "Dir::Etc::Preferences=/dev/null"
        -o "Dir::Etc::PreferencesParts=$apt/etc/preferences.d" -o "APT::Architectures::=amd64")
    log "apt-get update ($suite from $uri, private lists in $apt)"
    apt-get "${APT_O[@]}" update -qq || die "apt-get update of $suite ($uri) failed"
}

# newest_candidate PREFIX PATTERN: the newest package whose name starts with PREFIX and matches
# PATTERN that the configured suites still offer (the lists also name superseded ones with no
# candidate), with APT_O's configuration.
newest_candidate() {
    local p policy
    for p in $(apt-cache "${APT_O[@]}" pkgnames "$1" | grep -E "$2" | sort -rV); do
        # Captured, not piped into grep -q: with pipefail an early grep exit fails the pipe.
        policy=$(apt-cache "${APT_O[@]}" policy "$p")
        if [[ $policy =~ Candidate:\ [0-9] ]]; then
            printf '%s\n' "$p"
            return
        fi
    done
}

# --- 3a. 6.12 (bookworm-security) -> $CACHE/kernel --------------------------------------------
setup_612() {
    local dir="$CACHE/kernel" pkg kver tmp sec
    if kernel_cached "$dir"; then
        log "kernel 6.12: already cached ($(<"$dir/VERSION") in $dir)"
        return
    fi
    mkdir -p "$CACHE"
    if [[ $os_id/$codename == debian/bookworm ]]; then
        # The host's own suites: bookworm-security (and bookworm-backports) carry it.
        APT_O=()
        apt_update
    else
        sec=${PHC_DEBIAN_SECURITY_MIRROR:-}
        if [[ -z $sec ]]; then
            sec=$(kernel_mirror)
            sec=${sec%/}-security
        fi
        private_apt bookworm-security "$sec" bookworm-security
    fi
    pkg=${PHC_KERNEL_PKG:-}
    [[ -n $pkg ]] || pkg=$(newest_candidate linux-image-6.12 "$KERNEL_PATTERN")
    [[ -n $pkg ]] || die "no linux-image-6.12.*-amd64-unsigned package available"
    kver=${pkg#linux-image-}
    kver=${kver%-unsigned}
    log "kernel 6.12: downloading $pkg"
    tmp=$(download_dir)
    (cd "$tmp" && apt-get "${APT_O[@]}" download -qq "$pkg") || die "apt-get download $pkg failed"
    unpack_kernel "$dir" "$kver" "$tmp"/*.deb
    rm -rf "$tmp"
    log "kernel 6.12: $kver cached in $dir"
}

# --- 3b. 7.2 (trixie-backports, private apt configuration) -> $CACHE/kernel-7.2 ---------------
setup_72() {
    local dir="$CACHE/kernel-7.2" kver p tmp
    if kernel_cached "$dir"; then
        log "kernel 7.2: already cached ($(<"$dir/VERSION") in $dir)"
        return
    fi
    mkdir -p "$CACHE"
    private_apt trixie-backports "$(kernel_mirror)" trixie-backports
    kver=${PHC_KERNEL_72_VERSION:-}
    if [[ -z $kver ]]; then
        p=$(newest_candidate linux-binary-unsigned-7.2 "$KERNEL72_PATTERN")
        kver=${p#linux-binary-unsigned-}
    fi
    [[ -n $kver ]] || die "trixie-backports offers no linux-binary-unsigned-7.2.*-amd64 package"
    local -a pkgs=("linux-binary-unsigned-$kver" "linux-modules-$kver" "linux-base-$kver")
    log "kernel 7.2: downloading ${pkgs[*]}"
    tmp=$(download_dir)
    (cd "$tmp" && apt-get "${APT_O[@]}" download -qq "${pkgs[@]}") \
        || die "apt-get download ${pkgs[*]} failed"
    unpack_kernel "$dir" "$kver" "$tmp"/*.deb
    rm -rf "$tmp"
    log "kernel 7.2: $kver cached in $dir"
}

# --- 3c. the guest's other NTP clients: ntpd (NTPsec) and systemd-timesyncd -> $CACHE/ntp-daemons
# The host's own packages, as chrony is, but unpacked, never installed: installed, each would be
# the host's own time daemon (and both conflict with chrony). Their libraries' packages are
# installed where missing (libraries only). timesyncd's private libsystemd-shared is unpacked at
# the version timesyncd pins, beside it, whatever the host's systemd has.
setup_ntp_daemons() {
    local dir="$CACHE/ntp-daemons" tmp stage ver deps d missing_libs=()
    if [[ -x $dir/usr/sbin/ntpd && -x $dir/lib/systemd/systemd-timesyncd && -s $dir/VERSIONS ]]; then
        log "ntpd and timesyncd for the guest: already unpacked ($(tr '\n' ' ' <"$dir/VERSIONS")in $dir)"
        return
    fi
    apt_update
    ver=$(apt-cache policy systemd-timesyncd | sed -n 's/^ *Candidate: //p')
    [[ -n $ver && $ver != '(none)' ]] || die "no systemd-timesyncd package in the host's apt sources"
    log "ntpd and timesyncd for the guest: downloading ntpsec, systemd-timesyncd and libsystemd-shared $ver"
    tmp=$(download_dir)
    (cd "$tmp" && apt-get download -qq ntpsec "systemd-timesyncd=$ver" "libsystemd-shared=$ver") \
        || die "apt-get download ntpsec systemd-timesyncd libsystemd-shared failed"
    deps=$(for d in "$tmp"/*.deb; do dpkg-deb -f "$d" Depends; done | tr ',' '\n' |
        sed -E 's/\(.*\)//; s/\|.*//; s/[[:space:]]//g' |
        grep -vE '^(systemd|libsystemd-shared|python3.*|adduser|lsb-base|netbase|tzdata)$' | sort -u)
    for d in $deps; do installed "$d" || missing_libs+=("$d"); done
    if ((${#missing_libs[@]})); then
        log "installing their libraries: ${missing_libs[*]}"
        apt-get install -y -qq --no-install-recommends "${missing_libs[@]}" >/dev/null \
            || die "installing ${missing_libs[*]} failed"
    fi
    mkdir -p "$CACHE"
    stage=$(mktemp -d "$CACHE/ntp-daemons.XXXXXX")
    for d in "$tmp"/*.deb; do
        dpkg-deb -x "$d" "$stage" || die "dpkg-deb -x $d failed"
        dpkg-deb -W --showformat='${Package}=${Version}\n' "$d" >>"$stage/VERSIONS"
    done
    [[ -x $stage/usr/sbin/ntpd && -x $stage/lib/systemd/systemd-timesyncd ]] \
        || die "the packages hold no usr/sbin/ntpd or lib/systemd/systemd-timesyncd"
    rm -rf "$tmp" "$dir"
    mv "$stage" "$dir"
    chmod 755 "$dir"
    log "ntpd and timesyncd for the guest: $(tr '\n' ' ' <"$dir/VERSIONS")in $dir"
}
setup_ntp_daemons

ready=()
for line in $KERNEL_LINES; do
    case $line in
        6.12) setup_612; ready+=("6.12=$(<"$CACHE/kernel/VERSION")") ;;
        7.2) setup_72; ready+=("7.2=$(<"$CACHE/kernel-7.2/VERSION")") ;;
        *) die "unknown kernel line '$line' in PHC_KERNEL_LINES (known: 6.12 7.2)" ;;
    esac
done

log "ready: qemu $qemu_ver, kernels ${ready[*]} in $CACHE"

# --- 4. the VMBus shim (the real hv_utils driver's mode) ---------------------------------------
# ci/build-shim.sh builds kmod/vmbus-shim into each kernel's cache folder (a no-op when it is up
# to date). Where it cannot run, the set-up still succeeds: the harness then refuses
# `--phc hyperv` with its own error. PHC_BUILD_SHIM=0 skips it.
shim_script="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/build-shim.sh"
if [[ ${PHC_BUILD_SHIM:-1} == 0 ]]; then
    log "vmbus-shim: skipped (PHC_BUILD_SHIM=0); --phc hyperv will be unavailable"
elif [[ ! -f $shim_script ]]; then
    log "vmbus-shim: not built ($shim_script missing); --phc hyperv will be unavailable"
elif PHC_CACHE="$CACHE" PHC_KERNEL_LINES="$KERNEL_LINES" bash "$shim_script"; then
    log "vmbus-shim: ready"
else
    log "vmbus-shim: not built (the error above says why); --phc hyperv will be \
unavailable until \`bash ci/build-shim.sh\` succeeds"
fi
