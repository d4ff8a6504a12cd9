#!/usr/bin/env bash
# synth_models.sh BUILD DIR SIZE... - the synthetic checkpoints of the real Qwen3 sizes
# (tests/fixtures/configs/qwen3-SIZE.json, e.g. 0.6b 1.7b 4b), made with BUILD/q3synth
# (tests/fixtures/synth_qwen3.py's recipe, bit for bit), with the repo's tokenizer beside
# them, converted to DIR/syn-SIZE.q3 by BUILD/q3convert; the safetensors are removed after
# conversion unless KEEP_SAFETENSORS=1 (tools/safetensors_to_gguf.py reads them). Sizes
# are made side by side; an existing .q3 is kept. Exit 1 if any size failed.
set -u
usage="usage: synth_models.sh BUILD DIR SIZE...
  the synthetic checkpoints of the real Qwen3 sizes, converted to DIR/syn-SIZE.q3
  -h, --help  this text
environment:
  KEEP_SAFETENSORS=1   keep the safetensors after conversion
exit status: 0 made, 1 a size failed, 2 usage"
case "${1:-}" in -h | --help) echo "$usage"; exit 0 ;; esac
[ $# -ge 3 ] || { echo "$usage" >&2; exit 2; }
build=$1 dir=$2
shift 2
repo=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$dir" || exit 1
make_one() {
    local size=$1
    local src="$dir/syn-$size" out="$dir/syn-$size.q3" cfg="$repo/tests/fixtures/configs/qwen3-$size.json"
    [ -f "$cfg" ] || { echo "synth_models.sh: no config $cfg" >&2; return 1; }
    [ -f "$out" ] && return 0
    "$build/q3synth" "$cfg" "$src" &&
        gzip -dc "$repo/tests/fixtures/tokenizer.json.gz" > "$src/tokenizer.json" &&
        cp "$repo/tests/fixtures/tokenizer_config.json" "$src/" &&
        "$build/q3convert" -q "$src" -o "$out" || return 1
    [ "${KEEP_SAFETENSORS:-0}" = 1 ] || rm -f "$src/model.safetensors"
}
pids=()
for s in "$@"; do
    make_one "$s" &
    pids+=($!)
done
rc=0
for p in "${pids[@]}"; do wait "$p" || rc=1; done
exit $rc
