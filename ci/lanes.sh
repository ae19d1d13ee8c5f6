#!/usr/bin/env bash
# Runs CI's jobs after the unit tests (the VM tests, the fuzzer, the sim suite, the package) in
# lanes, one lane per CPU, each lane pinned to its CPU (taskset), so that one guest's QEMU threads
# and the harness that drives it hand off on one core and never steal the other lane's. A lane
# takes the next job from one queue, longest first (the times measured in the last run,
# ci/lane-times.tsv), so the lanes end together. One CPU: one lane, the jobs one after another.
#
# Usage: ci/lanes.sh OUT JOB...
#   JOB is  test:PACKAGE:TEST   each ignored test of that integration test binary, a job each
#     or    job:NAME            `bash ci/jobs.sh NAME`
# Each job's output goes to OUT/logs/ and is printed whole when the job ends (lanes never
# interleave lines); a line says when each starts. OUT/times.tsv gets every job's wall time, exit
# status, lane and CPU seconds (`cut -f1,2` of it over ci/lane-times.tsv re-balances). Exit 0 when every job passed, else 1 after all of
# them ran, with the failed ones listed.
#
# Environment: PHC_LANES (pinned lanes; default: the CPUs this process may use), PHC_LIGHT_LANES
# (light lanes, default 2; 0: none), PHC_LANES_DRY (1: print the queue, run nothing), PHC_JOB_TIMEOUT (seconds a job may take, default 1500), CARGO_TARGET_DIR
# (honoured).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

