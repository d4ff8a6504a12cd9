#!/usr/bin/env bash
# e2e_badinput.sh - bad input and faults as a user meets them: a .q3 cut at every
# section boundary, a flipped bit in each section, wrong magic/version, sizes that
# overflow, missing and odd files, unwritable and full output places, a conversion
# killed midway, and awkward prompts. Every refusal must be exit 1 with ONE line
# naming the file (q3check: a report whose first line names the file and the
# problem, last line FAILED); nothing may be left at a conversion's target.
set -u
BUILD=${BUILD:-build}
FIX=$BUILD/fixtures
MODEL=$BUILD/demo-tiny.q3
T=$(mktemp -d /tmp/q3_e2e_badinput_XXXXXX)
trap 'rm -rf "$T"' EXIT
fails=0
pass() { echo "ok   $1"; }
fail() { echo "FAIL $1"; fails=$((fails + 1)); }
check() { if eval "$2"; then pass "$1"; else fail "$1"; sed 's/^/     | /' "$T/err" "$T/out" 2>/dev/null | head -6; fi; }
for tool in q3convert q3check q3info q3run q3synth; do
    [ -x "$BUILD/$tool" ] || { echo "FAIL $BUILD/$tool is not built"; exit 1; }
done
[ -f "$MODEL" ] || { echo "FAIL $MODEL is missing (make model)"; exit 1; }

lines() { wc -l <"$1" | tr -d ' '; }
# one_line FILE PATTERN: exactly one line, containing PATTERN (fixed string)
one_line() { [ "$(lines "$1")" -eq 1 ] && grep -qF -- "$2" "$1"; }
# run_refuses NAME FILE PATTERN: q3run and q3info exit 1 with one stderr line naming FILE
# and containing PATTERN, and print nothing on stdout; q3check exits 1, its first line
# names FILE, its last line says FAILED.
refuses() {
    local name=$1 f=$2 pat=$3 rc
    "$BUILD/q3run" "$f" "Hello" -n 2 --temp 0 >"$T/out" 2>"$T/err"; rc=$?
    check "q3run refuses $name" '[ $rc -eq 1 ] && one_line "$T/err" "$f:" && grep -qF -- "$pat" "$T/err" && [ ! -s "$T/out" ]'
    "$BUILD/q3info" "$f" >"$T/out" 2>"$T/err"; rc=$?
    check "q3info refuses $name" '[ $rc -eq 1 ] && one_line "$T/err" "$f:" && grep -qF -- "$pat" "$T/err"'
    "$BUILD/q3check" "$f" >"$T/out" 2>"$T/err"; rc=$?
    check "q3check refuses $name" \
        '[ $rc -eq 1 ] && head -1 "$T/out" | grep -qF -- "$f:" && grep -qF -- "$pat" "$T/out" && tail -1 "$T/out" | grep -q "FAILED"'
}
put64() {  # FILE OFFSET VALUE: write a little-endian u64
    python3 -c "import struct,sys; f=open(sys.argv[1],'r+b'); f.seek(int(sys.argv[2])); f.write(struct.pack('<Q', int(sys.argv[3]))); f.close()" "$@"
}
put32() {
    python3 -c "import struct,sys; f=open(sys.argv[1],'r+b'); f.seek(int(sys.argv[2])); f.write(struct.pack('<I', int(sys.argv[3]))); f.close()" "$@"
}
flip() {  # FILE OFFSET: xor the lowest bit of one byte
    python3 -c "import sys; f=open(sys.argv[1],'r+b'); f.seek(int(sys.argv[2])); b=f.read(1)[0]; f.seek(int(sys.argv[2])); f.write(bytes([b ^ 1])); f.close()" "$@"
}

# ---- the model's layout, from q3info ----
"$BUILD/q3info" "$MODEL" >"$T/info" || { echo "FAIL q3info $MODEL"; exit 1; }
sec() { awk -v k="$1" '$1 == k && NF == 7 { print $'"$2"' }' "$T/info"; }   # 2 offset, 3 size
size=$(stat -c %s "$MODEL")
table=$(od -An -tu8 -j 24 -N 8 "$MODEL" | tr -d ' ')

