#!/usr/bin/env bash
# e2e_serve.sh - q3serve with curl on loopback: greedy completions and chats, streamed
# or not, equal `q3run --temp 0` on the same prompt while other requests share the
# batch (and with prompts cut into prefill chunks); stop sequences; usage; the errors
# (400, 401, 404, 413, 503 with Retry-After); a client that disconnects frees its
# slot; SIGTERM finishes the request in flight and exits 0. Every wait is bounded.
set -u
BUILD=${BUILD:-build}
# shellcheck source=tools/q3serve_port.sh
. "$(dirname "$0")/../tools/q3serve_port.sh"
MODEL=$BUILD/models/demo-tiny.q3
T=$(mktemp -d /tmp/q3_e2e_serve_XXXXXX)
# Only this shell's jobs that still run are killed: a pid already reaped may be another's now.
cleanup() {
    local p
    p=$(jobs -rp)
    [ -z "$p" ] || kill -9 $p 2>/dev/null
    rm -rf "$T"
}
trap cleanup EXIT
fails=0
check() { if eval "$2"; then echo "ok   $1"; else echo "FAIL $1"; fails=$((fails + 1)); fi; }
for b in "$BUILD/q3serve" "$BUILD/q3run"; do [ -x "$b" ] || { echo "FAIL $b is not built"; exit 1; }; done
for t in curl jq; do command -v $t >/dev/null || { echo "FAIL $t is missing (./setup --deps installs it)"; exit 1; }; done
KEY=e2e-secret

# start NAME ARGS...: a server on a free port; sets PORT and SPID (its log is $T/NAME.log).
start() {
    local name=$1
    shift
    : >"$T/$name.log"
    "$BUILD/q3serve" "$MODEL" --port 0 "$@" 2>"$T/$name.log" &
    SPID=$!
    PORT=$(q3serve_port "$T/$name.log" "$SPID" "${START_TRIES:-100}") && return 0
    echo "FAIL q3serve $name did not start: $(cat "$T/$name.log")"
    exit 1
}
# post PATH JSON [curl args]: the body to stdout, the status to $T/status
post() {
    curl -s -m 60 -o - -w '%{stderr}%{http_code}' -H "Authorization: Bearer $KEY" -H 'Content-Type: application/json' \
        "http://127.0.0.1:$PORT$1" -d "$2" "${@:3}" 2>"$T/status"
}
# The text of an SSE stream: every chunk's text or delta content, joined.
sse_text() { grep '^data: {' | sed 's/^data: //' | jq -j '.choices[0].text // .choices[0].delta.content // empty'; }

start main --parallel 4 --queue 8 --ctx 512 --chunk 8 --api-key $KEY --max-body 8192
check "GET /health" '[ "$(curl -s -m 5 http://127.0.0.1:$PORT/health)" = "{\"status\":\"ok\"}" ]'
check "GET /v1/models names the model" \
    '[ "$(curl -s -m 5 -H "Authorization: Bearer $KEY" http://127.0.0.1:$PORT/v1/models | jq -r ".data[0].id")" = demo-tiny ]'

# Greedy completions of four prompts at once (one streamed), each against q3run alone.
# The long prompt is prefilled in 8-token chunks with a tail that joins the last one.
prompts=("The GNU General Public License" "def parse(self, text):" "Once upon a time"
    "Copyright (C) 2007 Free Software Foundation, Inc. Everyone is permitted to copy and distribute")
for i in "${!prompts[@]}"; do
    "$BUILD/q3run" "$MODEL" "${prompts[$i]}" -n 40 --temp 0 2>/dev/null >"$T/want$i"
    body=$(jq -nc --arg p "${prompts[$i]}" --argjson s "$([ "$i" = 1 ] && echo true || echo false)" \
        '{prompt: $p, max_tokens: 40, temperature: 0, stream: $s}')
    post /v1/completions "$body" >"$T/got$i" &
done
wait $(jobs -p | grep -v "$SPID") 2>/dev/null
for i in "${!prompts[@]}"; do
    if [ "$i" = 1 ]; then sse_text <"$T/got$i" >"$T/text$i"; else jq -j '.choices[0].text' <"$T/got$i" >"$T/text$i"; fi
    echo >>"$T/text$i" # q3run ends with a newline
    check "completion $i in a batch of 4 = q3run --temp 0$([ "$i" = 1 ] && echo ', streamed')" \
        '[ -s "$T/want$i" ] && cmp -s "$T/want$i" "$T/text$i"'
