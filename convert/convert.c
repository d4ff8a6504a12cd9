/* convert.c - HF checkpoint -> .q3: validate everything first, then stream one
 * tensor at a time through q3_write_file (which tiles, hashes and writes). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "../format/q3_arch.h"
#include "../runtime/model_check.h"
#include "convert.h"
#include "hf_config.h"
#include "hf_files.h"
#include "hf_tokenizer.h"
#include "json_util.h"
#include "output_path.h"
#include "safetensors.h"

#if __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "q3 stores and mmaps little-endian data; BF16 tensors are copied as they are"
#endif

typedef struct {
    const q3_st_model *st;
    const q3_st_tensor **src; /* source of each tensor spec */
    int allow_nonfinite;
} fill_ctx;

static void shape_str(char *buf, size_t cap, uint32_t ndim, const uint64_t *shape)
{
    size_t len = (size_t)snprintf(buf, cap, "[");
    for (uint32_t d = 0; d < ndim && len < cap; d++)
        len += (size_t)snprintf(buf + len, cap - len, "%s%llu", d ? ", " : "", (unsigned long long)shape[d]);
    if (len < cap) snprintf(buf + len, cap - len, "]");
}

static int same_shape(const q3_st_tensor *t, const q3_tensor_spec *s)
{
    return t->ndim == s->ndim && t->shape[0] == s->shape[0] && (s->ndim == 1 || t->shape[1] == s->shape[1]);
}

static const char *file_of(const q3_st_model *st, const q3_st_tensor *t) { return st->files[t->file].path; }

static const q3_tensor_spec *find_spec(const q3_tensor_spec *specs, uint32_t n, const char *name)
{
    for (uint32_t i = 0; i < n; i++)
        if (strcmp(specs[i].name, name) == 0) return &specs[i];
    return NULL;
}

/* A tied checkpoint may still carry lm_head.weight; accept it only as an exact copy. */
static int tied_copy(const q3_st_model *st, const q3_st_tensor *t)
{
    const q3_st_tensor *e = q3_st_find(st, "model.embed_tokens.weight");
    return strcmp(t->name, "lm_head.weight") == 0 && e && e->dtype == t->dtype && e->nbytes == t->nbytes &&
           e->ndim == t->ndim && memcmp(e->shape, t->shape, sizeof e->shape) == 0 &&
           memcmp(e->data, t->data, t->nbytes) == 0;
}

/* The checkpoint must hold exactly the tensors of the config, with exactly their shapes. */
static int match_tensors(const char *hf_dir, const q3_st_model *st, const q3_tensor_spec *specs, uint32_t n,
                         const q3_st_tensor **src, q3_err *err)
{
    char want[96], got[200];
    for (uint32_t i = 0; i < n; i++) {
        const q3_tensor_spec *s = &specs[i];
        const q3_st_tensor *t = q3_st_find(st, s->name);
        shape_str(want, sizeof want, s->ndim, s->shape);
        if (!t) {
            q3_set_err(err, "%s: tensor '%s' is missing (expected shape %s)", hf_dir, s->name, want);
            return -1;
        }
        if (!same_shape(t, s)) {
            shape_str(got, sizeof got, t->ndim, t->shape);
            q3_set_err(err, "%s: tensor '%s' has shape %s, expected %s", file_of(st, t), s->name, got, want);
            return -1;
        }
        src[i] = t;
    }
    for (uint32_t i = 0; i < st->n_tensors; i++) {
        const q3_st_tensor *t = &st->tensors[i];
        if (find_spec(specs, n, t->name) || tied_copy(st, t)) continue;
        shape_str(got, sizeof got, t->ndim, t->shape);
        q3_set_err(err, "%s: unexpected tensor '%s' (shape %s): a Qwen3 model with this config.json has %u tensors"
                   "%s", file_of(st, t), t->name, got, n,
                   strcmp(t->name, "lm_head.weight") == 0 ? " (tie_word_embeddings is true and lm_head differs)" : "");
        return -1;
    }
    return 0;
}

/* Element i of a source tensor, widened to F32. */
static float source_value(const q3_st_tensor *t, uint64_t i)
{
    const uint8_t *p = t->data;
    if (t->dtype == Q3_ST_BF16) return q3_bf16_to_f32((uint16_t)(p[2 * i] | p[2 * i + 1] << 8));
    if (t->dtype == Q3_ST_F16) return q3_f16_to_f32((uint16_t)(p[2 * i] | p[2 * i + 1] << 8));
    uint32_t u = q3_rd32(p + 4 * i);
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* A NaN or Inf weight makes every logit it reaches NaN: q3run would print garbage.
 * The BF16 values are checked, so an F32 value beyond BF16's range (it rounds to
 * Inf) is caught as well. */
