/* q3bench - checksum-verified benchmark. Verify every checksum of the file first, then on each
 * backend: load once, and for each run of the plan (a prefill of p tokens from position 0, then n
 * greedy decode steps) one warm-up and r repetitions. A run times its prefill (a pp test), its
 * decode (a tg test at depth p), or both. Every repetition, and with --backend both every
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
#include "bench_fmt.h"

#define MAX_BACKENDS 8
#define PROMPT_SEED 0x7133626e63680001ull /* fixed: the prompt is part of what the checksum means */
#define WARMUP_DECODE 8                   /* decode steps in the warm-up (kernel JIT, first touch) */
#define MAX_LIST 32                       /* values in -p or --depth */

typedef struct {
    const char *path;
    const char *backends[MAX_BACKENDS + 1]; /* names, NULL-terminated */
    int pp[MAX_LIST], n_pp;       /* -p: prompt lengths */
    int depth[MAX_LIST], n_depth; /* --depth: tg contexts; n_depth 0: each tg follows its -p prompt */
    int n, r, threads, device, json, verbose;
    int no_mmap;           /* weights read into anonymous memory (q3_load_file) */
    q3_cache_type cache_type; /* --cache-type */
    double bandwidth_gbps; /* 0: not given */
} bench_opts;

/* One test, one row per backend: pp (prefill of len tokens, timed) or tg (n decode steps after
 * len tokens of context, timed). */
typedef struct {
    int is_tg, len, job; /* job: the run that measures it */
    char name[48];
} bench_test;

/* One run, repeated: a prefill of p tokens from position 0 (none when p is 0: the first decode
 * step then takes prompt id 0), then n greedy decode steps. pp / tg: the tests it serves, -1 none. */
typedef struct {
    int p, n, pp, tg;
} bench_job;

typedef struct {
    bench_test tests[2 * MAX_LIST];
    bench_job jobs[2 * MAX_LIST];
    int n_tests, n_jobs;
    int max_prompt; /* prompt ids any prefill needs */
    int n_ctx;      /* positions any run needs */
} bench_plan;

typedef struct {
    double min, med, max;
} stats;

/* One backend's measurements of one job. */
typedef struct {
    double *prefill_s; /* r: seconds of each prefill call */
    double *decode_s;  /* r: seconds of all decode calls of a repetition */
    double *step_s;    /* r * n: seconds of each decode call */
    double *cpu_s;     /* 2 r: process CPU seconds (all threads) of each prefill, then of each decode */
    int32_t *ids;      /* n + 1 ids of repetition 1: argmax after the prefill, then after each step */
    bench_top2 *top;   /* n + 1: the top-2 behind each id, to tell a near-tie from a bug */
    uint64_t ids_hash; /* XXH64 of ids as little-endian int32 */
} job_result;

typedef struct {
    const char *name;
    int threads;      /* resolved CPU threads; 0 for OpenCL */
    const char *simd; /* CPU SIMD level; NULL for OpenCL */
    double load_ms;
    job_result *jobs; /* one per plan job */
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
    q3_model_verify(*m, print_line, NULL, n_checked, &bad);
    *ms = (now_s() - t0) * 1e3;
    if (bad) {
        fprintf(stderr, "%s: FAILED (%u of %u checksums do not match; nothing was timed)\n", path, bad, *n_checked);
        q3_model_close(*m);
        return -1;
    }
    return 0;
}

/* ---- the plan: which runs measure which tests ---- */

static int add_test(bench_plan *pl, int is_tg, int len, int n, int job)
{
    bench_test *t = &pl->tests[pl->n_tests];
    t->is_tg = is_tg;
    t->len = len;
    t->job = job;
    bench_test_name(t->name, sizeof t->name, is_tg, len, n);
    return pl->n_tests++;
}

static int add_job(bench_plan *pl, int p, int n)
{
    pl->jobs[pl->n_jobs] = (bench_job){p, n, -1, -1};
    return pl->n_jobs++;
}

static int in_list(const int *v, int n, int x)
{
    for (int i = 0; i < n; i++)
        if (v[i] == x) return 1;
    return 0;
}

/* pp rows in -p order, then tg rows in --depth order (without --depth: one per -p, after it). A
 * depth equal to a prompt length shares that prompt's run: prefill timed for pp, decode for tg. */
