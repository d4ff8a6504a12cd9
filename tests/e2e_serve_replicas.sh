#!/usr/bin/env bash
# e2e_serve_replicas.sh - two q3serve replicas behind HAProxy on loopback, with the config
# docs/serve.md shows (read from it; only the ports change). Twelve non-streamed and two
# streamed greedy completions run through HAProxy when one replica is killed (SIGKILL); four
# more are sent right after. No request hangs (each has a bound) and each either completes
# with q3run --temp 0's text or fails cleanly: the non-streamed ones on the dead replica are
# retried by HAProxy on the other and complete, a stream it had started is cut (no [DONE]);
# all sent after the kill complete on the survivor, whose /metrics count every token served.
# Each replica names itself in its responses (--alias), so the test sees who answered.
set -u
BUILD=${BUILD:-build}
# shellcheck source=tools/q3serve_port.sh
. "$(dirname "$0")/../tools/q3serve_port.sh"
MODEL=$BUILD/models/demo-tiny.q3
DOC=$(dirname "$0")/../docs/serve.md
T=$(mktemp -d /tmp/q3_e2e_replicas_XXXXXX)
# Only this shell's jobs that still run are killed: a pid already reaped may be another's now.
cleanup() {
    local p
    p=$(jobs -rp)
    [ -z "$p" ] || kill -9 $p 2>/dev/null
    [ -n "${KEEP:-}" ] || rm -rf "$T"
}
trap cleanup EXIT
fails=0
check() { if eval "$2"; then echo "ok   $1"; else echo "FAIL $1"; fails=$((fails + 1)); fi; }
for b in "$BUILD/q3serve" "$BUILD/q3run"; do [ -x "$b" ] || { echo "FAIL $b is not built"; exit 1; }; done
for t in curl jq haproxy; do command -v $t >/dev/null || { echo "FAIL $t is missing (./setup --deps installs it)"; exit 1; }; done
N=800    # tokens per completion: enough that all 14 still run when the replica is killed;
grep -q __asan_init "$BUILD/q3serve" && N=200 # a quarter under ASan, which runs 4-5 times slower
BOUND=25 # seconds any one request may take (curl -m)

# The expected texts (q3run, one thread as the replicas, two at a time) and the request bodies.
prompts=("The GNU General Public License" "def parse(self, text):" "Once upon a time" "Hello")
for i in "${!prompts[@]}"; do
    "$BUILD/q3run" "$MODEL" "${prompts[$i]}" -n $N --temp 0 -t 1 2>/dev/null >"$T/want$i" &
    [ $((i % 2)) = 0 ] || wait
done
wait
for i in "${!prompts[@]}"; do
    truncate -s -1 "$T/want$i" # q3run ends with a newline
    for s in false true; do
        jq -nc --arg p "${prompts[$i]}" --argjson s $s --argjson n $N \
            '{prompt: $p, max_tokens: $n, temperature: 0, stream: $s} + if $s then {stream_options: {include_usage: true}} else {} end' \
            >"$T/body$i$s"
    done
done

# replica NAME: q3serve on a free port (--port 0, read from its log), answering as NAME;
# sets PORT_NAME and PID_NAME.
replica() {
    "$BUILD/q3serve" "$MODEL" --port 0 --parallel 8 --ctx 1024 -t 1 --alias "$1" 2>"$T/$1.log" &
    local pid=$! port
    port=$(q3serve_port "$T/$1.log" "$pid") || { echo "FAIL q3serve $1 did not start: $(cat "$T/$1.log")"; exit 1; }
    eval "PORT_$1=$port PID_$1=$pid"
}
replica a
replica b

# HAProxy on a free loopback port below the ephemeral range: one nothing listens on now,
# another if the bind fails (noreuseport: a port another HAProxy holds is refused too).
sed -n '/^# haproxy.cfg$/,/^```$/p' "$DOC" | sed '$d' >"$T/doc.cfg"
LB=
for _ in $(seq 10); do
    port=$((10000 + RANDOM % 22000))
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && continue # taken
    sed -e "s/127\.0\.0\.1:8080/127.0.0.1:$port/; s/127\.0\.0\.1:8081/127.0.0.1:$PORT_a/; s/127\.0\.0\.1:8082/127.0.0.1:$PORT_b/" \
        -e 's/^global$/&\n    noreuseport/' "$T/doc.cfg" >"$T/haproxy.cfg"
    haproxy -db -f "$T/haproxy.cfg" >"$T/haproxy.log" 2>&1 &
    hp=$!
    for _ in $(seq 50); do
        kill -0 "$hp" 2>/dev/null || break
        [ "$(curl -s -m 2 -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/health")" = 200 ] && kill -0 "$hp" 2>/dev/null &&
            LB=$port && break
        sleep 0.1
    done
    [ -n "$LB" ] && break
    kill -9 "$hp" 2>/dev/null
    wait "$hp" 2>/dev/null
    grep -q "cannot bind" "$T/haproxy.log" || { echo "FAIL haproxy did not start: $(cat "$T/haproxy.log")"; exit 1; }
