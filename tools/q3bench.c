/* q3bench - checksum-verified benchmark. Verify every checksum of the file first, then on each
 * backend: load, one warm-up, and r repetitions of a p-token prefill (one forward call) and n
 * greedy decode steps (one forward call each). Every repetition, and with --backend both every
 * backend, must generate the same token ids; their XXH64 is printed beside every figure.
 * Exit: 0 ok, 1 error (corrupt file, backend failure), 2 usage, 3 generated tokens differ. */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>
#include <cjson/cJSON.h>
#define XXH_STATIC_LINKING_ONLY /* XXH64_state_t on the stack: hashing cannot fail */
#include <xxhash.h>
#include "../include/q3.h"

#define MAX_BACKENDS 8
#define PROMPT_SEED 0x7133626e63680001ull /* fixed: the prompt is part of what the checksum means */
#define WARMUP_DECODE 8                   /* decode steps in the warm-up (kernel JIT, first touch) */

typedef struct {
    const char *path;
    const char *backends[MAX_BACKENDS + 1]; /* NULL-terminated */
    int p, n, r, threads, device, json, verbose;
    int no_mmap;           /* weights read into anonymous memory (q3_load_file) */
    double bandwidth_gbps; /* 0: not given */
} bench_opts;

typedef struct {
    double min, med, max;
} stats;

typedef struct {
    const char *name;
    int threads;         /* resolved CPU threads; 0 where the backend has none */
    const char *simd;    /* the kernels in use (CPU: SIMD level); NULL where the backend names none */
    double load_ms;
    double *prefill_s;   /* r: seconds of each prefill call */
    double *decode_s;    /* r: seconds of all decode calls of a repetition */
    double *tok_s;       /* r * n: seconds of each decode call */
    int32_t *ids;        /* n + 1 generated ids: argmax after the prefill, then after each decode step */
    uint64_t ids_hash;   /* XXH64 of ids as little-endian int32 */
    long peak_rss_kib;
    const char *rss_method;
} bench_result;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* min / median / max of v[0..n) (n >= 1); v is sorted in place. */
static stats stats_of(double *v, size_t n)
{
    qsort(v, n, sizeof *v, cmp_double);
    stats s = {v[0], n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]), v[n - 1]};
    return s;
}

/* Rates (count / seconds) of each entry, as stats. */
static stats rate_stats(const double *sec, size_t n, double count)
{
    double *v = malloc(n * sizeof *v);
    if (!v) return (stats){NAN, NAN, NAN};
    for (size_t i = 0; i < n; i++) v[i] = count / sec[i];
    stats s = stats_of(v, n);
    free(v);
    return s;
}

/* Milliseconds per item of each entry, as stats. */
static stats ms_stats(const double *sec, size_t n, double per)
{
    double *v = malloc(n * sizeof *v);
    if (!v) return (stats){NAN, NAN, NAN};
    for (size_t i = 0; i < n; i++) v[i] = sec[i] * 1e3 / per;
    stats s = stats_of(v, n);
    free(v);
    return s;
}

static void set_err(q3_err *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void set_err(q3_err *err, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->msg, sizeof err->msg, fmt, ap);
    va_end(ap);
}

static uint64_t ids_xxh64(const int32_t *ids, size_t n)
{
    XXH64_state_t st;
    XXH64_reset(&st, 0);
    for (size_t i = 0; i < n; i++) { /* fixed byte order so the checksum is the same on every host */
        uint32_t v = (uint32_t)ids[i];
        uint8_t b[4] = {(uint8_t)v, (uint8_t)(v >> 8), (uint8_t)(v >> 16), (uint8_t)(v >> 24)};
        XXH64_update(&st, b, 4);
    }
    return XXH64_digest(&st);
}