static void plan_tests(const bench_opts *o, bench_plan *pl)
{
    memset(pl, 0, sizeof *pl);
    for (int i = 0; i < o->n_pp; i++) {
        int tg = o->n > 0 && (o->n_depth == 0 || in_list(o->depth, o->n_depth, o->pp[i]));
        int j = add_job(pl, o->pp[i], tg ? o->n : 0);
        pl->jobs[j].pp = add_test(pl, 0, o->pp[i], 0, j);
    }
    for (int i = 0; o->n > 0 && i < (o->n_depth ? o->n_depth : o->n_pp); i++) {
        int d = o->n_depth ? o->depth[i] : o->pp[i], j = 0;
        while (j < pl->n_jobs && !(pl->jobs[j].p == d && pl->jobs[j].n > 0 && pl->jobs[j].tg < 0)) j++;
        if (j == pl->n_jobs) j = add_job(pl, d, o->n);
        pl->jobs[j].tg = add_test(pl, 1, d, o->n, j);
    }
    for (int j = 0; j < pl->n_jobs; j++) {
        if (pl->jobs[j].p > pl->max_prompt) pl->max_prompt = pl->jobs[j].p;
        if (pl->jobs[j].p + pl->jobs[j].n > pl->n_ctx) pl->n_ctx = pl->jobs[j].p + pl->jobs[j].n;
    }
}

/* "pp8", "tg4 @ d12" or "pp8 / tg4 @ d8": the tests a job serves, for messages. */
static void job_name(char *out, size_t size, const bench_plan *pl, int j)
{
    const bench_job *jb = &pl->jobs[j];
    snprintf(out, size, "%s%s%s", jb->pp >= 0 ? pl->tests[jb->pp].name : "", jb->pp >= 0 && jb->tg >= 0 ? " / " : "",
             jb->tg >= 0 ? pl->tests[jb->tg].name : "");
}

/* ---- one run: prefill, then greedy decode ---- */

/* Greedy choice and its runner-up; a non-finite logit means the backend is broken, not a slow token. */
static int argmax(const float *logits, uint32_t vocab, int32_t *out, bench_top2 *top, const char *bname,
                  const char *what, int step, q3_err *err)
{
    long bad = bench_top2_scan(logits, vocab, top);
    if (bad >= 0) {
        set_err(err, "%s: logits after %s %d hold %g at id %ld (expected finite values)", bname, what, step,
                   (double)logits[bad], bad);
        return -1;
    }
    *out = top->id[0];
    return 0;
}

/* CPU seconds of the whole process, all threads: on a machine shared with other work,
 * tokens per (CPU second / threads) says what the code does while it runs. */
static double process_cpu_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* ids and top get n + 1 entries. prefill_s / step_s / cpu may be NULL (warm-up, untimed parts);
 * cpu[0] gets the prefill's CPU seconds, cpu[1] the decode's (without the argmax). With
 * p == 0 there is no prefill: ids[0] is prompt[0], fed to the first decode step at position 0. */
static int run_once(q3_context *c, const char *bname, const int32_t *prompt, int p, int n, uint32_t vocab,
                    int32_t *ids, bench_top2 *top, double *prefill_s, double *step_s, double cpu[2], q3_err *err)
{
    q3_err e = {{0}};
    q3_kv_truncate(c, 0, &e); /* every run starts from an empty cache */
    double c0 = process_cpu_s();
    double t0 = now_s();
    if (p == 0) {
        ids[0] = prompt[0];
        top[0] = (bench_top2){{prompt[0], -1}, {NAN, NAN}};
    } else if (q3_prefill(c, prompt, (size_t)p, &e)) {
        set_err(err, "%s: prefill of %d tokens failed: %s", bname, p, e.msg);
        return -1;
    }
    double t1 = now_s();
    if (prefill_s) *prefill_s = t1 - t0;
    if (cpu) cpu[0] = process_cpu_s() - c0;
    if (p > 0 && argmax(q3_logits(c), vocab, &ids[0], &top[0], bname, "prefill of", p, err)) return -1;
    double c1 = process_cpu_s(), c_argmax = 0;
    for (int i = 0; i < n; i++) {
        t0 = now_s();
        if (q3_decode(c, ids[i], &e)) {
            set_err(err, "%s: decode step %d (position %d) failed: %s", bname, i, p + i, e.msg);
            return -1;
        }
        t1 = now_s();
        if (step_s) step_s[i] = t1 - t0;
        double ca = process_cpu_s();
        if (argmax(q3_logits(c), vocab, &ids[i + 1], &top[i + 1], bname, "decode step", i, err)) return -1;
        c_argmax += process_cpu_s() - ca;
    }
    if (cpu) cpu[1] = process_cpu_s() - c1 - c_argmax;
    return 0;
}