done
[ -n "$LB" ] || { echo "FAIL no free port for haproxy in 10 tries"; exit 1; }
check "haproxy on :$LB runs $DOC's config (ports replaced): retries, buffering, health checks, a on :$PORT_a, b on :$PORT_b" \
    '[ "$(grep -c "^    retry-on conn-failure empty-response response-timeout$\|^    option redispatch\|^    retries\|^    option http-buffer-request$\|^    option httpchk GET /health$" "$T/haproxy.cfg")" = 5 ] &&
     grep -q "server a 127.0.0.1:$PORT_a check" "$T/haproxy.cfg" && grep -q "server b 127.0.0.1:$PORT_b check" "$T/haproxy.cfg"'

metric() { curl -s -m 5 "http://127.0.0.1:$1/metrics" | awk -v m="$2" '$1 == m { print $2 }'; }
# send TAG PROMPT STREAM: a completion of prompts[PROMPT] through HAProxy, in the
# background; the body to $T/TAG; the status, curl's exit status and the seconds taken to
# $T/TAG.w; the prompt and the start to $T/TAG.start.
cpids=()
send() {
    echo "$2 $EPOCHREALTIME" >"$T/$1.start"
    curl -sN -m $BOUND -o "$T/$1" -w '%{http_code} %{exitcode} %{time_total}' -H 'Content-Type: application/json' \
        "http://127.0.0.1:$LB/v1/completions" -d "@$T/body$2$3" >"$T/$1.w" &
    cpids+=($!)
}
# The complete JSON events of a stream, one a line (a cut one may end in part of one).
events() { sed -n 's/^data: {/{/p' "$1" | jq -c 'fromjson? // empty' -R; }

# Twelve non-streamed, then two streams (each waits for its first event).
t0=$EPOCHREALTIME
for i in $(seq 0 11); do send n$i $((i % 4)) false; done
for s in 0 1; do
    send s$s $s true
    for _ in $(seq 100); do grep -q '^data: {' "$T/s$s" 2>/dev/null && break; sleep 0.02; done
done
# The replica that holds the first stream is killed when all 14 run (none has finished).
on0=$(events "$T/s0" | head -1 | jq -r .model) on1=$(events "$T/s1" | head -1 | jq -r .model)
case "$on0$on1" in [ab][ab]) ;; *) echo "FAIL the streams did not start (on '$on0' and '$on1')"; exit 1 ;; esac
V=$on0 S=$([ "$on0" = a ] && echo b || echo a)
eval "VPID=\$PID_$V VPORT=\$PORT_$V SPORT=\$PORT_$S"
for _ in $(seq 100); do
    running=$(curl -s -m 5 "http://127.0.0.1:$VPORT/metrics" "http://127.0.0.1:$SPORT/metrics" |
        awk '$1 == "q3serve_active_sequences" { printf "%s ", $2 }')
    read -r running_v running_s <<<"$running"
    [ $((${running_v:-0} + ${running_s:-0})) -ge 14 ] && break
    sleep 0.02
done
kill -9 "$VPID"
wait "$VPID" 2>/dev/null
tk=$EPOCHREALTIME
for i in 0 1 2 3; do send k$i $i false; done
streams_v=$(for m in "$on0" "$on1"; do [ "$m" = "$V" ] && echo; done | wc -l)
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b - a }'; }
echo "     killed $V $(secs "$t0" "$tk") s after the first request (streams on $on0 and $on1), with $running_v requests running on it, $running_s on $S"
wait "${cpids[@]}"
t1=$EPOCHREALTIME
check "the kill landed mid-load: 14 running, $V held a stream and $((running_v - streams_v)) non-streamed" \
    '[ $((running_v + running_s)) = 14 ] && [ $((running_v - streams_v)) -ge 1 ]'