# ---- truncated at every section boundary (and inside each section) ----
cuts="0 32 64"
for k in config generation tokenizer tensors weights; do
    o=$(sec $k 2); s=$(sec $k 3)
    cuts="$cuts $o $((o + s / 2)) $((o + s))"
done
cuts="$cuts $table $((table + 100)) $((size - 1))"
for c in $(echo $cuts | tr ' ' '\n' | sort -un); do
    [ "$c" -lt "$size" ] || continue
    head -c "$c" "$MODEL" >"$T/cut.q3"
    if [ "$c" -lt 64 ]; then want="too short for the 64-byte header"; else want="truncated"; fi
    refuses "a file cut at byte $c" "$T/cut.q3" "$want"
done

# ---- a flipped bit in each part ----
# q3run verifies the header and the CONFIG, GENERATION, TOKENIZER and TENSORS checksums on
# every load (spec.md 10); the weights only with --verify.
flipcase() {  # NAME OFFSET PATTERN
    local pat=$3 rc
    cp "$MODEL" "$T/flip.q3"
    flip "$T/flip.q3" "$2"
    "$BUILD/q3run" "$T/flip.q3" "Hello" -n 2 --temp 0 >"$T/out" 2>"$T/err"; rc=$?
    check "q3run refuses a flipped bit in $1" \
        '[ $rc -eq 1 ] && one_line "$T/err" "$T/flip.q3:" && grep -qF -- "$pat" "$T/err" && [ ! -s "$T/out" ]'
    "$BUILD/q3check" "$T/flip.q3" >"$T/out" 2>"$T/err"; rc=$?
    check "q3check names a flipped bit in $1" '[ $rc -eq 1 ] && grep -qF -- "$pat" "$T/out" && tail -1 "$T/out" | grep -q FAILED'
}
flipcase "the header" 48 "header (offset 0): checksum"
flipcase "config" $(( $(sec config 2) + 56 )) "section 'config'"
flipcase "generation" $(( $(sec generation 2) + 9 )) "section 'generation'"
flipcase "tokenizer" $(( $(sec tokenizer 2) + $(sec tokenizer 3) / 3 )) "section 'tokenizer'"
flipcase "the tensor directory" $(( $(sec tensors 2) + 8 + 128 + 63 )) "section 'tensors'"
flipcase "the section table (tokenizer checksum)" $(( table + 2 * 48 + 40 )) "section 'tokenizer'"
# A weight: q3run without --verify loads it (by design: loading stays instant); with --verify it refuses.
wo=$(awk '$1 == "model.layers.1.mlp.down_proj.weight" { print $(NF - 2) }' "$T/info")
cp "$MODEL" "$T/flipw.q3"
flip "$T/flipw.q3" $((wo + 4096))
"$BUILD/q3run" "$T/flipw.q3" "Hello" -n 2 --temp 0 >"$T/out" 2>"$T/err"; rc=$?
check "q3run without --verify runs a file with a flipped weight bit" '[ $rc -eq 0 ]'
"$BUILD/q3run" --verify "$T/flipw.q3" "Hello" -n 2 --temp 0 >"$T/out" 2>"$T/err"; rc=$?
check "q3run --verify refuses it: one line, the file, the checksum" \
    '[ $rc -eq 1 ] && one_line "$T/err" "$T/flipw.q3:" && grep -q "weights.*checksum" "$T/err" && [ ! -s "$T/out" ]'
"$BUILD/q3run" --verify --no-mmap "$T/flipw.q3" "Hello" -n 2 --temp 0 >"$T/out" 2>"$T/err"; rc=$?
check "q3run --verify --no-mmap refuses it too (the copy is what is hashed)" \
    '[ $rc -eq 1 ] && one_line "$T/err" "$T/flipw.q3:" && grep -q "weights.*checksum" "$T/err" && [ ! -s "$T/out" ]'
"$BUILD/q3check" "$T/flipw.q3" >"$T/out" 2>"$T/err"; rc=$?
check "q3check names the tensor" '[ $rc -eq 1 ] && grep -qF "model.layers.1.mlp.down_proj.weight" "$T/out"'

