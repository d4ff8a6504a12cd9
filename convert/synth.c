/* synth.c - the synthetic checkpoint recipe of tests/fixtures/synth_qwen3.py:
 *   seed(name) = FNV-1a 64 of the tensor's name
 *   z_i        = mix64(seed + (i + 1) * 0x9E3779B97F4A7C15), i = row-major flat index
 *   mix64(z)   = z ^= z >> 30; z *= 0xBF58476D1CE4E5B9; z ^= z >> 27; z *= 0x94D049BB133111EB; z ^= z >> 31
 *   t_i        = int32(z_i >> 40) - 8388608
 *   matrices   : v = float32(t_i) * float32(0.02 * sqrt(3) / 2^23)
 *   1-D norms  : v = 1.0f + float32(t_i) * float32(0.1 / 2^23)
 *   bf16       = round-to-nearest-even of v
 * Every float operation is one IEEE binary32 operation, as numpy does it (the
 * build uses -std=c11, so gcc does not contract a*b+c into an FMA). */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include "hf_config.h"
#include "json_util.h"
#include "../format/q3_arch.h"
#include "safetensors_write.h"
#include "synth.h"

typedef struct {
    const q3_tensor_spec *specs;
    float s_mat, s_norm;
} synth;

static uint64_t fnv1a64(const char *s)
{
    uint64_t h = 0xCBF29CE484222325ull;
    for (; *s; s++) {
        h ^= (uint8_t)*s;
        h *= 0x100000001B3ull;
    }
    return h;
}

static int fill(void *ctx, uint32_t index, uint8_t *dst, q3_err *err)
{
    const synth *sy = ctx;
    const q3_tensor_spec *t = &sy->specs[index];
    uint64_t n = t->shape[0] * t->shape[1], seed = fnv1a64(t->name);
    int norm = t->ndim == 1;
    for (uint64_t i = 0; i < n; i++) {
        uint64_t z = seed + (i + 1) * 0x9E3779B97F4A7C15ull;
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
        z ^= z >> 31;
        float tf = (float)((int32_t)(z >> 40) - 8388608);
        float v;
        if (norm) {
            float scaled = tf * sy->s_norm;
            v = 1.0f + scaled;
        } else {
            v = tf * sy->s_mat;
        }
        uint16_t b = q3_f32_to_bf16(v);
        dst[2 * i] = (uint8_t)b;
        dst[2 * i + 1] = (uint8_t)(b >> 8);
    }
    (void)err;
    return 0;
}

static int copy_file(const char *from, const char *to, q3_err *err)
{
    char *data;
    size_t size;
    if (q3_read_file(from, &data, &size, err)) return -1;
    FILE *f = fopen(to, "wb");
    int ok = f && fwrite(data, 1, size, f) == size;
    if (f && fclose(f) != 0) ok = 0;
    free(data);
    if (!ok) {
        q3_set_err(err, "%s: cannot write: %s", to, strerror(errno));
        return -1;
    }
    return 0;
}

int q3_synth_checkpoint(const char *cfg_path, const char *dir, q3_err *err)
{
    cJSON *root = NULL;
    q3_hf_config hc;
    q3_tensor_spec *specs = NULL;
    q3_st_spec *st = NULL;
    uint32_t n = 0;
    char out[4096];
    int rc = -1;
    if (q3_json_load(cfg_path, &root, err) || q3_hf_config_parse(root, cfg_path, &hc, err) ||
        q3_arch_tensor_specs(&q3_arch_qwen3, &hc.config, &specs, &n, err))
        goto done;
    if (mkdir(dir, 0755) != 0 && errno != EEXIST) {
        q3_set_err(err, "%s: cannot create directory: %s", dir, strerror(errno));
        goto done;
    }
    st = calloc(n, sizeof *st);
    if (!st) {
        q3_set_err(err, "out of memory for %u tensors", n);
        goto done;
    }
    for (uint32_t i = 0; i < n; i++) {
        st[i].name = specs[i].name;
        st[i].dtype = Q3_ST_BF16;
        st[i].ndim = specs[i].ndim;
        st[i].shape[0] = specs[i].shape[0];
        st[i].shape[1] = specs[i].shape[1];
    }
    synth sy = {specs, (float)(0.02 * sqrt(3.0) / 8388608.0), (float)(0.1 / 8388608.0)};
    if (q3_path_join(out, sizeof out, dir, "model.safetensors")) {
        q3_set_err(err, "%s: path too long", dir);
        goto done;
    }
    if (q3_st_write(out, st, n, fill, &sy, err)) goto done;
    /* The script re-dumps the parsed config; the same JSON, so copy it as it is. */
    if (q3_path_join(out, sizeof out, dir, "config.json")) {
        q3_set_err(err, "%s: path too long", dir);
        goto done;
    }
    if (copy_file(cfg_path, out, err)) goto done;
    rc = 0;
done:
    cJSON_Delete(root);
    free(specs);
    free(st);
    return rc;
}
