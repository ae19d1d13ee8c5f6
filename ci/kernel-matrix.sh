#!/usr/bin/env bash
# The kernel matrix: the same checks on every Debian kernel a maintainer brings, each kernel's own
# hv_utils.ko on the VMBus shim, and one review table of what changed between them.
#
# Usage: ci/kernel-matrix.sh OUT [KERNEL...]
#   KERNEL is one of
#     line:6.12 | line:7.2          a cached kernel line (ci/setup-vm.sh, ci/build-shim.sh)
#     deb:IMAGE.deb,HEADERS.deb[,...]  a Debian linux-image package and its own headers package
#                                   (and optionally its -common, kbuild and source packages)
#     bookworm                      Debian 12's own default kernel (linux-image-6.1.0-N-amd64,
#                                   the newest N apt knows) and its headers, downloaded with apt
#     bookworm-cloud                the same release's cloud flavour (what Debian's Azure images
#                                   boot): no igb, so virtual time keeps host time on the agent's
#                                   clock (--host-clock auto)
#   Default: bookworm line:6.12 line:7.2 bookworm-cloud.
# `ci/kernel-matrix.sh --fetch` only downloads bookworm's two kernels (and headers) and exits.
# For each kernel, in OUT/<kernel>/: `probe /dev/ptp_hyperv` (probe-hyperv/probe.json) and
# `run azure-pause-30s --phc hyperv` (virtual time). With PHC_MATRIX_FULL=1 also the igb probe,
# latency on both clocks and more scenarios (reboot, hyperv-stale-samples, resume-without-sync):
# the rest of the matrix, run before resolving a kernel issue, not in CI.
# Then OUT/matrix.md: `compare` of every kernel side by side, the second kernel the reference
# (6.12 by default). Exit 0 when every command ran and every scenario passed its checks; 1
# otherwise (the matrix is still written, with the failures listed at the end).
#
# Environment: PHC_AGENT_BIN (as for every QEMU command), PHC_HARNESS (the binary; default: a
# checkout's target/release/phc-harness, built when missing, else phc-harness in PATH),
# PHC_CACHE, PHC_MATRIX_FULL.
set -euo pipefail
# In a checkout: its root (the release build, results/baselines' tolerances for the table).
# Relative paths in the arguments are the caller's.
orig=$PWD
abs() { case $1 in /*) printf '%s\n' "$1" ;; *) printf '%s\n' "$orig/$1" ;; esac; }
here=$(cd "$(dirname "$0")" && pwd)
[[ -f $here/../Cargo.toml ]] && cd "$here/.."

die() {
    printf 'kernel-matrix: error: %s\n' "$*" >&2
    exit 2
}
log() { printf 'kernel-matrix: %s\n' "$*" >&2; }

(($# >= 1)) || die "usage: $0 OUT [line:6.12|line:7.2|deb:IMAGE.deb,HEADERS.deb|bookworm|bookworm-cloud ...] | $0 --fetch"
fetch_only=0
if [[ $1 == --fetch ]]; then
    # Only download bookworm's two kernels and their headers into $PHC_CACHE/kernel-debs (what
    # ci/vm-test.sh does before its lanes, so that no two jobs download them at once).
    fetch_only=1
    set -- "${TMPDIR:-/tmp}/phc-harness-matrix-fetch"
fi
out=$(abs "$1")
shift
kernels=("$@")
((${#kernels[@]})) || kernels=(bookworm line:6.12 line:7.2 bookworm-cloud)
mkdir -p "$out"
out=$(cd "$out" && pwd)

# The harness: PHC_HARNESS, a checkout's release build (built when missing), or the installed
# one (the Debian package ships this script as /usr/lib/phc-harness/kernel-matrix.sh).
harness=${PHC_HARNESS:-}
if [[ -z $harness && -f Cargo.toml && -d harness ]]; then
    harness=target/release/phc-harness
    if [[ ! -x $harness ]]; then
        log "building $harness"
        cargo build --release --locked --quiet -p phc-harness
    fi
elif [[ -z $harness ]]; then
    harness=$(command -v phc-harness) || die "no phc-harness (set PHC_HARNESS, or install the package)"
fi

# bookworm[-cloud] -> deb:IMAGE,HEADERS: Debian 12's own kernel of that flavour (generic, or the
# cloud flavour Debian's Azure images boot) and its headers, downloaded with the host's apt (a
# Debian 12 host) into $PHC_CACHE/kernel-debs, where the VM tests look too.
fetch_bookworm() {
    local flavour=$1 pkg headers dl="${PHC_CACHE:-/var/cache/phc-harness}/kernel-debs"
    pkg=$(apt-cache pkgnames linux-image-6.1.0- 2>/dev/null | grep -E "^linux-image-6\.1\.0-[0-9]+-${flavour}-unsigned\$" \
        | sort -t- -k4,4n | tail -n1) || true
    [[ -n $pkg ]] || die "bookworm: apt knows no linux-image-6.1.0-N-${flavour}-unsigned (not a Debian 12 host?); pass deb:IMAGE.deb,HEADERS.deb instead"
    headers=${pkg/linux-image-/linux-headers-}
    headers=${headers%-unsigned}
    mkdir -p "$dl"
    if id _apt >/dev/null 2>&1; then chown _apt "$dl"; fi
    # A newer ABI replaces the older packages of its flavour.
    find "$dl" -maxdepth 1 -regextype posix-extended \
        -regex ".*/linux-(image|headers)-6\.1\.0-[0-9]+-${flavour}(-unsigned)?_[^/]*\.deb" \
        ! -name "${pkg}_*" ! -name "${headers}_*" -delete
    if ! compgen -G "$dl/${pkg}_*.deb" >/dev/null || ! compgen -G "$dl/${headers}_*.deb" >/dev/null; then
        log "bookworm: apt-get download $pkg $headers"
        (cd "$dl" && apt-get download -qq "$pkg" "$headers") || die "apt-get download $pkg $headers failed"
    fi
    printf 'deb:%s,%s\n' "$(ls "$dl/${pkg}"_*.deb | head -n1)" "$(ls "$dl/${headers}"_*.deb | head -n1)"
}

