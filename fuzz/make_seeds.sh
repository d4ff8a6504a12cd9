#!/usr/bin/env bash
# make_seeds.sh - regenerate the seed corpora fuzz/corpus/<target>/ from the
# fixtures and the built tools (run from the repo root after `make`; $BUILD as for tests).
# The seeds are small on purpose: a tiny valid file of each kind plus edge cases;
# libFuzzer finds the rest. The named seeds are rewritten; the inputs a fuzz run added
# (40-hex-digit names, kept after `-merge=1` minimization) are left alone.
set -eu
BUILD=${BUILD:-build}
FIX=$BUILD/fixtures
C=fuzz/corpus
T=$(mktemp -d /tmp/q3_seeds_XXXXXX)
trap 'rm -rf "$T"' EXIT
mkdir -p "$C"/{q3,safetensors,hf_config,hf_tokenizer,tokenizer,chat_template,tokdata,model,output_path,sampler,serve_request}

# A tiny HF checkpoint: 16-token byte-level BPE, hidden 32, one layer.
python3 - "$FIX" "$T" <<'PY'
import json, sys
fix, t = sys.argv[1], sys.argv[2]
tok = json.load(open(fix + '/demo-tiny/tokenizer.json'))
tok['added_tokens'] = [dict(id=12 + i, content=c, single_word=False, lstrip=False, rstrip=False,
                            normalized=False, special=True)
                       for i, c in enumerate(["<|endoftext|>", "<|im_start|>", "<|im_end|>"])]
tok['model']['vocab'] = {c: i for i, c in enumerate(["a", "b", "c", "d", "e", "\u0120", "ab", "abc", "\u0120a",
                                                      "!", "\u010a", "de"])}
tok['model']['merges'] = ["a b", "ab c", "\u0120 a", "d e"]
json.dump(tok, open(t + '/tokenizer.json', 'w'), separators=(',', ':'))
tok['model']['merges'] = [["a", "b"], ["ab", "c"]]   # the newer pair form
json.dump(tok, open(t + '/tokenizer-pairs.json', 'w'), separators=(',', ':'))
json.dump({"add_bos_token": False, "bos_token": None, "eos_token": {"content": "<|im_end|>"},
           "pad_token": "<|endoftext|>", "chat_template": "{{ '<|im_start|>' }}"}, open(t + '/tokenizer_config.json', 'w'))
cfg = json.load(open(fix + '/demo-tiny/config.json'))
cfg.update(vocab_size=16, hidden_size=32, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
           num_key_value_heads=1, head_dim=16, bos_token_id=12, eos_token_id=[14, 12], pad_token_id=12,
           layer_types=["full_attention"])
json.dump(cfg, open(t + '/cfg.json', 'w'), indent=1)
json.dump({"bos_token_id": 12, "eos_token_id": [14, 12], "do_sample": True, "temperature": 0.6, "top_k": 20,
           "top_p": 0.95, "min_p": 0}, open(t + '/generation_config.json', 'w'))
cfg.update(tie_word_embeddings=False)
json.dump(cfg, open(t + '/cfg-untied.json', 'w'), indent=1)
PY
for v in tied untied; do
    cfg=$T/cfg.json; [ $v = untied ] && cfg=$T/cfg-untied.json
    "$BUILD/q3synth" "$cfg" "$T/$v" >/dev/null
    cp "$T/tokenizer.json" "$T/tokenizer_config.json" "$T/generation_config.json" "$T/$v/"
    "$BUILD/q3convert" -q "$T/$v" -o "$T/$v.q3" && cp "$T/$v.q3" "$C/q3/tiny-$v"
