#!/usr/bin/env bash
# Builds kmod/vmbus-shim (the VMBus stand-in on which Debian's own hv_utils.ko runs under plain
# QEMU) for each cached guest kernel and installs it into that kernel's cache folder:
#   VMBus a module (CONFIG_HYPERV=m, Debian 6.12)     -> lib/modules/REL/extra/vmbus_shim.ko
#       a plain module exporting the eight symbols hv_utils imports; with CONFIG_MODVERSIONS their
#       CRCs must equal the distribution's Module.symvers (checked here), so a plain insmod of the
#       signed hv_utils.ko works
#   VMBus built in (CONFIG_HYPERV=y, Debian 7.2)      -> lib/modules/REL/extra/vmbus_shim_lp.ko
#       a livepatch (CONFIG_LIVEPATCH=y) redirecting six built-in VMBus functions
# and runs depmod on the cache folder. Next to the module, vmbus_shim.info says what it is:
#   kind module|livepatch
#   built_against PACKAGE=VERSION ...   (the headers, kbuild and source packages)
#   crc_check passed|not applicable
#   compiler THE COMPILER'S VERSION LINE (and where it ran: host or a chroot)
#
# It builds against the kernel's own Debian packages, downloaded into $PHC_CACHE/shim-build/REL/:
# linux-headers-REL, its -common and linux-kbuild packages, and the private VMBus headers
# (drivers/hv of linux-source-X.Y: the exports must see the types channel.c and vmbus_drv.c
# see). Only drivers/hv is kept of linux-source (the .deb, about 150 MB, is deleted). The packages
# come through a private apt configuration under $PHC_CACHE/apt-* as in ci/setup-vm.sh (the
# host's own sources when the host runs the kernel's Debian release).
# The compiler is the one the kernel was built with (the headers' gcc-N dependency, and kbuild's
# modpost and objtool are linked against that release's glibc): on a host of the kernel's Debian
# release the host's own (installed when missing), otherwise a minimal debootstrap chroot of that
# release cached in $PHC_CACHE/shim-build/chroot-CODENAME (trixie: about 400 MB).
#
# Usage: ci/build-shim.sh [KERNEL_CACHE_DIR]
#   without an argument: each line of PHC_KERNEL_LINES (default "6.12 7.2") whose cache exists
#   (6.12: $PHC_CACHE/kernel, 7.2: $PHC_CACHE/kernel-7.2); with one: that cache folder (a
#   Debian kernel unpacked as ci/setup-vm.sh does: VERSION, PACKAGE, config, lib/modules/REL).
# A second run is a no-op when each installed module and its .info are newer than every file in
# kmod/vmbus-shim. A kernel folder seen for the first time (each --kernel-deb run unpacks one)
# gets the module built before from the same inputs (the shim's source, the kernel's packages,
# its config and hv_utils.ko), kept in $PHC_CACHE/shim-build/REL/built/ (the newest 4). Environment: PHC_CACHE (default /var/cache/phc-harness), PHC_KERNEL_LINES,
# PHC_DEBIAN_MIRROR and PHC_DEBIAN_SECURITY_MIRROR (as in ci/setup-vm.sh), and PHC_SHIM_DEBS:
# the kernel's own packages, one .deb path per line (phc-harness --kernel-headers passes them):
# linux-headers-REL, and any of its -common, linux-kbuild and linux-source packages, all of the
# kernel's version; they are used instead of the archive's, which supplies only what is missing.
# Needs root (apt, debootstrap, chroot) whenever something is to be built.
set -euo pipefail

CACHE="${PHC_CACHE:-/var/cache/phc-harness}"
KERNEL_LINES=${PHC_KERNEL_LINES:-6.12 7.2}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# The shim's source: beside a checkout's ci/, or where the Debian package puts it.
SRC=
for d in "${PHC_SHIM_SRC:-}" "$HERE/../kmod/vmbus-shim" /usr/share/phc-harness/vmbus-shim; do
    if [[ -n $d && -f $d/shim_bus.c ]]; then SRC=$(cd "$d" && pwd); break; fi
done
BUILD_ROOT="$CACHE/shim-build"

