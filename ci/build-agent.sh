#!/usr/bin/env bash
# Builds the guest agent: the phc-harness binary, statically linked, so it runs in the guest's
# initramfs without a libc; and the CUSE mock PHC server (mock-phc) the same way, whose stripped
# copy mock-phc-guest next to the agent's goes into the image as /bin/mock-phc. The explicit --target keeps RUSTFLAGS off build scripts and proc
# macros (they must stay dynamic to load into the host's rustc). Prints the path of a copy without
# debug info, for the guest image, on the last line of stdout. Honours CARGO_TARGET_DIR; a second
# run is a fast no-op build.
set -euo pipefail
cd "$(dirname "$0")/.."

TARGET=x86_64-unknown-linux-gnu
log() { printf 'build-agent: %s\n' "$*" >&2; }
die() { printf 'build-agent: error: %s\n' "$*" >&2; exit 1; }

command -v cargo >/dev/null || die "cargo not found"
command -v file >/dev/null || die "file(1) not found (apt-get install file)"

log "cargo build --release --target $TARGET -p phc-harness -p mock-phc (static)"
RUSTFLAGS="-C target-feature=+crt-static -C link-arg=-Wl,--build-id=none" \
    cargo build --release --locked --target "$TARGET" -p phc-harness -p mock-phc --bins >&2

target_dir="${CARGO_TARGET_DIR:-target}"
bin="$(cd "$target_dir" && pwd)/$TARGET/release/phc-harness"
[[ -x $bin ]] || die "$bin: not built"
mock="$(dirname "$bin")/mock-phc"
[[ -x $mock ]] || die "$mock: not built"

# A dynamic binary would boot and then fail in the guest with a confusing 'not found' from the
# missing loader; catch it here instead.
check_static() {
    local desc
    desc=$(file -b "$1")
    case $desc in
        *"statically linked"* | *"static-pie linked"*) ;;
        *) die "$1 is not static: $desc" ;;
    esac
    if ldd "$1" >/dev/null 2>&1 && ! ldd "$1" 2>&1 | grep -E 'not a dynamic executable|statically linked' >/dev/null; then
        die "$1 has shared library dependencies: $(ldd "$1" 2>&1 | tr '\n' ' ')"
    fi
    log "static: $1: $desc"
}

# The guest gets a copy without debug info or symbols: 23 MB less initramfs for QEMU to load and
# the guest kernel to unpack under TCG, about a second of every boot. Without the symbol table
# (whose ThinLTO suffixes change with the checkout's path) and the build id, a clone anywhere
# builds the same bytes: the initramfs, so the guest's boot in virtual time and every later
# instant, is then the same from any checkout. It mattered: one build of the same source from two
# paths moved where chronyd's samples fell, and phc-jump-10s's step from 45 s to 109.5 s.
# Redone only when the build changed.
guest_copy() {
    local guest="$1-guest"
    if [[ ! -x $guest || $1 -nt $guest ]]; then
        command -v strip >/dev/null || die "strip not found (apt-get install binutils)"
        strip --strip-all -o "$guest.tmp" "$1"
        mv -f "$guest.tmp" "$guest"
    fi
    log "guest copy: $guest ($(stat -c %s "$guest") bytes)"
}

check_static "$bin"
check_static "$mock"
guest_copy "$mock"
guest_copy "$bin"
printf '%s\n' "$bin-guest"