[[ $# -ge 2 ]] || { echo "usage: ci/lanes.sh OUT JOB..." >&2; exit 2; }
out=$1
shift
rm -rf "$out"
mkdir -p "$out/logs"

say() { printf 'lanes: %s\n' "$*"; }

# The CPUs this process may run on ("0-1,3" -> 0 1 3).
cpus=()
IFS=, read -ra parts <<<"$(taskset -pc $$ | sed 's/.*: //')"
for p in "${parts[@]}"; do
    if [[ $p == *-* ]]; then
        for ((c = ${p%-*}; c <= ${p#*-}; c++)); do cpus+=("$c"); done
    else
        cpus+=("$p")
    fi
done
lanes=${PHC_LANES:-${#cpus[@]}}
((lanes >= 1)) || lanes=1
((lanes <= ${#cpus[@]})) || lanes=${#cpus[@]}
timeout_s=${PHC_JOB_TIMEOUT:-1500}

# Expand the jobs: a test binary into its ignored tests, found by running it with --list. Every
# integration test binary's path and package folder come from one cargo call's own messages
# (cargo answers in about a second each time, even with everything built).
declare -A exe_of dir_of
jobs=()
meta=
for j in "$@"; do
    case $j in
    test:*:*)
        if [[ -z $meta ]]; then
            meta=$(cargo test --locked --quiet --no-run --message-format=json --workspace --tests |
                grep -F '"kind":["test"]' | grep -F '"executable":"')
        fi
        IFS=: read -r _ pkg bin <<<"$j"
        line=$(grep -F "#$pkg@" <<<"$meta" | grep -F "\"name\":\"$bin\"" | tail -n1 || true)
        exe=$(sed -E 's/.*"executable":"([^"]+)".*/\1/' <<<"$line")
        manifest=$(sed -E 's/.*"manifest_path":"([^"]+)".*/\1/' <<<"$line")
        [[ -n $line && -x $exe ]] || { say "no test binary for $pkg --test $bin" >&2; exit 2; }
        exe_of["$pkg:$bin"]=$exe
        dir_of["$pkg:$bin"]=$(dirname "$manifest")
        mapfile -t names < <("$exe" --ignored --list --format terse 2>/dev/null | sed -n 's/: test$//p')
        [[ ${#names[@]} -gt 0 ]] || { say "$pkg --test $bin lists no ignored test" >&2; exit 2; }
        for n in "${names[@]}"; do jobs+=("$pkg:$bin:$n"); done
        ;;
    job:*) jobs+=("$j") ;;
    *) say "not a job: $j" >&2; exit 2 ;;
    esac
done

# Longest first, by the last measured times (ci/lane-times.tsv: job, wall seconds, CPU seconds);
# a job never measured counts as long (it goes early). A job whose last run kept a CPU busy less
# than a third of its wall time (a guest in real time, waiting on the clock) is light: it may run
# in a light lane, pinned to no CPU, that takes light jobs only, so that their waiting overlaps
# the other lanes' work (two light lanes: the light jobs add up to more than a pinned lane's
# share). A pinned lane takes the next heavy job, and light ones once no heavy job is left.
times=ci/lane-times.tsv
[[ -f $times ]] || times=/dev/null
# One pass: the times file, then the jobs (one a line) as "estimate <tab> light <tab> job".
printf '%s\n' "${jobs[@]}" |
    awk -F'\t' 'NR == FNR { w[$1] = int($2); l[$1] = ($3 ~ /^[0-9.]+$/ && $3 < $2 / 3) ? 1 : 0; next }
        { if ($0 in w) print w[$0] "\t" l[$0] "\t" $0; else print 600 "\t" 0 "\t" $0 }' "$times" - |
    sort -t$'\t' -k1,1nr >"$out/queue"
total=$(wc -l <"$out/queue")
light=$(awk -F'\t' '$2 == 1' "$out/queue" | wc -l)
: >"$out/taken"
light_lanes=${PHC_LIGHT_LANES:-2}
[[ $light_lanes =~ ^[0-9]+$ ]] || { say "PHC_LIGHT_LANES: not a count: $light_lanes" >&2; exit 2; }
((light > 0)) || light_lanes=0

# A light job's guest runs in real time, and what it measures (a pause's length, a restore's
# standstill) takes some of the delays in waking it: on a CPU that a pinned lane's TCG keeps busy,
# the scheduler's wake-up latency. So light jobs run at nice -10 where that may be set (a bigger
# share, sooner on the CPU; they need little). Not SCHED_RR: some light jobs have minutes of TCG
# work of their own (the nested guest's boot), and two of those at one real-time priority take
# turns in 100 ms slices (sched_rr_timeslice_ms), a longer wait than the lanes' TCG ever makes.
prio=
if nice -n -10 true 2>/dev/null; then
    prio="nice -10"
else
    say "a negative nice may not be set here: the light jobs run at the lanes' priority"
fi
# Gives this shell (and what it starts) the light jobs' priority.
raise_priority() {
    [[ -z $prio ]] || renice -n -10 -p "$BASHPID" >/dev/null
}
say "$total jobs in $lanes lane(s) on CPU(s) ${cpus[*]:0:$lanes}$( ((light_lanes)) && echo " and $light_lanes light lane(s) for $light job(s) on any CPU${prio:+, at $prio}"); estimated $(awk -F'\t' '{ s += $1 } END { print s }' "$out/queue") s of work"

if [[ ${PHC_LANES_DRY:-0} == 1 ]]; then
    # The queue as the lanes would take it (estimated seconds, light, job), and nothing run.
    cat "$out/queue"
    exit 0
fi

# The next job's queue line (estimate, light, job) for a lane (light: light jobs only; else heavy first), or nothing
# when none is left.
take() {
    (
        flock 9
        n=$(awk -F'\t' -v only="$1" -v taken="$out/taken" '
            BEGIN { while ((getline t < taken) > 0) done[t] = 1 }
            (NR in done) { next }
            $2 == 1 && !first_light { first_light = NR }
            only == 1 && $2 == 1 { pick = NR; exit }
            only == 0 && $2 == 0 { pick = NR; exit }
            END { if (!pick && only == 0) pick = first_light; if (pick) print pick }' "$out/queue")
        if [[ -n $n ]]; then
            echo "$n" >>"$out/taken"
            sed -n "${n}p" "$out/queue"
        fi
    ) 9>"$out/queue.lock"
}

run_job() {
    local j=$1
    case $j in
    job:*) timeout --kill-after=30 "$timeout_s" bash ci/jobs.sh "${j#job:}" ;;
    *)
        local key=${j%:*} name=${j##*:}
        (cd "${dir_of[$key]}" && CARGO_MANIFEST_DIR=${dir_of[$key]} timeout --kill-after=30 "$timeout_s" \
            "${exe_of[$key]}" --ignored --exact "$name" --test-threads=1 --nocapture)
        ;;
    esac
}

lane() {
    local l=$1 cpu=$2 line est light j log start rc dur secs only=0
    if [[ $l == light* ]]; then
        only=1
    else
        taskset -pc "$cpu" "$BASHPID" >/dev/null
    fi
    while line=$(take "$only") && [[ -n $line ]]; do
        IFS=$'\t' read -r est light j <<<"$line"
        log="$out/logs/$(printf '%s' "$j" | tr -c 'A-Za-z0-9_.-' _).log"
        say "lane $l: start $j (last took ${est} s$( ((light)) && [[ -n $prio ]] && echo ", light: $prio"))"
        start=$(date +%s.%N)
        set +e
        # bash's `time`: the CPU seconds of the job and every process it waited for (QEMU too).
        { TIMEFORMAT='%U %S' && time { (((light)) && raise_priority; run_job "$j"); } >"$log" 2>&1; } 2>"$log.cpu"
        rc=$?
        set -e
        dur=$(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
        secs=$(awk '{ printf "%.1f", $1 + $2 }' "$log.cpu" 2>/dev/null)
        rm -f "$log.cpu"
        printf '%s\t%s\t%s\t%s\t%s\n' "$j" "$dur" "$rc" "$l" "${secs:-?}" >>"$out/times.tsv"
        (
            flock 9
            printf '\n== %s (lane %s, CPU %s) ==\n' "$j" "$l" "$cpu"
            cat "$log"
            if [[ $rc -eq 0 ]]; then say "lane $l: ok $j in $dur s"; else say "lane $l: FAILED $j (exit $rc) in $dur s"; fi
        ) 9>"$out/print.lock"
    done
}

start=$(date +%s)
pids=()
for ((l = 0; l < lanes; l++)); do
    lane "$l" "${cpus[$l]}" &
    pids+=($!)
done
for ((l = 0; l < light_lanes; l++)); do
    lane "light$l" any &
    pids+=($!)
done
for p in "${pids[@]}"; do wait "$p" || true; done
wall=$(($(date +%s) - start))

printf '\n== lanes: each job'"'"'s wall and CPU time (longest first) ==\n'
printf '%10s %10s  %s\n' wall cpu job
sort -t$'\t' -k2,2nr "$out/times.tsv" |
    awk -F'\t' '{ printf "%8.1f s %8s s  lane %s  %s  %s\n", $2, $5, $4, ($3 == 0 ? "ok    " : "FAILED"), $1 }'
busy=$(awk -F'\t' '{ s += $2 } END { printf "%.0f", s }' "$out/times.tsv")
say "$(wc -l <"$out/times.tsv") of $total jobs ran: ${busy} s of work in ${wall} s wall on $lanes lane(s)$( ((light_lanes)) && echo " and $light_lanes light lane(s)")"
failed=$(awk -F'\t' '$3 != 0 { print $1 }' "$out/times.tsv")
if [[ -n $failed ]]; then
    say "failed:"
    printf '  %s\n' $failed
    exit 1
fi
ran=$(wc -l <"$out/times.tsv")
[[ $ran -eq $total ]] || { say "only $ran of $total jobs ran" >&2; exit 1; }
