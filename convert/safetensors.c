/* safetensors.c - mmap .safetensors files and validate their headers (layout:
 * u64 header length N, N bytes of JSON, then the data area that data_offsets index). */
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
#include "hf_files.h"
#include "json_util.h"
#include "safetensors.h"

static const struct { const char *name; uint32_t dtype, size; } dtypes[] = {
    {"BF16", Q3_ST_BF16, 2}, {"F16", Q3_ST_F16, 2}, {"F32", Q3_ST_F32, 4},
};

const char *q3_st_dtype_name(uint32_t dtype)
{
    for (size_t i = 0; i < sizeof dtypes / sizeof dtypes[0]; i++)
        if (dtypes[i].dtype == dtype) return dtypes[i].name;
    return "?";
}

uint32_t q3_st_dtype_size(uint32_t dtype)
{
    for (size_t i = 0; i < sizeof dtypes / sizeof dtypes[0]; i++)
        if (dtypes[i].dtype == dtype) return dtypes[i].size;
    return 0;
}

static int grow(void **p, uint32_t n, uint32_t *cap, size_t elem)
{
    if (n < *cap) return 0;
    uint32_t c = *cap ? *cap * 2 : 64;
    void *q = realloc(*p, (size_t)c * elem);
    if (!q) return -1;
    *p = q;
    *cap = c;
    return 0;
}

/* Parse one tensor's header entry into t (name and data pointer set by the caller). */
static int parse_entry(const char *path, const char *name, const cJSON *v, uint64_t data_size, q3_st_tensor *t,
                       uint64_t *begin, q3_err *err)
{
    const cJSON *dt = cJSON_GetObjectItemCaseSensitive(v, "dtype");
    const cJSON *shape = cJSON_GetObjectItemCaseSensitive(v, "shape");
    const cJSON *offs = cJSON_GetObjectItemCaseSensitive(v, "data_offsets");
    if (!cJSON_IsObject(v) || !cJSON_IsString(dt) || !cJSON_IsArray(shape) || !cJSON_IsArray(offs)) {
        q3_set_err(err, "%s: tensor '%s': header entry needs \"dtype\" (string), \"shape\" and \"data_offsets\" (arrays)",
                   path, name);
        return -1;
    }
    t->dtype = 0;
    for (size_t i = 0; i < sizeof dtypes / sizeof dtypes[0]; i++)
        if (strcmp(dt->valuestring, dtypes[i].name) == 0) t->dtype = dtypes[i].dtype;
    if (!t->dtype) {
        q3_set_err(err, "%s: tensor '%s': dtype '%.32s' is not supported (expected BF16, F16 or F32)", path, name,
                   dt->valuestring);
        return -1;
    }
    int nd = cJSON_GetArraySize(shape);
    if (nd < 0 || (uint32_t)nd > Q3_ST_MAX_DIMS) {
        q3_set_err(err, "%s: tensor '%s': %d dimensions, at most %u supported", path, name, nd, Q3_ST_MAX_DIMS);
        return -1;
    }
    t->ndim = (uint32_t)nd;
    t->n_elems = 1;
    for (int i = 0; i < nd; i++) {
        int64_t d;
        /* 2^40 elements per dimension and in all: far above any real tensor, far below overflow. */
        if (q3_json_int(cJSON_GetArrayItem(shape, i), 0, 1ll << 40, &d) ||
            (d && t->n_elems > (1ull << 40) / (uint64_t)d)) {
            q3_set_err(err, "%s: tensor '%s': shape[%d] is not a non-negative integer or the shape is too large",
                       path, name, i);
            return -1;
        }
        t->shape[i] = (uint64_t)d;
        t->n_elems *= (uint64_t)d;
    }
    int64_t b, e;
    if (cJSON_GetArraySize(offs) != 2 || q3_json_int(cJSON_GetArrayItem(offs, 0), 0, INT64_MAX, &b) ||
        q3_json_int(cJSON_GetArrayItem(offs, 1), 0, INT64_MAX, &e) || e < b) {
        q3_set_err(err, "%s: tensor '%s': data_offsets must be [begin, end] with 0 <= begin <= end", path, name);
        return -1;
    }
    if ((uint64_t)e > data_size) {
        q3_set_err(err, "%s: tensor '%s': data_offsets [%lld, %lld] run past end of data (size %llu)", path, name,
                   (long long)b, (long long)e, (unsigned long long)data_size);
        return -1;
    }
    t->nbytes = (uint64_t)(e - b);
    uint64_t want = t->n_elems * q3_st_dtype_size(t->dtype);
    if (t->nbytes != want) {
        q3_set_err(err, "%s: tensor '%s': data_offsets [%lld, %lld] span %llu bytes, but %s shape of %llu elements "
                   "needs %llu", path, name, (long long)b, (long long)e, (unsigned long long)t->nbytes,
                   q3_st_dtype_name(t->dtype), (unsigned long long)t->n_elems, (unsigned long long)want);
        return -1;
    }
    *begin = (uint64_t)b;
    return 0;
}

