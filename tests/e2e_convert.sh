#!/usr/bin/env bash
# e2e_convert.sh - the conversion tools as a user runs them: q3synth against the
# sha256 goldens, q3convert's exit codes, q3check naming exactly the part a flipped
# bit damaged, q3info, and no file left behind on SIGINT, a full disk or bad input.
set -u
BUILD=${BUILD:-build}
FIX=$BUILD/fixtures
T=$(mktemp -d /tmp/q3_e2e_convert_XXXXXX)
trap 'rm -rf "$T"' EXIT
fails=0
pass() { echo "ok   $1"; }
fail() { echo "FAIL $1"; fails=$((fails + 1)); }
check() { if eval "$2"; then pass "$1"; else fail "$1"; fi; }
for tool in q3convert q3check q3info q3synth; do
    [ -x "$BUILD/$tool" ] || { echo "FAIL $BUILD/$tool is not built"; exit 1; }
done
[ -d "$FIX/demo-tiny" ] || { echo "FAIL $FIX is missing (make fixtures)"; exit 1; }

# ---- usage and exit codes ----
"$BUILD/q3convert" >/dev/null 2>&1; check "q3convert without arguments exits 2" '[ $? -eq 2 ]'
"$BUILD/q3convert" --help >"$T/help" 2>&1; check "q3convert --help exits 0" '[ $? -eq 0 ] && grep -q "usage: q3convert" "$T/help"'
"$BUILD/q3convert" "$FIX/demo-tiny" -o "$T/x.q3" --bogus >/dev/null 2>&1; check "q3convert unknown option exits 2" '[ $? -eq 2 ] && [ ! -e "$T/x.q3" ]'
"$BUILD/q3convert" "$FIX/demo-tiny" >/dev/null 2>&1; check "q3convert without -o exits 2" '[ $? -eq 2 ]'
"$BUILD/q3check" >/dev/null 2>&1; check "q3check without arguments exits 2" '[ $? -eq 2 ]'
"$BUILD/q3info" >/dev/null 2>&1; check "q3info without arguments exits 2" '[ $? -eq 2 ]'
"$BUILD/q3convert" "$T/nothing-here" -o "$T/x.q3" 2>"$T/err"; rc=$?
check "q3convert on a missing directory exits 1 with one line" \
    '[ $rc -eq 1 ] && [ "$(wc -l <"$T/err")" -eq 1 ] && grep -q "nothing-here/config.json: cannot open" "$T/err" && [ ! -e "$T/x.q3" ]'

# ---- q3synth: byte-identical to synth_qwen3.py ----
for m in syn-a syn-b; do
    "$BUILD/q3synth" "tests/fixtures/configs/$m.json" "$T/$m" || fail "q3synth $m"
    want=$(sed -n "s/.*\"$m\": *\"\([0-9a-f]*\)\".*/\1/p" tests/fixtures/goldens/synthetic_sha256.json)
    got=$(sha256sum "$T/$m/model.safetensors" | cut -d' ' -f1)
    check "q3synth $m model.safetensors sha256 matches the golden" '[ -n "$want" ] && [ "$got" = "$want" ]'
done

# ---- convert demo-tiny; q3check and q3info on it ----
"$BUILD/q3convert" -q "$FIX/demo-tiny" -o "$T/demo.q3" >"$T/out" 2>&1; rc=$?
check "q3convert -q demo-tiny exits 0 and prints nothing" '[ $rc -eq 0 ] && [ ! -s "$T/out" ]'
"$BUILD/q3convert" "$FIX/demo-tiny" -o "$T/demo2.q3" 2>"$T/err" >"$T/out"; rc=$?
check "q3convert prints no progress bar when stderr is not a terminal" '[ $rc -eq 0 ] && [ ! -s "$T/err" ] && grep -q "wrote" "$T/out"'
check "two conversions are byte-identical" 'cmp -s "$T/demo.q3" "$T/demo2.q3"'
ls "$T" | grep -q '\.tmp\.' && fail "temp files left in $T" || pass "no temp files left after success"
"$BUILD/q3check" "$T/demo.q3" >"$T/chk"; rc=$?
check "q3check on a good file exits 0 with OK" '[ $rc -eq 0 ] && tail -1 "$T/chk" | grep -q ": OK"'
"$BUILD/q3info" "$T/demo.q3" >"$T/info"; rc=$?
check "q3info shows config, generation, sections, tensors, tokenizer" \
    '[ $rc -eq 0 ] && grep -q "vocab_size 8320, hidden_size 256" "$T/info" && grep -q "eos_token_ids \[8192\]" "$T/info" &&
     grep -q "^sections:" "$T/info" && grep -q "^tensors: 46," "$T/info" && grep -q "model.embed_tokens.weight" "$T/info" &&
     grep -q "^tokenizer: " "$T/info" && grep -q "chat template: present" "$T/info"'

