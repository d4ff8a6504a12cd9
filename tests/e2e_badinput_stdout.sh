#!/usr/bin/env bash
# e2e_badinput_stdout.sh - nothing is lost silently: when standard output cannot be
# written (a full disk, here /dev/full), a tool whose product is its output must
# say so on stderr in one line and exit 1, not 0.
set -u
BUILD=${BUILD:-build}
MODEL=$BUILD/demo-tiny.q3
T=$(mktemp -d /tmp/q3_e2e_stdout_XXXXXX)
trap 'rm -rf "$T"' EXIT
fails=0
check() { if eval "$2"; then echo "ok   $1"; else echo "FAIL $1"; fails=$((fails + 1)); sed 's/^/     | /' "$T/err" | head -3; fi; }
[ -w /dev/full ] || { echo "FAIL /dev/full is not there"; exit 1; }
[ -f "$MODEL" ] || { echo "FAIL $MODEL is missing (make model)"; exit 1; }
one_err() { [ "$(wc -l <"$T/err")" -eq 1 ] && grep -q "No space left on device" "$T/err"; }

"$BUILD/q3run" "$MODEL" "Hello" -n 8 --temp 0 >/dev/full 2>"$T/err"; rc=$?
grep -v '^q3run: load ' "$T/err" >"$T/err2"; mv "$T/err2" "$T/err"
check "q3run generating into a full disk: exit 1, one line" '[ $rc -eq 1 ] && one_err'
"$BUILD/q3run" "$MODEL" --tokenize "Hello" >/dev/full 2>"$T/err"; rc=$?
check "q3run --tokenize into a full disk: exit 1, one line" '[ $rc -eq 1 ] && one_err'
"$BUILD/q3info" "$MODEL" >/dev/full 2>"$T/err"; rc=$?
check "q3info into a full disk: exit 1, one line" '[ $rc -eq 1 ] && one_err'
"$BUILD/q3check" "$MODEL" >/dev/full 2>"$T/err"; rc=$?
check "q3check into a full disk: exit 1 (its verdict was not printed), one line" '[ $rc -eq 1 ] && one_err'

echo "e2e_badinput_stdout: $fails failed"
[ $fails -eq 0 ]
