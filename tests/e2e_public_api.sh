#!/usr/bin/env bash
# e2e_public_api.sh - the library's public face (issue 15): libq3.so exports exactly
# the functions include/q3.h declares, each marked Q3_API (the objects are built with
# -fvisibility=hidden), and the programs on q3.h alone (q3run, q3bench, q3serve,
# examples/) include no header of the project but q3.h and their own; q3run, q3bench
# and q3serve link the shared library, so a call into the internals would not link.
set -u
BUILD=${BUILD:-build}
LIB=$BUILD/libq3.so
T=$(mktemp -d /tmp/q3_e2e_api_XXXXXX)
trap 'rm -rf "$T"' EXIT
fails=0
check() { if eval "$2"; then echo "ok   $1"; else echo "FAIL $1"; fails=$((fails + 1)); sed 's/^/     | /' "$T/why" 2>/dev/null | head -12; fi; }
[ -f "$LIB" ] || { echo "FAIL $LIB is missing (make)"; exit 1; }

# Every function q3.h declares: a line at the top level (not a comment, typedef or
# macro) with a q3_ name followed by "(" is a declaration's first line.
grep -E '^[A-Za-z_].*\bq3_[a-z0-9_]+\(' include/q3.h | grep -vE '^(typedef|#)' >"$T/decl_lines"
grep -oE '\bq3_[a-z0-9_]+\(' "$T/decl_lines" | tr -d '(' | sort -u >"$T/declared"
grep -vE '^Q3_API ' "$T/decl_lines" >"$T/why"
check "every function q3.h declares is marked Q3_API" '[ ! -s "$T/why" ]'
nm -D --defined-only "$LIB" | awk '{ print $NF }' | sort -u >"$T/exported"
check "q3.h declares functions ($(wc -l <"$T/declared") found)" '[ $(wc -l <"$T/declared") -ge 40 ]'
comm -13 "$T/declared" "$T/exported" | sed 's/^/exported, not in q3.h: /' >"$T/why"
check "libq3.so exports nothing q3.h does not declare" '[ ! -s "$T/why" ]'
comm -23 "$T/declared" "$T/exported" | sed 's/^/in q3.h, not exported: /' >"$T/why"
check "libq3.so exports every function q3.h declares" '[ ! -s "$T/why" ]'

# The programs on q3.h alone: their own headers and q3.h, nothing else of the project.
grep -nE '^#include "' runtime/q3run*.c runtime/q3run.h tools/q3bench.c tools/bench_fmt.[ch] serve/*.[ch] examples/*.c |
    grep -vE '#include "(\.\./include/q3\.h|q3run\.h|bench_fmt\.h|serve_[a-z]+\.h)"' >"$T/why"
check "q3run, q3bench, q3serve and the examples include no internal header" '[ ! -s "$T/why" ]'
for prog in q3run q3bench q3serve; do
    { readelf -d "$BUILD/$prog" | grep -F 'NEEDED' | grep -F 'libq3.so'; } >"$T/needed" 2>&1
    cp "$T/needed" "$T/why"
    check "$prog links libq3.so (only the public calls resolve)" '[ -s "$T/needed" ]'
done

echo "e2e_public_api: $fails failed"
[ $fails -eq 0 ]
