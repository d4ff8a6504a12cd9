#!/usr/bin/env bash
# e2e_interactive.sh - q3run -i as a person uses it (issue 14, item 8 and the
# vocabulary without <|im_end|>): a full context drops the oldest turns and the chat
# goes on; a line of any length is one turn; /reset and /exit; a NUL byte or a message
# too long for the context is said and the chat goes on; Ctrl-C stops a reply and the
# chat goes on, Ctrl-C at the prompt ends it. Turns are counted by the "> " prompts.
set -u
BUILD=${BUILD:-build}
MODEL=$BUILD/demo-tiny.q3
RUN=$BUILD/q3run
FIX=$BUILD/fixtures
T=$(mktemp -d /tmp/q3_e2e_chat_XXXXXX)
pid=
trap '[ -n "$pid" ] && kill $pid 2>/dev/null; rm -rf "$T"' EXIT
fails=0
check() { if eval "$2"; then echo "ok   $1"; else echo "FAIL $1"; fails=$((fails + 1)); sed 's/^/     | /' "$T/err" 2>/dev/null | head -8; fi; }
[ -f "$MODEL" ] || { echo "FAIL $MODEL is missing (make model)"; exit 1; }
prompts() { grep -o '> ' "$T/err" | wc -l | tr -d ' '; }
chat() { "$RUN" "$MODEL" -i "$@" >"$T/out" 2>"$T/err"; }

printf 'hello\n' | chat -n 4; rc=$?
check "a one-line banner, a reply, exit 0 at EOF" \
    '[ $rc -eq 0 ] && [ $(grep -c "^q3run: chat with $MODEL (4096 positions); /reset starts over, /exit or Ctrl-D ends, Ctrl-C stops a reply$" "$T/err") -eq 1 ] && [ -s "$T/out" ]'

# A 64-position context fills on the second turn: said, the oldest turns dropped, the chat goes on.
printf 'hello there\nwhat is a license\nand again\nmore words please now\n' |
    chat -n 20 --ctx 64 --temp 0 --system "You are terse."; rc=$?
check "a full context: exit 0, every turn answered" '[ $rc -eq 0 ] && [ $(prompts) -eq 5 ]'
check "a full context is said plainly: dropped turns, the system prompt kept" \
    'grep -qF "the context (64 positions) is full: dropped the 1 oldest turn, kept the system prompt, and continuing" "$T/err"'
printf 'hello there\nagain\n' | chat -n -1 --ctx 48 --temp 0; rc=$?
check "a reply that fills the context is cut, said, and the next turn still runs" \
    '[ $rc -eq 0 ] && grep -qF "the reply was cut" "$T/err" && [ $(prompts) -eq 3 ]'
long=$(printf 'word %.0s' $(seq 1 100))
printf '%s\nhi\n' "$long" | chat -n 2 --ctx 32; rc=$?
check "a message longer than the whole context: not sent, said, the chat goes on" \
    '[ $rc -eq 0 ] && grep -qF "this message needs" "$T/err" && grep -qF "(--ctx): not sent" "$T/err" && [ $(prompts) -eq 3 ]'

# A line of 12 000 bytes is one turn (fgets into 8 KiB split it in two).
big=$(printf 'the license %.0s' $(seq 1 1000))
printf '%s\n' "$big" | chat -n 2; rc=$?
check "a 12000-byte line is one turn" '[ $rc -eq 0 ] && [ $(prompts) -eq 2 ]'

printf 'hello\n/reset\nhello\n/exit\nnever sent\n' | chat -n 2 --temp 0; rc=$?
check "/reset clears, /exit ends (what follows is not read)" \
    '[ $rc -eq 0 ] && grep -qF "q3run: conversation cleared" "$T/err" && [ $(prompts) -eq 4 ] && [ $(grep -c . "$T/out") -le 2 ]'
printf 'ab\0cd\nhello\n' | chat -n 2; rc=$?
check "a NUL byte in a line: said with its offset, not sent, the chat goes on" \
    '[ $rc -eq 0 ] && grep -qF "this line has a NUL byte at offset 2: not sent" "$T/err" && [ $(prompts) -eq 3 ]'

