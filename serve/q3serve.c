/* q3serve - an OpenAI-compatible HTTP server for a .q3 model, with continuous batching.
 * usage: q3serve MODEL.q3 [options]   (see --help)
 * This file: the command line, start-up, and the signals (SIGTERM drains). The
 * parts: serve_http.c (HTTP), serve_request.c (request bodies), serve_sched.c (the
 * batcher), serve_sse.c and serve_openai.c (what is sent), serve_metrics.c. */
#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "../include/q3.h"
#include "serve_http.h"
#include "serve_metrics.h"
#include "serve_sched.h"

#define EXIT_USAGE 2

static const char usage[] =
    "usage: q3serve MODEL.q3 [options]\n"
    "  an OpenAI-compatible server: POST /v1/chat/completions, POST /v1/completions (stream or\n"
    "  not), GET /v1/models, GET /health, GET /metrics (Prometheus); several requests decode\n"
    "  together in one batched step (continuous batching).\n"
    "  --host ADDR          address to bind (default 127.0.0.1: this machine only)\n"
    "  --port N             TCP port (default 8080; 0: any free port, printed at start)\n"
    "  --parallel N         sequences decoded together, one context each (default 4)\n"
    "  --ctx N              context positions of each sequence (default min(model's, 4096))\n"
    "  --cache-type T       KV cache elements: f16 (default) or q8_0 (8 bits, about half the\n"
    "                       memory a sequence holds; cpu backend)\n"
    "  --queue N            requests that may wait for a slot before 503 (default 64)\n"
    "  --chunk N            prompt tokens prefilled per step, a multiple of 4 (default 64): a long\n"
    "                       prompt delays the running streams by a chunk at a time\n"
    "  --backend NAME       compute backend (default: the first of q3_backend_names, cpu)\n"
    "  --device N           the backend's device number\n"
    "  -t, --threads N      CPU worker threads (default: every core)\n"
    "  --api-key KEY        require 'Authorization: Bearer KEY' (all but /health); also read\n"
    "                       from Q3SERVE_API_KEY when the option is not given\n"
    "  --max-body BYTES     larger request bodies get 413 (default 1048576)\n"
    "  --no-think           chat: thinking off by default (empty <think></think>, as q3run\n"
    "                       --no-think); a request's chat_template_kwargs.enable_thinking wins\n"
    "  --alias NAME         the model's name in the API (default: the file's name without .q3)\n"
    "  -v, --verbose        print the backend chosen\n"
    "  -h, --help           this text\n"
    "opencl on NVIDIA: every decode product runs on tensor cores (Q3_OPENCL_MV_MMA=1, set here\n"
    "unless the environment sets it), a stream alone as in a batch; q3run gives the same tokens\n"
    "with Q3_OPENCL_MV_MMA=1.\n"
    "SIGTERM or SIGINT: stop accepting, finish the requests in flight, exit 0; a second one\n"
    "stops at once (exit 1).\n"
    "exit status: 0 stopped by a signal after draining, 1 error, 2 usage\n";

typedef struct {
    const char *model, *host, *backend, *api_key, *alias, *cache_name;
    q3_cache_type cache_type; /* parsed from cache_name (--cache-type) */
    int port, parallel, ctx, queue, chunk, device, threads, think, verbose;
    long max_body;
} options;

static int usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int usage_error(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "q3serve: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, " (see q3serve --help)\n");
    va_end(ap);
    return -1;
}

/* A whole decimal number in [lo, hi]. */
static int number(const char *opt, const char *s, long lo, long hi, long *v)
{
    char *end;
    errno = 0;
    long n = s ? strtol(s, &end, 10) : 0;
    if (!s || !*s || *end || errno || n < lo || n > hi) {
        return usage_error("%s takes a whole number from %ld to %ld, not '%s'", opt, lo, hi, s ? s : "");
    }
    *v = n;
    return 0;
}

static int parse_args(int argc, char **argv, options *o)
{
    *o = (options){.host = "127.0.0.1", .port = 8080, .parallel = 4, .queue = 64, .chunk = 64, .device = -1,
                   .think = 1, .max_body = 1 << 20};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        long n;
#define NUM(name, lo, hi, field)                                     \
    if (!strcmp(a, name)) {                                          \
        if (number(name, v, lo, hi, &n)) return -1;                  \
        o->field = (int)n;                                           \
        i++;                                                         \
        continue;                                                    \
    }
#define STR(name, field)                                                      \
    if (!strcmp(a, name)) {                                                   \
        if (!v) return usage_error("%s needs a value", name);                 \
        o->field = v;                                                         \
        i++;                                                                  \
        continue;                                                             \
    }
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            fputs(usage, stdout);
            exit(0);
        }
        NUM("--port", 0, 65535, port)
        NUM("--parallel", 1, 256, parallel)
        NUM("--ctx", 1, INT_MAX / 2, ctx)
        NUM("--queue", 0, 100000, queue)
        NUM("--chunk", 4, 4096, chunk)
        NUM("--device", 0, 1000, device)
        NUM("--threads", 1, 256, threads)
        NUM("-t", 1, 256, threads)
        STR("--host", host)
        STR("--backend", backend)
        STR("--api-key", api_key)
        STR("--alias", alias)
        STR("--cache-type", cache_name)
        if (!strcmp(a, "--max-body")) {
            if (number(a, v, 64, 1L << 30, &o->max_body)) return -1;
            i++;
            continue;
        }
        if (!strcmp(a, "--no-think")) {
            o->think = 0;
            continue;
        }
        if (!strcmp(a, "-v") || !strcmp(a, "--verbose")) {
            o->verbose = 1;
            continue;
        }
        if (a[0] == '-' && a[1]) return usage_error("unknown option '%s'", a);
        if (o->model) return usage_error("one model only; '%s' is one too many", a);
        o->model = a;
