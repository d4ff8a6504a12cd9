/* q3_arch.c - walking an architecture's tensor table (q3_arch.h). */
#include <stdio.h>
#include <stdlib.h>
#include "q3_arch.h"

uint64_t q3_dim_size(const q3_config *c, q3_dim d)
{
    switch (d) {
    case Q3_DIM_ONE: return 1;
    case Q3_DIM_VOCAB: return c->vocab_size;
    case Q3_DIM_HIDDEN: return c->hidden_size;
    case Q3_DIM_INTER: return c->intermediate_size;
    case Q3_DIM_HEAD: return c->head_dim;
    case Q3_DIM_Q: return (uint64_t)c->num_heads * c->head_dim;
    case Q3_DIM_KV: return (uint64_t)c->num_kv_heads * c->head_dim;
    }
    return 0;
}

int q3_tensor_def_present(const q3_tensor_def *def, const q3_config *c)
{
    return !(def->flags & Q3_TDEF_UNTIED_ONLY) || !c->tie_word_embeddings;
}

static void add(q3_tensor_spec *t, const q3_config *c, const char *prefix, const q3_tensor_def *def)
{
    snprintf(t->name, sizeof t->name, "%s%s", prefix, def->name);
    int vector = def->cols == Q3_DIM_ONE;
    t->ndim = vector ? 1 : 2;
    t->layout = vector ? Q3_LAYOUT_ROWMAJOR : Q3_LAYOUT_R16C32;
    t->shape[0] = q3_dim_size(c, def->rows);
    t->shape[1] = q3_dim_size(c, def->cols);
}

int q3_arch_tensor_specs(const q3_arch *a, const q3_config *c, q3_tensor_spec **specs, uint32_t *n_out, q3_err *err)
{
    uint64_t cap = a->n_model + (uint64_t)a->n_layer * c->num_layers;
    q3_tensor_spec *s = calloc(cap ? cap : 1, sizeof *s);
    if (!s) {
        q3_set_err(err, "out of memory for %llu tensor specs", (unsigned long long)cap);
        return -1;
    }
    uint32_t n = 0;
    for (int after = 0; after <= 1; after++) {
        if (after)
            for (uint32_t l = 0; l < c->num_layers; l++) {
                char prefix[32];
                snprintf(prefix, sizeof prefix, a->layer_prefix, l);
                for (uint32_t i = 0; i < a->n_layer; i++) add(&s[n++], c, prefix, &a->layer[i]);
            }
        for (uint32_t i = 0; i < a->n_model; i++) {
            const q3_tensor_def *def = &a->model[i];
            if (!!(def->flags & Q3_TDEF_AFTER_LAYERS) == after && q3_tensor_def_present(def, c)) add(&s[n++], c, "", def);
        }
    }
    *specs = s;
    *n_out = n;
    return 0;
}
