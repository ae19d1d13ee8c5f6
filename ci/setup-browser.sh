#!/usr/bin/env bash
# Idempotent: installs Debian's chromium-headless-shell, the headless browser ci/check-suite.sh
# opens a suite's index.html in. A no-op when it is there. Needs root (apt).
set -euo pipefail
if command -v chromium-headless-shell >/dev/null || command -v chromium >/dev/null; then
    echo "setup-browser: already installed"
    exit 0
fi
[[ $(id -u) -eq 0 ]] || { echo "setup-browser: must run as root (installs a package)" >&2; exit 1; }
export DEBIAN_FRONTEND=noninteractive
if ! apt-cache policy chromium-headless-shell 2>/dev/null | grep 'Candidate: [0-9]' >/dev/null; then
    apt-get update -qq
fi
apt-get install -y -qq --no-install-recommends chromium-headless-shell >/dev/null
echo "setup-browser: installed $(dpkg-query -W -f='${Package} ${Version}' chromium-headless-shell)"
