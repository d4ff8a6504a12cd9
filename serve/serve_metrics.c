/* serve_metrics.c - counters and the Prometheus text format (serve_metrics.h). */
#include "serve_metrics.h"
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const int codes[SERVE_METRIC_CODES] = {200, 400, 401, 404, 405, 413, 500, 503, 499};

void serve_metrics_init(serve_metrics *m, int slots)
{
    memset(m, 0, sizeof *m);
    pthread_mutex_init(&m->lock, NULL);
    m->slots = slots;
    m->window_start = -1;
}

void serve_metrics_destroy(serve_metrics *m) { pthread_mutex_destroy(&m->lock); }

void serve_metrics_request(serve_metrics *m, int status)
{
    int i = 0;
    while (i < SERVE_METRIC_CODES && codes[i] != status) i++;
    pthread_mutex_lock(&m->lock);
    m->requests[i]++;
    pthread_mutex_unlock(&m->lock);
}

#define BUMP(field, by)                   \
    do {                                  \
        pthread_mutex_lock(&m->lock);     \
        m->field += (by);                 \
        pthread_mutex_unlock(&m->lock);   \
    } while (0)

void serve_metrics_cancelled(serve_metrics *m) { BUMP(cancelled, 1); }
void serve_metrics_prompt(serve_metrics *m, int tokens) { BUMP(prompt_tokens, (uint64_t)tokens); }
void serve_metrics_prefill_chunk(serve_metrics *m) { BUMP(prefill_chunks, 1); }

void serve_metrics_step(serve_metrics *m, int batch, int tokens, double now)
{
    pthread_mutex_lock(&m->lock);
    if (batch > 0) {
        m->decode_steps++;
        m->decode_rows += (uint64_t)batch;
        m->last_batch = batch;
    }
    m->generated_tokens += (uint64_t)tokens;
    if (m->window_start < 0) m->window_start = now;
    m->window_tokens += tokens;
    if (now - m->window_start >= 1.0) {
        m->tok_per_s = m->window_tokens / (now - m->window_start);
        m->window_start = now;
        m->window_tokens = 0;
    }
    pthread_mutex_unlock(&m->lock);
}

void serve_metrics_time(serve_metrics *m, double decode_s, double prefill_s, double host_s)
{
    pthread_mutex_lock(&m->lock);
    m->decode_seconds += decode_s;
    m->prefill_seconds += prefill_s;
    m->host_seconds += host_s;
    pthread_mutex_unlock(&m->lock);
}

void serve_metrics_load(serve_metrics *m, int queue_depth, int active)
{
    pthread_mutex_lock(&m->lock);
    m->queue_depth = queue_depth;
    m->active = active;
    if (active == 0) m->last_batch = 0, m->tok_per_s = 0, m->window_start = -1, m->window_tokens = 0;
    pthread_mutex_unlock(&m->lock);
}

typedef struct {
    char *buf;
    size_t len, cap;
    int failed;
} text;

static void put(text *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void put(text *t, const char *fmt, ...)
{
    for (int tries = 0; tries < 2 && !t->failed; tries++) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(t->buf ? t->buf + t->len : NULL, t->buf ? t->cap - t->len : 0, fmt, ap);
        va_end(ap);
        if (n < 0) t->failed = 1;
        else if (t->buf && t->len + (size_t)n < t->cap) {
            t->len += (size_t)n;
            return;
        } else {
            size_t cap = (t->cap ? t->cap * 2 : 4096) + (size_t)n;
            char *p = realloc(t->buf, cap);
            if (!p) t->failed = 1;
            else t->buf = p, t->cap = cap;
        }
    }
}

static void metric(text *t, const char *name, const char *type, const char *help)
{
    put(t, "# HELP q3serve_%s %s\n# TYPE q3serve_%s %s\n", name, help, name, type);
}

/* A metric of one unlabelled sample: its name is written once, here. */
static void metric_count(text *t, const char *name, const char *help, uint64_t v)
{
    metric(t, name, "counter", help);
    put(t, "q3serve_%s %llu\n", name, (unsigned long long)v);
}

static void metric_gauge(text *t, const char *name, const char *help, int v)
{
    metric(t, name, "gauge", help);
    put(t, "q3serve_%s %d\n", name, v);
}

static void metric_gauge_real(text *t, const char *name, const char *help, double v)
{
    metric(t, name, "gauge", help);
    put(t, "q3serve_%s %.2f\n", name, v);
}

static void metric_seconds(text *t, const char *name, const char *help, double v)
{
    metric(t, name, "counter", help);
    put(t, "q3serve_%s %.6f\n", name, v);
}

char *serve_metrics_text(serve_metrics *m, size_t *len)
{
    text t = {0};
    pthread_mutex_lock(&m->lock);
    serve_metrics s = *m; /* a consistent copy; the lock is not held while formatting */
    pthread_mutex_unlock(&m->lock);
    metric(&t, "requests_total", "counter", "HTTP requests answered, by status code.");
    for (int i = 0; i <= SERVE_METRIC_CODES; i++)
        if (i == SERVE_METRIC_CODES) put(&t, "q3serve_requests_total{code=\"other\"} %llu\n", (unsigned long long)s.requests[i]);
        else put(&t, "q3serve_requests_total{code=\"%d\"} %llu\n", codes[i], (unsigned long long)s.requests[i]);
    metric_count(&t, "requests_cancelled_total", "Requests whose client disconnected before the end.", s.cancelled);
    metric_count(&t, "prompt_tokens_total", "Prompt tokens prefilled.", s.prompt_tokens);
    metric_count(&t, "generated_tokens_total", "Completion tokens generated.", s.generated_tokens);
    metric_count(&t, "decode_steps_total", "Batched decode steps.", s.decode_steps);
    metric_count(&t, "decode_rows_total", "Sequences over all decode steps (divided by steps: the mean batch size).",
                 s.decode_rows);
    metric_count(&t, "prefill_chunks_total", "Prompt chunks prefilled.", s.prefill_chunks);
    metric_seconds(&t, "decode_seconds_total", "Seconds in batched decode steps (the model's computation).",
                   s.decode_seconds);
    metric_seconds(&t, "prefill_seconds_total", "Seconds in prompt chunks (the model's computation).", s.prefill_seconds);
    metric_seconds(&t, "host_seconds_total",
                   "Seconds of the scheduler's steps outside the model: sampling, text, stop sequences, replies.",
                   s.host_seconds);
    metric_gauge(&t, "queue_depth", "Requests waiting for a free slot.", s.queue_depth);
    metric_gauge(&t, "active_sequences", "Requests holding a slot (prefilling or decoding).", s.active);
    metric_gauge(&t, "slots", "Sequences that can decode together (--parallel).", s.slots);
    metric_gauge(&t, "batch_size", "Sequences in the last decode step.", s.last_batch);
    metric_gauge_real(&t, "tokens_per_second", "Generated tokens per second over the last window of about a second.",
                      s.tok_per_s);
    if (t.failed) {
        free(t.buf);
        return NULL;
    }
    *len = t.len;
    return t.buf;
}
