/* weights.c - find the tensors of format/q3_arch_qwen3.c's table and check each one. */
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "weights.h"

/* The named fields of weights.h are the table's slots, in the table's order. */
#define SLOT_IS(type, field, index) _Static_assert(offsetof(type, field) == offsetof(type, slot[index]), #field)
SLOT_IS(q3_weights, embed, Q3_QWEN3_EMBED);
SLOT_IS(q3_weights, norm, Q3_QWEN3_NORM);
SLOT_IS(q3_weights, lm_head, Q3_QWEN3_LM_HEAD);
SLOT_IS(q3_layer_weights, input_norm, Q3_QWEN3_INPUT_NORM);
SLOT_IS(q3_layer_weights, wq, Q3_QWEN3_WQ);
SLOT_IS(q3_layer_weights, wk, Q3_QWEN3_WK);
SLOT_IS(q3_layer_weights, wv, Q3_QWEN3_WV);
SLOT_IS(q3_layer_weights, wo, Q3_QWEN3_WO);
SLOT_IS(q3_layer_weights, q_norm, Q3_QWEN3_Q_NORM);
SLOT_IS(q3_layer_weights, k_norm, Q3_QWEN3_K_NORM);
SLOT_IS(q3_layer_weights, post_norm, Q3_QWEN3_POST_NORM);
SLOT_IS(q3_layer_weights, w_gate, Q3_QWEN3_W_GATE);
SLOT_IS(q3_layer_weights, w_up, Q3_QWEN3_W_UP);
SLOT_IS(q3_layer_weights, w_down, Q3_QWEN3_W_DOWN);
#undef SLOT_IS

static const q3_tensor *need(const q3_file *f, const char *name, const q3_tensor_def *def, q3_err *err)
{
    uint64_t rows = q3_dim_size(&f->config, def->rows), cols = q3_dim_size(&f->config, def->cols);
    const q3_tensor *t = q3_find_tensor(f, name);
    if (!t) {
        q3_set_err(err, "%s: tensor '%s' is missing", f->path, name);
        return NULL;
    }
    uint32_t layout = def->cols == Q3_DIM_ONE ? Q3_LAYOUT_ROWMAJOR : Q3_LAYOUT_R16C32;
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
    const q3_arch *a = &q3_arch_qwen3;
    const q3_config *c = &f->config;
    memset(w, 0, sizeof *w);
    w->cfg = c;
    w->layers = calloc(c->num_layers ? c->num_layers : 1, sizeof *w->layers);
    if (!w->layers) {
        q3_set_err(err, "%s: out of memory for %u layers", f->path, c->num_layers);
        return -1;
    }
    w->n_layers = c->num_layers;
    for (uint32_t s = 0; s < a->n_model; s++)
        if (q3_tensor_def_present(&a->model[s], c) && !(w->slot[s] = need(f, a->model[s].name, &a->model[s], err)))
            goto fail;
    for (uint32_t s = 0; s < a->n_model; s++) /* a tied tensor: another one stands in */
        if (!w->slot[s]) w->slot[s] = w->slot[a->model[s].tied_to];
    for (uint32_t l = 0; l < c->num_layers; l++) {
        char prefix[32], name[Q3_TENSOR_NAME_MAX];
        snprintf(prefix, sizeof prefix, a->layer_prefix, l);
        for (uint32_t s = 0; s < a->n_layer; s++) {
            snprintf(name, sizeof name, "%s%s", prefix, a->layer[s].name);
            if (!(w->layers[l].slot[s] = need(f, name, &a->layer[s], err))) goto fail;
        }
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
    /* Every tensor is streamed once per decoded token, but of an embedding only
     * one row, unless it also stands in for another slot (tied lm_head), which
     * streams it whole. */
    const q3_arch *a = &q3_arch_qwen3;
    uint64_t bytes = 0;
    for (uint32_t s = 0; s < a->n_model; s++) {
        const q3_tensor *t = w->slot[s];
        int stands_in = 0;
        for (uint32_t o = 0; o < a->n_model; o++) stands_in |= o != s && w->slot[o] == t;
        if (a->model[s].flags & Q3_TDEF_ROW_READ)
            bytes += stands_in ? 0 : t->shape[1] * 2;
        else
            bytes += t->size;
    }
    for (uint32_t l = 0; l < w->n_layers; l++)
        for (uint32_t s = 0; s < a->n_layer; s++) bytes += w->layers[l].slot[s]->size;
    return bytes;
}