done
check "streamed: a finish_reason, then data: [DONE]" \
    'grep -q "\"finish_reason\":\"length\"" "$T/got1" && [ "$(grep "^data:" "$T/got1" | tail -1)" = "data: [DONE]" ]'
check "usage: 40 completion tokens, finish_reason length" \
    '[ "$(jq -r "[.usage.completion_tokens, .choices[0].finish_reason] | join(\" \")" <"$T/got0")" = "40 length" ]'

# Chat, thinking on and off, against q3run --chat; one streamed with usage.
"$BUILD/q3run" "$MODEL" --chat "What is a license?" -n 24 --temp 0 2>/dev/null >"$T/want_chat"
"$BUILD/q3run" "$MODEL" --chat --no-think "What is a license?" -n 24 --temp 0 2>/dev/null >"$T/want_nothink"
post /v1/chat/completions '{"messages":[{"role":"user","content":"What is a license?"}],"max_tokens":24,"temperature":0}' |
    jq -j '.choices[0].message.content' >"$T/chat" && echo >>"$T/chat"
check "chat = q3run --chat --temp 0" 'cmp -s "$T/want_chat" "$T/chat"'
post /v1/chat/completions '{"messages":[{"role":"user","content":"What is a license?"}],"max_tokens":24,"temperature":0,
    "chat_template_kwargs":{"enable_thinking":false},"stream":true,"stream_options":{"include_usage":true}}' >"$T/chat_sse"