static int first_diff(const int32_t *a, const int32_t *b, int n)
{
    for (int i = 0; i < n; i++)
        if (a[i] != b[i]) return i;
    return -1;
}

static void progress(const bench_opts *o, const char *fmt, const char *name, const char *what, int a, int b)
{
    if (!o->verbose && !isatty(2)) return;
    fprintf(stderr, "q3bench: %s: %s", name, what);
    fprintf(stderr, fmt, a, b);
    fputc('\n', stderr);
}

static void job_result_free(job_result *jr)
{
    free(jr->prefill_s);
    free(jr->decode_s);
    free(jr->step_s);
    free(jr->cpu_s);
    free(jr->ids);
    free(jr->top);
}

static int job_result_alloc(job_result *jr, int r, int n)
{
    memset(jr, 0, sizeof *jr);
    jr->prefill_s = calloc((size_t)r, sizeof *jr->prefill_s);
    jr->decode_s = calloc((size_t)r, sizeof *jr->decode_s);
    jr->step_s = calloc((size_t)r * (size_t)(n > 0 ? n : 1), sizeof *jr->step_s);
    jr->cpu_s = calloc(2 * (size_t)r, sizeof *jr->cpu_s);
    jr->ids = calloc((size_t)n + 1, sizeof *jr->ids);
    jr->top = calloc((size_t)n + 1, sizeof *jr->top);
    return jr->prefill_s && jr->decode_s && jr->step_s && jr->cpu_s && jr->ids && jr->top ? 0 : -1;
}

/* Scratch for the warm-up and the later repetitions, compared with repetition 1. */
typedef struct {
    uint32_t vocab;
    int32_t *ids;
    bench_top2 *top;
} run_scratch;

/* The warm-up (as far as it went) or repetition k generated ids other than repetition 1's. */
static int reps_differ(const char *bname, const char *jname, const job_result *jr, const run_scratch *sc, int k,
                       int n_ids, q3_err *err)
{
    int d = first_diff(jr->ids, sc->ids, n_ids);
    if (d < 0) return 0;
    char who[32], what[160], msg[sizeof err->msg];
    if (k == 0)
        snprintf(who, sizeof who, "the warm-up");
    else
        snprintf(who, sizeof who, "repetition %d", k + 1);
    snprintf(what, sizeof what, "%s: %s", bname, jname);
    bench_fmt_diff(msg, sizeof msg, what, d, "repetition 1", &jr->top[d], who, &sc->top[d]);
    set_err(err, "%s (the backend is not deterministic)", msg);
    return 1;
}

/* One job on one backend: a warm-up, then r timed repetitions. Returns 0, 1 or 3 (as run_backend). */
static int run_job(q3_context *c, const char *bname, const bench_opts *o, const bench_plan *pl, int j, const int32_t *prompt,
                   const run_scratch *sc, job_result *jr, q3_err *err)
{
    const bench_job *jb = &pl->jobs[j];
    const int n = jb->n, n_warm = n < WARMUP_DECODE ? n : WARMUP_DECODE;
    char jname[128];
    job_name(jname, sizeof jname, pl, j);
    progress(o, ": warm-up (prefill %d, %d decode steps)", bname, jname, jb->p, n_warm);
    if (run_once(c, bname, prompt, jb->p, n_warm, sc->vocab, sc->ids, sc->top, NULL, NULL, NULL, err)) return 1;
    for (int k = 0; k < o->r; k++) { /* repetition 1 into jr, the warm-up and the others into sc */
        progress(o, ": repetition %d of %d", bname, jname, k + 1, o->r);
        int32_t *ids = k == 0 ? jr->ids : sc->ids;
        bench_top2 *top = k == 0 ? jr->top : sc->top;
        double cpu[2];
        if (run_once(c, bname, prompt, jb->p, n, sc->vocab, ids, top, &jr->prefill_s[k], jr->step_s + (size_t)k * n,
                     cpu, err))
            return 1;
        jr->cpu_s[k] = cpu[0], jr->cpu_s[o->r + k] = cpu[1];
        for (int i = 0; i < n; i++) jr->decode_s[k] += jr->step_s[(size_t)k * n + i];
        if (reps_differ(bname, jname, jr, sc, k, k == 0 ? n_warm + 1 : n + 1, err)) return 3;
    }
    jr->ids_hash = ids_xxh64(jr->ids, (size_t)n + 1);
    return 0;
}