# ---- q3check names exactly the damaged part ----
sec() { awk -v k="$1" '$1 == k && NF == 7 { print $'"$2"' }' "$T/info"; }            # 2 offset, 3 size
ten() { awk -v k="$1" '$1 == k { print $(NF - '"$2"') }' "$T/info"; }                 # 2 offset, 1 size
flip() {  # FILE OFFSET: xor the lowest bit of one byte
    local b
    b=$(od -An -tu1 -j "$2" -N1 "$1" | tr -d ' ')
    printf "$(printf '\\%03o' $((b ^ 1)))" | dd of="$1" bs=1 seek="$2" conv=notrunc status=none
}
# flip_case NAME OFFSET PATTERN...: exactly one failure line per pattern, exit 1.
flip_case() {
    local name=$1 off=$2 ok=1
    shift 2
    cp "$T/demo.q3" "$T/flip.q3"
    flip "$T/flip.q3" "$off"
    "$BUILD/q3check" "$T/flip.q3" >"$T/chk"
    local rc=$? n
    n=$(grep -vc -e ': FAILED (' -e ': OK (' "$T/chk")
    [ $rc -eq 1 ] && [ "$n" -eq $# ] && tail -1 "$T/chk" | grep -q "FAILED ($# of" || ok=0
    for p in "$@"; do grep -q -- "$p" "$T/chk" || ok=0; done
    if [ $ok -eq 1 ]; then pass "q3check names exactly: $name"; else fail "q3check names exactly: $name"; cat "$T/chk"; fi
}
flip_case "header" 50 "header (offset 0)"
flip_case "config" $(( $(sec config 2) + 48 )) "section 'config'" "whole file"
flip_case "generation" $(( $(sec generation 2) + 8 )) "section 'generation'" "whole file"
flip_case "tokenizer" $(( $(sec tokenizer 2) + $(sec tokenizer 3) / 2 )) "section 'tokenizer'" "whole file"
flip_case "tensors" $(( $(sec tensors 2) + 8 + 63 )) "section 'tensors'" "whole file"
flip_case "one tensor" $(( $(ten model.layers.2.mlp.up_proj.weight 2) + 1000 )) \
    "tensor 'model.layers.2.mlp.up_proj.weight' (offset" "section 'weights'" "whole file"
# q_norm holds 64 values (128 bytes) in a 256-byte slot: the padding belongs to no tensor.
qn=model.layers.0.self_attn.q_norm.weight
flip_case "weights padding" $(( $(ten $qn 2) + $(ten $qn 1) + 7 )) "section 'weights'" "whole file"

head -c -4096 "$T/demo.q3" >"$T/trunc.q3"
"$BUILD/q3check" "$T/trunc.q3" >"$T/chk"; rc=$?
check "q3check refuses a truncated file with a clear line" '[ $rc -eq 1 ] && grep -q "truncated" "$T/chk" && tail -1 "$T/chk" | grep -q FAILED'

# ---- nothing is left behind when the output cannot be written ----
( ulimit -f 512; "$BUILD/q3convert" "$FIX/demo-tiny" -o "$T/full.q3" ) 2>"$T/err"; rc=$?
check "full disk (ulimit -f): exit 1, clear message, no file" \
    '[ $rc -eq 1 ] && grep -q "File too large" "$T/err" && [ -z "$(ls "$T" | grep "^full\.q3")" ]'
"$BUILD/q3convert" "$FIX/demo-tiny" -o /nonexistent/dir/x.q3 2>"$T/err"; rc=$?
check "unwritable output directory: exit 1, names it" '[ $rc -eq 1 ] && grep -q "cannot create a temporary file in /nonexistent/dir" "$T/err"'

# ---- SIGINT while writing: the temp file is removed, no target appears ----
# A ~100M-parameter synthetic model takes long enough to write that the temp file is seen.
sed -e 's/"hidden_size": 128/"hidden_size": 512/' -e 's/"intermediate_size": 384/"intermediate_size": 1536/' \
    -e 's/"num_hidden_layers": 3/"num_hidden_layers": 8/' tests/fixtures/configs/syn-a.json >"$T/mid.json"
"$BUILD/q3synth" "$T/mid.json" "$T/mid" || fail "q3synth mid"
cp "$FIX/tokenizer.json" tests/fixtures/tokenizer_config.json "$T/mid/"
"$BUILD/q3convert" "$T/mid" -o "$T/int.q3" 2>/dev/null &
pid=$!
seen=0
for _ in $(seq 1 3000); do
    if ls "$T" | grep -q '^int\.q3\.tmp\.'; then seen=1; break; fi
    kill -0 $pid 2>/dev/null || break
    sleep 0.01
done
kill -STOP $pid 2>/dev/null
kill -INT $pid 2>/dev/null
kill -CONT $pid 2>/dev/null
wait $pid; rc=$?
check "SIGINT while writing: killed by SIGINT, temp file removed, no target" \
    '[ $seen -eq 1 ] && [ $rc -eq 130 ] && [ -z "$(ls "$T" | grep "^int\.q3")" ]'

echo "e2e_convert: $fails failed"
[ $fails -eq 0 ]