log() { printf 'build-shim: %s\n' "$*"; }
died=0
die() {
    printf 'build-shim: error: %s\n' "$*" >&2
    died=1
    exit 1
}
trap 'die "failed at line $LINENO: $BASH_COMMAND"' ERR
# set -e also stops inside functions, where the ERR trap does not run: never silently.
trap 'rc=$?; if ((rc && !died)); then printf "build-shim: error: stopped (status %s)\n" "$rc" >&2; fi' EXIT

[[ -f $SRC/Makefile && -f $SRC/shim_bus.c ]] || die "no shim sources in $SRC"

os_id=unknown
codename=
if [[ -r /etc/os-release ]]; then
    # shellcheck source=/dev/null
    os_id=$(. /etc/os-release && echo "${ID:-unknown}")
    # shellcheck source=/dev/null
    codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
fi

need_root() {
    [[ $(id -u) -eq 0 ]] || die "must run as root to build the shim for $1 (apt, debootstrap, chroot)"
}

export DEBIAN_FRONTEND=noninteractive

# --- apt ---------------------------------------------------------------------------------------
host_apt_updated=0
host_apt_update() {
    if [[ $host_apt_updated -eq 0 ]]; then
        log "apt-get update"
        apt-get update -qq || die "apt-get update failed"
        host_apt_updated=1
    fi
}
installed() { [[ $(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null) == installed ]]; }
# host_install PACKAGE...: installs from the host's own sources those not installed yet.
host_install() {
    local p missing=()
    for p in "$@"; do installed "$p" || missing+=("$p"); done
    ((${#missing[@]})) || return 0
    host_apt_update
    log "installing on the host: ${missing[*]}"
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null \
        || die "installing ${missing[*]} failed"
}

# debian_mirror, kernel_mirror, security_mirror: the Debian archive the kernels come from.
# shellcheck source=ci/debian-mirror.sh
. "$HERE/debian-mirror.sh"

# use_apt NAME URI SUITE: APT_O set to a private apt configuration under $CACHE/apt-NAME naming
# only SUITE at URI (the same layout as ci/setup-vm.sh's, so the lists are shared), updated once
# per run; NAME "host" uses the host's own sources.
APT_O=()
declare -A apt_updated=()
use_apt() {
    local name=$1 uri=${2:-} suite=${3:-} apt="$CACHE/apt-$1"
    if [[ $name == host ]]; then
        APT_O=()
        host_apt_update
        return
    fi
    mkdir -p "$apt/etc/sources.list.d" "$apt/etc/preferences.d" "$apt/lists/partial" \
        "$apt/cache/archives/partial"
    : >"$apt/etc/sources.list"
    printf 'Types: deb\nURIs: %s\nSuites: %s\nComponents: main\nSigned-By: %s\n' "$uri" "$suite" \
        /usr/share/keyrings/debian-archive-keyring.gpg >"$apt/etc/sources.list.d/$name.sources"
    APT_O=(-o "Dir::Etc::SourceList=$apt/etc/sources.list"
        -o "Dir::Etc::SourceParts=$apt/etc/sources.list.d" -o "Dir::State::Lists=$apt/lists"
        -o "Dir::Cache=$apt/cache" -o "Dir::Etc::Preferences=/dev/null"
        -o "Dir::Etc::PreferencesParts=$apt/etc/preferences.d" -o "APT::Architectures::=amd64")
    if [[ -z ${apt_updated[$name]:-} ]]; then
        log "apt-get update ($suite from $uri, private lists in $apt)"
        apt-get "${APT_O[@]}" update -qq || die "apt-get update of $suite ($uri) failed"
        apt_updated[$name]=1
    fi
}

# pkg_field PACKAGE VERSION FIELD: the field of that exact package version, or nothing.
pkg_field() {
    { apt-cache "${APT_O[@]}" show "$1=$2" 2>/dev/null || true; } | awk -v f="$3:" '$1 == f { sub(/^[^:]*: */, ""); print; exit }'
}

# A scratch folder that user _apt (apt-get download drops to it) may write to.
download_dir() {
    local t
    t=$(mktemp -d "$1/dl.XXXXXX")
    if id _apt >/dev/null 2>&1; then chown _apt "$t"; fi
    printf '%s\n' "$t"
}

# cached_deb DIR PACKAGE VERSION: the .deb of that version already in DIR, or nothing.
cached_deb() {
    local f
    for f in "$1/$2"_*.deb; do
        [[ -f $f ]] || continue
        if [[ $(dpkg-deb -f "$f" Package 2>/dev/null) == "$2" &&
            $(dpkg-deb -f "$f" Version 2>/dev/null) == "$3" ]]; then
            printf '%s\n' "$f"
            return
        fi
    done
}

# --- the build environment ---------------------------------------------------------------------
# codename_of NN: the Debian codename of release number NN.
codename_of() {
    case $1 in
        11) echo bullseye ;; 12) echo bookworm ;; 13) echo trixie ;; 14) echo forky ;; 15) echo duke ;;
        *) return 1 ;;
    esac
}