# ---- wrong magic, version; sizes that overflow ----
cp "$MODEL" "$T/magic.q3"; printf 'GGUF' | dd of="$T/magic.q3" conv=notrunc status=none
refuses "a wrong magic" "$T/magic.q3" 'bad magic, expected "Q3MODEL\0"'
cp "$MODEL" "$T/v2.q3"; put32 "$T/v2.q3" 8 2
refuses "version 2" "$T/v2.q3" "version 2, this reader understands version 1"
cp "$MODEL" "$T/fsize.q3"; put64 "$T/fsize.q3" 16 18446744073709551615
refuses "a file_size of 2^64-1" "$T/fsize.q3" "offset 16"
cp "$MODEL" "$T/table.q3"; put64 "$T/table.q3" 24 18446744073709551608
refuses "a section table offset that wraps" "$T/table.q3" "offset 24: section table"
cp "$MODEL" "$T/count.q3"; put32 "$T/count.q3" 32 4294967295
refuses "a section count of 2^32-1" "$T/count.q3" "section_count 4294967295"
cp "$MODEL" "$T/secsize.q3"; put64 "$T/secsize.q3" $((table + 4 * 48 + 16)) 18446744073709551615
refuses "a section size of 2^64-1" "$T/secsize.q3" "outside the file"
# (forged files with every checksum correct: tests/test_format_badinput.c)

# ---- files that are not there or not files ----
for tool in q3run q3info q3check; do
    "$BUILD/$tool" "$T/no-such.q3" >"$T/out" 2>"$T/err"; rc=$?
    cat "$T/out" >>"$T/err"
    check "$tool on a missing file: exit 1, names it" '[ $rc -eq 1 ] && grep -qF "$T/no-such.q3: cannot open: No such file or directory" "$T/err"'
    "$BUILD/$tool" "$T" >"$T/out" 2>"$T/err"; rc=$?
    cat "$T/out" >>"$T/err"
    check "$tool on a directory: exit 1, names it" '[ $rc -eq 1 ] && grep -qF "$T: not a regular file" "$T/err"'
done
: >"$T/empty.q3"
refuses "an empty file" "$T/empty.q3" "file is 0 bytes"

# ---- conversion output that cannot be written ----
"$BUILD/q3convert" "$FIX/demo-tiny" -o /proc/self/x.q3 >"$T/out" 2>"$T/err"; rc=$?
check "q3convert into an unwritable directory (/proc/self): exit 1, one line naming it" \
    '[ $rc -eq 1 ] && one_line "$T/err" "/proc/self"'
: >"$T/plain"
"$BUILD/q3convert" "$FIX/demo-tiny" -o "$T/plain/x.q3" >"$T/out" 2>"$T/err"; rc=$?
check "q3convert under a regular file (not a directory): exit 1, one line naming it" \
    '[ $rc -eq 1 ] && one_line "$T/err" "$T/plain"'
mkdir -p "$T/isdir.q3"
"$BUILD/q3convert" "$FIX/demo-tiny" -o "$T/isdir.q3" >"$T/out" 2>"$T/err"; rc=$?
check "q3convert onto an existing directory: exit 1, one line, directory untouched, no temp file" \
    '[ $rc -eq 1 ] && one_line "$T/err" "$T/isdir.q3" && [ -d "$T/isdir.q3" ] && ! ls "$T" | grep -q "\.tmp\."'

# A full disk: a 4 MiB tmpfs in a private mount namespace (root, or a user namespace);
# where neither is allowed, a file-size limit stands in (e2e_convert.sh also does that).
cat >"$T/full.sh" <<FULL
mount -t tmpfs -o size=4m tmpfs "$T/mnt" || exit 99
"$BUILD/q3convert" "$FIX/demo-tiny" -o "$T/mnt/x.q3" 2>"$T/err"; rc=\$?
ls -A "$T/mnt" >"$T/left"
exit \$rc
FULL
mkdir -p "$T/mnt"
rc=99
for ns in "-m" "-Urm"; do
    unshare $ns true 2>/dev/null || continue
    unshare $ns sh "$T/full.sh" 2>/dev/null; rc=$?
    [ $rc -ne 99 ] && break
