/* serve_metrics.h - the server's counters and gauges, and their Prometheus text
 * exposition for GET /metrics. Any thread may update them. */
#ifndef Q3_SERVE_METRICS_H
#define Q3_SERVE_METRICS_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

/* HTTP statuses counted one by one; the others land in "other". */
#define SERVE_METRIC_CODES 9

typedef struct {
    pthread_mutex_t lock;
    uint64_t requests[SERVE_METRIC_CODES + 1]; /* by status, as codes[] in serve_metrics.c, then other */
    uint64_t cancelled;        /* requests whose client went away before the end */
    uint64_t prompt_tokens, generated_tokens;
    uint64_t decode_steps, decode_rows; /* rows: sequences over all steps (mean batch = rows / steps) */
    uint64_t prefill_chunks;
    /* Seconds the scheduler spent in the batched decode steps, in prefill chunks, and in
     * the host's work a step around them (sampling, text, stop sequences, replies). */
    double decode_seconds, prefill_seconds, host_seconds;
    int queue_depth, active, slots, last_batch;
    /* Generated tokens per second over the last window of at least a second. */
    double window_start, window_tokens, tok_per_s;
} serve_metrics;

void serve_metrics_init(serve_metrics *m, int slots);
void serve_metrics_destroy(serve_metrics *m);
void serve_metrics_request(serve_metrics *m, int status);
void serve_metrics_cancelled(serve_metrics *m);
void serve_metrics_prompt(serve_metrics *m, int tokens);
/* A decode step of batch sequences; tokens: those that reached a client (the step's
 * sampled tokens), at monotonic time now (seconds). */
void serve_metrics_step(serve_metrics *m, int batch, int tokens, double now);
void serve_metrics_prefill_chunk(serve_metrics *m);
/* One scheduler step's time: in q3_decode_batch, in q3_prefill, and the rest of the step. */
void serve_metrics_time(serve_metrics *m, double decode_s, double prefill_s, double host_s);
void serve_metrics_load(serve_metrics *m, int queue_depth, int active);
/* The text exposition (malloc'd, NUL-terminated); NULL when out of memory. */
char *serve_metrics_text(serve_metrics *m, size_t *len);

#endif
