/* json_util.c - whole-file reads and strict JSON parsing for the converter. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "json_util.h"

/* JSON files of a checkpoint are small; a bound keeps a stray huge file from exhausting memory. */
#define MAX_JSON_FILE (256u << 20)

int q3_read_file(const char *path, char **data, size_t *size, q3_err *err)
{
    const uint8_t *map;
    uint64_t n;
    if (q3_map_file(path, &map, &n, err)) return -1;
    char *buf = n <= MAX_JSON_FILE ? malloc((size_t)n + 1) : NULL;
    if (!buf) {
        q3_set_err(err, "%s: %llu bytes: %s", path, (unsigned long long)n,
                   n <= MAX_JSON_FILE ? "out of memory" : "too large for a JSON file of a checkpoint");
        q3_unmap_file(map, n);
        return -1;
    }
    if (n) memcpy(buf, map, (size_t)n);
    q3_unmap_file(map, n);
    buf[n] = 0;
    *data = buf;
    *size = (size_t)n;
    return 0;
}

static void line_col(const char *text, size_t off, size_t *line, size_t *col)
{
    *line = 1;
    *col = 1;
    for (size_t i = 0; i < off; i++) {
        if (text[i] == '\n') {
            (*line)++;
            *col = 1;
        } else {
            (*col)++;
        }
    }
}

static int key_cmp(const void *a, const void *b)
{
    return strcmp((*(const cJSON *const *)a)->string, (*(const cJSON *const *)b)->string);
}

/* cJSON keeps every member of a repeated key and finds the first, Python keeps
 * the last: refuse the ambiguity. Returns the repeated key or NULL. */
static const char *repeated_key(const cJSON *v)
{
    for (; v; v = v->next) {
        if (cJSON_IsObject(v) && v->child && v->child->next) {
            size_t n = 0;
            for (const cJSON *c = v->child; c; c = c->next) n++;
            const cJSON **keys = malloc(n * sizeof *keys);
            if (!keys) return "(out of memory)";
            n = 0;
            for (const cJSON *c = v->child; c; c = c->next) keys[n++] = c;
            qsort(keys, n, sizeof *keys, key_cmp);
            const char *dup = NULL;
            for (size_t i = 1; i < n && !dup; i++)
                if (strcmp(keys[i - 1]->string, keys[i]->string) == 0) dup = keys[i]->string;
            free(keys);
            if (dup) return dup;
        }
        if (v->child) {
            const char *dup = repeated_key(v->child);
            if (dup) return dup;
        }
    }
    return NULL;
}

int q3_json_parse(const char *text, size_t len, const char *name, cJSON **root, q3_err *err)
{
    const char *end = NULL;
    cJSON *j = cJSON_ParseWithLengthOpts(text, len, &end, 0);
    size_t off = end && end >= text ? (size_t)(end - text) : 0;
    if (j) {
        /* cJSON stops after the first value: anything but whitespace after it is an error. */
        while (off < len && (text[off] == ' ' || text[off] == '\t' || text[off] == '\n' || text[off] == '\r')) off++;
        if (off < len) {
            cJSON_Delete(j);
            j = NULL;
        }
    }
    if (!j) {
        size_t line, col;
        if (off > len) off = len;
        line_col(text, off, &line, &col);
        q3_set_err(err, "%s: malformed JSON at byte %zu (line %zu, column %zu)", name, off, line, col);
        return -1;
    }
    if (!cJSON_IsObject(j)) {
        q3_set_err(err, "%s: the JSON root is not an object", name);
        cJSON_Delete(j);
        return -1;
    }
    const char *dup = repeated_key(j);
    if (dup) {
        q3_set_err(err, "%s: key \"%.64s\" appears twice in one object", name, dup);
        cJSON_Delete(j);
        return -1;
    }
    *root = j;
    return 0;
}

int q3_json_load(const char *path, cJSON **root, q3_err *err)
{
    char *text;
    size_t len;
    if (q3_read_file(path, &text, &len, err)) return -1;
    int rc = q3_json_parse(text, len, path, root, err);
    free(text);
    return rc;
}

int q3_json_int(const cJSON *v, int64_t lo, int64_t hi, int64_t *out)
{
    if (!cJSON_IsNumber(v)) return -1;
    double d = v->valuedouble;
    /* 2^53: beyond it a double no longer holds every integer exactly. */
    if (!isfinite(d) || d != floor(d) || d < (double)lo || d > (double)hi || fabs(d) > 9007199254740992.0) return -1;
    *out = (int64_t)d;
    return 0;
}

int q3_path_join(char *out, size_t cap, const char *dir, const char *name)
{
    int n = snprintf(out, cap, "%s/%s", dir, name);
    return n < 0 || (size_t)n >= cap ? -1 : 0;
}
