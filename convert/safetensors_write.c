/* safetensors_write.c - the .safetensors writer q3synth and the tests use. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "safetensors_write.h"

typedef struct {
    char *p;
    size_t len, cap;
} text;

static int append(text *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int append(text *t, const char *fmt, ...)
{
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(t->p ? t->p + t->len : NULL, t->p ? t->cap - t->len : 0, fmt, ap);
        va_end(ap);
        if (n < 0) return -1;
        if (t->p && t->len + (size_t)n < t->cap) {
            t->len += (size_t)n;
            return 0;
        }
        size_t cap = t->cap ? t->cap * 2 : 4096;
        while (cap <= t->len + (size_t)n) cap *= 2;
        char *q = realloc(t->p, cap);
        if (!q) return -1;
        t->p = q;
        t->cap = cap;
    }
}

static int plain_name(const char *s)
{
    for (; *s; s++)
        if (*s < 0x20 || *s > 0x7e || *s == '"' || *s == '\\') return 0;
    return 1;
}

/* The JSON header, padded; per-tensor byte sizes into sizes[]. */
static int build_header(const q3_st_spec *specs, uint32_t n, uint64_t *sizes, text *h, const char *path, q3_err *err)
{
    uint64_t off = 0;
    int bad = append(h, "{");
    for (uint32_t i = 0; i < n && !bad; i++) {
        const q3_st_spec *s = &specs[i];
        uint64_t elems = 1;
        if (!plain_name(s->name) || s->ndim > Q3_ST_MAX_DIMS || !q3_st_dtype_size(s->dtype)) {
            q3_set_err(err, "%s: tensor %u ('%s'): name, ndim or dtype cannot be written", path, i, s->name);
            free(h->p);
            return -1;
        }
        bad |= append(h, "%s\"%s\":{\"dtype\":\"%s\",\"shape\":[", i ? "," : "", s->name, q3_st_dtype_name(s->dtype));
        for (uint32_t d = 0; d < s->ndim; d++) {
            bad |= append(h, "%s%llu", d ? "," : "", (unsigned long long)s->shape[d]);
            elems *= s->shape[d];
        }
        sizes[i] = elems * q3_st_dtype_size(s->dtype);
        bad |= append(h, "],\"data_offsets\":[%llu,%llu]}", (unsigned long long)off,
                      (unsigned long long)(off + sizes[i]));
        off += sizes[i];
    }
    bad |= append(h, "%s\"__metadata__\":{\"format\":\"pt\"}}", n ? "," : "");
    while (!bad && h->len % 8) bad |= append(h, " ");
    if (bad) {
        q3_set_err(err, "%s: out of memory building the header", path);
        free(h->p);
        return -1;
    }
    return 0;
}

int q3_st_write(const char *path, const q3_st_spec *specs, uint32_t n, q3_st_fill_fn fill, void *ctx, q3_err *err)
{
    uint64_t *sizes = calloc(n ? n : 1, sizeof *sizes), max = 0;
    text h = {0};
    if (!sizes) {
        q3_set_err(err, "%s: out of memory", path);
        return -1;
    }
    if (build_header(specs, n, sizes, &h, path, err)) {
        free(sizes);
        return -1;
    }
    for (uint32_t i = 0; i < n; i++) max = sizes[i] > max ? sizes[i] : max;
    uint8_t *buf = malloc(max ? max : 1), len[8];
    FILE *f = buf ? fopen(path, "wb") : NULL;
    int rc = -1;
    if (!f) {
        q3_set_err(err, "%s: cannot create: %s", path, buf ? strerror(errno) : "out of memory");
        goto out;
    }
    q3_wr64(len, h.len);
    if (fwrite(len, 1, 8, f) != 8 || fwrite(h.p, 1, h.len, f) != h.len) goto io;
    for (uint32_t i = 0; i < n; i++) {
        if (fill(ctx, i, buf, err)) goto out;
        if (fwrite(buf, 1, sizes[i], f) != sizes[i]) goto io;
    }
    if (fflush(f) == 0) rc = 0;
io:
    if (rc) q3_set_err(err, "%s: write failed: %s", path, strerror(errno));
out:
    if (f && fclose(f) != 0 && rc == 0) {
        q3_set_err(err, "%s: close failed: %s", path, strerror(errno));
        rc = -1;
    }
    if (rc && f) remove(path);
    free(buf);
    free(sizes);
    free(h.p);
    return rc;
}
