/* weights.c - find the Qwen3 tensors a config implies and check each one. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "weights.h"

static const q3_tensor *need(const q3_file *f, const char *name, uint64_t rows, uint64_t cols, q3_err *err)
{
    const q3_tensor *t = q3_find_tensor(f, name);
    if (!t) {
        q3_set_err(err, "%s: tensor '%s' is missing", f->path, name);
        return NULL;
    }
    uint32_t layout = cols == 1 ? Q3_LAYOUT_ROWMAJOR : Q3_LAYOUT_R16C32;
    if (t->dtype != Q3_DTYPE_BF16 || t->layout != layout || t->shape[0] != rows || t->shape[1] != cols) {
        q3_set_err(err, "%s: tensor '%s': expected BF16 [%llu, %llu] in layout %u, found dtype %u [%llu, %llu] layout %u",
                   f->path, name, (unsigned long long)rows, (unsigned long long)cols, layout, t->dtype,
                   (unsigned long long)t->shape[0], (unsigned long long)t->shape[1], t->layout);
        return NULL;
    }
    return t;
}

int q3_weights_bind(q3_weights *w, const q3_file *f, q3_err *err)
{
    const q3_config *c = &f->config;
    memset(w, 0, sizeof *w);
    w->cfg = c;
    uint64_t H = c->hidden_size, I = c->intermediate_size, V = c->vocab_size, D = c->head_dim;
    uint64_t q_dim = (uint64_t)c->num_heads * D, kv_dim = (uint64_t)c->num_kv_heads * D;
    w->layers = calloc(c->num_layers, sizeof *w->layers);
    if (!w->layers) {
        q3_set_err(err, "%s: out of memory for %u layers", f->path, c->num_layers);
        return -1;
    }
    w->n_layers = c->num_layers;
    if (!(w->embed = need(f, "model.embed_tokens.weight", V, H, err))) goto fail;
    if (!(w->norm = need(f, "model.norm.weight", H, 1, err))) goto fail;
    if (c->tie_word_embeddings) {
        w->lm_head = w->embed;
    } else if (!(w->lm_head = need(f, "lm_head.weight", V, H, err))) {
        goto fail;
    }
    for (uint32_t l = 0; l < c->num_layers; l++) {
        q3_layer_weights *L = &w->layers[l];
        char name[Q3_TENSOR_NAME_MAX];
#define BIND(field, suffix, rows, cols)                                              \
    snprintf(name, sizeof name, "model.layers.%u.%s", l, suffix);                   \
    if (!(L->field = need(f, name, rows, cols, err))) goto fail;
        BIND(input_norm, "input_layernorm.weight", H, 1);
        BIND(wq, "self_attn.q_proj.weight", q_dim, H);
        BIND(wk, "self_attn.k_proj.weight", kv_dim, H);
        BIND(wv, "self_attn.v_proj.weight", kv_dim, H);
        BIND(wo, "self_attn.o_proj.weight", H, q_dim);
        BIND(q_norm, "self_attn.q_norm.weight", D, 1);
        BIND(k_norm, "self_attn.k_norm.weight", D, 1);
        BIND(post_norm, "post_attention_layernorm.weight", H, 1);
        BIND(w_gate, "mlp.gate_proj.weight", I, H);
        BIND(w_up, "mlp.up_proj.weight", I, H);
        BIND(w_down, "mlp.down_proj.weight", H, I);
#undef BIND
    }
    return 0;
fail:
    q3_weights_free(w);
    return -1;
}

void q3_weights_free(q3_weights *w)
{
    free(w->layers);
    memset(w, 0, sizeof *w);
}

uint64_t q3_weights_bytes_per_token(const q3_weights *w)
{
    /* Every matrix is streamed once per decoded token; the embedding contributes
     * one row unless it doubles as the lm_head. */
    uint64_t bytes = w->norm->size + w->lm_head->size;
    if (w->lm_head != w->embed) bytes += w->embed->shape[1] * 2;
    for (uint32_t l = 0; l < w->n_layers; l++) {
        const q3_layer_weights *L = &w->layers[l];
        const q3_tensor *all[] = {L->input_norm, L->wq, L->wk, L->wv, L->wo, L->q_norm,
                                  L->k_norm, L->post_norm, L->w_gate, L->w_up, L->w_down};
        for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) bytes += all[i]->size;
    }
    return bytes;
}
