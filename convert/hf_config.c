/* hf_config.c - parse config.json (both dialects: Qwen3's published files with top-level
 * rope_theta / torch_dtype, transformers 5 with rope_parameters / dtype) and
 * generation_config.json. Range rules live in q3_decode_config / q3_decode_generation:
 * the parsed values are encoded and decoded once so the converter and the reader agree. */
#include <errno.h>
#include <math.h>
#include <string.h>
#include <unistd.h>
#include "hf_config.h"
#include "hf_files.h"
#include "json_util.h"

static const cJSON *item(const cJSON *o, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsNull(v) ? NULL : v; /* null means absent everywhere in these files */
}

/* An unsigned integer field: absent -> *out = dflt, or an error when required. */
static int get_u32(const cJSON *o, const char *key, int required, uint32_t dflt, uint32_t *out, const char *name,
                   q3_err *err)
{
    const cJSON *v = item(o, key);
    int64_t x;
    if (!v) {
        if (required) {
            q3_set_err(err, "%s: \"%s\" is missing", name, key);
            return -1;
        }
        *out = dflt;
        return 0;
    }
    if (q3_json_int(v, 0, UINT32_MAX, &x)) {
        q3_set_err(err, "%s: \"%s\" must be an integer in [0, %u]", name, key, UINT32_MAX);
        return -1;
    }
    *out = (uint32_t)x;
    return 0;
}

static int get_number(const cJSON *o, const char *key, double *out, const char *name, q3_err *err)
{
    const cJSON *v = item(o, key);
    if (!v) return 1; /* absent */
    if (!cJSON_IsNumber(v) || !isfinite(v->valuedouble)) {
        q3_set_err(err, "%s: \"%s\" must be a finite number", name, key);
        return -1;
    }
    *out = v->valuedouble;
    return 0;
}

static int get_bool(const cJSON *o, const char *key, uint32_t *out, const char *name, q3_err *err)
{
    const cJSON *v = item(o, key);
    if (!v) return 0;
    if (!cJSON_IsBool(v)) {
        q3_set_err(err, "%s: \"%s\" must be true or false", name, key);
        return -1;
    }
    *out = cJSON_IsTrue(v) ? 1 : 0;
    return 0;
}

/* A token id or a list of them; absent or null -> n = 0. */
static int get_ids(const cJSON *o, const char *key, uint32_t vocab, int32_t *ids, uint32_t max, uint32_t *n,
                   const char *name, q3_err *err)
{
    const cJSON *v = item(o, key);
    *n = 0;
    if (!v) return 0;
    int list = cJSON_IsArray(v);
    int count = list ? cJSON_GetArraySize(v) : 1;
    if (count < 0 || (uint32_t)count > max) {
        q3_set_err(err, "%s: \"%s\" lists %d ids, at most %u supported", name, key, count, max);
        return -1;
    }
    for (int i = 0; i < count; i++) {
        int64_t x;
        if (q3_json_int(list ? cJSON_GetArrayItem(v, i) : v, 0, (int64_t)vocab - 1, &x)) {
            q3_set_err(err, "%s: \"%s\"%s must be a token id in [0, vocab_size %u)", name, key,
                       list ? " entries" : "", vocab);
            return -1;
        }
        ids[(*n)++] = (int32_t)x;
    }
    return 0;
}

static int get_id(const cJSON *o, const char *key, uint32_t vocab, int32_t *id, const char *name, q3_err *err)
{
    uint32_t n;
    int32_t v;
    const cJSON *x = item(o, key);
    if (x && cJSON_IsArray(x)) {
        q3_set_err(err, "%s: \"%s\" must be one token id, not a list", name, key);
        return -1;
    }
    if (get_ids(o, key, vocab, &v, 1, &n, name, err)) return -1;
    if (n) *id = v;
    return 0;
}