# release_of RELEASE DEB_VERSION CONFIG: the Debian release codename a kernel was built for:
# the release string's +debNN (6.12.118+deb12-amd64), else the package version's marker
# (~bpo12, +deb12u1, ~deb13), else the compiler the config names (CONFIG_CC_VERSION_TEXT:
# "gcc-12 (Debian 12.2.0-14+deb12u1)"; bookworm's 6.1.0-57-amd64 6.1.192-3 carries no marker
# of its own), else that compiler's major version (gcc 12 bookworm, 14 trixie).
release_of() {
    local cc
    if [[ $1 =~ \+deb([0-9]+) ]]; then
        codename_of "${BASH_REMATCH[1]}"
        return
    fi
    if [[ $2 =~ [~+](deb|bpo)([0-9]+) ]]; then
        codename_of "${BASH_REMATCH[2]}"
        return
    fi
    cc=$(sed -n 's/^CONFIG_CC_VERSION_TEXT="\(.*\)"$/\1/p' "$3" | head -n1)
    if [[ $cc =~ \+deb([0-9]+)u ]]; then
        codename_of "${BASH_REMATCH[1]}"
        return
    fi
    case $cc in
        gcc-12\ *) echo bookworm ;; gcc-14\ *) echo trixie ;; gcc-15\ *) echo forky ;;
        *) return 1 ;;
    esac
}