#undef NUM
#undef STR
    }
    if (!o->model) return usage_error("no model given");
    if (o->chunk % 4) return usage_error("--chunk must be a multiple of 4 (the GEMM's token groups), not %d", o->chunk);
    if (o->cache_name && q3_cache_type_parse(o->cache_name, &o->cache_type, NULL))
        return usage_error("--cache-type takes f16 or q8_0, not '%s'", o->cache_name);
    if (!o->api_key) o->api_key = getenv("Q3SERVE_API_KEY");
    if (o->api_key && !*o->api_key) return usage_error("--api-key is empty");
    return 0;
}

/* "dir/name.q3" -> "name" */
static void model_name(const char *path, char *out, size_t cap)
{
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    size_t n = strlen(base);
    if (n > 3 && strcmp(base + n - 3, ".q3") == 0) n -= 3;
    snprintf(out, cap, "%.*s", (int)n, base);
}

/* Until every request in flight has ended; 0 drained, 1 a second signal came first. */
static int drain(serve_sched *s, serve_http *h, const sigset_t *sigs)
{
    struct timespec tick = {0, 50 * 1000 * 1000};
    while (serve_sched_pending(s) > 0 || serve_http_in_flight(h) > 0)
        if (sigtimedwait(sigs, NULL, &tick) > 0) return 1;
    return 0;
}

int main(int argc, char **argv)
{
    options o;
    if (parse_args(argc, argv, &o)) return EXIT_USAGE;
    /* The signals are taken by sigwait on this thread only: blocked before any thread starts. */
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGINT);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    signal(SIGPIPE, SIG_IGN); /* a client gone mid-write is an error return, not the end of the server */

    q3_err err = {{0}};
    q3_model *m = NULL;
    serve_sched *sched = NULL;
    serve_http *http = NULL;
    serve_metrics metrics;
    serve_metrics_init(&metrics, o.parallel);
    char name[256];
    model_name(o.model, name, sizeof name);
    q3_context_params cp = q3_context_default_params();
    cp.backend = o.backend;
    cp.n_ctx = o.ctx;
    cp.n_threads = o.threads;
    cp.device = o.device;
    cp.verbose = o.verbose;
    cp.cache_type = o.cache_type;
    serve_sched_params sp = {.n_slots = o.parallel, .queue_max = o.queue, .chunk = o.chunk, .ctx = cp};
    serve_http_params hp = {.host = o.host, .port = o.port, .api_key = o.api_key, .max_body = (size_t)o.max_body,
                            .model_id = o.alias ? o.alias : name, .thinking = o.think,
                            .max_connections = o.parallel + o.queue + 64};
    int rc = 1;
    /* A batched step's products on tensor cores (matvec_mma) read the weights once for every
     * stream: H200, 16 streams 7.5x one at Qwen3-4B, 3.9x with matvec_batch (docs/serve.md).
     * A stream alone takes the same kernel, so its tokens do not depend on the batch; one
     * token alone costs about what matvec does (docs/opencl.md). Before the model opens: the
     * backend reads its options then. */
    if (o.backend && !strcmp(o.backend, "opencl")) setenv("Q3_OPENCL_MV_MMA", "1", 0);
    if (q3_model_open(o.model, NULL, &m, &err) || serve_sched_create(m, &sp, &metrics, &sched, &err) ||
        serve_http_start(&hp, m, sched, &metrics, &http, &err)) {
        fprintf(stderr, "%s\n", err.msg);
        goto done;
    }
    fprintf(stderr, "q3serve: %s on http://%s:%d/v1 (%d parallel, context %d each%s)\n", hp.model_id, o.host,
            serve_http_port(http), o.parallel, serve_sched_ctx(sched), o.api_key ? ", API key required" : "");
    int sig;
    while (sigwait(&sigs, &sig) != 0) continue;
    serve_sched_drain(sched);
    serve_http_quiesce(http);
    int pending = serve_sched_pending(sched);
    fprintf(stderr, "q3serve: %s: draining %d request%s\n", strsignal(sig), pending, pending == 1 ? "" : "s");
    if (drain(sched, http, &sigs)) {
        fprintf(stderr, "q3serve: second signal: stopping with %d request%s unfinished\n", serve_sched_pending(sched),
                serve_sched_pending(sched) == 1 ? "" : "s");
        serve_sched_destroy(sched); /* ends the jobs, which wakes their connections */
        sched = NULL;
        goto done;
    }
    rc = 0;
done:
    if (sched) serve_sched_drain(sched);
    serve_http_stop(http);
    serve_sched_destroy(sched);
    q3_model_close(m);
    serve_metrics_destroy(&metrics);
    return rc;
}
