# Sourced by ci/setup-vm.sh and ci/build-shim.sh (installed beside them by the Debian package):
# which Debian archive the guest kernels and their headers come from. Needs `codename` and `os_id`
# (from /etc/os-release) set by the caller.

# The mirror URL the host already uses for its main Debian suite (deb822 or one-line format).
debian_mirror() {
    local f
    for f in /etc/apt/sources.list.d/*.sources; do
        [[ -f $f ]] || continue
        awk -v want="$codename" '
            /^[[:space:]]*$/ { if (uri != "" && suite) { print uri; exit } uri = ""; suite = 0; next }
            /^URIs:/ { uri = $2 }
            /^Suites:/ { for (i = 2; i <= NF; i++) if ($i == want) suite = 1 }
            END { if (uri != "" && suite) print uri }
        ' "$f" | head -n1
    done
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [[ -f $f ]] || continue
        awk -v want="$codename" '$1 == "deb" { for (i = 2; i <= NF; i++) if ($i !~ /^\[/ && $i ~ /:\/\//) {
                 if ($(i + 1) == want) print $i; break } }' "$f"
    done
}

# The Debian archive the guest kernels come from: PHC_DEBIAN_MIRROR, else the host's own Debian
# mirror, else deb.debian.org (an Ubuntu host).
kernel_mirror() {
    local m=${PHC_DEBIAN_MIRROR:-}
    if [[ -z $m && $os_id == debian ]]; then m=$(debian_mirror | head -n1); fi
    printf '%s\n' "${m:-http://deb.debian.org/debian}"
}

# Its security suite: PHC_DEBIAN_SECURITY_MIRROR, else the kernel mirror's -security sibling.
security_mirror() {
    local s=${PHC_DEBIAN_SECURITY_MIRROR:-}
    if [[ -z $s ]]; then
        s=$(kernel_mirror)
        s=${s%/}-security
    fi
    printf '%s\n' "$s"
}
