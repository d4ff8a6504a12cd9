/* q3batch - the batched decode step alone (q3_decode_batch, what q3serve runs each step),
 * without HTTP: for each batch size B, B contexts holding --depth positions each (a prompt of
 * their own) decode n greedy tokens together, r times; it prints the time per step and all the
 * tokens per second. Every context must generate the same ids in every batch it is part of
 * (each context's logits are its own decode's, bit for bit), or it exits 3.
 * Exit: 0 ok, 1 error, 2 usage, 3 a context's ids differ between batch sizes. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "../include/q3.h"
#include "bench_fmt.h"

#define MAX_SIZES 16
#define MAX_CTX 256
#define WARMUP_STEPS 2 /* untimed steps per batch size (kernels built, plans recorded) */

static void usage(FILE *out)
{
    fprintf(out, "usage: q3batch MODEL.q3 [--backend NAME] [--device N] [-b 1,4,16] [--depth D] [-n N] [-r R] [-t N]\n"
                 "               [--greedy]\n"
                 "  -b LIST      batch sizes (contexts decoding together; default 1,4,16)\n"
                 "  --depth D    positions each context holds before the timed steps (default 512)\n"
                 "  -n N         decode steps a repetition (default 32)\n"
                 "  -r R         repetitions per batch size (default 3)\n"
                 "  -t N         CPU threads (default all)\n"
                 "  --greedy     each step as q3serve runs a greedy request's: q3_decode_batch_greedy, the\n"
                 "               next id taken where the logits are (OpenCL: on the device), no logits read\n"
                 "environment:\n");
    for (const char *const *b = q3_backend_names(); *b; b++) fputs(q3_backend_env_help(*b), out);
    fprintf(out, "exit status: 0 ok, 1 error, 2 usage, 3 a context's ids differ between batch sizes\n");
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

typedef struct {
    const char *path, *backend;
    int sizes[MAX_SIZES], n_sizes, depth, n, r, threads, device, greedy;
} opts;

static int parse(int argc, char **argv, opts *o)
{
    *o = (opts){.depth = 512, .n = 32, .r = 3, .device = -1, .sizes = {1, 4, 16}, .n_sizes = 3};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            exit(0);
        }
        int ok = 1;
        if (!strcmp(a, "--greedy")) {
            o->greedy = 1;
            continue;
        }
        if (!strcmp(a, "--backend") && v) o->backend = v;
        else if (!strcmp(a, "-b") && v) ok = (o->n_sizes = bench_parse_list(v, 1, MAX_CTX, o->sizes, MAX_SIZES)) > 0;
        else if ((!strcmp(a, "--depth") || !strcmp(a, "-n") || !strcmp(a, "-r") || !strcmp(a, "-t") ||
                  !strcmp(a, "--device")) && v) {
            int x;
            ok = bench_parse_list(v, 0, 1 << 20, &x, 1) == 1;
            if (!strcmp(a, "--depth")) o->depth = x;
            else if (!strcmp(a, "-n")) o->n = x, ok = ok && x > 0;
            else if (!strcmp(a, "-r")) o->r = x, ok = ok && x > 0;
            else if (!strcmp(a, "-t")) o->threads = x;
            else o->device = x;
        } else if (a[0] != '-' && !o->path) {
            o->path = a;
            continue;
        } else {
            ok = 0;
        }
        if (!ok) {
            fprintf(stderr, "q3batch: bad option or value: %s%s%s\n", a, v ? " " : "", v ? v : "");
            return -1;
        }
        i++;
    }
    if (!o->path) fprintf(stderr, "q3batch: no model given (--help)\n");
    return o->path ? 0 : -1;
}