sse_text <"$T/chat_sse" >"$T/nothink" && echo >>"$T/nothink"
check "chat, thinking off, streamed = q3run --chat --no-think" 'cmp -s "$T/want_nothink" "$T/nothink"'
check "streamed chat: role first, usage chunk last before [DONE]" \
    '[ "$(grep "^data: {" "$T/chat_sse" | head -1 | sed "s/^data: //" | jq -r ".choices[0].delta.role")" = assistant ] &&
     [ "$(grep "^data: {" "$T/chat_sse" | tail -1 | sed "s/^data: //" | jq -r ".usage.completion_tokens")" = 24 ]'

# A stop sequence taken from the greedy text: the text ends just before it.
stop=$(head -c 30 "$T/want0" | tail -c 6)
prefix=$(awk -v s="$stop" '{ i = index($0, s); if (i) { print substr($0, 1, i - 1); exit } }' "$T/want0")
post /v1/completions "$(jq -nc --arg p "${prompts[0]}" --arg s "$stop" '{prompt: $p, max_tokens: 40, temperature: 0, stop: [$s]}')" >"$T/stop"
check "stop sequence '$stop': the text before it, finish_reason stop" \
    '[ -n "$prefix" ] && [ "$(jq -r ".choices[0].text" <"$T/stop")" = "$prefix" ] && [ "$(jq -r ".choices[0].finish_reason" <"$T/stop")" = stop ]'

# Errors, each an OpenAI error object.
post /v1/completions '{"prompt": "x",' >"$T/e400"
check "malformed JSON: 400 invalid_request_error" '[ "$(cat "$T/status")" = 400 ] && [ "$(jq -r .error.type <"$T/e400")" = invalid_request_error ]'
post /v1/completions '{"prompt": "x", "temperature": 9}' >"$T/e400b"
check "temperature 9: 400 naming the field" '[ "$(cat "$T/status")" = 400 ] && [ "$(jq -r .error.param <"$T/e400b")" = temperature ]'
curl -s -m 10 -o "$T/e401" -w '%{http_code}' "http://127.0.0.1:$PORT/v1/completions" -d '{"prompt":"x"}' >"$T/status"
check "no API key: 401" '[ "$(cat "$T/status")" = 401 ] && [ "$(jq -r .error.code <"$T/e401")" = invalid_api_key ]'
curl -s -m 10 -o /dev/null -w '%{http_code}' -H "Authorization: Bearer wrong" "http://127.0.0.1:$PORT/v1/models" >"$T/status"
check "a wrong API key: 401" '[ "$(cat "$T/status")" = 401 ]'
head -c 9000 /dev/zero | tr '\0' a | jq -Rc '{prompt: .}' >"$T/big.json"
post /v1/completions "@$T/big.json" >"$T/e413"
check "a body over --max-body: 413" '[ "$(cat "$T/status")" = 413 ]'
curl -s -m 10 -o /dev/null -w '%{http_code}' "http://127.0.0.1:$PORT/v2/nothing" >"$T/status"
check "an unknown path: 404" '[ "$(cat "$T/status")" = 404 ]'
post /v1/completions "$(jq -nc --arg p "$(head -c 2000 /dev/zero | tr '\0' 'x' | sed 's/x/ab /g')" '{prompt: $p}')" >"$T/long"
check "a prompt longer than --ctx: 400 context_length_exceeded" \
    '[ "$(cat "$T/status")" = 400 ] && [ "$(jq -r .error.code <"$T/long")" = context_length_exceeded ]'
check "the server is still up after all that" '[ "$(curl -s -m 5 http://127.0.0.1:$PORT/health)" = "{\"status\":\"ok\"}" ]'
kill -TERM "$SPID"; wait "$SPID"; rc=$?
check "SIGTERM with nothing in flight: exit 0" '[ $rc -eq 0 ]'

# One slot, no queue: a long stream holds the slot, the next request gets 503 with Retry-After;
# the stream's client hangs up and the slot is free again at once.
start one --parallel 1 --queue 0 --ctx 4096
metric() { curl -s -m 5 "http://127.0.0.1:$PORT/metrics" | awk -v m="$1" '$1 == m { print $2 }'; }
curl -sN -m 60 "http://127.0.0.1:$PORT/v1/completions" -d '{"prompt":"Hello","max_tokens":3000,"temperature":0,"stream":true}' >"$T/long_sse" &
cpid=$!
for _ in $(seq 100); do grep -q '^data: {' "$T/long_sse" 2>/dev/null && break; sleep 0.05; done
curl -s -m 10 -D "$T/h503" -o "$T/e503" "http://127.0.0.1:$PORT/v1/completions" -d '{"prompt":"x","max_tokens":2}' >/dev/null
check "queue full: 503 with Retry-After" 'head -1 "$T/h503" | grep -q " 503" && grep -qi "^Retry-After: 1" "$T/h503"'
check "503's error object says queue_full" '[ "$(jq -r .error.code <"$T/e503")" = queue_full ]'
kill "$cpid"; wait "$cpid" 2>/dev/null
for _ in $(seq 50); do [ "$(metric q3serve_active_sequences)" = 0 ] && break; sleep 0.05; done
check "a client that hangs up frees its slot within 2.5 s" '[ "$(metric q3serve_active_sequences)" = 0 ] && [ "$(metric q3serve_requests_cancelled_total)" = 1 ]'
curl -s -m 10 -o "$T/after" -w '%{http_code}' "http://127.0.0.1:$PORT/v1/completions" -d '{"prompt":"x","max_tokens":2}' >"$T/status"
check "the freed slot serves the next request" '[ "$(cat "$T/status")" = 200 ] && [ "$(jq -r .usage.completion_tokens <"$T/after")" -ge 1 ]'
check "/metrics accounts the scheduler's time: decode, prefill and host seconds above 0" \
    'awk -v d="$(metric q3serve_decode_seconds_total)" -v p="$(metric q3serve_prefill_seconds_total)" \
        -v h="$(metric q3serve_host_seconds_total)" "BEGIN { exit !(d > 0 && p > 0 && h > 0) }"'

# SIGTERM mid-generation: the request completes whole, new connections are refused, exit 0.
# (2000 tokens: long enough that the request is still in flight when the signal lands
# on a fast, idle machine; 150 once finished first and the server drained 0 requests)
curl -s -m 60 "http://127.0.0.1:$PORT/v1/completions" -d '{"prompt":"Hello","max_tokens":2000,"temperature":0}' >"$T/drain" &
cpid=$!
for _ in $(seq 100); do [ "$(metric q3serve_active_sequences)" = 1 ] && break; sleep 0.05; done
kill -TERM "$SPID"
sleep 0.3
curl -s -m 5 -o /dev/null "http://127.0.0.1:$PORT/health"; refused=$?
wait "$cpid"
wait "$SPID"; rc=$?
check "SIGTERM: the request in flight completes (2000 tokens)" \
    '[ "$(jq -r "[.usage.completion_tokens, .choices[0].finish_reason] | join(\" \")" <"$T/drain")" = "2000 length" ]'
check "SIGTERM: new connections refused while draining" '[ $refused -ne 0 ]'
check "SIGTERM: exit 0, said it was draining" '[ $rc -eq 0 ] && grep -q "draining 1 request" "$T/one.log"'

# batch_of_four TAG LABEL Q3RUN_ARGS...: the four prompts posted at once to the server on
# $PORT, each checked against q3run Q3RUN_ARGS --temp 0 alone (files $T/TAG_*).
batch_of_four() {
    local tag=$1 label=$2 i
    shift 2
    for i in "${!prompts[@]}"; do
        "$BUILD/q3run" "$@" "$MODEL" "${prompts[$i]}" -n 40 --temp 0 2>/dev/null >"$T/${tag}_want$i"
    done
    for i in "${!prompts[@]}"; do
        post /v1/completions "$(jq -nc --arg p "${prompts[$i]}" '{prompt: $p, max_tokens: 40, temperature: 0}')" \
            >"$T/${tag}_got$i" &
    done
    wait $(jobs -p | grep -v "$SPID") 2>/dev/null
    for i in "${!prompts[@]}"; do
        { jq -j '.choices[0].text' <"$T/${tag}_got$i"; echo; } >"$T/${tag}_text$i"
        check "$label: completion $i in a batch of 4 = q3run $* --temp 0" \
            '[ -s "$T/${tag}_want$i" ] && cmp -s "$T/${tag}_want$i" "$T/${tag}_text$i"'
    done
}

# OpenCL (where there is a device: PoCL in CI): the batched device step. The same four
# prompts at once, each equal to q3run --backend opencl --temp 0, in steps of more than
# one sequence. (A first build of the kernels can take a minute on PoCL: a longer wait.)
if "$BUILD/q3run" --list-devices >/dev/null 2>&1; then
    START_TRIES=1800 start ocl --parallel 4 --ctx 512 --backend opencl
    batch_of_four ocl opencl --backend opencl
    metric() { curl -s -m 5 "http://127.0.0.1:$PORT/metrics" | awk -v m="$1" '$1 == m { print $2 }'; }
    check "opencl: decode steps of several sequences (rows > steps)" \
        '[ "$(metric q3serve_decode_rows_total)" -gt "$(metric q3serve_decode_steps_total)" ]'
    kill -TERM "$SPID"; wait "$SPID"
else
    echo "skip opencl: no OpenCL device"
fi

# The 8-bit KV cache: the four prompts decoded together (each sequence's own 8-bit cache
# in the batched step), each equal to q3run --cache-type q8_0 --temp 0 alone.
start q8 --parallel 4 --ctx 512 --chunk 8 --cache-type q8_0
batch_of_four q8 "--cache-type q8_0" --cache-type q8_0
kill -TERM "$SPID"; wait "$SPID"
"$BUILD/q3serve" "$MODEL" --cache-type q4_0 2>"$T/usage"; rc=$?
check "--cache-type q4_0: exit 2, one line naming it" '[ $rc -eq 2 ] && [ "$(wc -l <"$T/usage")" -eq 1 ] && grep -qF -- "--cache-type" "$T/usage"'

"$BUILD/q3serve" "$MODEL" --chunk 6 2>"$T/usage"; rc=$?
check "a bad option: exit 2, one line" '[ $rc -eq 2 ] && [ "$(wc -l <"$T/usage")" -eq 1 ]'
"$BUILD/q3serve" /nonexistent.q3 --port 0 2>"$T/missing"; rc=$?
check "a missing model: exit 1, one line" '[ $rc -eq 1 ] && [ "$(wc -l <"$T/missing")" -eq 1 ]'

echo "e2e_serve: $fails failed"
[ $fails -eq 0 ]