done
if [ $rc -ne 99 ]; then
    check "full disk (4 MiB tmpfs): exit 1, one line 'No space left on device', nothing left there" \
        '[ $rc -eq 1 ] && one_line "$T/err" "No space left on device" && [ ! -s "$T/left" ]'
else
    ( ulimit -f 2048; "$BUILD/q3convert" "$FIX/demo-tiny" -o "$T/big.q3" 2>"$T/err" ); rc=$?
    check "full disk (ulimit -f, no mount namespace here): exit 1, one line, nothing left" \
        '[ $rc -eq 1 ] && one_line "$T/err" "File too large" && ! ls "$T" | grep -q "^big\.q3"'
fi

# ---- a conversion killed midway: no target, no temp file (SIGTERM, SIGHUP; SIGINT is in
# e2e_convert.sh). SIGKILL cannot be caught: the temp file stays, the target never appears.
sed -e 's/"hidden_size": 128/"hidden_size": 256/' -e 's/"intermediate_size": 384/"intermediate_size": 768/' \
    -e 's/"num_hidden_layers": 3/"num_hidden_layers": 4/' tests/fixtures/configs/syn-a.json >"$T/mid.json"
"$BUILD/q3synth" "$T/mid.json" "$T/mid" || fail "q3synth mid"
cp "$FIX/tokenizer.json" tests/fixtures/tokenizer_config.json "$T/mid/"
mkdir -p "$T/kill"
killcase() {  # SIGNAL EXPECTED_RC
    rm -f "$T/kill/"*
    "$BUILD/q3convert" "$T/mid" -o "$T/kill/out.q3" >/dev/null 2>&1 &
    pid=$!
    seen=0
    for _ in $(seq 1 3000); do
        if ls "$T/kill" | grep -q '^out\.q3\.tmp\.'; then seen=1; break; fi
        kill -0 $pid 2>/dev/null || break
        sleep 0.01
    done
    kill -STOP $pid 2>/dev/null
    kill -"$1" $pid 2>/dev/null
    kill -CONT $pid 2>/dev/null
    wait $pid 2>/dev/null; rc=$?
    left=$(ls -A "$T/kill")
}
killcase TERM
check "SIGTERM while writing: killed by SIGTERM (143), no target, no temp file" \
    '[ $seen -eq 1 ] && [ $rc -eq 143 ] && [ -z "$left" ]'
killcase HUP
check "SIGHUP while writing: killed by SIGHUP (129), no target, no temp file" \
    '[ $seen -eq 1 ] && [ $rc -eq 129 ] && [ -z "$left" ]'
killcase KILL
check "SIGKILL while writing: no target (only the temp file remains)" \
    '[ $seen -eq 1 ] && [ $rc -eq 137 ] && ! echo "$left" | grep -qx "out.q3"'

# ---- awkward prompts ----
"$BUILD/q3run" "$MODEL" "" -n 4 --temp 0 >"$T/out" 2>"$T/err"; rc=$?
check "an empty prompt starts from BOS and generates" '[ $rc -eq 0 ] && [ -s "$T/out" ]'
printf '' | "$BUILD/q3run" "$MODEL" - -n 4 --temp 0 >"$T/out" 2>"$T/err"; rc=$?
check "an empty stdin prompt: the same" '[ $rc -eq 0 ] && [ -s "$T/out" ]'
long=$(printf 'word %.0s' $(seq 1 200))
"$BUILD/q3run" "$MODEL" "$long" --ctx 64 -n 4 >"$T/out" 2>"$T/err"; rc=$?
check "a prompt longer than --ctx: exit 1, one line naming the file and --ctx" \
    '[ $rc -eq 1 ] && one_line "$T/err" "$MODEL:" && grep -qF -- "--ctx 64" "$T/err" && [ ! -s "$T/out" ]'