# A vocabulary without <|im_end|> (the template still writes it): the second turn
# ends the first with the text's byte pieces, not "token id -1".
cp -r "$FIX/demo-tiny" "$T/noimend"
python3 - "$T/noimend" <<'PY'
import json, sys
d = sys.argv[1]
t = json.load(open(d + '/tokenizer.json'))
for a in t['added_tokens']:
    if a['content'] == '<|im_end|>': a['content'] = '<|im_stop|>'
json.dump(t, open(d + '/tokenizer.json', 'w'))
c = json.load(open(d + '/tokenizer_config.json'))
for v in c.get('added_tokens_decoder', {}).values():
    if v['content'] == '<|im_end|>': v['content'] = '<|im_stop|>'
if c.get('eos_token') == '<|im_end|>': c['eos_token'] = '<|im_stop|>'
json.dump(c, open(d + '/tokenizer_config.json', 'w'))
PY
"$BUILD/q3convert" -q "$T/noimend" -o "$T/noimend.q3" 2>"$T/err" || echo "FAIL q3convert noimend"
printf 'hi\nthere\n' | "$RUN" "$T/noimend.q3" -i -n 4 >"$T/out" 2>"$T/err"; rc=$?
check "no <|im_end|> in the vocabulary: a second turn runs" '[ $rc -eq 0 ] && [ $(prompts) -eq 3 ] && ! grep -q "token id" "$T/err"'

# ---- Ctrl-C (SIGINT, sent with kill; stdin a FIFO so the test decides when lines come) ----
wait_for() {  # PATTERN FILE: up to 60 s
    for _ in $(seq 1 600); do grep -qF -- "$1" "$2" 2>/dev/null && return 0; kill -0 $pid 2>/dev/null || return 1; sleep 0.1; done
    return 1
}
mkfifo "$T/in"
grown() {  # BYTES: wait until stdout holds more than BYTES
    for _ in $(seq 1 600); do [ "$(stat -c %s "$T/out")" -gt "$1" ] && return 0; sleep 0.1; done
    return 1
}
stopped_twice() { [ "$(grep -c "reply stopped" "$T/err")" -ge 2 ]; }
# The shell opens the FIFO before it truncates out and err, and that open waits for
# the writer: until then the files hold the previous run's text (prompts, a reply),
# which the waits below would take for this run's and send SIGINT before q3run
# catches it (a background job starts with SIGINT ignored: it would be lost).
fresh() { : >"$T/out"; : >"$T/err"; }
# Greedy demo-tiny answers these without an EOS until the context is full: long replies.
fresh
"$RUN" "$MODEL" -i -n -1 --temp 0 <"$T/in" >"$T/out" 2>"$T/err" &
pid=$!
exec 3>"$T/in"
echo "hello there" >&3
grown 0
kill -INT $pid
wait_for "reply stopped" "$T/err"; stopped=$?
kill -0 $pid 2>/dev/null; alive=$?
size=$(stat -c %s "$T/out")
echo "hello" >&3
grown $((size + 8)); second=$?
kill -INT $pid
for _ in $(seq 1 600); do stopped_twice && break; sleep 0.1; done
echo "/exit" >&3
exec 3>&-
wait $pid; rc=$?
pid=
check "Ctrl-C during a reply stops it and the chat goes on (a second reply, stopped too; /exit; exit 0)" \
    '[ $stopped -eq 0 ] && [ $alive -eq 0 ] && [ $second -eq 0 ] && stopped_twice && [ $rc -eq 0 ] && [ $(prompts) -eq 3 ] && ! grep -qF "the reply was cut" "$T/err"'

fresh
"$RUN" "$MODEL" -i -n 4 <"$T/in" >"$T/out" 2>"$T/err" &
pid=$!
exec 3>"$T/in"
wait_for "> " "$T/err"
kill -INT $pid
for _ in $(seq 1 100); do kill -0 $pid 2>/dev/null || break; sleep 0.1; done
kill -0 $pid 2>/dev/null; ended=$?
exec 3>&-
wait $pid; rc=$?
pid=
check "Ctrl-C at the prompt ends the chat (exit 0, stats line)" '[ $ended -ne 0 ] && [ $rc -eq 0 ] && grep -q "^q3run: load" "$T/err"'

echo "e2e_interactive: $fails failed"
[ $fails -eq 0 ]