# What each request got: complete (= q3run --temp 0, from the survivor), cut, a 5xx, or else.
complete=0 cut=0 err5=0 bad=0 tokens=0 nonstream_ok=0 stream_ok=0
ends=()
for f in "$T"/[snk][0-9]*.w; do
    tag=$(basename "$f" .w)
    read -r code rc took <"$f"
    read -r p start <"$T/$tag.start"
    want=$T/want$p
    [ "$rc" != 0 ] || ends+=("$(awk -v a="$start" -v b="$took" 'BEGIN { printf "%.6f", a + b }')")
    if [ "${tag#s}" != "$tag" ]; then
        events "$T/$tag" >"$T/$tag.ev"
        jq -j '.choices[0].text // empty' <"$T/$tag.ev" >"$T/$tag.text"
        read -r model used < <(jq -rs '[.[0].model, .[-1].usage.completion_tokens // 0] | @tsv' "$T/$tag.ev")
        if [ "$rc" = 0 ] && [ "$code" = 200 ] && [ "$(grep '^data:' "$T/$tag" | tail -1)" = "data: [DONE]" ] &&
            cmp -s "$want" "$T/$tag.text" && [ "$model" = "$S" ]; then
            complete=$((complete + 1)) stream_ok=$((stream_ok + 1)) tokens=$((tokens + used))
            echo "     $tag ($model): stream complete"
        elif [ "$rc" != 0 ] && [ "$rc" != 28 ] && [ "$code" = 200 ] && ! grep -q '^data: \[DONE\]' "$T/$tag" &&
            [ -s "$T/$tag.text" ] && cmp -s -n "$(stat -c %s "$T/$tag.text")" "$want" "$T/$tag.text" && [ "$model" = "$V" ]; then
            cut=$((cut + 1))
            echo "     $tag ($model): stream cut after $(stat -c %s "$T/$tag.text") bytes of the right text (curl exit $rc), no [DONE]"
        elif [ "$rc" != 28 ] && [ "${code:0:1}" = 5 ]; then
            err5=$((err5 + 1))
            echo "     $tag: $code"
        else
            bad=$((bad + 1))
            echo "     $tag: none of these (curl exit $rc, status $code, from $model)"
        fi
    else
        obj= finish= model= used=
        read -r obj finish model used < <(jq -r '[.object, .choices[0].finish_reason, .model, .usage.completion_tokens] | @tsv' \
            "$T/$tag" 2>/dev/null)
        if [ "$rc" = 0 ] && [ "$code" = 200 ] && [ "$obj $finish $model" = "text_completion length $S" ] &&
            cmp -s "$want" <(jq -j .choices[0].text "$T/$tag"); then
            complete=$((complete + 1)) nonstream_ok=$((nonstream_ok + 1)) tokens=$((tokens + used))
        elif [ "$rc" != 28 ] && [ "${code:0:1}" = 5 ]; then
            err5=$((err5 + 1))
            echo "     $tag: $code"
        else
            bad=$((bad + 1))
            echo "     $tag: none of these (curl exit $rc, status $code, $(head -c 200 "$T/$tag"))"
        fi
    fi
done
# option httplog: field 6 the status, 10 the termination state, 11 ends in the retries
# ("+N": redispatched to another server).
retried=$(awk '$11 ~ /\/\+?[1-9]$/' "$T/haproxy.log" | wc -l)
retried_ok=$(awk '$11 ~ /\/\+?[1-9]$/ && $6 == 200 && $10 == "----"' "$T/haproxy.log" | wc -l)
echo "     18 requests in $(secs "$t0" "$t1") s, the first complete at $(secs "$t0" "$(printf '%s\n' "${ends[@]}" | sort -n | head -1)") s: $complete complete from $S, $cut streams cut," \
    "$err5 5xx, $bad otherwise; haproxy retried $retried"
check "no request hung (each ended within $BOUND s) or ended otherwise" '! grep -q "^... 28 " "$T"/*.w && [ $bad = 0 ]'
check "every non-streamed request (12 running, 4 after the kill) completed on $S = q3run --temp 0" '[ $nonstream_ok = 16 ]'
check "haproxy retried at least the $((running_v - streams_v)) non-streamed requests $V held, each completed" \
    '[ "$retried" -ge $((running_v - streams_v)) ] && [ "$retried_ok" = "$retried" ]'
check "the streams $V had started were cut (no [DONE]): $streams_v; those on $S completed: $((2 - streams_v))" \
    '[ $cut = "$streams_v" ] && [ $stream_ok = $((2 - streams_v)) ]'
check "haproxy's health check took $V out" 'grep -q "Server q3/$V is DOWN" "$T/haproxy.log"'
check "$S's /metrics count every token of every completion ($tokens)" \
    '[ "$(metric "$SPORT" q3serve_generated_tokens_total)" = "$tokens" ]'
kill -TERM "$hp"
wait "$hp" 2>/dev/null
eval "spid=\$PID_$S"
kill -TERM "$spid"
wait "$spid"
rc=$?
check "$S exits 0 on SIGTERM afterwards" '[ $rc = 0 ]'

if [ $fails -gt 0 ]; then
    for f in a.log b.log haproxy.log; do echo "--- $f (the end)"; tail -n 15 "$T/$f" | cut -c 1-300; done
fi
echo "e2e_serve_replicas: $fails failed"
[ $fails -eq 0 ]