/* Returns 0, 1 (error) or 3 (repetitions disagree); err holds the one-line reason. */
static int run_backend(q3_model *m, const bench_opts *o, const bench_plan *pl, const char *name,
                       const int32_t *prompt, bench_result *res, q3_err *err)
{
    const uint32_t vocab = q3_model_config(m)->vocab_size;
    memset(res, 0, sizeof *res);
    res->name = name;
    res->jobs = calloc((size_t)pl->n_jobs, sizeof *res->jobs);
    run_scratch sc = {.vocab = vocab};
    sc.ids = calloc((size_t)pl->n_ctx + 1, sizeof *sc.ids);
    sc.top = calloc((size_t)pl->n_ctx + 1, sizeof *sc.top);
    int ok = res->jobs && sc.ids && sc.top;
    for (int j = 0; ok && j < pl->n_jobs; j++) ok = job_result_alloc(&res->jobs[j], o->r, pl->jobs[j].n) == 0;
    if (!ok) {
        set_err(err, "%s: out of memory for the token timings", name);
        free(sc.ids);
        free(sc.top);
        return 1;
    }

    /* Verification gave the mapping's pages back (q3_model_verify): the peak RSS below is the backend's. */
    int hwm_ok = rss_reset() == 0 && vm_hwm_kib() >= 0;
    res->rss_method = hwm_ok ? "VmHWM since load" : "ru_maxrss (whole process)";

    q3_context_params cp = {.backend = name, .n_ctx = pl->n_ctx, .n_threads = o->threads, .device = o->device,
                            .verbose = o->verbose, .cache_type = o->cache_type};
    q3_err e = {{0}};
    int rc = 1;
    q3_context *c = NULL;
    double t0 = now_s();
    int crc = q3_context_create(m, &cp, &c, &e); /* logits in the backend's own memory (OpenCL: pinned) */
    res->load_ms = (now_s() - t0) * 1e3;
    if (crc) {
        set_err(err, "%s: cannot create the backend: %s", name, e.msg);
        goto out;
    }
    q3_context_info info;
    q3_context_describe(c, &info);
    res->threads = info.threads;
    res->simd = info.variant;
    progress(o, "loaded in %d ms (n_ctx %d)", name, "", (int)res->load_ms, pl->n_ctx);
    for (int j = 0; j < pl->n_jobs; j++)
        if ((rc = run_job(c, name, o, pl, j, prompt, &sc, &res->jobs[j], err)) != 0) goto out;
    rc = 0;
out:
    if (c && rc == 0) res->peak_rss_kib = hwm_ok ? vm_hwm_kib() : maxrss_kib();
    q3_context_free(c);
    free(sc.ids);
    free(sc.top);
    return rc;
}

static void bench_result_free(bench_result *res, int n_jobs)
{
    for (int j = 0; res->jobs && j < n_jobs; j++) job_result_free(&res->jobs[j]);
    free(res->jobs);
}

/* With --backend both: every job's ids must be identical; one line on stderr per job that differs. */
static int backends_agree(const bench_plan *pl, const bench_result *a, const bench_result *b)
{
    int agree = 1;
    for (int j = 0; j < pl->n_jobs; j++) {
        const job_result *x = &a->jobs[j], *y = &b->jobs[j];
        int d = first_diff(x->ids, y->ids, pl->jobs[j].n + 1);
        if (d < 0) continue;
        char jname[128], msg[1024];
        job_name(jname, sizeof jname, pl, j);
        bench_fmt_diff(msg, sizeof msg, jname, d, a->name, &x->top[d], b->name, &y->top[d]);
        fprintf(stderr, "q3bench: %s (xxh64 %016llx vs %016llx)\n", msg, (unsigned long long)x->ids_hash,
                (unsigned long long)y->ids_hash);
        agree = 0;
    }
    return agree;
}

