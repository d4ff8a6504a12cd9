/* q3_records.c - the fixed CONFIG and GENERATION records (spec.md 4, 5). */
#include <math.h>
#include <string.h>
#include "q3_format.h"

static void wr_f32(uint8_t *p, float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    q3_wr32(p, u);
}
static float rd_f32(const uint8_t *p)
{
    uint32_t u = q3_rd32(p);
    float f;
    memcpy(&f, &u, 4);
    return f;
}
static void wr_f64(uint8_t *p, double d)
{
    uint64_t u;
    memcpy(&u, &d, 8);
    q3_wr64(p, u);
}
static double rd_f64(const uint8_t *p)
{
    uint64_t u = q3_rd64(p);
    double d;
    memcpy(&d, &u, 8);
    return d;
}

void q3_encode_config(const q3_config *c, uint8_t out[Q3_CONFIG_SIZE])
{
    memset(out, 0, Q3_CONFIG_SIZE);
    q3_wr32(out + 0, c->vocab_size);
    q3_wr32(out + 4, c->hidden_size);
    q3_wr32(out + 8, c->intermediate_size);
    q3_wr32(out + 12, c->num_layers);
    q3_wr32(out + 16, c->num_heads);
    q3_wr32(out + 20, c->num_kv_heads);
    q3_wr32(out + 24, c->head_dim);
    q3_wr32(out + 28, c->max_position_embeddings);
    q3_wr32(out + 32, c->tie_word_embeddings);
    q3_wr32(out + 36, (uint32_t)c->bos_token_id);
    q3_wr32(out + 40, (uint32_t)c->eos_token_id);
    q3_wr32(out + 44, (uint32_t)c->pad_token_id);
    wr_f64(out + 48, c->rope_theta);
    wr_f64(out + 56, c->rms_norm_eps);
}

static int check_token_id(int32_t id, uint32_t vocab, const char *what, const char *path, q3_err *err)
{
    if (id < -1 || (id >= 0 && (uint32_t)id >= vocab)) {
        q3_set_err(err, "%s: config: %s %d is outside [-1, vocab_size %u)", path, what, id, vocab);
        return -1;
    }
    return 0;
}

int q3_decode_config(const uint8_t *in, size_t size, q3_config *c, const char *path, q3_err *err)
{
    if (size != Q3_CONFIG_SIZE) {
        q3_set_err(err, "%s: config section is %zu bytes, expected %u", path, size, Q3_CONFIG_SIZE);
        return -1;
    }
    c->vocab_size = q3_rd32(in + 0);
    c->hidden_size = q3_rd32(in + 4);
    c->intermediate_size = q3_rd32(in + 8);
    c->num_layers = q3_rd32(in + 12);
    c->num_heads = q3_rd32(in + 16);
    c->num_kv_heads = q3_rd32(in + 20);
    c->head_dim = q3_rd32(in + 24);
    c->max_position_embeddings = q3_rd32(in + 28);
    c->tie_word_embeddings = q3_rd32(in + 32);
    c->bos_token_id = (int32_t)q3_rd32(in + 36);
    c->eos_token_id = (int32_t)q3_rd32(in + 40);
    c->pad_token_id = (int32_t)q3_rd32(in + 44);
    c->rope_theta = rd_f64(in + 48);
    c->rms_norm_eps = rd_f64(in + 56);

    const struct { const char *name; uint32_t v; } sizes[] = {
        {"vocab_size", c->vocab_size}, {"hidden_size", c->hidden_size},
        {"intermediate_size", c->intermediate_size}, {"num_hidden_layers", c->num_layers},
        {"num_attention_heads", c->num_heads}, {"num_key_value_heads", c->num_kv_heads},
        {"head_dim", c->head_dim}, {"max_position_embeddings", c->max_position_embeddings},
    };
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        /* 2^24 bounds every product the runtime forms well inside 64 bits. */
        if (sizes[i].v == 0 || sizes[i].v > (1u << 24)) {
            q3_set_err(err, "%s: config: %s = %u, expected 1 to 16777216", path, sizes[i].name, sizes[i].v);
            return -1;
        }
    }
    if (c->num_heads % c->num_kv_heads != 0) {
        q3_set_err(err, "%s: config: num_attention_heads %u is not a multiple of num_key_value_heads %u",
                   path, c->num_heads, c->num_kv_heads);
        return -1;
    }
    /* One field per message, so that the message names the field that is wrong. */
    if (c->head_dim % 2 != 0) {
        q3_set_err(err, "%s: config: head_dim %u must be even (RoPE rotates pairs)", path, c->head_dim);
        return -1;
    }
    if (c->num_layers > 4096) {
        q3_set_err(err, "%s: config: num_hidden_layers %u, expected at most 4096", path, c->num_layers);
        return -1;
    }
    if (c->num_heads > 65536) {
        q3_set_err(err, "%s: config: num_attention_heads %u, expected at most 65536", path, c->num_heads);
        return -1;
    }
    if (c->tie_word_embeddings > 1) {
        q3_set_err(err, "%s: config: tie_word_embeddings = %u, expected 0 or 1", path, c->tie_word_embeddings);
        return -1;
    }
    const struct { const char *name; double v; } reals[] = {
        {"rope_theta", c->rope_theta}, {"rms_norm_eps", c->rms_norm_eps}};
    for (size_t i = 0; i < sizeof reals / sizeof reals[0]; i++)
        if (!isfinite(reals[i].v) || reals[i].v <= 0) {
            q3_set_err(err, "%s: config: %s %g must be finite and positive", path, reals[i].name, reals[i].v);
            return -1;
        }
    if (check_token_id(c->bos_token_id, c->vocab_size, "bos_token_id", path, err) ||
        check_token_id(c->eos_token_id, c->vocab_size, "eos_token_id", path, err) ||
        check_token_id(c->pad_token_id, c->vocab_size, "pad_token_id", path, err))
        return -1;
    return 0;
}

