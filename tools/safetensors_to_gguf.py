#!/usr/bin/env python3
"""Convert a Qwen3 HF checkpoint directory into a GGUF v3 file for llama.cpp.

Used only to build the llama.cpp baseline (docs/llama-cpp-baseline.md): it lets
llama-bench run the exact weights that q3 runs.  Plain Python 3, no numpy.

  safetensors_to_gguf.py MODEL_DIR OUT.gguf

MODEL_DIR holds config.json, model.safetensors (or model.safetensors.index.json
and its shards), tokenizer.json (or tokenizer.json.gz) and tokenizer_config.json
(its chat_template, or chat_template.jinja, is copied when present).

Output: architecture "qwen3"; 2-D weights keep their dtype (BF16 stays BF16),
1-D norm weights become F32 as llama.cpp's own converter does; tokenizer
"gpt2" with pre-tokenizer "qwen2".  Tensor bytes are streamed in chunks, so
memory stays small whatever the model size.  The file is written to OUT.tmp
and renamed at the end, so a failed run leaves no half file behind.
"""
import array
import gzip
import json
import os
import struct
import sys

GGUF_MAGIC = b"GGUF"
GGUF_VERSION = 3
ALIGN = 32
CHUNK = 16 << 20

# GGUF metadata value types
T_UINT32, T_INT32, T_FLOAT32, T_BOOL, T_STRING, T_ARRAY = 4, 5, 6, 7, 8, 9

# ggml tensor types and llama file types we produce
GGML_F32, GGML_F16, GGML_BF16 = 0, 1, 30
FTYPE_OF = {GGML_F32: 0, GGML_F16: 1, GGML_BF16: 32}  # ALL_F32, MOSTLY_F16, MOSTLY_BF16
ST_DTYPES = {"F32": (GGML_F32, 4), "F16": (GGML_F16, 2), "BF16": (GGML_BF16, 2)}

# llama.cpp token types
TOK_NORMAL, TOK_CONTROL, TOK_USER_DEFINED, TOK_UNUSED = 1, 3, 4, 5

# HF per-layer suffix -> GGUF per-layer name, in the order we write them
LAYER_MAP = [
    ("input_layernorm.weight", "attn_norm.weight"),
    ("self_attn.q_proj.weight", "attn_q.weight"),
    ("self_attn.k_proj.weight", "attn_k.weight"),
    ("self_attn.v_proj.weight", "attn_v.weight"),
    ("self_attn.o_proj.weight", "attn_output.weight"),
    ("self_attn.q_norm.weight", "attn_q_norm.weight"),
    ("self_attn.k_norm.weight", "attn_k_norm.weight"),
    ("post_attention_layernorm.weight", "ffn_norm.weight"),
    ("mlp.gate_proj.weight", "ffn_gate.weight"),
    ("mlp.up_proj.weight", "ffn_up.weight"),
    ("mlp.down_proj.weight", "ffn_down.weight"),
]


class ConvertError(Exception):
    pass


def fail(path, what):
    raise ConvertError("%s: %s" % (path, what))