int main(int argc, char **argv)
{
    opts o;
    if (parse(argc, argv, &o)) return 2;
    int most = 0;
    for (int i = 0; i < o.n_sizes; i++) most = o.sizes[i] > most ? o.sizes[i] : most;
    q3_err err = {{0}};
    q3_model *m = NULL;
    if (q3_model_open(o.path, NULL, &m, &err)) {
        fprintf(stderr, "q3batch: %s\n", err.msg);
        return 1;
    }
    uint32_t V = q3_model_config(m)->vocab_size;
    q3_context_params cp = q3_context_default_params();
    cp.backend = o.backend;
    cp.device = o.device;
    cp.n_threads = o.threads;
    cp.n_ctx = o.depth + WARMUP_STEPS + o.n + 1;
    q3_context **c = calloc((size_t)most, sizeof *c);
    int32_t *prompt = malloc(((size_t)o.depth + 1) * sizeof *prompt), *first = calloc((size_t)most, sizeof *first);
    int32_t *ids = calloc((size_t)most * o.n, sizeof *ids), *tok = malloc((size_t)most * sizeof *tok);
    int32_t *next = malloc((size_t)most * sizeof *next);
    char *seen = calloc((size_t)most, 1);
    unsigned char *only = malloc((size_t)most);
    double *step = malloc((size_t)o.r * o.n * sizeof *step);
    int rc = 1;
    if (!c || !prompt || !first || !ids || !tok || !next || !seen || !only || !step) {
        fprintf(stderr, "q3batch: out of memory\n");
        goto done;
    }
    /* Each context's own prompt (depth ids, deterministic), prefilled once; a repetition
     * truncates back to it and starts from its greedy id. */
    for (int i = 0; i < most; i++) {
        for (int k = 0; k < o.depth; k++) prompt[k] = (int32_t)(((uint32_t)k * 37u + (uint32_t)i * 101u) % (V - 16) + 8);
        if (q3_context_create(m, &cp, &c[i], &err) || (o.depth && q3_prefill(c[i], prompt, (size_t)o.depth, &err)))
            goto fail;
        first[i] = o.depth ? q3_argmax(q3_logits(c[i]), V) : 8 + i;
    }
    memset(only, 1, (size_t)most);
    printf("q3batch %s, backend %s, depth %d, %d steps x %d%s\n", o.path, o.backend ? o.backend : q3_backend_names()[0],
           o.depth, o.n, o.r, o.greedy ? ", greedy on the backend" : "");
    printf("%-6s %28s %12s %10s\n", "batch", "ms/step min / median / max", "tok/s", "vs first");
    double base = 0;
    for (int si = 0; si < o.n_sizes; si++) {
        int B = o.sizes[si];
        for (int rep = -1; rep < o.r; rep++) { /* rep -1: the warm-up */
            int steps = rep < 0 ? WARMUP_STEPS : o.n;
            for (int i = 0; i < B; i++) {
                if (q3_kv_truncate(c[i], o.depth, &err)) goto fail;
                tok[i] = first[i];
            }
            for (int s = 0; s < steps; s++) {
                double t0 = now_s();
                if (o.greedy ? q3_decode_batch_greedy(c, tok, (size_t)B, only, next, &err)
                             : q3_decode_batch(c, tok, (size_t)B, &err))
                    goto fail;
                if (rep >= 0) step[rep * o.n + s] = now_s() - t0;
                for (int i = 0; i < B; i++) {
                    tok[i] = o.greedy ? next[i] : q3_argmax(q3_logits(c[i]), V);
                    if (rep < 0) continue;
                    int32_t *want = &ids[(size_t)i * o.n + s];
                    if (seen[i] && *want != tok[i]) {
                        fprintf(stderr, "q3batch: context %d, step %d: id %d in a batch of %d, %d before\n", i, s,
                                tok[i], B, *want);
                        rc = 3;
                        goto done;
                    }
                    *want = tok[i];
                }
            }
            if (rep >= 0)
                for (int i = 0; i < B; i++) seen[i] = 1;
        }
        size_t ns = (size_t)o.r * o.n;
        qsort(step, ns, sizeof *step, cmp_double);
        double med = step[ns / 2], rate = B / med;
        if (si == 0) base = rate;
        printf("%-6d %8.3f / %8.3f / %8.3f %12.1f %9.2fx\n", B, step[0] * 1e3, med * 1e3, step[ns - 1] * 1e3, rate,
               rate / base);
        fflush(stdout);
    }
    rc = 0;
    goto done;
fail:
    fprintf(stderr, "q3batch: %s\n", err.msg);
done:
    for (int i = 0; c && i < most; i++) q3_context_free(c[i]);
    free(c);
    free(prompt);
    free(first);
    free(ids);
    free(tok);
    free(next);
    free(seen);
    free(only);
    free(step);
    q3_model_close(m);
    return rc;
}
