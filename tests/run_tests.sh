#!/usr/bin/env bash
# Run every CMocka test binary and every end-to-end script; print one summary line.
# Tests find the build through $BUILD and the fixtures under $BUILD/fixtures.
set -u
BUILD=${BUILD:-build}
export BUILD
cd "$(dirname "$0")/.." || exit 1
passed=0
failed=0
failed_names=()
for t in "$BUILD"/tests/test_* tests/e2e_*.sh; do
    [ -e "$t" ] || continue
    case "$t" in *.d|*.o) continue ;; esac
    name=$(basename "$t")
    echo "=== $name"
    if "$t"; then
        passed=$((passed + 1))
    else
        failed=$((failed + 1))
        failed_names+=("$name")
    fi
done
if [ "$failed" -gt 0 ]; then
    echo "failed: ${failed_names[*]}"
fi
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