static int check_finite(const q3_st_model *st, const q3_st_tensor *t, const uint16_t *bf16, q3_err *err)
{
    uint64_t i = 0;
    while (i < t->n_elems && q3_bf16_is_finite(bf16[i])) i++;
    if (i == t->n_elems) return 0;
    char where[64], what[64];
    if (t->ndim == 2)
        snprintf(where, sizeof where, "[%llu, %llu]", (unsigned long long)(i / t->shape[1]),
                 (unsigned long long)(i % t->shape[1]));
    else
        snprintf(where, sizeof where, "[%llu]", (unsigned long long)i);
    float v = source_value(t, i);
    if (isnan(v))
        snprintf(what, sizeof what, "NaN");
    else if (isinf(v))
        snprintf(what, sizeof what, "%cInf", v < 0 ? '-' : '+');
    else
        snprintf(what, sizeof what, "%g, which rounds to %cInf in BF16", v, v < 0 ? '-' : '+');
    q3_set_err(err, "%s: tensor '%s': element %llu %s is %s; q3convert refuses non-finite weights "
               "(--allow-nonfinite writes them)", file_of(st, t), t->name, (unsigned long long)i, where, what);
    return -1;
}

static int fill(void *ctx, uint32_t index, uint16_t *dst, q3_err *err)
{
    const fill_ctx *fc = ctx;
    const q3_st_tensor *t = fc->src[index];
    const uint8_t *p = t->data;
    switch (t->dtype) {
    case Q3_ST_BF16:
        memcpy(dst, p, t->n_elems * 2);
        break;
    case Q3_ST_F16:
        for (uint64_t i = 0; i < t->n_elems; i++)
            dst[i] = q3_f32_to_bf16(q3_f16_to_f32((uint16_t)(p[2 * i] | p[2 * i + 1] << 8)));
        break;
    default: /* Q3_ST_F32 */
        for (uint64_t i = 0; i < t->n_elems; i++) {
            uint32_t u = q3_rd32(p + 4 * i);
            float f;
            memcpy(&f, &u, 4);
            dst[i] = q3_f32_to_bf16(f);
        }
        break;
    }
    int rc = fc->allow_nonfinite ? 0 : check_finite(fc->st, t, dst, err);
    q3_st_release(t);
    return rc;
}

/* Renaming over an input destroys the checkpoint: the shards the index named are
 * known only now (q3_check_output_for_checkpoint saw the *.safetensors names). */
static int check_output_against_shards(const char *out_path, const q3_st_model *st, q3_err *err)
{
    const char **paths = malloc((st->n_files ? st->n_files : 1) * sizeof *paths);
    if (!paths) {
        q3_set_err(err, "%s: out of memory", out_path);
        return -1;
    }
    for (uint32_t i = 0; i < st->n_files; i++) paths[i] = st->files[i].path;
    int rc = q3_check_output_path(out_path, paths, st->n_files, err);
    free(paths);
    return rc;
}

/* What q3run does with the tokenizer section and the template when it loads the
 * file, done now, so that a file it would refuse is never written. */
static int check_loadable(const char *hf_dir, const q3_tokdata *td, uint32_t vocab_size, q3_err *err)
{
    char tok_path[4096];
    if (q3_path_join(tok_path, sizeof tok_path, hf_dir, Q3_HF_TOKENIZER)) {
        q3_set_err(err, "%s: path too long", hf_dir);
        return -1;
    }
    if (q3_check_tokenizer(td, vocab_size, tok_path, NULL, err) || q3_check_chat_template(td, hf_dir, err)) return -1;
    return 0;
}

int q3_convert(const char *hf_dir, const char *out_path, const q3_convert_opts *opts, q3_convert_stats *stats,
               q3_err *err)
{
    static const q3_convert_opts defaults = {0};
    if (!opts) opts = &defaults;
    q3_hf_config hc;
    q3_generation gen;
    q3_st_model st = {0};
    q3_tokdata td = {0};
    q3_tensor_spec *specs = NULL;
    const q3_st_tensor **src = NULL;
    uint32_t n = 0;
    int rc = -1;
    if (q3_check_output_for_checkpoint(out_path, hf_dir, err) || q3_hf_config_load(hf_dir, &hc, err) ||
        q3_hf_generation_load(hf_dir, &hc, &gen, err) || q3_arch_tensor_specs(&q3_arch_qwen3, &hc.config, &specs, &n, err) ||
        q3_st_open(&st, hf_dir, err) || check_output_against_shards(out_path, &st, err))
        goto out;
    src = calloc(n, sizeof *src);
    if (!src) {
        q3_set_err(err, "out of memory for %u tensors", n);
        goto out;
    }
    if (match_tensors(hf_dir, &st, specs, n, src, err) || q3_hf_tokenizer_load(hf_dir, &td, err) ||
        check_loadable(hf_dir, &td, hc.config.vocab_size, err))
        goto out;
    fill_ctx fc = {&st, src, opts->allow_nonfinite};
    q3_write_job job = {
        .config = &hc.config, .generation = &gen, .tokenizer = &td, .n_tensors = n, .tensors = specs,
        .fill = fill, .fill_ctx = &fc, .progress = opts->progress, .progress_ctx = opts->progress_ctx,
    };
    if (q3_write_file(out_path, &job, err)) goto out;
    if (stats) {
        stats->n_tensors = n;
        stats->weight_bytes = 0;
        for (uint32_t i = 0; i < n; i++)
            stats->weight_bytes += 2 * q3_layout_elems(specs[i].layout, specs[i].shape[0], specs[i].shape[1]);
    }
    rc = 0;
out:
    q3_tokdata_free(&td);
    q3_st_close(&st);
    free(src);
    free(specs);
    return rc;
}