/* Refuse what a Qwen3 dense runtime would silently compute wrongly. */
static int check_dense_qwen3(const cJSON *root, const char *name, q3_err *err)
{
    const cJSON *mt = cJSON_GetObjectItemCaseSensitive(root, "model_type");
    if (!cJSON_IsString(mt)) {
        q3_set_err(err, "%s: \"model_type\" is missing; q3 converts only model_type \"qwen3\"", name);
        return -1;
    }
    if (strcmp(mt->valuestring, "qwen3") != 0) {
        q3_set_err(err, "%s: model_type is \"%.64s\"; q3 converts only \"qwen3\" (Qwen3 dense) checkpoints", name,
                   mt->valuestring);
        return -1;
    }
    const cJSON *rs = item(root, "rope_scaling");
    if (rs) {
        q3_set_err(err, "%s: \"rope_scaling\" is set; q3 supports Qwen3 dense models without RoPE scaling only",
                   name);
        return -1;
    }
    const cJSON *rp = item(root, "rope_parameters"), *rt = rp ? item(rp, "rope_type") : NULL;
    if (rt && (!cJSON_IsString(rt) || strcmp(rt->valuestring, "default") != 0)) {
        q3_set_err(err, "%s: rope_parameters.rope_type is \"%.32s\"; only \"default\" (no RoPE scaling) is supported",
                   name, cJSON_IsString(rt) ? rt->valuestring : "?");
        return -1;
    }
    if (cJSON_IsTrue(item(root, "use_sliding_window"))) {
        q3_set_err(err, "%s: \"use_sliding_window\" is true; q3 supports full attention only", name);
        return -1;
    }
    const cJSON *lt = item(root, "layer_types");
    for (int i = 0; lt && i < cJSON_GetArraySize(lt); i++) {
        const cJSON *t = cJSON_GetArrayItem(lt, i);
        if (!cJSON_IsString(t) || strcmp(t->valuestring, "full_attention") != 0) {
            q3_set_err(err, "%s: layer_types[%d] is not \"full_attention\"; q3 supports full attention only", name, i);
            return -1;
        }
    }
    if (cJSON_IsTrue(item(root, "attention_bias"))) {
        q3_set_err(err, "%s: \"attention_bias\" is true; Qwen3 dense has no attention bias", name);
        return -1;
    }
    const cJSON *act = item(root, "hidden_act");
    if (act && (!cJSON_IsString(act) || strcmp(act->valuestring, "silu") != 0)) {
        q3_set_err(err, "%s: \"hidden_act\" is not \"silu\"", name);
        return -1;
    }
    return 0;
}

int q3_hf_config_parse(const cJSON *root, const char *name, q3_hf_config *hc, q3_err *err)
{
    memset(hc, 0, sizeof *hc);
    q3_config *c = &hc->config;
    if (check_dense_qwen3(root, name, err)) return -1;
    if (get_u32(root, "vocab_size", 1, 0, &c->vocab_size, name, err) ||
        get_u32(root, "hidden_size", 1, 0, &c->hidden_size, name, err) ||
        get_u32(root, "intermediate_size", 1, 0, &c->intermediate_size, name, err) ||
        get_u32(root, "num_hidden_layers", 1, 0, &c->num_layers, name, err) ||
        get_u32(root, "num_attention_heads", 1, 0, &c->num_heads, name, err) ||
        get_u32(root, "num_key_value_heads", 0, c->num_heads, &c->num_kv_heads, name, err) ||
        get_u32(root, "max_position_embeddings", 1, 0, &c->max_position_embeddings, name, err) ||
        get_bool(root, "tie_word_embeddings", &c->tie_word_embeddings, name, err))
        return -1;
    if (!item(root, "head_dim") && (c->num_heads == 0 || c->hidden_size % c->num_heads != 0)) {
        q3_set_err(err, "%s: no \"head_dim\" and hidden_size %u is not a multiple of num_attention_heads %u", name,
                   c->hidden_size, c->num_heads);
        return -1;
    }
    if (get_u32(root, "head_dim", 0, c->num_heads ? c->hidden_size / c->num_heads : 0, &c->head_dim, name, err))
        return -1;

    const cJSON *rp = item(root, "rope_parameters");
    int r = get_number(root, "rope_theta", &c->rope_theta, name, err);
    if (r > 0 && rp) r = get_number(rp, "rope_theta", &c->rope_theta, name, err);
    if (r > 0) q3_set_err(err, "%s: neither \"rope_theta\" nor \"rope_parameters.rope_theta\" is given", name);
    if (r) return -1;
    r = get_number(root, "rms_norm_eps", &c->rms_norm_eps, name, err);
    if (r > 0) q3_set_err(err, "%s: \"rms_norm_eps\" is missing", name);
    if (r) return -1;

    c->bos_token_id = c->eos_token_id = c->pad_token_id = -1;
    if (get_id(root, "bos_token_id", c->vocab_size, &c->bos_token_id, name, err) ||
        get_id(root, "pad_token_id", c->vocab_size, &c->pad_token_id, name, err) ||
        get_ids(root, "eos_token_id", c->vocab_size, hc->eos_ids, Q3_MAX_EOS, &hc->n_eos, name, err))
        return -1;
    if (hc->n_eos) c->eos_token_id = hc->eos_ids[0];

    uint8_t rec[Q3_CONFIG_SIZE];
    q3_config check;
    q3_encode_config(c, rec);
    return q3_decode_config(rec, sizeof rec, &check, name, err);
}