typedef struct {
    uint64_t begin, end;
    uint32_t tensor;
} span;

static int span_cmp(const void *a, const void *b)
{
    const span *x = a, *y = b;
    return x->begin < y->begin ? -1 : x->begin > y->begin;
}

/* No two tensors of one file may share bytes. */
static int check_overlaps(const char *path, const q3_st_model *m, span *s, uint32_t n, q3_err *err)
{
    qsort(s, n, sizeof *s, span_cmp);
    uint32_t prev = UINT32_MAX;
    for (uint32_t i = 0; i < n; i++) {
        if (s[i].begin == s[i].end) continue; /* empty tensors own no bytes */
        if (prev != UINT32_MAX && s[prev].end > s[i].begin) {
            q3_set_err(err, "%s: tensors '%s' [%llu, %llu] and '%s' [%llu, %llu] overlap in the data area", path,
                       m->tensors[s[prev].tensor].name, (unsigned long long)s[prev].begin,
                       (unsigned long long)s[prev].end, m->tensors[s[i].tensor].name,
                       (unsigned long long)s[i].begin, (unsigned long long)s[i].end);
            return -1;
        }
        prev = i;
    }
    return 0;
}

static int parse_header(q3_st_model *m, uint32_t file, uint32_t *tcap, q3_err *err)
{
    const q3_st_file *f = &m->files[file];
    uint64_t hlen = q3_rd64(f->map);
    if (hlen < 2 || hlen > Q3_ST_MAX_HEADER || hlen > f->size - 8) {
        q3_set_err(err, "%s: header length %llu at offset 0 is invalid (file is %llu bytes, header limit %u)",
                   f->path, (unsigned long long)hlen, (unsigned long long)f->size, Q3_ST_MAX_HEADER);
        return -1;
    }
    const char *text = (const char *)f->map + 8;
    if (text[0] != '{') {
        q3_set_err(err, "%s: header at offset 8 does not start with '{'", f->path);
        return -1;
    }
    char what[4200];
    snprintf(what, sizeof what, "%s: header", f->path);
    cJSON *root;
    if (q3_json_parse(text, (size_t)hlen, what, &root, err)) return -1;
    uint64_t data_off = 8 + hlen, data_size = f->size - data_off;
    uint32_t n = 0;
    span *spans = calloc((size_t)cJSON_GetArraySize(root) + 1, sizeof *spans);
    int rc = -1;
    if (!spans) {
        q3_set_err(err, "%s: out of memory for the header", f->path);
        goto out;
    }
    for (const cJSON *v = root->child; v; v = v->next) {
        if (strcmp(v->string, "__metadata__") == 0) continue;
        if (grow((void **)&m->tensors, m->n_tensors, tcap, sizeof *m->tensors)) {
            q3_set_err(err, "%s: out of memory for tensor '%s'", f->path, v->string);
            goto out;
        }
        q3_st_tensor *t = &m->tensors[m->n_tensors];
        memset(t, 0, sizeof *t);
        uint64_t begin;
        if (parse_entry(f->path, v->string, v, data_size, t, &begin, err)) goto out;
        t->name = strdup(v->string);
        if (!t->name) {
            q3_set_err(err, "%s: out of memory for tensor '%s'", f->path, v->string);
            goto out;
        }
        t->data = f->map + data_off + begin;
        t->file = file;
        spans[n++] = (span){begin, begin + t->nbytes, m->n_tensors};
        m->n_tensors++;
    }
    rc = check_overlaps(f->path, m, spans, n, err);
out:
    free(spans);
    cJSON_Delete(root);
    return rc;
}