def load_json(path, required=True):
    if not os.path.exists(path):
        if required:
            fail(path, "missing (expected a JSON file)")
        return None
    try:
        opener = gzip.open if path.endswith(".gz") else open
        with opener(path, "rt", encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        fail(path, "cannot parse JSON: %s" % e)


# ---------------------------------------------------------------- config

def read_config(model_dir):
    path = os.path.join(model_dir, "config.json")
    c = load_json(path)

    def need(key, kind=int):
        v = c.get(key)
        if not isinstance(v, kind) or isinstance(v, bool):
            fail(path, "key '%s' missing or not %s" % (key, kind.__name__))
        return v

    arch = c.get("architectures") or []
    if c.get("model_type") != "qwen3" and "Qwen3ForCausalLM" not in arch:
        fail(path, "model_type is %r, expected 'qwen3'" % c.get("model_type"))
    cfg = {
        "hidden": need("hidden_size"),
        "inter": need("intermediate_size"),
        "layers": need("num_hidden_layers"),
        "heads": need("num_attention_heads"),
        "kv_heads": need("num_key_value_heads"),
        "vocab": need("vocab_size"),
        "ctx": c.get("max_position_embeddings", 40960),
        "eps": float(c.get("rms_norm_eps", 1e-6)),
        "tied": bool(c.get("tie_word_embeddings", False)),
        "bos": c.get("bos_token_id"),
        "eos": c.get("eos_token_id"),
        "pad": c.get("pad_token_id"),
    }
    cfg["head_dim"] = c.get("head_dim") or cfg["hidden"] // cfg["heads"]
    # transformers 5 writes rope_theta under rope_parameters; Qwen3's own config at top level
    theta = c.get("rope_theta")
    if theta is None and isinstance(c.get("rope_parameters"), dict):
        theta = c["rope_parameters"].get("rope_theta")
    if not isinstance(theta, (int, float)):
        fail(path, "rope_theta missing (top level or under rope_parameters)")
    cfg["theta"] = float(theta)
    for k in ("hidden", "inter", "layers", "heads", "kv_heads", "vocab", "head_dim", "ctx"):
        if cfg[k] <= 0:
            fail(path, "%s must be positive, got %d" % (k, cfg[k]))
    if cfg["heads"] % cfg["kv_heads"]:
        fail(path, "num_attention_heads %d not a multiple of num_key_value_heads %d"
             % (cfg["heads"], cfg["kv_heads"]))
    return cfg


# ---------------------------------------------------------------- safetensors

def read_st_header(path):
    """Return {name: (dtype, shape, abs_offset, nbytes)} for one safetensors file."""
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            raw = f.read(8)
            if len(raw) != 8:
                fail(path, "offset 0: file shorter than the 8-byte header length")
            (hlen,) = struct.unpack("<Q", raw)
            if hlen > size - 8 or hlen > (100 << 20):
                fail(path, "offset 0: header length %d does not fit file size %d" % (hlen, size))
            hdr = f.read(hlen)
    except OSError as e:
        fail(path, "cannot read: %s" % e)
    try:
        meta = json.loads(hdr.decode("utf-8"))
    except ValueError as e:
        fail(path, "offset 8: header is not JSON: %s" % e)
    if not isinstance(meta, dict):
        fail(path, "offset 8: header is not a JSON object")
    base = 8 + hlen
    out = {}
    for name, t in meta.items():
        if name == "__metadata__":
            continue
        try:
            dtype, shape, (beg, end) = t["dtype"], t["shape"], t["data_offsets"]
        except (KeyError, TypeError, ValueError):
            fail(path, "tensor %s: entry lacks dtype/shape/data_offsets" % name)
        if dtype not in ST_DTYPES:
            fail(path, "tensor %s: dtype %s, expected one of %s" % (name, dtype, "/".join(ST_DTYPES)))
        n = 1
        for d in shape:
            if not isinstance(d, int) or d < 0:
                fail(path, "tensor %s: bad shape %r" % (name, shape))
            n *= d
        nbytes = n * ST_DTYPES[dtype][1]
        if not (isinstance(beg, int) and isinstance(end, int)) or end - beg != nbytes or beg < 0 \
                or base + end > size:
            fail(path, "tensor %s: data_offsets [%r, %r] do not hold %d bytes inside the file"
                 % (name, beg, end, nbytes))
        out[name] = (dtype, list(shape), base + beg, nbytes, path)
    return out


def read_checkpoint(model_dir):
    single = os.path.join(model_dir, "model.safetensors")
    index = os.path.join(model_dir, "model.safetensors.index.json")
    tensors = {}
    if os.path.exists(single):
        tensors.update(read_st_header(single))
    elif os.path.exists(index):
        wm = (load_json(index) or {}).get("weight_map")
        if not isinstance(wm, dict):
            fail(index, "no weight_map object")
        for shard in sorted(set(wm.values())):
            for name, t in read_st_header(os.path.join(model_dir, shard)).items():
                if name in tensors:
                    fail(t[4], "tensor %s appears in more than one shard" % name)
                tensors[name] = t
    else:
        fail(model_dir, "no model.safetensors or model.safetensors.index.json")
    return tensors


def plan_tensors(cfg, st):
    """Map HF tensors to GGUF (name, dims fastest-first, ggml type, source)."""
    H, I, V, hd = cfg["hidden"], cfg["inter"], cfg["vocab"], cfg["head_dim"]
    qd, kvd = cfg["heads"] * hd, cfg["kv_heads"] * hd
    want = [("model.embed_tokens.weight", "token_embd.weight", [V, H])]
    shapes = {
        "input_layernorm.weight": [H], "self_attn.q_proj.weight": [qd, H],
        "self_attn.k_proj.weight": [kvd, H], "self_attn.v_proj.weight": [kvd, H],
        "self_attn.o_proj.weight": [H, qd], "self_attn.q_norm.weight": [hd],
        "self_attn.k_norm.weight": [hd], "post_attention_layernorm.weight": [H],
        "mlp.gate_proj.weight": [I, H], "mlp.up_proj.weight": [I, H],
        "mlp.down_proj.weight": [H, I],
    }
    for l in range(cfg["layers"]):
        for hf, gg in LAYER_MAP:
            want.append(("model.layers.%d.%s" % (l, hf), "blk.%d.%s" % (l, gg), shapes[hf]))
    want.append(("model.norm.weight", "output_norm.weight", [H]))
    if not cfg["tied"]:
        want.append(("lm_head.weight", "output.weight", [V, H]))

    known = {w[0] for w in want}
    for name in st:
        # tied checkpoints may still carry lm_head; rotary caches are recomputed
        if name in known or name.endswith("rotary_emb.inv_freq") or (cfg["tied"] and name == "lm_head.weight"):
            continue
        fail(st[name][4], "tensor %s is not part of a Qwen3 model (unexpected name)" % name)

    plan = []
    for hf, gg, shape in want:
        if hf not in st:
            fail(cfg["dir"], "tensor %s missing from the checkpoint" % hf)
        dtype, sshape, off, nbytes, path = st[hf]
        if sshape != shape:
            fail(path, "tensor %s: shape %r, config.json implies %r" % (hf, sshape, shape))
        stype = ST_DTYPES[dtype][0]
        # 1-D tensors go out as F32 (llama.cpp multiplies norms in F32)
        otype = GGML_F32 if len(shape) == 1 else stype
        n = 1
        for d in shape:
            n *= d
        onbytes = n * (4 if otype == GGML_F32 else 2)
        plan.append({"name": gg, "dims": list(reversed(shape)), "type": otype, "src_type": stype,
                     "src": path, "off": off, "nbytes": nbytes, "onbytes": onbytes, "hf": hf})
    types = {p["src_type"] for p in plan if len(p["dims"]) == 2}
    if len(types) != 1:
        fail(cfg["dir"], "2-D weights mix dtypes %r; expected one dtype" % sorted(types))
    cfg["ftype"] = FTYPE_OF[types.pop()]
    return plan


# ---------------------------------------------------------------- tokenizer

def looks_special(tok):
    return (tok.startswith("<|") and tok.endswith("|>")) or (tok.startswith("<\uff5c") and tok.endswith("\uff5c>"))


def read_tokenizer(model_dir, cfg):
    tj_path = os.path.join(model_dir, "tokenizer.json")
    if not os.path.exists(tj_path) and os.path.exists(tj_path + ".gz"):
        tj_path += ".gz"
    tj = load_json(tj_path)
    model = tj.get("model") if isinstance(tj, dict) else None
    if not isinstance(model, dict) or model.get("type") != "BPE":
        fail(tj_path, "model.type is not BPE")
    vocab, merges = model.get("vocab"), model.get("merges")
    if not isinstance(vocab, dict) or not isinstance(merges, list):
        fail(tj_path, "model.vocab / model.merges missing")

    V = cfg["vocab"]
    tokens = [None] * V
    types = [TOK_NORMAL] * V
    for tok, i in vocab.items():
        if not isinstance(i, int) or not 0 <= i < V:
            fail(tj_path, "token %r has id %r outside vocab_size %d" % (tok, i, V))
        tokens[i] = tok
    by_content = {}
    for a in tj.get("added_tokens") or []:
        try:
            i, content, special = a["id"], a["content"], bool(a.get("special"))
        except (KeyError, TypeError):
            fail(tj_path, "added_tokens entry without id/content: %r" % (a,))
        if not isinstance(i, int) or not 0 <= i < V:
            fail(tj_path, "added token %r has id %r outside vocab_size %d" % (content, i, V))
        tokens[i] = content
        types[i] = TOK_CONTROL if special or looks_special(content) else TOK_USER_DEFINED
        by_content[content] = i
    for i in range(V):
        if tokens[i] is None:  # embedding rows past the tokenizer: placeholders
            tokens[i] = "[PAD%d]" % i
            types[i] = TOK_UNUSED

    out_merges = []
    for k, m in enumerate(merges):
        if isinstance(m, str):
            out_merges.append(m)
        elif isinstance(m, list) and len(m) == 2 and all(isinstance(s, str) for s in m):
            # GGUF keeps merges as "a b": a literal space inside a part is shifted by 256
            out_merges.append(" ".join(s.replace(" ", "\u0120") for s in m))
        else:
            fail(tj_path, "model.merges[%d] is neither 'a b' nor [a, b]" % k)

    tc_path = os.path.join(model_dir, "tokenizer_config.json")
    tc = load_json(tc_path, required=False) or {}
    ids = {}
    # named special tokens first (like HF), then config.json's ids fill the gaps
    for typ in ("bos", "eos", "pad"):
        v = tc.get(typ + "_token")
        if isinstance(v, dict):
            v = v.get("content")
        if isinstance(v, str):
            if v not in by_content:
                fail(tc_path, "%s_token %r is not an added token of tokenizer.json" % (typ, v))
            ids[typ] = by_content[v]
    for typ in ("bos", "eos", "pad"):
        v = cfg.get(typ)
        if typ not in ids and isinstance(v, int) and 0 <= v < V:
            ids[typ] = v
    template = tc.get("chat_template")
    jinja = os.path.join(model_dir, "chat_template.jinja")
    if not isinstance(template, str) and os.path.exists(jinja):
        with open(jinja, encoding="utf-8") as f:
            template = f.read()
    return {"tokens": tokens, "types": types, "merges": out_merges, "ids": ids,
            "add_bos": bool(tc.get("add_bos_token", False)),
            "template": template if isinstance(template, str) else None}


# ---------------------------------------------------------------- GGUF writer

def gstr(s):
    b = s.encode("utf-8")
    return struct.pack("<Q", len(b)) + b


class KV:
    """Accumulates metadata key/values in GGUF encoding."""

    def __init__(self):
        self.parts, self.count = [], 0

    def _key(self, key, vtype):
        self.parts.append(gstr(key) + struct.pack("<I", vtype))
        self.count += 1

    def u32(self, key, v):
        self._key(key, T_UINT32)
        self.parts.append(struct.pack("<I", v))

    def f32(self, key, v):
        self._key(key, T_FLOAT32)
        self.parts.append(struct.pack("<f", v))

    def bool(self, key, v):
        self._key(key, T_BOOL)
        self.parts.append(struct.pack("<B", 1 if v else 0))

    def str(self, key, v):
        self._key(key, T_STRING)
        self.parts.append(gstr(v))

    def str_arr(self, key, vs):
        self._key(key, T_ARRAY)
        self.parts.append(struct.pack("<IQ", T_STRING, len(vs)))
        self.parts.append(b"".join(gstr(v) for v in vs))

    def i32_arr(self, key, vs):
        self._key(key, T_ARRAY)
        self.parts.append(struct.pack("<IQ", T_INT32, len(vs)))
        self.parts.append(struct.pack("<%di" % len(vs), *vs))


def pad_to(n, a=ALIGN):
    return (a - n % a) % a


def build_header(cfg, tok, plan, name):
    kv = KV()
    a = "qwen3"
    kv.str("general.architecture", a)
    kv.str("general.name", name)
    kv.u32("general.alignment", ALIGN)
    kv.u32("general.file_type", cfg["ftype"])
    kv.u32(a + ".context_length", cfg["ctx"])
    kv.u32(a + ".embedding_length", cfg["hidden"])
    kv.u32(a + ".block_count", cfg["layers"])
    kv.u32(a + ".feed_forward_length", cfg["inter"])
    kv.u32(a + ".attention.head_count", cfg["heads"])
    kv.u32(a + ".attention.head_count_kv", cfg["kv_heads"])
    kv.u32(a + ".attention.key_length", cfg["head_dim"])
    kv.u32(a + ".attention.value_length", cfg["head_dim"])
    kv.f32(a + ".attention.layer_norm_rms_epsilon", cfg["eps"])
    kv.f32(a + ".rope.freq_base", cfg["theta"])
    kv.str("tokenizer.ggml.model", "gpt2")
    kv.str("tokenizer.ggml.pre", "qwen2")
    kv.str_arr("tokenizer.ggml.tokens", tok["tokens"])
    kv.i32_arr("tokenizer.ggml.token_type", tok["types"])
    kv.str_arr("tokenizer.ggml.merges", tok["merges"])
    for typ, key in (("bos", "bos_token_id"), ("eos", "eos_token_id"), ("pad", "padding_token_id")):
        if typ in tok["ids"]:
            kv.u32("tokenizer.ggml." + key, tok["ids"][typ])
    kv.bool("tokenizer.ggml.add_bos_token", tok["add_bos"])
    if tok["template"]:
        kv.str("tokenizer.chat_template", tok["template"])

    infos, off = [], 0
    for p in plan:
        p["data_off"] = off
        infos.append(gstr(p["name"]) + struct.pack("<I", len(p["dims"]))
                     + struct.pack("<%dQ" % len(p["dims"]), *p["dims"])
                     + struct.pack("<IQ", p["type"], off))
        off += p["onbytes"] + pad_to(p["onbytes"])
    head = GGUF_MAGIC + struct.pack("<IQQ", GGUF_VERSION, len(plan), kv.count)
    blob = head + b"".join(kv.parts) + b"".join(infos)
    return blob + b"\0" * pad_to(len(blob)), off


def bf16_or_f16_to_f32(raw, stype):
    n = len(raw) // 2
    if stype == GGML_BF16:
        h = array.array("H")
        h.frombytes(raw)
        if sys.byteorder != "little":
            h.byteswap()
        return struct.pack("<%dI" % n, *(x << 16 for x in h))
    return struct.pack("<%df" % n, *struct.unpack("<%de" % n, raw))


def copy_tensor(out, p):
    """Stream one tensor from its safetensors file into the GGUF data section."""
    try:
        with open(p["src"], "rb") as f:
            f.seek(p["off"])
            if p["type"] != p["src_type"]:  # small 1-D norm: convert in memory
                raw = f.read(p["nbytes"])
                if len(raw) != p["nbytes"]:
                    fail(p["src"], "tensor %s: short read at offset %d" % (p["hf"], p["off"]))
                out.write(bf16_or_f16_to_f32(raw, p["src_type"]))
            else:
                left = p["nbytes"]
                while left:
                    buf = f.read(min(CHUNK, left))
                    if not buf:
                        fail(p["src"], "tensor %s: file ends %d bytes early (offset %d)"
                             % (p["hf"], left, p["off"] + p["nbytes"] - left))
                    out.write(buf)
                    left -= len(buf)
    except OSError as e:
        fail(p["src"], "tensor %s: read error: %s" % (p["hf"], e))
    out.write(b"\0" * pad_to(p["onbytes"]))


def convert(model_dir, out_path):
    cfg = read_config(model_dir)
    cfg["dir"] = model_dir
    plan = plan_tensors(cfg, read_checkpoint(model_dir))
    tok = read_tokenizer(model_dir, cfg)
    name = os.path.basename(os.path.normpath(model_dir)) or "qwen3"
    header, data_size = build_header(cfg, tok, plan, name)
    tmp = out_path + ".tmp"
    try:
        with open(tmp, "wb") as out:
            out.write(header)
            base = out.tell()
            for p in plan:
                if out.tell() - base != p["data_off"]:
                    fail(out_path, "tensor %s: writer at data offset %d, header says %d"
                         % (p["name"], out.tell() - base, p["data_off"]))
                copy_tensor(out, p)
            if out.tell() != len(header) + data_size:
                fail(out_path, "wrote %d bytes, expected %d" % (out.tell(), len(header) + data_size))
        os.replace(tmp, out_path)
    except OSError as e:
        fail(out_path, "write error: %s" % e)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return len(plan), len(header) + data_size


USAGE = """usage: %s MODEL_DIR OUT.gguf
  writes the checkpoint as a GGUF v3 file for llama.cpp (the baseline's weights)
  -h, --help  this text
environment: none read
exit status: 0 written, 1 error, 2 usage
"""


def main(argv):
    if any(a in ("-h", "--help") for a in argv[1:]):
        sys.stdout.write(USAGE % os.path.basename(argv[0]))
        return 0
    if len(argv) != 3 or argv[1].startswith("-"):
        sys.stderr.write(USAGE % os.path.basename(argv[0]))
        return 2
    try:
        n, size = convert(argv[1], argv[2])
    except ConvertError as e:
        sys.stderr.write("safetensors_to_gguf: %s\n" % e)
        return 1
    print("%s: %d tensors, %d bytes" % (argv[2], n, size))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
