/* serve_sched.h - continuous batching: one thread owns --parallel contexts (slots) on
 * the shared model. Each step it samples a token for every decoding sequence, decodes
 * them all in one q3_decode_batch (the weights read once), then prefills one chunk of
 * a waiting prompt, so a long prompt delays the running streams by a chunk, not by
 * all of it. Requests join between steps as slots free up; a finished or abandoned
 * one leaves at once. */
#ifndef Q3_SERVE_SCHED_H
#define Q3_SERVE_SCHED_H

#include "../include/q3.h"
#include "serve_job.h"
#include "serve_metrics.h"

typedef struct {
    int n_slots;         /* sequences decoded together */
    int queue_max;       /* requests waiting for a slot before 503 */
    int chunk;           /* prompt tokens prefilled per step (a multiple of 4) */
    q3_context_params ctx; /* each slot's context (n_ctx is per slot) */
} serve_sched_params;

typedef struct serve_sched serve_sched;

/* Creates the contexts and starts the thread. */
int serve_sched_create(q3_model *m, const serve_sched_params *p, serve_metrics *metrics, serve_sched **out,
                       q3_err *err);
/* Stops the thread (jobs still in it end as cancelled) and frees the contexts. */
void serve_sched_destroy(serve_sched *s);

enum { SERVE_SUBMIT_OK = 0, SERVE_SUBMIT_FULL = 1, SERVE_SUBMIT_DRAINING = 2 };
/* Queue a job (the scheduler takes its own reference). */
int serve_sched_submit(serve_sched *s, serve_job *j);
/* From now on submissions are refused; what is queued or running goes on. */
void serve_sched_drain(serve_sched *s);
/* Jobs queued or running. */
int serve_sched_pending(serve_sched *s);
/* Tokens one slot holds (--ctx). */
int serve_sched_ctx(const serve_sched *s);

/* The next prefill chunk of a prompt of n tokens of which fed are in the cache: at most
 * chunk tokens, never across a boundary of the backend's passes (pass tokens each), and a
 * tail of fewer than 4 tokens is taken with the chunk before it. Cut this way, the
 * cache and logits are bit for bit what one q3_prefill of the prompt gives on the CPU:
 * the GEMM runs on the same token groups and only a whole prompt shorter than 4 goes
 * through the GEMV. */
int serve_prefill_chunk(int fed, int n, int chunk, int pass);

#endif