if ((fetch_only)); then
    fetch_bookworm amd64
    fetch_bookworm cloud-amd64
    exit 0
fi

failures=()
# run_one LABEL DIR CMD...: runs a harness command, its JSON on stdout to DIR's file when asked.
step() {
    local what=$1
    shift
    log "$what"
    if ! "$@"; then
        failures+=("$what")
        return 1
    fi
}

dirs=()
for k in "${kernels[@]}"; do
    case $k in
        bookworm) k=$(fetch_bookworm amd64) ;;
        bookworm-cloud) k=$(fetch_bookworm cloud-amd64) ;;
    esac
    opts=()
    case $k in
        line:6.12 | line:7.2)
            label=${k#line:}
            opts=(--kernel-line "$label")
            igb=1
            ;;
        deb:*)
            IFS=, read -r -a debs <<<"${k#deb:}"
            for i in "${!debs[@]}"; do debs[i]=$(abs "${debs[i]}"); done
            ((${#debs[@]} >= 2)) || die "$k: give the image and its headers package (deb:IMAGE.deb,HEADERS.deb)"
            [[ -f ${debs[0]} ]] || die "${debs[0]}: no such package"
            label=$(dpkg-deb -f "${debs[0]}" Package) || die "${debs[0]}: not a Debian package"
            label=${label#linux-image-}
            label=${label%-unsigned}
            opts=(--kernel-deb "${debs[0]}")
            igb=0
            # grep reads it all (no -q): dpkg-deb must not die of SIGPIPE under pipefail.
            if dpkg-deb -c "${debs[0]}" | grep -E '/igb\.ko(\.[a-z]+)?$' >/dev/null; then igb=1; fi
            for h in "${debs[@]:1}"; do opts+=(--kernel-headers "$h"); done
            ;;
        *) die "unknown kernel '$k' (line:6.12, line:7.2, deb:IMAGE.deb,HEADERS.deb, bookworm or bookworm-cloud)" ;;
    esac
    [[ $label =~ ^[A-Za-z0-9._+-]+$ ]] || die "$k: an odd kernel name '$label'"
    d="$out/$label"
    rm -rf "$d"
    mkdir -p "$d/probe-hyperv"
    dirs+=("$d")
    step "$label: probe /dev/ptp_hyperv (the kernel's hv_utils)" \
        sh -c '"$@" > "$0"' "$d/probe-hyperv/probe.json" \
        "$harness" probe /dev/ptp_hyperv --backend qemu "${opts[@]}" --format json || true
    step "$label: run azure-pause-30s --phc hyperv" \
        "$harness" run azure-pause-30s --backend qemu --phc hyperv "${opts[@]}" --out "$d" || true
    if [[ ${PHC_MATRIX_FULL:-0} == 1 ]]; then
        mkdir -p "$d/latency-hyperv"
        step "$label: latency /dev/ptp_hyperv" \
            sh -c '"$@" > "$0"' "$d/latency-hyperv/latency.json" \
            "$harness" latency /dev/ptp_hyperv --backend qemu "${opts[@]}" --format json || true
        if ((igb)); then
            mkdir -p "$d/probe-igb" "$d/latency-igb"
            step "$label: probe /dev/ptp0 (igb)" \
                sh -c '"$@" > "$0"' "$d/probe-igb/probe.json" \
                "$harness" probe /dev/ptp0 --backend qemu "${opts[@]}" --format json || true
            step "$label: latency /dev/ptp0 (igb)" \
                sh -c '"$@" > "$0"' "$d/latency-igb/latency.json" \
                "$harness" latency /dev/ptp0 --backend qemu "${opts[@]}" --format json || true
        else
            log "$label: no igb in this kernel: its igb probe and latency are not run (the table notes them missing)"
        fi
        for s in reboot hyperv-stale-samples resume-without-sync; do
            step "$label: run $s --phc hyperv" \
                "$harness" run "$s" --backend qemu --phc hyperv "${opts[@]}" --out "$d" || true
        done
    fi
done

# The review: every kernel side by side, the second the reference.
args=("${dirs[0]}")
for d in "${dirs[@]:1}"; do args+=(--against "$d"); done
if ((${#dirs[@]} >= 2)); then
    step "compare: ${#dirs[@]} kernels side by side -> $out/matrix.md" \
        sh -c '"$@" > "$0"' "$out/matrix.md" "$harness" compare "${args[@]}" || true
else
    log "one kernel: no side-by-side table"
fi
if ((${#failures[@]})); then
    printf '\n## Failed\n\n' >>"$out/matrix.md"
    printf -- '- %s\n' "${failures[@]}" >>"$out/matrix.md"
    log "failed: ${failures[*]}"
    exit 1
fi
log "every kernel ran; the matrix is $out/matrix.md"
