#!/usr/bin/env bash
# e2e_examples.sh - examples/ built against the installed library (make install into
# $BUILD/prefix, pkg-config --cflags --libs q3): simple prints what q3run prints with
# --temp 0, chat what q3run -i prints for the same turns.
set -u
BUILD=${BUILD:-build}
MODEL=$BUILD/models/demo-tiny.q3
T=$(mktemp -d /tmp/q3_e2e_examples_XXXXXX)
trap 'rm -rf "$T"' EXIT
fails=0
check() { if eval "$2"; then echo "ok   $1"; else echo "FAIL $1"; fails=$((fails + 1)); diff "$T/want" "$T/got" | head -5; fi; }
for b in "$BUILD/examples/simple" "$BUILD/examples/chat" "$BUILD/q3run"; do
    [ -x "$b" ] || { echo "FAIL $b is not built (make examples)"; exit 1; }
done
# linked against the installed shared library, not the build tree's objects
check "simple links the installed libq3.so" 'ldd "$BUILD/examples/simple" | grep -q "$(cd "$BUILD" && pwd)/prefix/lib/libq3.so"'

for prompt in "The GNU General Public License" "def parse(self" ""; do
    "$BUILD/q3run" "$MODEL" "$prompt" -n 40 --temp 0 >"$T/want" 2>/dev/null
    "$BUILD/examples/simple" "$MODEL" "$prompt" -n 40 >"$T/got"; rc=$?
    check "simple '$prompt' -n 40 = q3run --temp 0" '[ $rc -eq 0 ] && [ -s "$T/want" ] && cmp -s "$T/want" "$T/got"'
done

printf 'Hello there\nWhat is a license?\n' | "$BUILD/q3run" "$MODEL" -i -n 24 >"$T/want" 2>/dev/null
printf 'Hello there\nWhat is a license?\n' | "$BUILD/examples/chat" "$MODEL" -n 24 >"$T/got" 2>/dev/null; rc=$?
check "chat, two turns = q3run -i" '[ $rc -eq 0 ] && [ "$(wc -l <"$T/got")" -ge 2 ] && cmp -s "$T/want" "$T/got"'

"$BUILD/examples/simple" /nonexistent.q3 hi >/dev/null 2>"$T/err"; rc=$?
check "simple on a missing file: exit 1, one line" '[ $rc -eq 1 ] && [ "$(wc -l <"$T/err")" -eq 1 ]'

echo "e2e_examples: $fails failed"
[ $fails -eq 0 ]
