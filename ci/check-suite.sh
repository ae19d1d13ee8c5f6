#!/usr/bin/env bash
# Checks a suite folder as a CI system and a browser would read it: results.ktap follows KTAP v1
# (version line, plan, one numbered result per planned test), junit.xml and index.html are
# well-formed XML whose counts and rows match summary.json, and index.html opens in a real
# headless browser (chromium-headless-shell or chromium, when installed; ci/setup-browser.sh
# installs it) and shows every scenario. Prints what it checked; exits 1 on any mismatch.
#
# Usage: ci/check-suite.sh SUITE_DIR
set -euo pipefail
dir=${1:?usage: ci/check-suite.sh SUITE_DIR}
fail() { echo "check-suite: $*" >&2; exit 1; }
[[ -f $dir/summary.json ]] || fail "$dir/summary.json: missing"

ktap=$dir/results.ktap
[[ $(head -n1 "$ktap") == "KTAP version 1" ]] || fail "$ktap: first line is not 'KTAP version 1'"
plan=$(sed -n '2s/^1\.\.\([0-9]*\)$/\1/p' "$ktap")
[[ -n $plan ]] || fail "$ktap: second line is not the plan 1..N"
results=$(grep -cE '^(not )?ok [0-9]+ ' "$ktap" || true)
[[ $results -eq $plan ]] || fail "$ktap: plan 1..$plan but $results results"
n=0
while read -r num; do
    n=$((n + 1))
    [[ $num -eq $n ]] || fail "$ktap: test $num out of order (expected $n)"
done < <(sed -nE 's/^(not )?ok ([0-9]+) .*/\2/p' "$ktap")
echo "check-suite: $ktap: KTAP v1, $plan tests in order"

if command -v python3 >/dev/null; then
    python3 - "$dir" <<'PY'
import json, sys, xml.etree.ElementTree as ET
d = sys.argv[1]
s = json.load(open(f"{d}/summary.json"))
j = ET.parse(f"{d}/junit.xml").getroot()
assert j.tag == "testsuites", j.tag
cases = j.findall("./testsuite/testcase")
want = len(s["entries"]) + len(s.get("fidelity", []))
assert len(cases) == want == int(j.get("tests")), (len(cases), want, j.get("tests"))
for k, tag in [("failures", "failure"), ("errors", "error"), ("skipped", "skipped")]:
    assert int(j.get(k)) == sum(1 for c in cases if c.find(tag) is not None), k
h = ET.parse(f"{d}/index.html").getroot()
ns = "{http://www.w3.org/1999/xhtml}"
rows = [r for r in h.iter(ns + "tr") if r.get("class") == "entry"]
names = ["".join(r[0].itertext()) for r in rows]
assert names == [e["scenario"] for e in s["entries"]], names
print(f"check-suite: junit.xml: {len(cases)} test cases; index.html: {len(rows)} rows, well-formed")
PY
else
    echo "check-suite: skipped the XML checks: no python3 here (cargo test --test suite parses them)"
fi

browser=$(command -v chromium-headless-shell || command -v chromium || true)
if [[ -z $browser ]]; then
    echo "check-suite: skipped the browser check: no chromium-headless-shell or chromium installed"
    exit 0
fi
html=$(realpath "$dir/index.html")
dom=$(timeout 120 "$browser" --headless --no-sandbox --disable-gpu --dump-dom "file://$html" 2>/tmp/check-suite-browser.log) \
    || { cat /tmp/check-suite-browser.log >&2; fail "$browser could not open $html"; }
count=$(grep -o 'class="entry"' <<<"$dom" | wc -l)
entries=$(grep -c '"outcome":' "$dir/summary.json")
[[ $count -eq $entries ]] || fail "$browser shows $count of $entries rows of $html"
svgs=$(grep -o '<svg ' <<<"$dom" | wc -l)
echo "check-suite: $browser opened $html: $count rows, $svgs plots"
