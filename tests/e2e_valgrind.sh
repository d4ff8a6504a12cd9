#!/usr/bin/env bash
# e2e_valgrind.sh - a small end-to-end run under valgrind memcheck: conversion, check,
# generation (raw and chat, greedy and sampled), tokenizing invalid UTF-8, and a refusal.
# Any invalid read/write, use of uninitialised memory or definite/indirect leak fails.
set -u
BUILD=${BUILD:-build}
FIX=$BUILD/fixtures
MODEL=$BUILD/demo-tiny.q3
if ! command -v valgrind >/dev/null 2>&1; then
    echo "SKIP e2e_valgrind: valgrind is not installed (./setup installs it)"
    exit 0
fi
if grep -q __asan_init "$BUILD/q3run" 2>/dev/null; then
    echo "SKIP e2e_valgrind: $BUILD holds ASan binaries, which valgrind cannot run; the plain build runs this test"
    exit 0
fi
for tool in q3convert q3check q3run; do
    [ -x "$BUILD/$tool" ] || { echo "FAIL $BUILD/$tool is not built"; exit 1; }
done
T=$(mktemp -d /tmp/q3_e2e_valgrind_XXXXXX)
trap 'rm -rf "$T"' EXIT
fails=0
VG="valgrind -q --error-exitcode=99 --leak-check=full --errors-for-leak-kinds=definite,indirect --show-leak-kinds=definite,indirect"
# vg NAME WANT_RC CMD...: run under memcheck; the tool's own status must be WANT_RC (99 = memcheck errors).
vg() {
    local name=$1 want=$2 rc
    shift 2
    $VG "$@" >"$T/out" 2>"$T/err"; rc=$?
    if [ $rc -eq "$want" ]; then
        echo "ok   $name"
    else
        echo "FAIL $name (exit $rc, expected $want; 99 = memcheck errors)"
        sed 's/^/     | /' "$T/err" | head -40
        fails=$((fails + 1))
    fi
}
vg "q3convert demo-tiny" 0 "$BUILD/q3convert" -q "$FIX/demo-tiny" -o "$T/demo.q3"
vg "q3check" 0 "$BUILD/q3check" "$T/demo.q3"
vg "q3run raw prompt, greedy, 2 threads" 0 "$BUILD/q3run" "$MODEL" "The GNU General Public License" -n 8 --temp 0 -t 2
vg "q3run --chat, sampled" 0 "$BUILD/q3run" "$MODEL" "Hi" --chat --system "Be brief." -n 4 --temp 0.7 --top-k 20 --top-p 0.9 --seed 7 -t 2
vg "q3run --tokenize --pieces on invalid UTF-8" 0 "$BUILD/q3run" "$MODEL" --tokenize --pieces "$(printf 'caf\xc3 \xff ok')"
head -c 100000 "$MODEL" >"$T/cut.q3"
vg "q3run refusing a truncated file (error path)" 1 "$BUILD/q3run" "$T/cut.q3" "Hi"
echo "e2e_valgrind: $fails failed"
[ $fails -eq 0 ]
