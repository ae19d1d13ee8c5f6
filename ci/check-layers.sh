#!/usr/bin/env bash
# Holds harness/src to its wings (harness/src/lib.rs has the table): imports only run down.
#   format, model   import no other wing
#   judge           imports model and format
#   device          imports model and format
#   guest           imports device and format
#   run             imports guest, judge, model and format
#   regress         imports run, judge, model and format
#   cli             imports anything; nothing imports cli
# Code lines only (comments are skipped), and each file up to its first `#[cfg(test)]`: a test
# module may use a higher wing to build its fixtures. Prints every import against the layers
# and exits 1 if there is one.
set -euo pipefail
cd "$(dirname "$0")/../harness/src"

declare -A allowed=(
    [format]="format"
    [model]="model"
    [judge]="judge model format"
    [device]="device model format"
    [guest]="guest device format"
    [run]="run guest judge model format"
    [regress]="regress run judge model format"
    [cli]="cli regress run guest device judge model format"
)

bad=0
checked=0
for wing in "${!allowed[@]}"; do
    [[ -d $wing ]] || { echo "check-layers: harness/src/$wing is missing" >&2; exit 1; }
    while IFS= read -r -d '' f; do
        checked=$((checked + 1))
        # crate::WING uses in code before the first test module, with their line numbers.
        while IFS=: read -r line used; do
            [[ -n $used ]] || continue
            if [[ " ${allowed[$wing]} " != *" $used "* ]]; then
                echo "harness/src/$f:$line: $wing imports $used (allowed: ${allowed[$wing]})"
                bad=$((bad + 1))
            fi
        done < <(awk '
            /^[[:space:]]*#\[cfg\(test\)\]/ { exit }
            {
                code = $0
                sub(/\/\/.*/, "", code)
                while (match(code, /crate::[a-z_]+/)) {
                    used = substr(code, RSTART + 7, RLENGTH - 7)
                # say!/out! are format'"'"'s macros, exported at the crate root.
                if (used == "say") used = "format"
                print FNR ":" used
                    code = substr(code, RSTART + RLENGTH)
                }
            }' "$f")
    done < <(find "$wing" -name '*.rs' -print0)
done

# Nothing but the wings (and lib.rs, main.rs) at the top of harness/src.
for f in *; do
    case $f in
        lib.rs | main.rs) ;;
        *) [[ -n ${allowed[$f]:-} ]] || { echo "harness/src/$f: not in a wing"; bad=$((bad + 1)); } ;;
    esac
done

if [[ $bad -gt 0 ]]; then
    echo "check-layers: $bad import(s) against the layers in $checked files" >&2
    exit 1
fi
echo "check-layers: $checked files in ${#allowed[@]} wings, every import runs down"