/* splitmix64: a fixed, portable PRNG for the prompt ids. */
static uint64_t splitmix64(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* ---- peak RSS of one backend: /proc/self/clear_refs "5" resets the high-water mark ---- */

static int rss_reset(void)
{
    FILE *fp = fopen("/proc/self/clear_refs", "w");
    if (!fp) return -1;
    int bad = fputs("5", fp) < 0;
    bad |= fclose(fp) != 0;
    return bad ? -1 : 0;
}

static long vm_hwm_kib(void)
{
    FILE *fp = fopen("/proc/self/status", "r");
    if (!fp) return -1;
    char line[256];
    long v = -1;
    while (fgets(line, sizeof line, fp))
        if (strncmp(line, "VmHWM:", 6) == 0) v = strtol(line + 6, NULL, 10);
    fclose(fp);
    return v;
}

static long maxrss_kib(void)
{
    struct rusage ru;
    return getrusage(RUSAGE_SELF, &ru) == 0 ? ru.ru_maxrss : -1;
}

static void cpu_model(char *out, size_t size)
{
    snprintf(out, size, "unknown");
    FILE *fp = fopen("/proc/cpuinfo", "r");
    if (!fp) return;
    char line[512];
    while (fgets(line, sizeof line, fp)) {
        char *colon = strchr(line, ':');
        if (strncmp(line, "model name", 10) != 0 || !colon) continue;
        colon += 1 + (colon[1] == ' ');
        colon[strcspn(colon, "\n")] = 0;
        snprintf(out, size, "%s", colon);
        break;
    }
    fclose(fp);
}

/* ---- verification: every checksum, each failure named on its own line (as q3check) ---- */

static void print_line(void *ctx, const char *line)
{
    (void)ctx;
    fprintf(stderr, "%s\n", line);
}

static int verify_file(q3_model **m, const char *path, int load, double *ms, unsigned *n_checked)
{
    q3_err err = {{0}};
    double t0 = now_s();
    q3_model_params mp = {.verify = Q3_VERIFY_NONE, .no_mmap = load};
    if (q3_model_open(path, &mp, m, &err)) {
        fprintf(stderr, "%s\n%s: FAILED (cannot be opened or its structure is invalid; nothing was timed)\n", err.msg, path);
        return -1;
    }
    unsigned bad = 0;
    q3_model_check(*m, print_line, NULL, n_checked, &bad);
    *ms = (now_s() - t0) * 1e3;
    if (bad) {
        fprintf(stderr, "%s: FAILED (%u of %u checksums do not match; nothing was timed)\n", path, bad, *n_checked);
        q3_model_close(*m);
        return -1;
    }
    return 0;
}

/* ---- one run: prefill, then greedy decode ---- */

/* Greedy choice; a non-finite logit means the backend is broken, not a slow token. */
static int argmax(const float *logits, uint32_t vocab, int32_t *out, const char *bname, const char *what, int step,
                  q3_err *err)
{
    uint32_t best = 0;
    for (uint32_t i = 0; i < vocab; i++) {
        if (!isfinite(logits[i])) {
            set_err(err, "%s: logits after %s %d hold %g at id %u (expected finite values)", bname, what, step,
                       (double)logits[i], i);
            return -1;
        }
        if (logits[i] > logits[best]) best = i;
    }
    *out = (int32_t)best;
    return 0;
}

/* ids gets n + 1 entries. prefill_s / tok_s may be NULL (warm-up). Starts from an empty cache. */
static int run_once(q3_context *c, const char *bname, const int32_t *prompt, int p, int n, uint32_t vocab,
                    int32_t *ids, double *prefill_s, double *tok_s, q3_err *err)
{
    q3_err e = {{0}};
    q3_kv_truncate(c, 0, &e);
    double t0 = now_s();
    if (q3_prefill(c, prompt, (size_t)p, &e)) {
        set_err(err, "%s: prefill of %d tokens failed: %s", bname, p, e.msg);
        return -1;
    }
    double t1 = now_s();
    if (prefill_s) *prefill_s = t1 - t0;
    if (argmax(q3_logits(c), vocab, &ids[0], bname, "prefill of", p, err)) return -1;
    for (int i = 0; i < n; i++) {
        t0 = now_s();
        if (q3_decode(c, ids[i], &e)) {
            set_err(err, "%s: decode step %d (position %d) failed: %s", bname, i, p + i, e.msg);
            return -1;
        }
        t1 = now_s();
        if (tok_s) tok_s[i] = t1 - t0;
        if (argmax(q3_logits(c), vocab, &ids[i + 1], bname, "decode step", i, err)) return -1;
    }
    return 0;
}

static int first_diff(const int32_t *a, const int32_t *b, int n)
{
    for (int i = 0; i < n; i++)
        if (a[i] != b[i]) return i;
    return -1;
}

static void progress(const bench_opts *o, const char *fmt, const char *name, int a, int b)
{
    if (!o->verbose && !isatty(2)) return;
    fprintf(stderr, "q3bench: %s: ", name);
    fprintf(stderr, fmt, a, b);
    fputc('\n', stderr);
}

/* Returns 0, 1 (error) or 3 (repetitions disagree); err holds the one-line reason. */
static int run_backend(q3_model *m, const bench_opts *o, const char *name, const int32_t *prompt, bench_result *res,
                       q3_err *err)
{
    const uint32_t vocab = q3_model_config(m)->vocab_size;
    const int n = o->n, r = o->r, n_warm = o->n < WARMUP_DECODE ? o->n : WARMUP_DECODE;
    memset(res, 0, sizeof *res);
    res->name = name;
    res->prefill_s = calloc((size_t)r, sizeof *res->prefill_s);
    res->decode_s = calloc((size_t)r, sizeof *res->decode_s);
    res->tok_s = calloc((size_t)r * (size_t)(n > 0 ? n : 1), sizeof *res->tok_s);
    res->ids = calloc((size_t)n + 1, sizeof *res->ids);
    int32_t *ids = calloc((size_t)n + 1, sizeof *ids);
    int32_t *warm = calloc((size_t)n_warm + 1, sizeof *warm);
    if (!res->prefill_s || !res->decode_s || !res->tok_s || !res->ids || !ids || !warm) {
        set_err(err, "%s: out of memory for %lld token timings", name, (long long)r * n);
        free(ids);
        free(warm);
        return 1;
    }

    /* Verification gave back the mapping's pages (q3_model_check), so the peak RSS below is the backend's. */
    int hwm_ok = rss_reset() == 0 && vm_hwm_kib() >= 0;
    res->rss_method = hwm_ok ? "VmHWM since load" : "ru_maxrss (whole process)";

    q3_context_params cp = {.backend = name, .n_ctx = o->p + o->n, .n_threads = o->threads, .device = o->device,
                            .verbose = o->verbose};
    q3_err e = {{0}};
    int rc = 1;
    q3_context *c = NULL;
    double t0 = now_s();
    int crc = q3_context_create(m, &cp, &c, &e);
    res->load_ms = (now_s() - t0) * 1e3;
    if (crc) {
        set_err(err, "%s: cannot create the backend: %s", name, e.msg);
        goto out;
    }
    q3_context_info info;
    q3_context_describe(c, &info);
    res->threads = info.threads;
    res->simd = info.variant;
    progress(o, "loaded in %d ms; warm-up (prefill %d)", name, (int)res->load_ms, o->p);
    if (run_once(c, name, prompt, o->p, n_warm, vocab, warm, NULL, NULL, err)) goto out;
    for (int k = 0; k < r; k++) {
        progress(o, "repetition %d of %d", name, k + 1, r);
        int32_t *dst = k == 0 ? res->ids : ids;
        if (run_once(c, name, prompt, o->p, n, vocab, dst, &res->prefill_s[k], res->tok_s + (size_t)k * n, err))
            goto out;
        for (int i = 0; i < n; i++) res->decode_s[k] += res->tok_s[(size_t)k * n + i];
        /* Every repetition, and the warm-up as far as it went, must generate the same ids. */
        int d = k == 0 ? first_diff(warm, res->ids, n_warm + 1) : first_diff(res->ids, ids, n + 1);
        if (d >= 0) {
            char who[32];
            if (k == 0)
                snprintf(who, sizeof who, "the warm-up");
            else
                snprintf(who, sizeof who, "repetition %d", k + 1);
            set_err(err, "%s: %s generated id %d at token %d, repetition 1 generated %d "
                       "(the backend is not deterministic)", name, who, k == 0 ? warm[d] : ids[d], d, res->ids[d]);
            rc = 3;
            goto out;
        }
    }
    rc = 0;
out:
    if (c && rc == 0) {
        res->peak_rss_kib = hwm_ok ? vm_hwm_kib() : maxrss_kib();
        res->ids_hash = ids_xxh64(res->ids, (size_t)n + 1);
    }
    q3_context_free(c);
    free(ids);
    free(warm);
    return rc;
}

/* ---- report ---- */

typedef struct {
    uint64_t file_bytes, params, bytes_per_token;
    unsigned n_checked, n_sections, n_tensors;
    double verify_ms;
    uint32_t prompt_range; /* prompt ids are in [0, prompt_range) */
    uint64_t prompt_hash;
    double floor_tok_s;    /* bandwidth / bytes_per_token; 0 when no bandwidth is known */
    char cpu[128];
    long cores;
} bench_info;

static void hex64(char out[17], uint64_t v) { snprintf(out, 17, "%016llx", (unsigned long long)v); }

#define TCOLS 9
#define TROWS (2 * MAX_BACKENDS)
typedef struct {
    char cell[TROWS + 1][TCOLS][64]; /* row 0: header */
    int rows;
} table;

static void print_table(const table *t)
{
    static const int left[TCOLS] = {1, 0, 0, 1, 0, 0, 0, 0, 1};
    size_t w[TCOLS];
    for (int c = 0; c < TCOLS; c++) {
        w[c] = 3;
        for (int r = 0; r <= t->rows; r++)
            if (strlen(t->cell[r][c]) > w[c]) w[c] = strlen(t->cell[r][c]);
    }
    for (int r = 0; r <= t->rows; r++) {
        for (int c = 0; c < TCOLS; c++)
            printf(left[c] ? "| %-*s " : "| %*s ", (int)w[c], t->cell[r][c]);
        printf("|\n");
        if (r == 0) {
            for (int c = 0; c < TCOLS; c++) {
                putchar('|');
                for (size_t i = 0; i < w[c] + 1; i++) putchar('-');
                putchar(left[c] ? '-' : ':');
            }
            printf("|\n");
        }
    }
}

static void add_rows(table *t, const bench_opts *o, const bench_info *in, const bench_result *res)
{
    const double mib = 1.0 / 1024.0;
    char hash[17], thr[16], load[32], rss[32], name[48];
    hex64(hash, res->ids_hash);
    snprintf(name, sizeof name, "%s%s%s", res->name, res->simd ? " " : "", res->simd ? res->simd : "");
    if (res->threads)
        snprintf(thr, sizeof thr, "%d", res->threads);
    else
        snprintf(thr, sizeof thr, "-");
    snprintf(load, sizeof load, "%.2f", res->load_ms);
    snprintf(rss, sizeof rss, "%.1f", (double)res->peak_rss_kib * mib);
    stats pp = rate_stats(res->prefill_s, (size_t)o->r, o->p), ppms = ms_stats(res->prefill_s, (size_t)o->r, o->p);
    for (int k = 0; k < 1 + (o->n > 0); k++) {
        char(*row)[64] = t->cell[++t->rows];
        snprintf(row[0], 64, "%s", name);
        snprintf(row[1], 64, "%s", thr);
        snprintf(row[2], 64, "%s", load);
        snprintf(row[7], 64, "%s", rss);
        snprintf(row[8], 64, "%s", hash);
        if (k == 0) {
            snprintf(row[3], 64, "pp%d", o->p);
            snprintf(row[4], 64, "%.2f / %.2f / %.2f", pp.min, pp.med, pp.max);
            snprintf(row[5], 64, "%.3f / %.3f / %.3f", ppms.min, ppms.med, ppms.max);
            snprintf(row[6], 64, "-");
        } else {
            stats tg = rate_stats(res->decode_s, (size_t)o->r, o->n);
            stats tgms = ms_stats(res->tok_s, (size_t)o->r * (size_t)o->n, 1);
            snprintf(row[3], 64, "tg%d", o->n);
            snprintf(row[4], 64, "%.2f / %.2f / %.2f", tg.min, tg.med, tg.max);
            snprintf(row[5], 64, "%.3f / %.3f / %.3f", tgms.min, tgms.med, tgms.max);
            if (in->floor_tok_s > 0)
                snprintf(row[6], 64, "%.1f", 100.0 * tg.med / in->floor_tok_s);
            else
                snprintf(row[6], 64, "-");
        }
    }
}

static void print_human(const bench_opts *o, const bench_info *in, const bench_result *res, int n_res)
{
    char ph[17];
    hex64(ph, in->prompt_hash);
    printf("model: %s: %.2f MB, %.2f M parameters\n", o->path, (double)in->file_bytes / 1e6, (double)in->params / 1e6);
    printf("verified: %u checksums (header, %u sections, %u tensors, whole file) in %.1f ms\n", in->n_checked,
           in->n_sections, in->n_tensors, in->verify_ms);
    printf("host: %s, %ld online cores\n", in->cpu, in->cores);
    printf("prompt: %d ids (splitmix64 seed %016llx over [0, %u), xxh64 %s); decode %d greedy; "
           "%d repetition%s after a warm-up\n", o->p, (unsigned long long)PROMPT_SEED, in->prompt_range, ph, o->n, o->r,
           o->r == 1 ? "" : "s");
    if (in->floor_tok_s > 0)
        printf("floor: %.3f MB of weights per decoded token / %.2f GB/s (--bandwidth) = %.3f ms/token, "
               "%.2f tok/s at most\n", (double)in->bytes_per_token / 1e6, o->bandwidth_gbps,
               1e3 / in->floor_tok_s, in->floor_tok_s);
    else
        printf("floor: %.3f MB of weights per decoded token; no bandwidth given (--bandwidth GBPS), "
               "so no %% of floor\n", (double)in->bytes_per_token / 1e6);
    printf("\n");
    table t;
    memset(&t, 0, sizeof t);
    static const char *head[TCOLS] = {"backend", "threads", "load ms", "test", "tok/s min / median / max",
                                      "ms/token min / median / max", "% floor", "peak RSS MiB", "tokens xxh64"};
    for (int c = 0; c < TCOLS; c++) snprintf(t.cell[0][c], 64, "%s", head[c]);
    for (int i = 0; i < n_res; i++) add_rows(&t, o, in, &res[i]);
    print_table(&t);
}

/* cJSON adds that remember an allocation failure, so one check at the end covers them all. */
static int j_bad;
static cJSON *j_put(cJSON *obj, const char *key, cJSON *item)
{
    if (!obj || !item || !cJSON_AddItemToObject(obj, key, item)) {
        cJSON_Delete(item);
        j_bad = 1;
        return NULL;
    }
    return item;
}
static void j_num(cJSON *obj, const char *key, double v) { j_put(obj, key, isfinite(v) ? cJSON_CreateNumber(v) : cJSON_CreateNull()); }
static void j_str(cJSON *obj, const char *key, const char *s) { j_put(obj, key, cJSON_CreateString(s)); }
static void j_stats(cJSON *obj, const char *key, stats s)
{
    cJSON *o = j_put(obj, key, cJSON_CreateObject());
    j_num(o, "min", s.min);
    j_num(o, "median", s.med);
    j_num(o, "max", s.max);
}

static int print_json(const bench_opts *o, const bench_info *in, const bench_result *res, int n_res, int agree)
{
    char h[17];
    j_bad = 0;
    cJSON *root = cJSON_CreateObject();
    if (!root) return -1;
    j_str(root, "model", o->path);
    j_num(root, "file_bytes", (double)in->file_bytes);
    j_num(root, "params", (double)in->params);
    cJSON *v = j_put(root, "verify", cJSON_CreateObject());
    j_num(v, "checksums", in->n_checked);
    j_num(v, "ms", in->verify_ms);
    cJSON *host = j_put(root, "host", cJSON_CreateObject());
    j_str(host, "cpu", in->cpu);
    j_num(host, "online_cores", (double)in->cores);
    cJSON *pr = j_put(root, "prompt", cJSON_CreateObject());
    j_num(pr, "tokens", o->p);
    hex64(h, PROMPT_SEED);
    j_str(pr, "splitmix64_seed", h);
    j_num(pr, "id_range", in->prompt_range);
    hex64(h, in->prompt_hash);
    j_str(pr, "xxh64", h);
    j_num(root, "decode_tokens", o->n);
    j_num(root, "repetitions", o->r);
    j_num(root, "warmup_decode_tokens", o->n < WARMUP_DECODE ? o->n : WARMUP_DECODE);
    cJSON *fl = j_put(root, "floor", cJSON_CreateObject());
    j_num(fl, "bytes_per_token", (double)in->bytes_per_token);
    if (in->floor_tok_s > 0) {
        j_num(fl, "bandwidth_gbps", o->bandwidth_gbps);
        j_str(fl, "bandwidth_source", "--bandwidth");
        j_num(fl, "max_tok_s", in->floor_tok_s);
    } else {
        j_put(fl, "bandwidth_gbps", cJSON_CreateNull());
    }
    cJSON *arr = j_put(root, "results", cJSON_CreateArray());
    for (int i = 0; i < n_res; i++) {
        const bench_result *r = &res[i];
        cJSON *e = cJSON_CreateObject();
        if (!arr || !e || !cJSON_AddItemToArray(arr, e)) {
            cJSON_Delete(e);
            j_bad = 1;
            break;
        }
        j_str(e, "backend", r->name);
        if (r->simd) {
            j_num(e, "threads", r->threads);
            j_str(e, "simd", r->simd);
        }
        j_num(e, "load_ms", r->load_ms);
        cJSON *pp = j_put(e, "prefill", cJSON_CreateObject());
        j_stats(pp, "tok_s", rate_stats(r->prefill_s, (size_t)o->r, o->p));
        j_stats(pp, "ms", ms_stats(r->prefill_s, (size_t)o->r, 1));
        if (o->n > 0) {
            cJSON *tg = j_put(e, "decode", cJSON_CreateObject());
            stats s = rate_stats(r->decode_s, (size_t)o->r, o->n);
            j_stats(tg, "tok_s", s);
            j_stats(tg, "ms_per_token", ms_stats(r->tok_s, (size_t)o->r * (size_t)o->n, 1));
            if (in->floor_tok_s > 0) j_num(tg, "pct_of_floor", 100.0 * s.med / in->floor_tok_s);
        }
        j_num(e, "peak_rss_kib", (double)r->peak_rss_kib);
        j_str(e, "peak_rss_method", r->rss_method);
        j_num(e, "generated_ids", o->n + 1);
        hex64(h, r->ids_hash);
        j_str(e, "tokens_xxh64", h);
    }
    if (n_res > 1) j_put(root, "backends_agree", cJSON_CreateBool(agree));
    char *text = j_bad ? NULL : cJSON_Print(root);
    cJSON_Delete(root);
    if (!text) return -1;
    printf("%s\n", text);
    free(text);
    return 0;
}

/* ---- main ---- */

static void usage(FILE *out)
{
    fprintf(out, "usage: q3bench MODEL.q3 [--backend ");
    for (const char *const *n = q3_backend_names(); *n; n++) fprintf(out, "%s|", *n);
    fprintf(out,
            "both] [-p 512] [-n 128] [-r 5] [-t THREADS]\n"
            "               [--device N] [--bandwidth GBPS] [--no-mmap] [--json] [-v]\n"
            "  verifies every checksum, then times a P-token prefill and N greedy decode steps, R times\n"
            "  after a warm-up; every repetition (and with --backend both, every backend) must generate\n"
            "  the same token ids. --bandwidth: memory read bandwidth in GB/s (1e9 bytes/s) for the\n"
            "  decode floor. --no-mmap: read the weights into memory (huge pages) instead of mapping\n"
            "  the file. Exit 0 ok, 1 error, 2 usage, 3 generated tokens differ.\n");
}

static int parse_int(const char *opt, const char *s, long lo, long hi, int *out)
{
    char *end = NULL;
    long v = s && *s ? strtol(s, &end, 10) : 0;
    if (!s || !*s || *end || v < lo || v > hi) {
        fprintf(stderr, "q3bench: %s needs an integer from %ld to %ld, got '%s'\n", opt, lo, hi, s ? s : "nothing");
        return -1;
    }
    *out = (int)v;
    return 0;
}

/* --backend NAME, or "both": every backend the library has. */
static int parse_backends(const char *v, bench_opts *o)
{
    const char *const *names = q3_backend_names();
    memset(o->backends, 0, sizeof o->backends);
    if (v && !strcmp(v, "both")) {
        for (int i = 0; names[i] && i < MAX_BACKENDS; i++) o->backends[i] = names[i];
        return 0;
    }
    for (int i = 0; v && names[i]; i++)
        if (!strcmp(v, names[i])) return o->backends[0] = names[i], 0;
    return -1;
}

/* "cpu, opencl or both" */
static void backend_choices(char *buf, size_t cap)
{
    const char *const *names = q3_backend_names();
    size_t used = 0;
    buf[0] = 0;
    for (int i = 0; names[i] && used < cap; i++)
        used += (size_t)snprintf(buf + used, cap - used, "%s%s", names[i], names[i + 1] ? ", " : " or both");
}

static int parse_args(int argc, char **argv, bench_opts *o)
{
    *o = (bench_opts){.p = 512, .n = 128, .r = 5, .threads = 0, .device = -1};
    o->backends[0] = q3_backend_names()[0];
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        int bad = 0, takes = 1;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            exit(0);
        } else if (!strcmp(a, "--json")) {
            o->json = 1, takes = 0;
        } else if (!strcmp(a, "-v")) {
            o->verbose = 1, takes = 0;
        } else if (!strcmp(a, "--no-mmap")) {
            o->no_mmap = 1, takes = 0;
        } else if (!strcmp(a, "--backend")) {
            bad = parse_backends(v, o) != 0;
        } else if (!strcmp(a, "-p")) {
            if (parse_int(a, v, 1, 1 << 20, &o->p)) return -1;
        } else if (!strcmp(a, "-n")) {
            if (parse_int(a, v, 0, 1 << 20, &o->n)) return -1;
        } else if (!strcmp(a, "-r")) {
            if (parse_int(a, v, 1, 10000, &o->r)) return -1;
        } else if (!strcmp(a, "-t")) {
            if (parse_int(a, v, 0, 4096, &o->threads)) return -1;
        } else if (!strcmp(a, "--device")) {
            if (parse_int(a, v, -1, 1 << 16, &o->device)) return -1;
        } else if (!strcmp(a, "--bandwidth")) {
            char *end;
            o->bandwidth_gbps = v ? strtod(v, &end) : 0;
            bad = !v || *end || !isfinite(o->bandwidth_gbps) || o->bandwidth_gbps <= 0;
        } else if (a[0] != '-' && !o->path) {
            o->path = a, takes = 0;
        } else {
            fprintf(stderr, "q3bench: unknown argument '%s'\n", a);
            usage(stderr);
            return -1;
        }
        if (bad) {
            char choices[128];
            backend_choices(choices, sizeof choices);
            fprintf(stderr, "q3bench: %s needs %s, got '%s'\n", a,
                    !strcmp(a, "--backend") ? choices : "a positive number of GB/s", v ? v : "nothing");
            return -1;
        }
        i += takes;
    }
    if (!o->path) {
        usage(stderr);
        return -1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    bench_opts o;
    if (parse_args(argc, argv, &o)) return 2;

    bench_info in;
    memset(&in, 0, sizeof in);
    q3_model *m;
    if (verify_file(&m, o.path, o.no_mmap, &in.verify_ms, &in.n_checked)) return 1;
    const q3_config *cfg = q3_model_config(m);
    cpu_model(in.cpu, sizeof in.cpu);
    in.cores = sysconf(_SC_NPROCESSORS_ONLN);

    int rc = 1;
    bench_result res[MAX_BACKENDS];
    int n_res = 0;
    int32_t *prompt = NULL;
    q3_err err = {{0}};
    q3_model_info mi;
    if (q3_model_describe(m, &mi, &err)) {
        fprintf(stderr, "%s\n", err.msg);
        goto done;
    }
    in.file_bytes = mi.file_bytes;
    in.params = mi.n_params;
    in.bytes_per_token = mi.bytes_per_token;
    in.n_sections = mi.n_sections;
    in.n_tensors = mi.n_tensors;
    if (o.bandwidth_gbps > 0 && in.bytes_per_token > 0)
        in.floor_tok_s = o.bandwidth_gbps * 1e9 / (double)in.bytes_per_token;

    if (cfg->max_position_embeddings && (uint64_t)o.p + (uint64_t)o.n > cfg->max_position_embeddings) {
        fprintf(stderr, "q3bench: -p %d + -n %d = %d positions, more than the model's max_position_embeddings %u\n",
                o.p, o.n, o.p + o.n, cfg->max_position_embeddings);
        rc = 2;
        goto done;
    }
    /* Prompt ids come from the tokenizer's ordinary vocabulary (no special tokens), fixed seed. */
    const q3_tokenizer *tk;
    if (q3_model_tokenizer(m, &tk, &err)) {
        fprintf(stderr, "%s\n", err.msg);
        goto done;
    }
    uint32_t n_bpe = q3_tokenizer_bpe_size(tk);
    in.prompt_range = n_bpe && n_bpe < cfg->vocab_size ? n_bpe : cfg->vocab_size;
    prompt = malloc((size_t)o.p * sizeof *prompt);
    if (!prompt) {
        fprintf(stderr, "q3bench: out of memory for a %d-token prompt\n", o.p);
        goto done;
    }
    uint64_t seed = PROMPT_SEED;
    for (int i = 0; i < o.p; i++) prompt[i] = (int32_t)(splitmix64(&seed) % in.prompt_range);
    in.prompt_hash = ids_xxh64(prompt, (size_t)o.p);

    for (int i = 0; o.backends[i]; i++) {
        int brc = run_backend(m, &o, o.backends[i], prompt, &res[n_res], &err);
        n_res++;
        if (brc) {
            fprintf(stderr, "q3bench: %s\n", err.msg);
            rc = brc;
            goto done;
        }
    }
    int differs = 0; /* the first backend whose ids differ from the first's */
    for (int i = 1; i < n_res && !differs; i++)
        if (first_diff(res[0].ids, res[i].ids, o.n + 1) >= 0) differs = i;
    int agree = !differs;
    if (o.json) {
        if (print_json(&o, &in, res, n_res, agree)) {
            fprintf(stderr, "q3bench: out of memory while writing the JSON report\n");
            goto done;
        }
    } else {
        print_human(&o, &in, res, n_res);
        if (n_res > 1 && agree) {
            char h[17];
            hex64(h, res[0].ids_hash);
            printf("\ntokens: ");
            for (int i = 0; i < n_res; i++) printf("%s%s", res[i].name, i + 2 < n_res ? ", " : i + 1 < n_res ? " and " : "");
            printf(" generated identical ids (%d ids, xxh64 %s)\n", o.n + 1, h);
        }
    }
    rc = 0;
    if (!agree) {
        const bench_result *a = &res[0], *b = &res[differs];
        int d = first_diff(a->ids, b->ids, o.n + 1);
        fprintf(stderr, "q3bench: %s and %s generated different ids: token %d is %d on %s, %d on %s "
                "(xxh64 %016llx vs %016llx)\n", a->name, b->name, d, a->ids[d], a->name, b->ids[d], b->name,
                (unsigned long long)a->ids_hash, (unsigned long long)b->ids_hash);
        rc = 3;
    }
done:
    for (int i = 0; i < n_res; i++) {
        free(res[i].prefill_s);
        free(res[i].decode_s);
        free(res[i].tok_s);
        free(res[i].ids);
    }
    free(prompt);
    q3_model_close(m);
    return rc;
}