void q3_generation_defaults(q3_generation *g)
{
    memset(g, 0, sizeof *g);
    g->temperature = 1.0f;
    g->top_p = 1.0f;
    g->repetition_penalty = 1.0f;
    g->bos_token_id = -1;
    g->pad_token_id = -1;
    for (uint32_t i = 0; i < Q3_MAX_EOS; i++) g->eos_token_ids[i] = -1;
}

void q3_encode_generation(const q3_generation *g, uint8_t out[Q3_GENERATION_SIZE])
{
    memset(out, 0, Q3_GENERATION_SIZE);
    q3_wr32(out + 0, g->do_sample);
    q3_wr32(out + 4, g->top_k);
    wr_f32(out + 8, g->temperature);
    wr_f32(out + 12, g->top_p);
    wr_f32(out + 16, g->min_p);
    wr_f32(out + 20, g->repetition_penalty);
    q3_wr32(out + 24, (uint32_t)g->bos_token_id);
    q3_wr32(out + 28, (uint32_t)g->pad_token_id);
    q3_wr32(out + 32, g->n_eos);
    for (uint32_t i = 0; i < Q3_MAX_EOS; i++)
        q3_wr32(out + 36 + 4 * i, (uint32_t)(i < g->n_eos ? g->eos_token_ids[i] : -1));
}

int q3_decode_generation(const uint8_t *in, size_t size, q3_generation *g, const char *path, q3_err *err)
{
    if (size != Q3_GENERATION_SIZE) {
        q3_set_err(err, "%s: generation section is %zu bytes, expected %u", path, size, Q3_GENERATION_SIZE);
        return -1;
    }
    g->do_sample = q3_rd32(in + 0);
    g->top_k = q3_rd32(in + 4);
    g->temperature = rd_f32(in + 8);
    g->top_p = rd_f32(in + 12);
    g->min_p = rd_f32(in + 16);
    g->repetition_penalty = rd_f32(in + 20);
    g->bos_token_id = (int32_t)q3_rd32(in + 24);
    g->pad_token_id = (int32_t)q3_rd32(in + 28);
    g->n_eos = q3_rd32(in + 32);
    for (uint32_t i = 0; i < Q3_MAX_EOS; i++) g->eos_token_ids[i] = (int32_t)q3_rd32(in + 36 + 4 * i);
    if (g->n_eos > Q3_MAX_EOS) {
        q3_set_err(err, "%s: generation: n_eos = %u, expected at most %u", path, g->n_eos, Q3_MAX_EOS);
        return -1;
    }
    if (g->do_sample > 1) {
        q3_set_err(err, "%s: generation: do_sample %u, expected 0 or 1", path, g->do_sample);
        return -1;
    }
    const struct { const char *name, *range; float v; int ok; } reals[] = {
        {"temperature", "finite and >= 0", g->temperature, g->temperature >= 0 && isfinite(g->temperature)},
        {"top_p", "in [0, 1]", g->top_p, g->top_p >= 0 && g->top_p <= 1},
        {"min_p", "in [0, 1]", g->min_p, g->min_p >= 0 && g->min_p <= 1},
        {"repetition_penalty", "finite and > 0", g->repetition_penalty,
         g->repetition_penalty > 0 && isfinite(g->repetition_penalty)},
    };
    for (size_t i = 0; i < sizeof reals / sizeof reals[0]; i++)
        if (!reals[i].ok) {
            q3_set_err(err, "%s: generation: %s %g, expected %s", path, reals[i].name, reals[i].v, reals[i].range);
            return -1;
        }
    return 0;
}