/* ---- report ---- */

typedef struct {
    uint64_t file_bytes, params, bytes_per_token;
    unsigned n_checked, n_sections, n_tensors;
    double verify_ms;
    uint32_t prompt_range; /* prompt ids are in [0, prompt_range) */
    uint64_t prompt_hash;  /* of the plan's max_prompt ids */
    double floor_tok_s;    /* bandwidth / bytes_per_token; 0 when no bandwidth is known */
    char cpu[128];
    long cores;
} bench_info;

static void hex64(char out[17], uint64_t v) { snprintf(out, 17, "%016llx", (unsigned long long)v); }

/* One test's figures on one backend. */
typedef struct {
    stats tok_s, ms; /* pp: ms per prompt token; tg: ms of each decode call */
    stats cpu_tok_s;  /* tokens per CPU second of each thread (CPU backend) */
    double pct_floor; /* tg with a bandwidth; else NAN */
    int n_ids;
    uint64_t hash;
} test_figures;

static test_figures figures_of(const bench_opts *o, const bench_info *in, const bench_plan *pl, int t,
                               const bench_result *res)
{
    const bench_test *te = &pl->tests[t];
    const bench_job *jb = &pl->jobs[te->job];
    const job_result *jr = &res->jobs[te->job];
    test_figures fg = {.pct_floor = NAN, .n_ids = jb->n + 1, .hash = jr->ids_hash};
    double *per_thread = malloc((size_t)o->r * sizeof *per_thread);
    for (int k = 0; per_thread && k < o->r; k++)
        per_thread[k] = jr->cpu_s[(te->is_tg ? o->r : 0) + k] / (res->threads > 0 ? res->threads : 1);
    fg.cpu_tok_s = per_thread ? rate_stats(per_thread, (size_t)o->r, te->is_tg ? jb->n : jb->p) : (stats){NAN, NAN, NAN};
    free(per_thread);
    if (!te->is_tg) {
        fg.tok_s = rate_stats(jr->prefill_s, (size_t)o->r, jb->p);
        fg.ms = ms_stats(jr->prefill_s, (size_t)o->r, jb->p);
    } else {
        fg.tok_s = rate_stats(jr->decode_s, (size_t)o->r, jb->n);
        fg.ms = ms_stats(jr->step_s, (size_t)o->r * (size_t)jb->n, 1);
        if (in->floor_tok_s > 0) fg.pct_floor = 100.0 * fg.tok_s.med / in->floor_tok_s;
    }
    return fg;
}

