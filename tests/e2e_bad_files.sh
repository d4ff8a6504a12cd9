#!/usr/bin/env bash
# e2e_bad_files.sh - issue 14, the file side, as a user meets it: q3convert's output
# that is not a regular file or is one of its own inputs, NaN/Inf weights, a tokenizer
# q3run would refuse; q3run/q3check/q3info given a FIFO; a model file truncated under
# a running q3run; q3check on a missing file; q3info on special tokens with terminal
# escapes. Every refusal: exit 1 (usage: 2), one line on stderr naming the file,
# nothing left at a conversion's output, inputs untouched.
set -u
BUILD=${BUILD:-build}
FIX=$BUILD/fixtures
MODEL=$BUILD/demo-tiny.q3
T=$(mktemp -d /tmp/q3_e2e_bad_files_XXXXXX)
trap 'rm -rf "$T"' EXIT
fails=0
pass() { echo "ok   $1"; }
fail() { echo "FAIL $1"; fails=$((fails + 1)); }
check() { if eval "$2"; then pass "$1"; else fail "$1"; sed 's/^/     | /' "$T/err" "$T/out" 2>/dev/null | head -6; fi; }
lines() { wc -l <"$1" | tr -d ' '; }
one_line() { [ "$(lines "$1")" -eq 1 ] && grep -qF -- "$2" "$1"; }
no_temp() { ! ls -A "$1" | grep -q '\.tmp\.'; }
for tool in q3convert q3check q3info q3run; do
    [ -x "$BUILD/$tool" ] || { echo "FAIL $BUILD/$tool is not built"; exit 1; }
done
[ -f "$MODEL" ] || { echo "FAIL $MODEL is missing (make model)"; exit 1; }
cp -r "$FIX/demo-tiny" "$T/ckpt"
(cd "$T/ckpt" && md5sum * >"$T/ckpt.md5")
ckpt_intact() { (cd "$T/ckpt" && md5sum --quiet -c "$T/ckpt.md5" >/dev/null 2>&1); }

# ---- 2: an existing output that is not a regular file, refused before any work ----
mkfifo "$T/fifo.q3"
timeout 20 "$BUILD/q3convert" "$T/ckpt" -o "$T/fifo.q3" >"$T/out" 2>"$T/err"; rc=$?
check "q3convert -o FIFO: exit 1, one line, the FIFO stays" \
    '[ $rc -eq 1 ] && one_line "$T/err" "$T/fifo.q3: exists and is a FIFO" && [ -p "$T/fifo.q3" ] && no_temp "$T"'
python3 -c "import socket,sys; s=socket.socket(socket.AF_UNIX); s.bind(sys.argv[1])" "$T/sock.q3"
"$BUILD/q3convert" "$T/ckpt" -o "$T/sock.q3" >"$T/out" 2>"$T/err"; rc=$?
check "q3convert -o socket: exit 1, one line, the socket stays" \
    '[ $rc -eq 1 ] && one_line "$T/err" "$T/sock.q3: exists and is a socket" && [ -S "$T/sock.q3" ]'
"$BUILD/q3convert" "$T/ckpt" -o /dev/null >"$T/out" 2>"$T/err"; rc=$?
check "q3convert -o /dev/null: exit 1, one line, still a device" \
    '[ $rc -eq 1 ] && one_line "$T/err" "/dev/null: exists and is a character device" && [ -c /dev/null ]'
ln -s "$T/fifo.q3" "$T/link-to-fifo.q3"
"$BUILD/q3convert" "$T/ckpt" -o "$T/link-to-fifo.q3" >"$T/out" 2>"$T/err"; rc=$?
check "q3convert -o symlink to a FIFO: exit 1, one line" '[ $rc -eq 1 ] && one_line "$T/err" "exists and is a FIFO"'
"$BUILD/q3convert" "$T/ckpt" -o '' >"$T/out" 2>"$T/err"; rc=$?
check "q3convert -o '': usage error (exit 2)" '[ $rc -eq 2 ] && grep -q "needs one non-empty file name" "$T/err"'