static int map_file(q3_st_model *m, const char *path, uint32_t *fcap, q3_err *err)
{
    if (grow((void **)&m->files, m->n_files, fcap, sizeof *m->files)) {
        q3_set_err(err, "%s: out of memory", path);
        return -1;
    }
    q3_st_file *f = &m->files[m->n_files];
    if (q3_map_file(path, &f->map, &f->size, err)) return -1;
    if (f->size < 10) {
        q3_set_err(err, "%s: file is %llu bytes, too short for a safetensors header (truncated?)", path,
                   (unsigned long long)f->size);
        q3_unmap_file(f->map, f->size);
        return -1;
    }
    (void)madvise((void *)f->map, f->size, MADV_SEQUENTIAL); /* converted front to back */
    f->path = strdup(path);
    if (!f->path) {
        q3_unmap_file(f->map, f->size);
        q3_set_err(err, "%s: out of memory", path);
        return -1;
    }
    m->n_files++;
    return 0;
}

static int name_cmp(const void *a, const void *b)
{
    return strcmp(((const q3_st_tensor *)a)->name, ((const q3_st_tensor *)b)->name);
}

/* Sort by name (for q3_st_find) and refuse a name given twice, in one file or across shards. */
static int finish(q3_st_model *m, q3_err *err)
{
    if (m->n_tensors > 1) /* an empty file has no array to sort (qsort(NULL) is undefined) */
        qsort(m->tensors, m->n_tensors, sizeof *m->tensors, name_cmp);
    for (uint32_t i = 1; i < m->n_tensors; i++)
        if (strcmp(m->tensors[i - 1].name, m->tensors[i].name) == 0) {
            q3_set_err(err, "%s: tensor '%s' is defined twice (also in %s)", m->files[m->tensors[i].file].path,
                       m->tensors[i].name, m->files[m->tensors[i - 1].file].path);
            return -1;
        }
    return 0;
}

static int add_file(q3_st_model *m, const char *path, uint32_t *fcap, uint32_t *tcap, q3_err *err)
{
    if (map_file(m, path, fcap, err)) return -1;
    return parse_header(m, m->n_files - 1, tcap, err);
}

int q3_st_open_file(q3_st_model *m, const char *path, q3_err *err)
{
    uint32_t fcap = 0, tcap = 0;
    memset(m, 0, sizeof *m);
    if (add_file(m, path, &fcap, &tcap, err) || finish(m, err)) {
        q3_st_close(m);
        return -1;
    }
    return 0;
}

/* Sharded: the index's weight_map names each tensor's shard; every shard is
 * read, and the shards must hold exactly the tensors the index says. */