#define TCOLS 9
typedef struct {
    char (*cell)[TCOLS][64]; /* row 0: header */
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

static void add_rows(table *t, const bench_opts *o, const bench_info *in, const bench_plan *pl,
                     const bench_result *res)
{
    char hash[17], name[48], thr[16];
    snprintf(name, sizeof name, "%s%s%s", res->name, res->simd ? " " : "", res->simd ? res->simd : "");
    snprintf(thr, sizeof thr, res->threads ? "%d" : "-", res->threads);
    for (int k = 0; k < pl->n_tests; k++) {
        test_figures fg = figures_of(o, in, pl, k, res);
        char(*row)[64] = t->cell[++t->rows];
        hex64(hash, fg.hash);
        snprintf(row[0], 64, "%s", name);
        snprintf(row[1], 64, "%s", thr);
        snprintf(row[2], 64, "%.2f", res->load_ms);
        snprintf(row[3], 64, "%s", pl->tests[k].name);
        snprintf(row[4], 64, "%.2f / %.2f / %.2f", fg.tok_s.min, fg.tok_s.med, fg.tok_s.max);
        snprintf(row[5], 64, "%.3f / %.3f / %.3f", fg.ms.min, fg.ms.med, fg.ms.max);
        if (isfinite(fg.pct_floor))
            snprintf(row[6], 64, "%.1f", fg.pct_floor);
        else
            snprintf(row[6], 64, "-");
        snprintf(row[7], 64, "%.1f", (double)res->peak_rss_kib / 1024.0);
        snprintf(row[8], 64, "%s", hash);
    }
}

static void print_header(const bench_opts *o, const bench_info *in, const bench_plan *pl)
{
    char ph[17];
    hex64(ph, in->prompt_hash);
    printf("model: %s: %.2f MB, %.2f M parameters\n", o->path, (double)in->file_bytes / 1e6, (double)in->params / 1e6);
    printf("verified: %u checksums (header, %u sections, %u tensors, whole file) in %.1f ms\n", in->n_checked,
           in->n_sections, in->n_tensors, in->verify_ms);
    printf("host: %s, %ld online cores\n", in->cpu, in->cores);
    printf("prompt: %d ids (splitmix64 seed %016llx over [0, %u), xxh64 %s), every prefill a prefix of them; "
           "decode %d greedy; %d repetition%s after a warm-up, per run\n", pl->max_prompt,
           (unsigned long long)PROMPT_SEED, in->prompt_range, ph, o->n, o->r, o->r == 1 ? "" : "s");
    if (in->floor_tok_s > 0)
        printf("floor: %.3f MB of weights per decoded token / %.2f GB/s (--bandwidth) = %.3f ms/token, "
               "%.2f tok/s at most\n", (double)in->bytes_per_token / 1e6, o->bandwidth_gbps,
               1e3 / in->floor_tok_s, in->floor_tok_s);
    else
        printf("floor: %.3f MB of weights per decoded token; no bandwidth given (--bandwidth GBPS), "
               "so no %% of floor\n", (double)in->bytes_per_token / 1e6);
}

static int print_human(const bench_opts *o, const bench_info *in, const bench_plan *pl, const bench_result *res,
                       int n_res)
{
    table t = {calloc((size_t)n_res * (size_t)pl->n_tests + 1, sizeof *t.cell), 0};
    if (!t.cell) return -1;
    print_header(o, in, pl);
    printf("\n");
    static const char *head[TCOLS] = {"backend", "threads", "load ms", "test", "tok/s min / median / max",
                                      "ms/token min / median / max", "% floor", "peak RSS MiB", "tokens xxh64"};
    for (int c = 0; c < TCOLS; c++) snprintf(t.cell[0][c], 64, "%s", head[c]);
    for (int i = 0; i < n_res; i++) add_rows(&t, o, in, pl, &res[i]);
    print_table(&t);
    free(t.cell);
    return 0;
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
static cJSON *j_push(cJSON *arr, cJSON *item)
{
    if (!arr || !item || !cJSON_AddItemToArray(arr, item)) {
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
static void j_ints(cJSON *obj, const char *key, const int *v, int n)
{
    cJSON *a = j_put(obj, key, cJSON_CreateArray());
    for (int i = 0; i < n; i++) j_push(a, cJSON_CreateNumber(v[i]));
}

static void json_test(cJSON *arr, const bench_opts *o, const bench_info *in, const bench_plan *pl, int t,
                      const bench_result *res)
{
    const bench_test *te = &pl->tests[t];
    test_figures fg = figures_of(o, in, pl, t, res);
    char h[17];
    cJSON *e = j_push(arr, cJSON_CreateObject());
    j_str(e, "kind", te->is_tg ? "tg" : "pp");
    j_str(e, "name", te->name);
    j_num(e, te->is_tg ? "depth" : "p", te->len);
    if (te->is_tg) j_num(e, "n", o->n);
    j_stats(e, "tok_s", fg.tok_s);
    j_stats(e, te->is_tg ? "ms_per_token" : "ms_per_prompt_token", fg.ms);
    if (isfinite(fg.pct_floor)) j_num(e, "pct_of_floor", fg.pct_floor);
    if (res->simd) j_stats(e, "tok_per_thread_cpu_s", fg.cpu_tok_s);
    j_num(e, "generated_ids", fg.n_ids);
    hex64(h, fg.hash);
    j_str(e, "tokens_xxh64", h);
}

static void json_result(cJSON *arr, const bench_opts *o, const bench_info *in, const bench_plan *pl,
                        const bench_result *r)
{
    cJSON *e = j_push(arr, cJSON_CreateObject());
    j_str(e, "backend", r->name);
    if (r->simd) {
        j_num(e, "threads", r->threads);
        j_str(e, "simd", r->simd);
    }
    j_num(e, "load_ms", r->load_ms);
    j_num(e, "peak_rss_kib", (double)r->peak_rss_kib);
    j_str(e, "peak_rss_method", r->rss_method);
    cJSON *tests = j_put(e, "tests", cJSON_CreateArray());
    for (int t = 0; t < pl->n_tests; t++) json_test(tests, o, in, pl, t, r);
}

static void json_header(cJSON *root, const bench_opts *o, const bench_info *in, const bench_plan *pl)
{
    char h[17];
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
    j_num(pr, "tokens", pl->max_prompt);
    hex64(h, PROMPT_SEED);
    j_str(pr, "splitmix64_seed", h);
    j_num(pr, "id_range", in->prompt_range);
    hex64(h, in->prompt_hash);
    j_str(pr, "xxh64", h);
    j_ints(root, "prompt_lengths", o->pp, o->n_pp);
    if (o->n_depth)
        j_ints(root, "depths", o->depth, o->n_depth);
    else
        j_put(root, "depths", cJSON_CreateNull());
    j_num(root, "decode_tokens", o->n);
    j_num(root, "repetitions", o->r);
    j_num(root, "warmup_decode_tokens", o->n < WARMUP_DECODE ? o->n : WARMUP_DECODE);
    j_num(root, "n_ctx", pl->n_ctx);
    j_str(root, "cache_type", q3_cache_type_name(o->cache_type));
    cJSON *fl = j_put(root, "floor", cJSON_CreateObject());
    j_num(fl, "bytes_per_token", (double)in->bytes_per_token);
    if (in->floor_tok_s > 0) {
        j_num(fl, "bandwidth_gbps", o->bandwidth_gbps);
        j_str(fl, "bandwidth_source", "--bandwidth");
        j_num(fl, "max_tok_s", in->floor_tok_s);
    } else {
        j_put(fl, "bandwidth_gbps", cJSON_CreateNull());
    }
}

static int print_json(const bench_opts *o, const bench_info *in, const bench_plan *pl, const bench_result *res,
                      int n_res, int agree)
{
    j_bad = 0;
    cJSON *root = cJSON_CreateObject();
    if (!root) return -1;
    json_header(root, o, in, pl);
    cJSON *arr = j_put(root, "results", cJSON_CreateArray());
    for (int i = 0; i < n_res; i++) json_result(arr, o, in, pl, &res[i]);
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
            "both] [-p 512[,4096...]] [--depth D[,D...]] [-n 128]\n"
            "               [-r 5] [-t THREADS] [--device N] [--bandwidth GBPS] [--no-mmap]\n"
            "               [--cache-type f16|q8_0] [--json] [-v]\n"
            "  verifies every checksum, then per test, R times after a warm-up: ppP times a P-token\n"
            "  prefill; tgN @ dD times N greedy decode steps after an untimed D-token prefill (without\n"
            "  --depth, D is each -p; --depth 0: an empty context). Every repetition (and with --backend\n"
            "  both, every backend) must generate the same token ids. --bandwidth: memory read bandwidth\n"
            "  in GB/s (1e9 bytes/s) for the decode floor. --no-mmap: read the weights into memory (huge\n"
            "  pages) instead of mapping the file. --cache-type: the KV cache's elements (q3run -h).\n"
            "  -h, --help  this text\n"
            "environment:\n");
    for (const char *const *n = q3_backend_names(); *n; n++) fputs(q3_backend_env_help(*n), out);
    fprintf(out, "exit status: 0 ok, 1 error, 2 usage, 3 generated tokens differ\n");
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

static int parse_list(const char *opt, const char *s, long lo, long hi, int *out, int *n)
{
    *n = bench_parse_list(s, lo, hi, out, MAX_LIST);
    if (*n < 0) {
        fprintf(stderr, "q3bench: %s needs a comma-separated list of at most %d different integers from %ld to %ld, "
                "got '%s'\n", opt, MAX_LIST, lo, hi, s ? s : "nothing");
        return -1;
    }
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
    *o = (bench_opts){.backends = {q3_backend_names()[0]}, .pp = {512}, .n_pp = 1, .n = 128, .r = 5, .threads = 0, .device = -1};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        int bad = 0, takes = 1;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            exit(q3_finish_stdout("q3bench", 0));
        } else if (!strcmp(a, "--json")) {
            o->json = 1, takes = 0;
        } else if (!strcmp(a, "-v")) {
            o->verbose = 1, takes = 0;
        } else if (!strcmp(a, "--no-mmap")) {
            o->no_mmap = 1, takes = 0;
        } else if (!strcmp(a, "--backend")) {
            bad = parse_backends(v, o) != 0;
        } else if (!strcmp(a, "-p")) {
            if (!strchr(v ? v : "", ',') && parse_int(a, v, 1, 1 << 20, &o->pp[0])) return -1;
            if (parse_list(a, v, 1, 1 << 20, o->pp, &o->n_pp)) return -1;
        } else if (!strcmp(a, "--depth")) {
            if (parse_list(a, v, 0, 1 << 20, o->depth, &o->n_depth)) return -1;
        } else if (!strcmp(a, "-n")) {
            if (parse_int(a, v, 0, 1 << 20, &o->n)) return -1;
        } else if (!strcmp(a, "-r")) {
            if (parse_int(a, v, 1, 10000, &o->r)) return -1;
        } else if (!strcmp(a, "-t")) {
            if (parse_int(a, v, 0, 4096, &o->threads)) return -1;
        } else if (!strcmp(a, "--device")) {
            if (parse_int(a, v, -1, 1 << 16, &o->device)) return -1;
        } else if (!strcmp(a, "--cache-type")) {
            q3_err e = {{0}};
            if (q3_cache_type_parse(v, &o->cache_type, &e)) {
                fprintf(stderr, "q3bench: --cache-type: %s\n", e.msg);
                return -1;
            }
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
    static bench_plan pl; /* static: a few KB of tests and jobs */
    plan_tests(&o, &pl);

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

    if (cfg->max_position_embeddings && (uint64_t)pl.n_ctx > cfg->max_position_embeddings) {
        fprintf(stderr, "q3bench: the longest test needs %d positions (prompt or depth + -n %d), more than the "
                "model's max_position_embeddings %u\n", pl.n_ctx, o.n, cfg->max_position_embeddings);
        rc = 2;
        goto done;
    }
    /* Prompt ids come from the tokenizer's ordinary vocabulary (no special tokens), fixed seed. */
    in.prompt_range = mi.bpe_vocab && mi.bpe_vocab < cfg->vocab_size ? mi.bpe_vocab : cfg->vocab_size;
    prompt = malloc((size_t)pl.max_prompt * sizeof *prompt + sizeof *prompt);
    if (!prompt) {
        fprintf(stderr, "q3bench: out of memory for a %d-token prompt\n", pl.max_prompt);
        goto done;
    }
    uint64_t seed = PROMPT_SEED;
    for (int i = 0; i < pl.max_prompt; i++) prompt[i] = (int32_t)(splitmix64(&seed) % in.prompt_range);
    in.prompt_hash = ids_xxh64(prompt, (size_t)pl.max_prompt);

    for (int i = 0; o.backends[i]; i++) {
        int brc = run_backend(m, &o, &pl, o.backends[i], prompt, &res[n_res], &err);
        n_res++;
        if (brc) {
            fprintf(stderr, "q3bench: %s\n", err.msg);
            rc = brc;
            goto done;
        }
    }
    int agree = 1;
    for (int i = 1; i < n_res; i++) agree &= backends_agree(&pl, &res[0], &res[i]);
    if (o.json ? print_json(&o, &in, &pl, res, n_res, agree) : print_human(&o, &in, &pl, res, n_res)) {
        fprintf(stderr, "q3bench: out of memory while writing the report\n");
        goto done;
    }
    if (!o.json && n_res > 1 && agree) {
        char h[17];
        hex64(h, res[0].jobs[0].ids_hash);
        printf("\ntokens: ");
        for (int i = 0; i < n_res; i++) printf("%s%s", res[i].name, i + 2 < n_res ? ", " : i + 1 < n_res ? " and " : "");
        if (pl.n_jobs == 1)
            printf(" generated identical ids (%d ids, xxh64 %s)\n", pl.jobs[0].n + 1, h);
        else
            printf(" generated identical ids in all %d runs (each row's xxh64)\n", pl.n_jobs);
    }
    rc = agree ? 0 : 3;
done:
    for (int i = 0; i < n_res; i++) bench_result_free(&res[i], pl.n_jobs);
    free(prompt);
    q3_model_close(m);
    return rc;
}
