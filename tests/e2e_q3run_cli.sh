#!/usr/bin/env bash
# e2e_q3run_cli.sh - q3run's command line as a user meets it (issue 14): sampler
# settings that leave no candidate, non-finite logits, strict --seed, a random default
# seed, stdin that cannot be read or holds a NUL, -t above the CPUs, options without
# effect, --, --pieces, the stats line, no prompt on a terminal, --cache-type; and --help of
# every tool.
set -u
BUILD=${BUILD:-build}
MODEL=$BUILD/demo-tiny.q3
RUN=$BUILD/q3run
T=$(mktemp -d /tmp/q3_e2e_cli_XXXXXX)
trap 'rm -rf "$T"' EXIT
fails=0
check() { if eval "$2"; then echo "ok   $1"; else echo "FAIL $1"; fails=$((fails + 1)); sed 's/^/     | /' "$T/err" "$T/out" 2>/dev/null | head -6; fi; }
[ -f "$MODEL" ] || { echo "FAIL $MODEL is missing (make model)"; exit 1; }
lines() { wc -l <"$1" | tr -d ' '; }
# the stderr lines other than the final statistics line
messages() { grep -v '^q3run: load ' "$T/err"; }

# ---- item 1: no candidate survives the filters; non-finite logits ----
"$RUN" "$MODEL" Hello --temp 100000 --top-p 0 -n 8 >"$T/out" 2>"$T/err"; rc=$?
check "--temp 100000 --top-p 0 (every id below the top-p cut): exit 0, text" '[ $rc -eq 0 ] && [ -s "$T/out" ]'
"$RUN" "$MODEL" Hello --temp 1 --top-k 1 --min-p 1 --top-p 0 -n 8 >"$T/out" 2>"$T/err"; rc=$?
check "every filter at its narrowest: exit 0" '[ $rc -eq 0 ] && [ -s "$T/out" ]'
# NaN in the final norm's weights (BF16 0x7fc0): every logit is NaN. q3run hashes weights
# only with --verify, so the file loads and the sampler meets the NaN.
read -r off size < <("$BUILD/q3info" "$MODEL" | awk '$1 == "model.norm.weight" { print $(NF - 2), $(NF - 1) }')
cp "$MODEL" "$T/nan.q3"
python3 -c "import sys; f=open(sys.argv[1],'r+b'); f.seek(int(sys.argv[2])); f.write(b'\xc0\x7f' * (int(sys.argv[3]) // 2))" \
    "$T/nan.q3" "$off" "$size"
for mode in "--temp 0" "--temp 0.8 --top-p 0.9" "--temp 0.8 --top-k 20"; do
    "$RUN" "$T/nan.q3" Hello $mode -n 4 >"$T/out" 2>"$T/err"; rc=$?
    check "NaN logits ($mode): exit 1, one line naming the file, the step and the token" \
        '[ $rc -eq 1 ] && [ $(lines "$T/err") -eq 1 ] && grep -qF "$T/nan.q3: decode step 1 (position " "$T/err" && grep -qF "the logit of token 0 is NaN" "$T/err"'
done

# ---- --seed: strict; a random default, printed, that reproduces the output ----
for bad in -1 '' 18446744073709551616 ' 5' 12x +3; do
    "$RUN" "$MODEL" hi --seed "$bad" -n 2 >"$T/out" 2>"$T/err"; rc=$?
    check "--seed '$bad': usage error (exit 2) naming --seed" '[ $rc -eq 2 ] && grep -qF -- "--seed" "$T/err"'
done
"$RUN" "$MODEL" hi --seed 18446744073709551615 --temp 1 -n 2 >"$T/out" 2>"$T/err"; rc=$?
check "--seed 2^64-1 is accepted" '[ $rc -eq 0 ] && grep -q "seed 18446744073709551615$" "$T/err"'
"$RUN" "$MODEL" "The license" --temp 1 -n 24 >"$T/out1" 2>"$T/err1"
"$RUN" "$MODEL" "The license" --temp 1 -n 24 -v >"$T/out2" 2>"$T/err2"
s1=$(sed -n 's/.*, seed \([0-9]*\)$/\1/p' "$T/err1")
s2=$(sed -n 's/.*, seed \([0-9]*\)$/\1/p' "$T/err2" | tail -1)
check "without --seed the seed is random, printed in the stats line" '[ -n "$s1" ] && [ -n "$s2" ] && [ "$s1" != "$s2" ]'
check "-v prints the seed before generating" 'grep -q "^q3run: seed $s2, temperature 1" "$T/err2"'
"$RUN" "$MODEL" "The license" --temp 1 -n 24 --seed "$s1" >"$T/out3" 2>"$T/err"
check "--seed with the printed seed gives the same text" 'cmp -s "$T/out1" "$T/out3"'
"$RUN" "$MODEL" "The license" --temp 0 -n 4 >"$T/out" 2>"$T/err"
check "greedy: no seed in the stats line" '! grep -q "seed" "$T/err"'