# ---- 3: -o naming one of the converter's inputs, by any name ----
for f in model.safetensors config.json tokenizer.json tokenizer_config.json generation_config.json; do
    "$BUILD/q3convert" "$T/ckpt" -o "$T/ckpt/$f" >"$T/out" 2>"$T/err"; rc=$?
    check "q3convert -o its input $f: exit 1, one line, checkpoint intact" \
        '[ $rc -eq 1 ] && one_line "$T/err" "is the same file as the input" && ckpt_intact && no_temp "$T/ckpt"'
done
ln -s "$T/ckpt/model.safetensors" "$T/soft.q3"
"$BUILD/q3convert" "$T/ckpt" -o "$T/soft.q3" >"$T/out" 2>"$T/err"; rc=$?
check "q3convert -o symlink to model.safetensors: exit 1, checkpoint intact" \
    '[ $rc -eq 1 ] && one_line "$T/err" "model.safetensors" && ckpt_intact'
ln "$T/ckpt/tokenizer.json" "$T/hard.q3"
"$BUILD/q3convert" "$T/ckpt" -o "$T/hard.q3" >"$T/out" 2>"$T/err"; rc=$?
check "q3convert -o hard link to tokenizer.json: exit 1, checkpoint intact" \
    '[ $rc -eq 1 ] && one_line "$T/err" "tokenizer.json" && ckpt_intact'
cp -r "$FIX/hf-tiny-f32" "$T/sharded"
"$BUILD/q3convert" "$T/sharded" -o "$T/sharded/model-00001-of-00002.safetensors" >"$T/out" 2>"$T/err"; rc=$?
check "q3convert -o a shard: exit 1" '[ $rc -eq 1 ] && one_line "$T/err" "is the same file as the input"'
"$BUILD/q3convert" "$T/sharded" -o "$T/sharded/model.safetensors.index.json" >"$T/out" 2>"$T/err"; rc=$?
check "q3convert -o the shard index: exit 1" '[ $rc -eq 1 ] && one_line "$T/err" "is the same file as the input"'
"$BUILD/q3convert" "$T/ckpt" -o "$T/ckpt/model.q3" -q >"$T/out" 2>"$T/err"; rc=$?
check "q3convert into the checkpoint folder under a new name still works" '[ $rc -eq 0 ] && [ -s "$T/ckpt/model.q3" ]'
rm -f "$T/ckpt/model.q3"

# ---- 4: NaN / Inf weights ----
# put_weight DIR TENSOR INDEX HEX: one element of a safetensors tensor, in its dtype's width
put_weight() {
    python3 - "$@" <<'PY'
import json, struct, sys
d, name, index, value = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4], 16)
path = d + '/model.safetensors'
f = open(path, 'r+b')
n = struct.unpack('<Q', f.read(8))[0]
t = json.loads(f.read(n))[name]
width = {'BF16': 2, 'F16': 2, 'F32': 4}[t['dtype']]
if width == 4 and value <= 0xffff: value <<= 16
f.seek(8 + n + t['data_offsets'][0] + width * index)
f.write(value.to_bytes(width, 'little'))
PY
}
cp -r "$FIX/demo-tiny" "$T/nan"
put_weight "$T/nan" model.layers.1.mlp.down_proj.weight 70 7fc0
"$BUILD/q3convert" "$T/nan" -o "$T/nan.q3" >"$T/out" 2>"$T/err"; rc=$?
check "q3convert refuses a NaN weight, naming the tensor and the index; nothing written" \
    '[ $rc -eq 1 ] && one_line "$T/err" "tensor '"'"'model.layers.1.mlp.down_proj.weight'"'"': element 70" && grep -q "is NaN" "$T/err" && [ ! -e "$T/nan.q3" ] && no_temp "$T"'
"$BUILD/q3convert" "$T/nan" -o "$T/nan.q3" --allow-nonfinite -q >"$T/out" 2>"$T/err"; rc=$?
check "q3convert --allow-nonfinite writes it" '[ $rc -eq 0 ] && [ -s "$T/nan.q3" ]'
"$BUILD/q3check" "$T/nan.q3" >"$T/out" 2>"$T/err"; rc=$?
check "q3check reports the non-finite weight: exit 1, FAILED" \
    '[ $rc -eq 1 ] && grep -qF "tensor '"'"'model.layers.1.mlp.down_proj.weight'"'"': 1 non-finite value" "$T/out" && tail -1 "$T/out" | grep -q "FAILED (1 tensor with NaN or Inf)"'