# ensure_chroot CODENAME PACKAGE...: a minimal debootstrap of CODENAME holding the packages,
# cached in $BUILD_ROOT/chroot-CODENAME (rebuilt whole when a package is missing from its list).
ensure_chroot() {
    local rel=$1 root="$BUILD_ROOT/chroot-$1" want have p script mirror t0
    shift
    want=$(printf '%s\n' "$@" | sort -u | paste -sd, -)
    if [[ -f $root/.phc-shim-chroot ]]; then
        have=$(<"$root/.phc-shim-chroot")
        local ok=1
        for p in "$@"; do [[ ,$have, == *,$p,* ]] || ok=0; done
        if ((ok)); then return; fi
        want=$(printf '%s\n' "$@" ${have//,/ } | sort -u | paste -sd, -)
    fi
    command -v debootstrap >/dev/null || host_install debootstrap
    command -v debootstrap >/dev/null || die "debootstrap is not available"
    script=$rel
    [[ -f /usr/share/debootstrap/scripts/$rel ]] || script=sid
    mirror=$(kernel_mirror)
    log "debootstrap $rel (minbase + $want) from $mirror into $root"
    t0=$SECONDS
    rm -rf "$root.new"
    mkdir -p "$BUILD_ROOT"
    if ! debootstrap --variant=minbase --include="$want" \
        --keyring=/usr/share/keyrings/debian-archive-keyring.gpg \
        "$rel" "$root.new" "$mirror" "/usr/share/debootstrap/scripts/$script" \
        >"$BUILD_ROOT/debootstrap-$rel.log" 2>&1; then
        die "debootstrap of $rel failed (log: $BUILD_ROOT/debootstrap-$rel.log)"
    fi
    rm -f "$root.new"/var/cache/apt/archives/*.deb
    rm -rf "$root.new"/var/lib/apt/lists/*_Packages* "$root.new"/var/cache/apt/*.bin
    printf '%s\n' "$want" >"$root.new/.phc-shim-chroot"
    rm -rf "$root"
    mv "$root.new" "$root"
    log "chroot $rel ready in $((SECONDS - t0)) s ($(du -sh "$root" | cut -f1))"
}

# in_env WORK CMD...: runs CMD with a clean environment in the build environment (ENV_CHROOT
# empty: the host; else that chroot, with /proc (objtool needs it) and WORK bind-mounted at the
# same path, in a private mount namespace so nothing stays mounted).
ENV_CHROOT=
in_env() {
    local work=$1
    shift
    local -a envv=(env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8)
    if [[ -z $ENV_CHROOT ]]; then
        "${envv[@]}" "$@"
        return
    fi
    mkdir -p "$ENV_CHROOT$work"
    # shellcheck disable=SC2016
    unshare --mount --propagation private --pid --fork -- /bin/sh -c '
        set -e
        root=$1 work=$2
        shift 2
        mount -t proc proc "$root/proc"
        mount --bind "$work" "$root$work"
        exec chroot "$root" "$@"' sh "$ENV_CHROOT" "$work" "${envv[@]}" "$@"
}

# --- one kernel --------------------------------------------------------------------------------
# source_hv WORK DEB SOURCE VERSION: only the private VMBus headers (drivers/hv) of the
# linux-source package DEB, into WORK/hv.
source_hv() {
    local work=$1 f=$2 source=$3 ver=$4 x="$1/hv.new"
    rm -rf "$x"
    mkdir -p "$x"
    dpkg-deb --fsys-tarfile "$f" | tar -xO --wildcards "./usr/src/$source.tar.xz" \
        | tar -xJ -C "$x" --wildcards "$source/drivers/hv/*" \
        || die "extracting drivers/hv from $f failed"
    [[ -f $x/$source/drivers/hv/hyperv_vmbus.h ]] || die "$f holds no drivers/hv/hyperv_vmbus.h"
    rm -rf "$work/hv"
    mv "$x/$source/drivers/hv" "$work/hv"
    rm -rf "$x"
    printf '%s\n' "$source=$ver" >"$work/hv/.phc-source"
}

# given_debs WORK VERSION: the packages PHC_SHIM_DEBS names, each checked (a regular file, a
# Debian package of the kernel's VERSION, a linux-headers, -kbuild or -source package) and put
# where the archive's would go (WORK/debs, WORK/hv).
given_debs() {
    local work=$1 ver=$2 g gp gv
    [[ -n ${PHC_SHIM_DEBS:-} ]] || return 0
    while IFS= read -r g; do
        [[ -n $g ]] || continue
        [[ -f $g && ! -L $g ]] || die "$g: not a regular file"
        gp=$(dpkg-deb -f "$g" Package 2>/dev/null) || die "$g: not a Debian package"
        gv=$(dpkg-deb -f "$g" Version 2>/dev/null) || die "$g: not a Debian package"
        [[ $gp =~ ^[a-z0-9][a-z0-9.+-]*$ && $gv =~ ^[A-Za-z0-9.+~:-]+$ ]] || die "$g: an odd package name or version"
        [[ $gv == "$ver" ]] || die "$g is $gp $gv, but the kernel is $ver"
        case $gp in
            linux-source-*)
                log "using the given $gp $gv (drivers/hv only)"
                source_hv "$work" "$g" "$gp" "$gv"
                ;;
            linux-headers-* | linux-kbuild-*)
                log "using the given $gp $gv"
                rm -f "$work/debs/$gp"_*.deb
                cp -- "$g" "$work/debs/${gp}_${gv//:/%3a}_amd64.deb"
                ;;
            *) die "$g is $gp: not a linux-headers, linux-kbuild or linux-source package" ;;
        esac
    done <<<"$PHC_SHIM_DEBS"
}

# up_to_date KO INFO: both exist and are newer than every source file.
up_to_date() {
    [[ -f $1 && -f $2 ]] || return 1
    [[ -z $(find "$SRC" -type f -newer "$1" -print -quit) ]] || return 1
    [[ -z $(find "$SRC" -type f -newer "$2" -print -quit) ]]
}

cfg() { sed -n "s/^$2=//p" "$1/config" | head -n1; }

# install_shim FROM KO OTHER EXTRA DIR REL: FROM/KO and FROM/vmbus_shim.info into the kernel
# folder DIR's EXTRA (the other kind's module OTHER removed), then depmod for REL.
install_shim() {
    local from=$1 ko=$2 other=$3 extra=$4 dir=$5 rel=$6
    mkdir -p "$extra"
    rm -f "$extra/$other"
    install -m 0644 "$from/$ko" "$extra/$ko.new"
    mv "$extra/$ko.new" "$extra/$ko"
    install -m 0644 "$from/vmbus_shim.info" "$extra/vmbus_shim.info.new"
    mv "$extra/vmbus_shim.info.new" "$extra/vmbus_shim.info"
    depmod -b "$dir" "$rel" || die "depmod -b $dir $rel failed"
}

# build_kernel LABEL DIR
build_kernel() {
    local label=$1 dir=$2 rel kind ko other deb_ver rel_code
    [[ -s $dir/VERSION && -f $dir/config && -s $dir/PACKAGE ]] \
        || die "$dir is not a kernel cache folder (VERSION, config, PACKAGE)"
    rel=$(<"$dir/VERSION")
    [[ -d $dir/lib/modules/$rel/kernel ]] || die "$dir has no lib/modules/$rel/kernel"
    local hyperv livepatch modversions
    hyperv=$(cfg "$dir" CONFIG_HYPERV)
    livepatch=$(cfg "$dir" CONFIG_LIVEPATCH)
    modversions=$(cfg "$dir" CONFIG_MODVERSIONS)
    case $hyperv/$livepatch in
        m/*) kind=module ko=vmbus_shim.ko other=vmbus_shim_lp.ko ;;
        y/y) kind=livepatch ko=vmbus_shim_lp.ko other=vmbus_shim.ko ;;
        y/*) die "$label ($rel): VMBus is built in and CONFIG_LIVEPATCH is off: no shim possible" ;;
        *) die "$label ($rel): no VMBus in this kernel (CONFIG_HYPERV=${hyperv:-unset})" ;;
    esac
    local extra="$dir/lib/modules/$rel/extra"
    if up_to_date "$extra/$ko" "$extra/vmbus_shim.info"; then
        log "$label: $ko up to date ($rel, $kind; $extra)"
        return
    fi
    need_root "$rel"
    local t0=$SECONDS
    # The Debian version of the kernel's packages (PACKAGE: "name version" lines).
    deb_ver=$(awk -v r="$rel" 'index($1, r) { print $2; exit }' "$dir/PACKAGE")
    [[ -n $deb_ver ]] || deb_ver=$(awk 'NR == 1 { print $2 }' "$dir/PACKAGE")
    [[ -n $deb_ver ]] || die "$label: no package version in $dir/PACKAGE"
    rel_code=$(release_of "$rel" "$deb_ver" "$dir/config") \
        || die "$label: cannot tell the Debian release of $rel $deb_ver (no +debNN, ~bpoNN or known compiler)"

    local work="$BUILD_ROOT/$rel"
    mkdir -p "$work/debs"
    given_debs "$work" "$deb_ver"

    # The packages, from the suite this kernel came from.
    local headers="linux-headers-$rel" mm=${rel%%-*} common kbuild source gcc_dep
    mm=$(printf '%s\n' "$mm" | cut -d. -f1,2)
    source="linux-source-$mm"
    local -a pkgs=()
    local apt_set=0
    set_apt() {
        ((apt_set)) && return 0
        apt_set=1
        if [[ $os_id == debian && $codename == "$rel_code" && $deb_ver != *~bpo* ]]; then
            use_apt host
        elif [[ $deb_ver == *~bpo* ]]; then
            use_apt "$rel_code-backports" "$(kernel_mirror)" "$rel_code-backports"
        elif [[ $deb_ver =~ [~+]deb[0-9]+u[0-9]+ ]]; then
            use_apt "$rel_code-security" "$(security_mirror)" "$rel_code-security"
        else
            use_apt "$rel_code" "$(kernel_mirror)" "$rel_code"
        fi
    }
    # Which packages: the headers' own dependencies name the -common and kbuild packages and the
    # compiler. Cached in debs/deps so a rebuild from the cache needs no apt at all.
    local given_headers
    given_headers=$(cached_deb "$work/debs" "$headers" "$deb_ver")
    if [[ -s $work/debs/deps && -z $given_headers ]]; then
        read -r common kbuild gcc_dep <"$work/debs/deps"
    else
        local depends
        if [[ -n $given_headers ]]; then
            depends=$(dpkg-deb -f "$given_headers" Depends)
        else
            set_apt
            depends=$(pkg_field "$headers" "$deb_ver" Depends)
        fi
        [[ -n $depends ]] || die "$headers (version $deb_ver) is not available from the archive \
(it may have been superseded: run ci/setup-vm.sh for the current kernel)"
        common=$(printf '%s\n' "$depends" | tr ',|' '\n\n' | awk '{print $1}' | grep -E '^linux-headers-.*-common' | head -n1) || true
        kbuild=$(printf '%s\n' "$depends" | tr ',|' '\n\n' | awk '{print $1}' | grep -E '^linux-kbuild-' | head -n1) || true
        # 6.12 and later name gcc-N(-for-host); 6.1 names linux-compiler-gcc-N-x86.
        gcc_dep=$(printf '%s\n' "$depends" | tr ',|' '\n\n' | awk '{print $1}' \
            | sed -nE 's/^(gcc-[0-9]+).*/\1/p; s/^linux-compiler-(gcc-[0-9]+)-x86$/\1/p' | head -n1) || true
        [[ -n $common && -n $kbuild && -n $gcc_dep ]] \
            || die "$headers $deb_ver: cannot find its -common, kbuild and gcc dependencies in '$depends'"
        gcc_dep=${gcc_dep%-for-host}
        printf '%s %s %s\n' "$common" "$kbuild" "$gcc_dep" >"$work/debs/deps"
    fi
    pkgs=("$headers" "$common" "$kbuild")

    # Download what is not cached yet.
    local p f missing=()
    for p in "${pkgs[@]}"; do [[ -n $(cached_deb "$work/debs" "$p" "$deb_ver") ]] || missing+=("$p"); done
    # The private VMBus headers matter for the module's CRCs only; a livepatch needs none.
    if [[ $kind == livepatch ]]; then
        source=
    elif [[ ! -f $work/hv/.phc-source || $(<"$work/hv/.phc-source") != "$source=$deb_ver" ]]; then
        missing+=("$source")
    fi
    if ((${#missing[@]})); then
        set_apt
        for p in "${missing[@]}"; do
            [[ -n $(pkg_field "$p" "$deb_ver" Package) ]] \
                || die "$p (version $deb_ver) is not available from the archive"
        done
        log "$label: downloading ${missing[*]} ($deb_ver)"
        local tmp
        tmp=$(download_dir "$work")
        (cd "$tmp" && apt-get "${APT_O[@]}" download -qq "${missing[@]/%/=$deb_ver}") \
            || die "apt-get download ${missing[*]} ($deb_ver) failed"
        for f in "$tmp"/*.deb; do
            if [[ $(dpkg-deb -f "$f" Package) == "$source" ]]; then
                source_hv "$work" "$f" "$source" "$deb_ver"
                rm -f "$f"
            else
                rm -f "$work/debs/$(dpkg-deb -f "$f" Package)"_*.deb
                mv "$f" "$work/debs/"
            fi
        done
        rm -rf "$tmp"
    fi

    # A shim built before from the same inputs (the source, the kernel's packages, its config and
    # its own hv_utils.ko, which the checks below read) is taken from WORK/built: every run with
    # --kernel-deb unpacks the kernel afresh, and the build (headers unpacked, make, the checks)
    # took 7 s of each.
    local key stash utils_ko
    utils_ko=$(find "$dir/lib/modules/$rel/kernel/drivers/hv" -name 'hv_utils.ko*' -print -quit 2>/dev/null || true)
    key=$({
        printf '%s %s %s\n' "$rel" "$deb_ver" "$kind"
        (cd "$SRC" && find . -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum)
        for p in "${pkgs[@]}"; do sha256sum <"$(cached_deb "$work/debs" "$p" "$deb_ver")"; done
        [[ $kind == livepatch ]] || cat "$work/hv/.phc-source"
        sha256sum <"$dir/config"
        if [[ -n $utils_ko ]]; then sha256sum <"$utils_ko"; fi
    } | sha256sum | cut -c1-16)
    stash="$work/built/$key"
    if [[ -f $stash/$ko && -f $stash/vmbus_shim.info ]]; then
        install_shim "$stash" "$ko" "$other" "$extra" "$dir" "$rel"
        log "$label: $ko for $rel ($kind) as built before from the same inputs ($stash) -> $extra"
        return
    fi

    # The toolchain: the host when it runs the kernel's release, else a chroot of that release.
    local -a tools=("$gcc_dep" make)
    local kdep
    for kdep in $(dpkg-deb -f "$(cached_deb "$work/debs" "$kbuild" "$deb_ver")" Depends | tr ',|' '\n\n' | awk '{print $1}'); do
        case $kdep in libc6 | pahole) ;; *) tools+=("$kdep") ;; esac
    done
    if [[ $os_id == debian && $codename == "$rel_code" ]]; then
        ENV_CHROOT=
        host_install "${tools[@]}"
    else
        command -v unshare >/dev/null || die "unshare (util-linux) is needed to build in a chroot"
        ensure_chroot "$rel_code" "${tools[@]}"
        ENV_CHROOT="$BUILD_ROOT/chroot-$rel_code"
    fi

    # The headers, unpacked under WORK (the amd64 Makefile's absolute paths pointed there); WORK
    # is at the same path inside the chroot.
    local hdr="$work/hdr"
    if [[ ! -f $hdr/.phc-unpacked || $(<"$hdr/.phc-unpacked") != "$deb_ver" ]]; then
        rm -rf "$hdr"
        mkdir -p "$hdr"
        for p in "${pkgs[@]}"; do dpkg-deb -x "$(cached_deb "$work/debs" "$p" "$deb_ver")" "$hdr"; done
        local mk="$hdr/usr/src/$headers/Makefile"
        [[ -f $mk ]] || die "$headers holds no Makefile"
        # 6.12: "include /usr/src/...-common/Makefile"; 7.2 also "KBUILD_OUTPUT=/usr/src/...".
        sed -i "s|\([[:space:]=]\)/usr/src/|\1$hdr/usr/src/|g" "$mk"
        printf '%s\n' "$deb_ver" >"$hdr/.phc-unpacked"
    fi
    local kdir="$hdr/usr/src/$headers"

    # The build, in a scratch copy of the sources.
    local b="$work/build"
    rm -rf "$b"
    mkdir -p "$b"
    cp -a "$SRC/." "$b/"
    local -a mk_args=(-C "$kdir" M="$b" CONFIG_DEBUG_INFO_BTF_MODULES=)
    if [[ $kind == livepatch ]]; then mk_args+=(SHIM_LIVEPATCH=1); else mk_args+=(HV_SRC="$work/hv"); fi
    if ! in_env "$work" make -j"$(nproc)" "${mk_args[@]}" modules >"$work/build.log" 2>&1; then
        tail -n 30 "$work/build.log" >&2
        die "$label: building the shim for $rel failed (log: $work/build.log)"
    fi
    [[ -f $b/$ko ]] || die "$label: the build made no $ko (log: $work/build.log)"
    in_env "$work" strip --strip-debug "$b/$ko" || die "strip --strip-debug $ko failed"
    local compiler
    compiler=$(in_env "$work" "x86_64-linux-gnu-$gcc_dep" --version | head -n1)
    if [[ -n $ENV_CHROOT ]]; then compiler="$compiler (chroot $rel_code)"; else compiler="$compiler (host)"; fi

    # The CRCs: every export must carry the distribution's CRC, and hv_utils must find every
    # symbol it takes from hv_vmbus.
    local crc=not\ applicable n_exp
    n_exp=$(awk 'NF >= 4' "$b/Module.symvers" | wc -l)
    if [[ $kind == module ]]; then
        local distro="$kdir/Module.symvers" bad
        [[ -f $distro ]] || die "$headers holds no Module.symvers"
        ((n_exp > 0)) || die "$label: the shim exports nothing (Module.symvers is empty)"
        if [[ $modversions == y ]]; then
            bad=$(awk 'NR == FNR { crc[$2] = $1; next } !($2 in crc) || crc[$2] != $1 { print $2 }' \
                "$distro" "$b/Module.symvers" | paste -sd' ' -)
            [[ -z $bad ]] || die "$label: symbol CRCs differ from $rel's Module.symvers: $bad"
            crc=passed
        fi
        local utils needed missing_syms
        utils=$(find "$dir/lib/modules/$rel/kernel/drivers/hv" -name 'hv_utils.ko*' -print -quit 2>/dev/null || true)
        if [[ -n $utils ]] && command -v modprobe >/dev/null; then
            needed=$(modprobe --dump-modversions "$utils" 2>/dev/null | awk '{print $2}' | sort -u) || true
            missing_syms=$(printf '%s\n' "$needed" | awk -v d="$distro" -v s="$b/Module.symvers" '
                BEGIN { while ((getline l < d) > 0) { split(l, f, "\t"); if (f[3] ~ /hv_vmbus$/) vm[f[2]] = 1 }
                        while ((getline l < s) > 0) { split(l, f, "\t"); have[f[2]] = 1 } }
                ($1 in vm) && !($1 in have) { print $1 }' | paste -sd' ' -)
            [[ -z $missing_syms ]] || die "$label: hv_utils.ko needs from hv_vmbus what the shim does not export: $missing_syms"
        fi
    fi

    # Kept for the next run from the same inputs (only the newest 4 builds per kernel), and
    # installed from there into the kernel cache.
    local built_against=() q
    for p in "${pkgs[@]}" ${source:+"$source"}; do built_against+=("$p=$deb_ver"); done
    rm -rf "$stash.new"
    mkdir -p "$stash.new"
    cp "$b/$ko" "$stash.new/"
    {
        printf 'kind %s\n' "$kind"
        printf 'built_against %s\n' "${built_against[*]}"
        printf 'crc_check %s\n' "$crc"
        printf 'compiler %s\n' "$compiler"
    } >"$stash.new/vmbus_shim.info"
    rm -rf "$stash"
    mv "$stash.new" "$stash"
    { ls -1dt "$work/built"/* 2>/dev/null || true; } | tail -n +5 | xargs -r rm -rf
    install_shim "$stash" "$ko" "$other" "$extra" "$dir" "$rel"
    # The unpacked headers (about 95 MB) go; the .debs stay for a rebuild without the network.
    rm -rf "$b" "$hdr"
    q="$kind"
    if [[ $kind == module ]]; then q="$kind, $n_exp exports, crc_check $crc"; fi
    log "$label: built $ko for $rel ($q; $compiler) in $((SECONDS - t0)) s -> $extra"
}

# --- main --------------------------------------------------------------------------------------
mkdir -p "$BUILD_ROOT" 2>/dev/null || true
if [[ -w $BUILD_ROOT ]]; then
    exec 9>"$BUILD_ROOT/.lock"
    flock 9 || die "cannot lock $BUILD_ROOT/.lock"
fi

if (($# > 1)); then die "usage: $0 [KERNEL_CACHE_DIR]"; fi
if (($# == 1)); then
    d=$(cd "$1" 2>/dev/null && pwd) || die "no such folder: $1"
    [[ -s $d/VERSION ]] || die "$d has no VERSION (not a kernel cache folder)"
    v=$(<"$d/VERSION")
    line=$(printf '%s\n' "$v" | cut -d. -f1,2)
    build_kernel "kernel $line" "$d"
    exit 0
fi

built=0
for line in $KERNEL_LINES; do
    case $line in
        6.12) d="$CACHE/kernel" ;;
        7.2) d="$CACHE/kernel-7.2" ;;
        *) die "unknown kernel line '$line' in PHC_KERNEL_LINES (known: 6.12 7.2)" ;;
    esac
    if [[ ! -s $d/VERSION ]]; then
        log "kernel $line: no cached kernel in $d, skipped"
        continue
    fi
    build_kernel "kernel $line" "$d"
    built=$((built + 1))
done
((built > 0)) || log "no cached kernel to build for (run ci/setup-vm.sh first)"
