#!/usr/bin/env bash
# e2e_serve_openai_js.sh - q3serve through the official OpenAI JavaScript SDK (npm package
# `openai`; tests/openai_sdk.cjs): a streamed and a non-streamed chat equal q3run --chat
# --temp 0. The SDK is not a Debian package, so ./setup does not install it: the test
# runs where it is found (Q3_OPENAI_JS=DIR with DIR/node_modules/openai, or a global
# `npm install -g openai`) and otherwise says why it skips and passes.
set -u
BUILD=${BUILD:-build}
# shellcheck source=tools/q3serve_port.sh
. "$(dirname "$0")/../tools/q3serve_port.sh"
MODEL=$BUILD/models/demo-tiny.q3
command -v node >/dev/null || { echo "skip: node is not installed"; exit 0; }
sdk=
for d in "${Q3_OPENAI_JS:-}" "$(npm root -g 2>/dev/null)/.."; do
    [ -n "$d" ] && [ -d "$d" ] || continue
    if node -e "require('module').createRequire(require('path').resolve(process.argv[1], 'x.js')).resolve('openai')" "$d" 2>/dev/null; then
        sdk=$d
        break
    fi
done
[ -n "$sdk" ] || {
    echo "skip: the npm package openai is not installed (npm install --prefix DIR openai; Q3_OPENAI_JS=DIR)"
    exit 0
}
T=$(mktemp -d /tmp/q3_e2e_js_XXXXXX)
: >"$T/log"
"$BUILD/q3serve" "$MODEL" --port 0 --api-key js-key 2>"$T/log" &
spid=$!
trap 'kill -9 $spid 2>/dev/null; rm -rf "$T"' EXIT
port=$(q3serve_port "$T/log" $spid) || { echo "FAIL q3serve did not start: $(cat "$T/log")"; exit 1; }
"$BUILD/q3run" "$MODEL" --chat "What is a license?" -n 24 --temp 0 2>/dev/null >"$T/want"
timeout 120 node tests/openai_sdk.cjs "$sdk" "http://127.0.0.1:$port/v1" js-key "$T/want"; rc=$?
kill -TERM $spid
wait $spid || rc=1
echo "e2e_serve_openai_js: $([ $rc -eq 0 ] && echo 0 || echo some) failed"
exit $rc
