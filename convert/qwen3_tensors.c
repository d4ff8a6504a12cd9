/* qwen3_tensors.c - the Qwen3 tensor list (spec.md 7), shared by q3convert and q3synth. */
#include <stdio.h>
#include <stdlib.h>
#include "qwen3_tensors.h"

#define PER_LAYER 11u

static void add(q3_tensor_spec *s, uint32_t *n, const char *prefix, const char *name, uint64_t rows, uint64_t cols)
{
    q3_tensor_spec *t = &s[(*n)++];
    snprintf(t->name, sizeof t->name, "%s%s", prefix, name);
    t->ndim = cols ? 2 : 1;
    t->layout = cols ? Q3_LAYOUT_R16C32 : Q3_LAYOUT_ROWMAJOR;
    t->shape[0] = rows;
    t->shape[1] = cols ? cols : 1;
}

int q3_qwen3_tensor_specs(const q3_config *c, q3_tensor_spec **specs, uint32_t *n_out, q3_err *err)
{
    uint64_t H = c->hidden_size, I = c->intermediate_size, V = c->vocab_size, D = c->head_dim;
    uint64_t Q = (uint64_t)c->num_heads * D, KV = (uint64_t)c->num_kv_heads * D;
    uint32_t cap = 3 + PER_LAYER * c->num_layers, n = 0;
    q3_tensor_spec *s = calloc(cap, sizeof *s);
    if (!s) {
        q3_set_err(err, "out of memory for %u tensor specs", cap);
        return -1;
    }
    add(s, &n, "", "model.embed_tokens.weight", V, H);
    for (uint32_t l = 0; l < c->num_layers; l++) {
        char p[32];
        snprintf(p, sizeof p, "model.layers.%u.", l);
        add(s, &n, p, "input_layernorm.weight", H, 0);
        add(s, &n, p, "self_attn.q_proj.weight", Q, H);
        add(s, &n, p, "self_attn.k_proj.weight", KV, H);
        add(s, &n, p, "self_attn.v_proj.weight", KV, H);
        add(s, &n, p, "self_attn.o_proj.weight", H, Q);
        add(s, &n, p, "self_attn.q_norm.weight", D, 0);
        add(s, &n, p, "self_attn.k_norm.weight", D, 0);
        add(s, &n, p, "post_attention_layernorm.weight", H, 0);
        add(s, &n, p, "mlp.gate_proj.weight", I, H);
        add(s, &n, p, "mlp.up_proj.weight", I, H);
        add(s, &n, p, "mlp.down_proj.weight", H, I);
    }
    add(s, &n, "", "model.norm.weight", H, 0);
    if (!c->tie_word_embeddings) add(s, &n, "", "lm_head.weight", V, H);
    *specs = s;
    *n_out = n;
    return 0;
}