done
head -c 64 "$C/q3/tiny-tied" >"$C/q3/header-only"
cp "$C/q3/tiny-tied" "$C/q3/tiny-untied" "$C/model/"
# the tiny model's TOKENIZER section, inflated
python3 - "$C/q3/tiny-tied" "$C/tokdata/tiny-tied" <<'PY'
import struct, sys, zlib
b = open(sys.argv[1], 'rb').read()
table = struct.unpack_from('<Q', b, 24)[0]
for i in range(5):
    kind, comp, off, size = struct.unpack_from('<IIQQ', b, table + 48 * i)
    if kind == 3:
        open(sys.argv[2], 'wb').write(zlib.decompress(b[off:off + size]))
PY
: >"$C/q3/empty"

# safetensors: the tiny checkpoint, and hand-made small files.
cp "$T/tied/model.safetensors" "$C/safetensors/tiny.safetensors"
st() {  # NAME JSON DATA_BYTES
    local n=${#2}
    python3 -c "import struct,sys; sys.stdout.buffer.write(struct.pack('<Q', $n) + sys.argv[1].encode() + bytes($3))" "$2" \
        >"$C/safetensors/$1"
}
st f32 '{"__metadata__":{"format":"pt"},"x":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}' 8
st mixed '{"a":{"dtype":"BF16","shape":[2,3],"data_offsets":[0,12]},"b":{"dtype":"F16","shape":[],"data_offsets":[12,14]},"c":{"dtype":"F32","shape":[0,4],"data_offsets":[14,14]}}' 14

# config.json NUL generation_config.json
for d in demo-tiny hf-tiny; do
    { cat "$FIX/$d/config.json"; printf '\0'; cat "$FIX/$d/generation_config.json"; } >"$C/hf_config/$d"
done
cp tests/fixtures/configs/qwen3-0.6b.json "$C/hf_config/qwen3-0.6b"
{ cat "$T/cfg.json"; printf '\0'; cat "$T/generation_config.json"; } >"$C/hf_config/tiny"

# tokenizer.json NUL tokenizer_config.json
{ cat "$T/tokenizer.json"; printf '\0'; cat "$T/tokenizer_config.json"; } >"$C/hf_tokenizer/tiny"
cp "$T/tokenizer-pairs.json" "$C/hf_tokenizer/tiny-pairs"

# texts for the demo tokenizer
printf 'Hello, world! The GNU General Public License.' >"$C/tokenizer/english"
printf '<|im_start|>user\nWhat is 12345 + 678?<|im_end|>\n<|im_start|>assistant\n' >"$C/tokenizer/chat"
printf 'caf\xc3\xa9 na\xc3\xafve \xe4\xbd\xa0\xe5\xa5\xbd \xf0\x9f\x98\x80 e\xcc\x81' >"$C/tokenizer/unicode"
printf 'bad \xff\xfe \xc3 \xed\xa0\x80 \xf4\x90\x80\x80 end\xe4\xbd' >"$C/tokenizer/invalid-utf8"
printf "  \t\n\n   x  it's   we'll\r\n 3.14159 <|endoftext|" >"$C/tokenizer/spaces"

# flag byte, template NUL role+content NUL ...
ct() {  # NAME FLAGS TEMPLATE-FILE-OR-EMPTY MESSAGES...
    local name=$1 flags=$2 tpl=$3
    shift 3
    { printf "\\$(printf '%03o' "$flags")"; [ -n "$tpl" ] && cat "$tpl"; for m in "$@"; do printf '\0%s' "$m"; done; } \
        >"$C/chat_template/$name"
}
ct real-think 5 "" '0You are terse.' '1Hi!' $'2<think>\nhm\n</think>\n\nHello.' '1And now?'
ct real-nothink 7 "" '1Hi!' '3{"ok": true}' '3{"n": 2}'
ct qwen3-template 1 "$FIX/hf-tiny/chat_template.jinja" '1Hi!' '2Yo'
printf '{%% for m in messages %%}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{%% endfor %%}' >"$T/chatml"
ct chatml 1 "$T/chatml" '0sys' '1user text'
ct not-chatml 1 /dev/null '1Hi'
# output_path: byte 0 what is at the path, byte 1 how it is named, byte 2 which input, then a name
op() { printf "\\$(printf '%03o' "$2")\\$(printf '%03o' "$3")\\$(printf '%03o' "$4")%s" "${5:-}" >"$C/output_path/$1"; }
op nothing-there 0 0 0
op regular-file 1 0 0
op directory 2 0 0
op fifo 3 0 0
op socket 4 0 0
op symlink-to-input 5 0 1
op hardlink-to-input 6 2 2
op symlink-to-fifo 7 0 0
op dangling-symlink 8 0 0
op symlink-to-folder 9 0 0
op input-itself 0 1 3
op input-via-symlinked-folder 0 3 1
op input-via-dotdot 0 4 0
op empty-path 1 5 0
op named-path 0 6 0 "abc"
# sampler: vocab-1, settings (temperature|top-k, top-p|min-p, penalty, seed, seen), float logits
python3 - "$C/sampler" <<'PY'
import struct, sys
d = sys.argv[1]
def seed(name, vocab, b1, b2, b3, seed_, seen, logits):
    open(d + '/' + name, 'wb').write(bytes([vocab - 1, b1, b2, b3, seed_, seen]) + struct.pack('<%df' % len(logits), *logits))
ramp = [i * 0.01 for i in range(97)]
seed('issue14-top-p-0-huge-temp', 200, 6, 0, 0, 1, 0, ramp)        # temperature 1e5, top-p 0: every id below the cut
seed('greedy', 50, 0, 6, 0, 2, 0, ramp)
seed('top-k-1', 64, 4 | 1 << 3, 6, 0, 3, 0, [1, 2, 2, 1, 0, 2])    # top-k 1 over ties
seed('top-k-2-two-ids', 2, 4 | 2 << 3, 6, 0, 4, 0, [3, 1])          # the quickselect that looped
seed('min-p-1', 100, 3, 6 | 6 << 3 | 1 << 6, 0, 5, 0, ramp)
seed('penalty-tiny-huge-logits', 16, 4, 3, 1, 6, 0xff, [3e38, -3e38])
seed('nan', 30, 3, 4, 0, 7, 0, [1.0, float('nan'), 2.0])
seed('inf', 30, 0, 6, 0, 8, 0, [1.0, float('inf')])
seed('minus-inf', 30, 3, 2 << 3 | 1 << 6, 4, 9, 0x0f, [float('-inf'), 0.5])
seed('subnormal-temp', 40, 1, 0, 0, 10, 0, [1e-45, 0.0, -1e-45])
PY
du -sh "$C"

# serve_request: an endpoint byte (0 chat, 1 completions), then a request body
S=$C/serve_request
printf '\0{"model":"m","messages":[{"role":"system","content":"be brief"},{"role":"user","content":"Hello"}],"max_tokens":16,"temperature":0.7,"top_p":0.9,"top_k":40,"min_p":0.05,"seed":7,"stop":["\\n\\n","END"],"stream":true,"stream_options":{"include_usage":true}}' > "$S/chat_full"
printf '\0{"messages":[{"role":"user","content":[{"type":"text","text":"a"},{"type":"text","text":"b"}]}],"chat_template_kwargs":{"enable_thinking":false}}' > "$S/chat_parts"
printf '\0{"messages":[{"role":"tool","content":"x"}]}' > "$S/chat_bad_role"
printf '\1{"prompt":"Once upon a time","max_tokens":8,"stop":"\\n","repetition_penalty":1.1,"logprobs":null}' > "$S/completion"
printf '\1{"prompt":["one"],"n":1,"frequency_penalty":0,"presence_penalty":0.5}' > "$S/completion_penalty"
printf '\1{"prompt":"x","temperature":1e309,"top_k":-1,"max_tokens":1.5}' > "$S/completion_bad_numbers"
printf '\0{"messages":[{"role":"user","content":"\\u0000\\ud800"}],"stop":[]}' > "$S/chat_escapes"
printf '\1[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[' > "$S/nested"
printf '\0' > "$S/empty"