cp -r "$FIX/demo-tiny" "$T/inf"
put_weight "$T/inf" model.norm.weight 3 ff80
"$BUILD/q3convert" "$T/inf" -o "$T/inf.q3" >"$T/out" 2>"$T/err"; rc=$?
check "q3convert refuses an -Inf weight" '[ $rc -eq 1 ] && one_line "$T/err" "tensor '"'"'model.norm.weight'"'"': element 3 [3] is -Inf"'

# ---- 5: a tokenizer q3run would refuse is refused by q3convert, nothing written ----
cp -r "$FIX/demo-tiny" "$T/tok"
python3 - "$T/tok/tokenizer.json" <<'PY'
import json, sys
t = json.load(open(sys.argv[1]))
t['normalizer'] = {'type': 'Lowercase'}
json.dump(t, open(sys.argv[1], 'w'), ensure_ascii=False)
PY
"$BUILD/q3convert" "$T/tok" -o "$T/tok.q3" >"$T/out" 2>"$T/err"; rc=$?
check "q3convert refuses a normalizer q3run does not support; nothing written" \
    '[ $rc -eq 1 ] && one_line "$T/err" "$T/tok/tokenizer.json: tokenizer: normalizer type \"Lowercase\" is not supported" && [ ! -e "$T/tok.q3" ] && no_temp "$T"'

# ---- 7: a FIFO as the model: refused at once, not waited on ----
for tool in q3run q3check q3info; do
    timeout 10 "$BUILD/$tool" "$T/fifo.q3" >"$T/out" 2>"$T/err"; rc=$?
    cat "$T/out" >>"$T/err"
    check "$tool on a FIFO: exit 1 at once, names it" '[ $rc -eq 1 ] && grep -qF "$T/fifo.q3: not a regular file (it is a FIFO)" "$T/err"'
done

# ---- 10: q3check on a missing file says so; q3info escapes control characters ----
"$BUILD/q3check" "$T/no-such.q3" >"$T/out" 2>"$T/err"; rc=$?
check "q3check on a missing file: FAILED (the file is missing)" \
    '[ $rc -eq 1 ] && tail -1 "$T/out" | grep -qF "$T/no-such.q3: FAILED (the file is missing)"'
cp -r "$FIX/demo-tiny" "$T/esc"
python3 - "$T/esc/tokenizer.json" <<'PY'
import json, sys
t = json.load(open(sys.argv[1]))
t['added_tokens'][3]['content'] = '\x1b]0;pwned\x07\x1b[2J<|x|>\u009b'
json.dump(t, open(sys.argv[1], 'w'))
PY
"$BUILD/q3convert" "$T/esc" -o "$T/esc.q3" -q >"$T/out" 2>"$T/err"; rc=$?
"$BUILD/q3info" "$T/esc.q3" >"$T/out" 2>"$T/err"; rc2=$?
check "q3info escapes control characters in special tokens" \
    '[ $rc -eq 0 ] && [ $rc2 -eq 0 ] && ! grep -q $'"'"'\x1b'"'"' "$T/out" && grep -qF "special 8195: \u001b]0;pwned\u0007\u001b[2J<|x|>\u009b" "$T/out"'

# ---- 9: the model file truncated under a running q3run (SIGBUS) ----
# q3run maps the file, then waits for its prompt on stdin (a FIFO held open here);
# the file is cut while it waits, then the prompt is sent: the forward pass reads
# weights past the new end.
cp "$MODEL" "$T/cut.q3"
mkfifo "$T/prompt"
"$BUILD/q3run" "$T/cut.q3" - -n 4 --temp 0 <"$T/prompt" >"$T/out" 2>"$T/err" &
pid=$!
exec 3>"$T/prompt"
for _ in $(seq 100); do grep -qF "$T/cut.q3" "/proc/$pid/maps" 2>/dev/null && break; sleep 0.1; done
truncate -s 8192 "$T/cut.q3"
echo "The GNU General Public License" >&3
exec 3>&-
wait $pid; rc=$?
check "q3run on a file truncated while mapped: exit 1, one line naming it" \
    '[ $rc -eq 1 ] && one_line "$T/err" "$T/cut.q3: offset" && grep -q "the file shrank while it was in use" "$T/err"'

echo "e2e_bad_files: $fails failed"
[ $fails -eq 0 ]