# The boundary: a prompt of exactly --ctx tokens runs (one token is sampled, then the
# context is full); one position less is refused.
p20="The GNU General Public License is a free, copyleft license for software and other kinds of works."
n=$("$BUILD/q3run" "$MODEL" --tokenize "$p20" | wc -w)
"$BUILD/q3run" "$MODEL" "$p20" --ctx "$n" -n 8 --temp 0 >"$T/out" 2>"$T/err"; rc=$?
check "a prompt of exactly --ctx ($n) tokens: exit 0" '[ $n -gt 10 ] && [ $rc -eq 0 ] && [ -s "$T/out" ]'
"$BUILD/q3run" "$MODEL" "$p20" --ctx $((n - 1)) -n 8 --temp 0 >"$T/out" 2>"$T/err"; rc=$?
check "one token more than --ctx: exit 1, one line" '[ $rc -eq 1 ] && one_line "$T/err" "needs $n positions"'
bad=$(printf 'caf\xc3 \xff\xfe \xed\xa0\x80 ok')
"$BUILD/q3run" "$MODEL" "$bad" -n 4 --temp 0 >"$T/out" 2>"$T/err"; rc=$?
check "invalid UTF-8 in the prompt is encoded byte by byte and runs" '[ $rc -eq 0 ]'
check "the output is valid UTF-8 (U+FFFD for what is not)" 'iconv -f UTF-8 -t UTF-8 "$T/out" >/dev/null 2>&1'
"$BUILD/q3run" "$MODEL" --tokenize "$bad" >"$T/out" 2>"$T/err"; rc=$?
check "--tokenize on invalid UTF-8: exit 0, ids" '[ $rc -eq 0 ] && grep -qE "^[0-9]+( [0-9]+)+$" "$T/out"'
"$BUILD/q3run" "$MODEL" "$bad" --chat -n 4 --temp 0 >"$T/out" 2>"$T/err"; rc=$?
check "--chat with invalid UTF-8: exit 0" '[ $rc -eq 0 ]'

# ---- usage errors: exit 2 ----
"$BUILD/q3run" >"$T/out" 2>"$T/err"; rc=$?
check "q3run without a model: exit 2" '[ $rc -eq 2 ]'
"$BUILD/q3run" "$MODEL" hi --ctx abc >"$T/out" 2>"$T/err"; rc=$?
check "q3run --ctx abc: exit 2, names the option" '[ $rc -eq 2 ] && grep -qF -- "--ctx" "$T/err"'
"$BUILD/q3run" "$MODEL" hi -n 2 --temp -1 >"$T/out" 2>"$T/err"; rc=$?
check "q3run --temp -1: exit 2" '[ $rc -eq 2 ]'

# OpenCL faults: no platform at all, a device index past the last, a prompt past --ctx.
mkdir -p "$T/no_icd"
OCL_ICD_VENDORS="$T/no_icd" "$BUILD/q3run" --backend opencl "$MODEL" hi -n 2 >"$T/out" 2>"$T/err"; rc=$?
check "q3run --backend opencl, no OpenCL platform: exit 1, one line" \
    '[ $rc -eq 1 ] && one_line "$T/err" "$MODEL: OpenCL: no platform found" && [ ! -s "$T/out" ]'
OCL_ICD_VENDORS="$T/no_icd" "$BUILD/q3run" --list-devices >"$T/out" 2>"$T/err"; rc=$?
check "q3run --list-devices, no OpenCL platform: exit 1, one line" '[ $rc -eq 1 ] && one_line "$T/err" "no OpenCL device"'
"$BUILD/q3run" --backend opencl --device 99 "$MODEL" hi -n 2 >"$T/out" 2>"$T/err"; rc=$?
check "q3run --device 99: exit 1, one line naming the device" \
    '[ $rc -eq 1 ] && one_line "$T/err" "$MODEL: OpenCL: device 99 requested"'
"$BUILD/q3run" --backend opencl --ctx 4 "$MODEL" "hello there my friend how are you" -n 2 >"$T/out" 2>"$T/err"; rc=$?
check "q3run --backend opencl, prompt past --ctx: exit 1, one line" '[ $rc -eq 1 ] && one_line "$T/err" "--ctx 4"'

echo "e2e_badinput: $fails failed"
[ $fails -eq 0 ]