# ---- stdin: a read error is an error; a NUL is refused in every mode ----
"$RUN" "$MODEL" - -n 2 </ >"$T/out" 2>"$T/err"; rc=$?
check "stdin that cannot be read (a directory): exit 1, one line" \
    '[ $rc -eq 1 ] && [ $(lines "$T/err") -eq 1 ] && grep -qF "cannot read the prompt from standard input: Is a directory" "$T/err"'
for mode in "" "--chat" "--tokenize"; do
    printf 'ab\0cd' | "$RUN" "$MODEL" $mode -n 2 >"$T/out" 2>"$T/err"; rc=$?
    check "a NUL in a stdin prompt (${mode:-raw}): exit 1, names offset 2" \
        '[ $rc -eq 1 ] && [ $(lines "$T/err") -eq 1 ] && grep -qF "NUL byte at offset 2" "$T/err" && [ ! -s "$T/out" ]'
done

# ---- -t above the online CPUs; options that do nothing; -- ----
cpus=$(getconf _NPROCESSORS_ONLN)
"$RUN" "$MODEL" hi -t 999 -n 2 >"$T/out" 2>"$T/err"; rc=$?
check "-t 999: capped, one line saying so" \
    '[ $rc -eq 0 ] && [ $(messages | wc -l) -eq 1 ] && messages | grep -qF -- "-t 999 is more than the $cpus online CPUs; using $cpus"'
"$RUN" "$MODEL" hi -t -2 -n 2 >"$T/out" 2>"$T/err"; rc=$?
check "-t -2: usage error" '[ $rc -eq 2 ]'
warns() {  # NAME PATTERN ARGS...: exit 0 and one warning containing PATTERN
    local name=$1 pat=$2
    shift 2
    "$RUN" "$MODEL" "$@" -n 2 </dev/null >"$T/out" 2>"$T/err"; rc=$?
    check "$name warns" '[ $rc -eq 0 ] && [ $(grep -c warning "$T/err") -eq 1 ] && grep -qF -- "warning: $pat" "$T/err"'
}
warns "--system without --chat" "--system has no effect without --chat or -i" hi --system "Be terse."
warns "--no-think without --chat" "--no-think has no effect" hi --no-think
warns "--device on the CPU backend" "--device has no effect without --backend opencl" hi --device 0
warns "a prompt with -i" "-i reads the conversation from the terminal; the prompt argument is ignored" hi -i
"$RUN" "$MODEL" hi --chat --system "Be terse." -n 2 >"$T/out" 2>"$T/err"; rc=$?
check "--system with --chat: no warning" '[ $rc -eq 0 ] && [ -z "$(messages)" ]'
"$RUN" "$MODEL" --tokenize -- "-n 5" >"$T/out" 2>"$T/err"; rc=$?
want=$(printf -- '-n 5' | "$RUN" "$MODEL" --tokenize - 2>/dev/null)
check "-- ends the options: a prompt may start with -" '[ $rc -eq 0 ] && [ -n "$want" ] && [ "$(cat "$T/out")" = "$want" ]'
"$RUN" "$MODEL" --tokenize -5 >"$T/out" 2>"$T/err"; rc=$?
check "without --, -5 is an unknown option that mentions --" '[ $rc -eq 2 ] && grep -qF -- "-- ends the options" "$T/err"'

# ---- --pieces: the byte-level piece and the text beside it ----
"$RUN" "$MODEL" --pieces $' world\n\tcaf\xc3\xa9' >"$T/out" 2>"$T/err"; rc=$?
check "--pieces: id, piece, quoted text (spaces and newlines readable)" \
    '[ $rc -eq 0 ] && grep -qP "^\d+\tĠworld\t\" world\"$" "$T/out" && grep -qP "^\d+\tĊ\t\"\\\\n\"$" "$T/out" && grep -qP "\t\"é\"$" "$T/out"'

# ---- the stats line: no rate for 0 or 1 tokens ----
"$RUN" "$MODEL" hi -n 1 --temp 0 >"$T/out" 2>"$T/err"
check "-n 1: 'decode 1 token' without a rate (it came from the prompt's logits)" \
    'grep -qE "decode 1 token$" "$T/err" && ! grep -q " 0.0 tok/s" "$T/err"'
"$RUN" "$MODEL" hi -n 8 --temp 0 >"$T/out" 2>"$T/err"
check "-n 8: both rates" 'grep -qE "prefill [0-9]+ tokens? [0-9.]+ tok/s, decode 8 tokens [0-9.]+ tok/s$" "$T/err"'

# ---- no prompt on a terminal: the interactive chat (stdin a pty, through script) ----
if script -qec true /dev/null >/dev/null 2>&1; then
    printf '/exit\n' | script -qec "$RUN $MODEL -n 4" /dev/null >"$T/out" 2>"$T/err"; rc=$?
    check "no prompt on a terminal starts the chat (banner), /exit ends it with 0" \
        '[ $rc -eq 0 ] && grep -qF "q3run: chat with $MODEL" "$T/out"'
