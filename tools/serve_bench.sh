#!/usr/bin/env bash
# serve_bench.sh - aggregate decode throughput of q3serve at several numbers of
# concurrent streams: for each S, S greedy completions of TOKENS tokens each (short
# prompts, so decode dominates) are sent at once; the rate is all their completion
# tokens over the wall time from the first request to the last answer. Given a .gguf,
# the same requests go to llama.cpp's llama-server (LLAMA_SERVER), for the comparison.
usage="usage: serve_bench.sh MODEL.q3|MODEL.gguf [STREAMS...]   (default streams: 1 4 16)
  environment: BUILD (default build), TOKENS per request (default 64), CTX per slot
  (default 512), ARGS: more q3serve options (e.g. '--threads 2');
  a .gguf: LLAMA_SERVER (the llama-server binary, required), LLAMA_ARGS (e.g. '-t 2')
exit status: 0 measured, 1 a run failed, 2 usage"
case "${1:-}" in -h | --help) echo "$usage"; exit 0 ;; esac
[ $# -ge 1 ] || { echo "$usage" >&2; exit 2; }
BUILD=${BUILD:-build}
# shellcheck source=tools/q3serve_port.sh
. "$(dirname "$0")/q3serve_port.sh"
TOKENS=${TOKENS:-64}
CTX=${CTX:-512}
model=$1
shift
streams=("$@")
[ $# -eq 0 ] && streams=(1 4 16)
max=0
for s in "${streams[@]}"; do [ "$s" -gt "$max" ] && max=$s; done
for t in curl jq; do command -v $t >/dev/null || { echo "serve_bench.sh: $t is missing (./setup --deps)" >&2; exit 1; }; done
T=$(mktemp -d /tmp/q3_serve_bench_XXXXXX)
: >"$T/log"
spid=
trap '[ -n "$spid" ] && kill -9 $spid 2>/dev/null; rm -rf "$T"' EXIT
port=
if [[ $model == *.gguf ]]; then
    [ -x "${LLAMA_SERVER:-}" ] || { echo "serve_bench.sh: a .gguf needs LLAMA_SERVER, the llama-server binary" >&2; exit 2; }
    # llama-server takes no port 0: try free-looking ports until one serves /health.
    # -c is the whole cache, which it splits over the slots: CTX each, as q3serve's --ctx.
    for _ in 1 2 3 4 5; do
        p=$((20000 + RANDOM % 20000))
        # shellcheck disable=SC2086
        "$LLAMA_SERVER" -m "$model" --host 127.0.0.1 --port $p --parallel "$max" -c $((CTX * max)) \
            ${LLAMA_ARGS:-} >"$T/log" 2>&1 &
        spid=$!
        for _ in $(seq 1200); do
            curl -sf -m 2 "http://127.0.0.1:$p/health" >/dev/null 2>&1 && { port=$p; break; }
            kill -0 $spid 2>/dev/null || break
            sleep 0.1
        done
        [ -n "$port" ] && break
        kill -9 $spid 2>/dev/null
        wait $spid 2>/dev/null
    done
    [ -n "$port" ] || { echo "serve_bench.sh: llama-server did not start: $(tail -n 3 "$T/log")" >&2; exit 1; }
else
    # shellcheck disable=SC2086
    "$BUILD/q3serve" "$model" --port 0 --parallel "$max" --ctx "$CTX" ${ARGS:-} 2>"$T/log" &
    spid=$!
    port=$(q3serve_port "$T/log" $spid 600) ||
        { echo "serve_bench.sh: q3serve did not start: $(cat "$T/log")" >&2; exit 1; }
fi
words=(The Once In def Copyright Hello Today Water Music Every Some When Our This My A)
# The request bodies are made before any clock starts (a jq a request would be inside it),
# and one short request first takes what a server does once (first launches, page-ins).
for i in $(seq 0 $((max - 1))); do
    jq -nc --arg p "${words[$((i % ${#words[@]}))]}" --argjson n "$TOKENS" \
        '{prompt: $p, max_tokens: $n, temperature: 0}' >"$T/b$i"
done
curl -s -m 1800 "http://127.0.0.1:$port/v1/completions" -d '{"prompt": "Warm", "max_tokens": 8, "temperature": 0}' \
    >"$T/warm" || { echo "serve_bench.sh: the warm-up request failed" >&2; exit 1; }
# q3serve's own account of a run (its /metrics counters, differences): seconds in the
# batched decode steps, in prefill chunks, and in the host's work around them.
snap() { [[ $model == *.gguf ]] || curl -s -m 10 "http://127.0.0.1:$port/metrics" |
    awk '/^q3serve_(decode_seconds|prefill_seconds|host_seconds|decode_steps)_total /{printf "%s ", $2}'; }
printf '%-8s %10s %12s %14s\n' streams tokens seconds "tok/s (all)"
base=
for s in "${streams[@]}"; do
    m0=$(snap)
    t0=$(date +%s.%N)
    for i in $(seq 0 $((s - 1))); do
        curl -s -m 1800 "http://127.0.0.1:$port/v1/completions" -d @"$T/b$i" >"$T/r$i" &
    done
    wait $(jobs -p | grep -v "^$spid$")
    t1=$(date +%s.%N)
    total=0
    for i in $(seq 0 $((s - 1))); do
        n=$(jq -r '.usage.completion_tokens // empty' <"$T/r$i" 2>/dev/null)
        [ -n "$n" ] || { echo "serve_bench.sh: request $i of $s failed: $(head -c 200 "$T/r$i")" >&2; exit 1; }
        total=$((total + n))
    done
    secs=$(awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }')
    rate=$(awk -v n="$total" -v t="$secs" 'BEGIN { print n / t }')
    [ -z "$base" ] && base=$rate
    printf '%-8s %10d %12.2f %14.1f  (%.2fx the first)' "$s" "$total" "$secs" "$rate" \
        "$(awk -v r="$rate" -v b="$base" 'BEGIN { print r / b }')"
    m1=$(snap)
    [ -n "$m1" ] && awk -v a="$m0" -v b="$m1" 'BEGIN { split(a, x); split(b, y)
        printf "  q3serve: %d steps, decode %.3f s, prefill %.3f s, host %.3f s", y[1] - x[1], y[2] - x[2], y[3] - x[3], y[4] - x[4] }'
    echo
done
kill -TERM $spid
wait $spid