static int open_sharded(q3_st_model *m, const char *dir, const char *index_path, q3_err *err)
{
    cJSON *root;
    if (q3_json_load(index_path, &root, err)) return -1;
    const cJSON *map = cJSON_GetObjectItemCaseSensitive(root, "weight_map");
    uint32_t fcap = 0, tcap = 0, n_entries = 0;
    int rc = -1;
    if (!cJSON_IsObject(map)) {
        q3_set_err(err, "%s: \"weight_map\" is missing or not an object", index_path);
        goto out;
    }
    for (const cJSON *v = map->child; v; v = v->next, n_entries++) {
        if (!cJSON_IsString(v) || !v->valuestring[0] || strchr(v->valuestring, '/')) {
            q3_set_err(err, "%s: weight_map['%s'] must be a file name in the same directory", index_path, v->string);
            goto out;
        }
        int seen = 0;
        for (const cJSON *u = map->child; u != v && !seen; u = u->next) seen = strcmp(u->valuestring, v->valuestring) == 0;
        if (seen) continue;
        char path[4096];
        if (q3_path_join(path, sizeof path, dir, v->valuestring)) {
            q3_set_err(err, "%s: shard path for '%s' is too long", index_path, v->valuestring);
            goto out;
        }
        if (add_file(m, path, &fcap, &tcap, err)) goto out;
    }
    if (finish(m, err)) goto out;
    for (const cJSON *v = map->child; v; v = v->next) {
        const q3_st_tensor *t = q3_st_find(m, v->string);
        const char *file = t ? strrchr(m->files[t->file].path, '/') + 1 : NULL;
        if (!t || strcmp(file, v->valuestring) != 0) {
            q3_set_err(err, "%s: tensor '%s' is listed in weight_map under %s but that shard does not hold it",
                       index_path, v->string, v->valuestring);
            goto out;
        }
    }
    if (m->n_tensors != n_entries) {
        for (uint32_t i = 0; i < m->n_tensors; i++)
            if (!cJSON_GetObjectItemCaseSensitive(map, m->tensors[i].name)) {
                q3_set_err(err, "%s: tensor '%s' is not listed in %s's weight_map", m->files[m->tensors[i].file].path,
                           m->tensors[i].name, index_path);
                goto out;
            }
        q3_set_err(err, "%s: weight_map has %u entries but the shards hold %u tensors", index_path, n_entries,
                   m->n_tensors);
        goto out;
    }
    rc = 0;
out:
    cJSON_Delete(root);
    return rc;
}

int q3_st_open(q3_st_model *m, const char *hf_dir, q3_err *err)
{
    char path[4096];
    memset(m, 0, sizeof *m);
    if (q3_path_join(path, sizeof path, hf_dir, Q3_HF_WEIGHTS_INDEX)) {
        q3_set_err(err, "%s: directory path is too long", hf_dir);
        return -1;
    }
    if (access(path, F_OK) == 0) {
        if (open_sharded(m, hf_dir, path, err)) {
            q3_st_close(m);
            return -1;
        }
        return 0;
    }
    if (q3_path_join(path, sizeof path, hf_dir, Q3_HF_WEIGHTS)) {
        q3_set_err(err, "%s: directory path is too long", hf_dir);
        return -1;
    }
    if (access(path, F_OK) != 0) {
        q3_set_err(err, "%s: neither %s nor %s is there", hf_dir, Q3_HF_WEIGHTS, Q3_HF_WEIGHTS_INDEX);
        return -1;
    }
    return q3_st_open_file(m, path, err);
}

void q3_st_close(q3_st_model *m)
{
    if (!m) return;
    for (uint32_t i = 0; i < m->n_tensors; i++) free(m->tensors[i].name);
    for (uint32_t i = 0; i < m->n_files; i++) {
        q3_unmap_file(m->files[i].map, m->files[i].size);
        free(m->files[i].path);
    }
    free(m->tensors);
    free(m->files);
    memset(m, 0, sizeof *m);
}

const q3_st_tensor *q3_st_find(const q3_st_model *m, const char *name)
{
    q3_st_tensor key = {.name = (char *)name};
    if (!m->n_tensors) return NULL;
    return bsearch(&key, m->tensors, m->n_tensors, sizeof *m->tensors, name_cmp);
}

void q3_st_release(const q3_st_tensor *t)
{
    uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
    uintptr_t lo = ((uintptr_t)t->data + page - 1) & ~(page - 1), hi = ((uintptr_t)t->data + t->nbytes) & ~(page - 1);
    if (hi > lo) (void)madvise((void *)lo, hi - lo, MADV_DONTNEED);
}
