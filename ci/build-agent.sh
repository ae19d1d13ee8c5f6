#!/usr/bin/env bash
# Builds the guest agent: the phc-harness binary, statically linked, so it runs in the guest's
# initramfs without a libc. The explicit --target keeps RUSTFLAGS off build scripts and proc
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

log "cargo build --release --target $TARGET -p phc-harness (static)"
RUSTFLAGS="-C target-feature=+crt-static" \
    cargo build --release --locked --target "$TARGET" -p phc-harness >&2

target_dir="${CARGO_TARGET_DIR:-target}"
bin="$(cd "$target_dir" && pwd)/$TARGET/release/phc-harness"
[[ -x $bin ]] || die "$bin: not built"

# A dynamic binary would boot and then fail in the guest with a confusing 'not found' from the
# missing loader; catch it here instead.
desc=$(file -b "$bin")
case $desc in
    *"statically linked"* | *"static-pie linked"*) ;;
    *) die "$bin is not static: $desc" ;;
esac
if ldd "$bin" >/dev/null 2>&1 && ! ldd "$bin" 2>&1 | grep -qE 'not a dynamic executable|statically linked'; then
    die "$bin has shared library dependencies: $(ldd "$bin" 2>&1 | tr '\n' ' ')"
fi
log "static: $desc"

# The guest gets a copy without debug info: 23 MB less initramfs for QEMU to load and the guest
# kernel to unpack under TCG, about a second of every boot. Redone only when the build changed.
guest="$bin-guest"
if [[ ! -x $guest || $bin -nt $guest ]]; then
    command -v strip >/dev/null || die "strip not found (apt-get install binutils)"
    strip --strip-debug -o "$guest.tmp" "$bin"
    mv -f "$guest.tmp" "$guest"
fi
log "guest copy: $guest ($(stat -c %s "$guest") bytes)"
printf '%s\n' "$guest"