else
    echo "skip no prompt on a terminal (script(1) cannot make a pty here)"
fi
printf 'The license' | "$RUN" "$MODEL" -n 4 --temp 0 >"$T/out" 2>"$T/err"; rc=$?
check "no prompt and stdin not a terminal: stdin is the prompt" '[ $rc -eq 0 ] && [ -s "$T/out" ] && ! grep -q "chat with" "$T/err"'

# ---- --help: every tool, stdout, exit 0, the environment it reads ----
for tool in q3convert q3check q3info q3run q3bench q3batch q3synth q3bandwidth q3tokbench q3wgmma embed_cl; do
    [ -x "$BUILD/$tool" ] || { echo "FAIL $BUILD/$tool is not built"; fails=$((fails + 1)); continue; }
    for h in --help -h; do
        "$BUILD/$tool" $h >"$T/out" 2>"$T/err"; rc=$?
        check "$tool $h: exit 0, usage on stdout, nothing on stderr, names its environment" \
            '[ $rc -eq 0 ] && head -1 "$T/out" | grep -q "^usage: $tool" && [ ! -s "$T/err" ] && grep -q "^environment:" "$T/out"'
    done
done
"$BUILD/q3wgmma" --wn 32 >"$T/out" 2>"$T/err"; rc=$?
check "q3wgmma --wn 32: exit 2, one line naming it" '[ $rc -eq 2 ] && [ "$(wc -l <"$T/err")" -eq 1 ] && grep -q "^q3wgmma: bad argument .--wn 32." "$T/err"'
"$BUILD/q3wgmma" >"$T/out" 2>"$T/err"; rc=$?
if grep -q "no NVIDIA OpenCL GPU" "$T/err"; then # elsewhere it probes the GPU: checked on the H200
    check "q3wgmma without an NVIDIA GPU: exit 1, one line" '[ $rc -eq 1 ] && [ "$(wc -l <"$T/err")" -eq 1 ]'
fi
"$BUILD/q3wgmma" --emulate >"$T/out" 2>"$T/err"; rc=$?
if ! grep -q "no OpenCL device" "$T/err"; then # the backend's matmul_wg, emulated, against the host
    check "q3wgmma --emulate: matmul_wg exact on shapes with partial blocks" \
        '[ $rc -eq 0 ] && [ "$(grep -c " exact$" "$T/out")" -eq 2 ] && grep -q "all checks passed" "$T/out"'
fi
tools/synth_models.sh --help >"$T/out" 2>"$T/err"; rc=$?
check "synth_models.sh --help: the same" '[ $rc -eq 0 ] && grep -q "^usage: " "$T/out" && [ ! -s "$T/err" ] && grep -q "^environment:" "$T/out"'
python3 tools/safetensors_to_gguf.py --help >"$T/out" 2>"$T/err"; rc=$?
check "safetensors_to_gguf.py --help: the same" '[ $rc -eq 0 ] && grep -q "^usage: " "$T/out" && [ ! -s "$T/err" ] && grep -q "^environment:" "$T/out"'
"$RUN" --help >"$T/out"
check "q3run --help lists Q3_SIMD and Q3_OPENCL_DEVICE" 'grep -q "Q3_SIMD=" "$T/out" && grep -q "Q3_OPENCL_DEVICE=" "$T/out"'

# ---- --cache-type: the KV cache in 8 bits (cpu), said with -v; refused where it is not ----
"$RUN" "$MODEL" "The GNU General Public License" -n 24 --temp 0 >"$T/f16" 2>/dev/null
"$RUN" "$MODEL" "The GNU General Public License" -n 24 --temp 0 --cache-type q8_0 -v >"$T/out" 2>"$T/err"; rc=$?
check "--cache-type q8_0: exit 0, the same greedy text as f16 on demo-tiny (clear margins), -v says the cache" \
    '[ $rc -eq 0 ] && cmp -s "$T/out" "$T/f16" && grep -qF "q8_0 KV cache" "$T/err"'
for bad in q4_0 F16 ''; do
    "$RUN" "$MODEL" hi --cache-type "$bad" -n 2 >"$T/out" 2>"$T/err"; rc=$?
    check "--cache-type '$bad': usage error (exit 2) naming --cache-type" '[ $rc -eq 2 ] && grep -qF -- "--cache-type" "$T/err"'
done
# refused before any device is looked for: the same with or without an OpenCL device
"$RUN" "$MODEL" hi --backend opencl --cache-type q8_0 -n 2 >"$T/out" 2>"$T/err"; rc=$?
check "--backend opencl --cache-type q8_0: exit 1, one line naming the file and the cpu backend" \
    '[ $rc -eq 1 ] && [ $(lines "$T/err") -eq 1 ] && grep -qF "$MODEL: the opencl backend keeps its KV cache in f16" "$T/err"'

echo "e2e_q3run_cli: $fails failed"
[ $fails -eq 0 ]