int q3_hf_config_load(const char *hf_dir, q3_hf_config *hc, q3_err *err)
{
    char path[4096];
    cJSON *root;
    if (q3_path_join(path, sizeof path, hf_dir, Q3_HF_CONFIG)) {
        q3_set_err(err, "%s: directory path is too long", hf_dir);
        return -1;
    }
    if (q3_json_load(path, &root, err)) return -1;
    int rc = q3_hf_config_parse(root, path, hc, err);
    cJSON_Delete(root);
    return rc;
}

static int get_f32(const cJSON *o, const char *key, float *out, const char *name, q3_err *err)
{
    double d;
    int r = get_number(o, key, &d, name, err);
    if (r == 0) *out = (float)d;
    return r < 0 ? -1 : 0;
}

int q3_hf_generation_parse(const cJSON *root, const char *name, const q3_hf_config *hc, q3_generation *g,
                           q3_err *err)
{
    const q3_config *c = &hc->config;
    q3_generation_defaults(g);
    g->bos_token_id = c->bos_token_id;
    g->pad_token_id = c->pad_token_id;
    g->n_eos = hc->n_eos;
    memcpy(g->eos_token_ids, hc->eos_ids, sizeof hc->eos_ids[0] * hc->n_eos);
    if (root) {
        int32_t ids[Q3_MAX_EOS];
        uint32_t n;
        if (get_bool(root, "do_sample", &g->do_sample, name, err) ||
            get_u32(root, "top_k", 0, g->top_k, &g->top_k, name, err) ||
            get_f32(root, "temperature", &g->temperature, name, err) ||
            get_f32(root, "top_p", &g->top_p, name, err) || get_f32(root, "min_p", &g->min_p, name, err) ||
            get_f32(root, "repetition_penalty", &g->repetition_penalty, name, err) ||
            get_id(root, "bos_token_id", c->vocab_size, &g->bos_token_id, name, err) ||
            get_id(root, "pad_token_id", c->vocab_size, &g->pad_token_id, name, err) ||
            get_ids(root, "eos_token_id", c->vocab_size, ids, Q3_MAX_EOS, &n, name, err))
            return -1;
        if (n) {
            g->n_eos = n;
            memcpy(g->eos_token_ids, ids, sizeof ids[0] * n);
        }
    }
    uint8_t rec[Q3_GENERATION_SIZE];
    q3_generation check;
    q3_encode_generation(g, rec);
    return q3_decode_generation(rec, sizeof rec, &check, name, err);
}

int q3_hf_generation_load(const char *hf_dir, const q3_hf_config *hc, q3_generation *g, q3_err *err)
{
    char path[4096];
    cJSON *root = NULL;
    if (q3_path_join(path, sizeof path, hf_dir, Q3_HF_GENERATION)) {
        q3_set_err(err, "%s: directory path is too long", hf_dir);
        return -1;
    }
    /* The file is optional; any other problem with it is an error. */
    if (!(access(path, F_OK) != 0 && errno == ENOENT) && q3_json_load(path, &root, err)) return -1;
    int rc = q3_hf_generation_parse(root, path, hc, g, err);
    cJSON_Delete(root);
    return rc;
}
