/* serve_sched.c - the continuous-batching scheduler (serve_sched.h). */
#include "serve_sched.h"
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include "serve_draw.h"
#include "serve_stop.h"

/* q3.h's error style for the server's own failures. */
static int fail(q3_err *err, const char *msg)
{
    if (err) snprintf(err->msg, sizeof err->msg, "%s", msg);
    return -1;
}

typedef enum { SLOT_FREE, SLOT_PREFILL, SLOT_DECODE } slot_state;
#define NO_GREEDY (-2) /* a slot's logits are on the host: its sampler draws from them */

typedef struct {
    q3_context *ctx;
    q3_sampler *sampler;
    serve_job *job;
    slot_state state;
    size_t fed;           /* prompt tokens in the cache */
    int generated;        /* completion tokens so far */
    int has_logits;       /* the cache's last token has logits (or greedy) not yet sampled */
    int32_t greedy;       /* its greedy token, taken by the last step where the logits are, or NO_GREEDY */
    int32_t next;         /* sampled, to be decoded this step */
    q3_utf8_stream utf8;
    serve_stop stop;
} slot;

struct serve_sched {
    q3_model *model;
    const q3_tokenizer *tk;
    serve_metrics *metrics;
    serve_sched_params p;
    int n_ctx, pass;
    slot *slots;
    pthread_t thread;
    pthread_mutex_t lock; /* guards the queue and the flags */
    pthread_cond_t wake;
    serve_job *head, *tail;
    int queued, running, draining, stopping;
    int step_tokens; /* tokens that reached a job in this step (the metrics' rate) */
    serve_draw *draw; /* the step's samplers, side by side */
};

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

int serve_prefill_chunk(int fed, int n, int chunk, int pass)
{
    int seg_end = (fed / pass + 1) * pass;
    if (seg_end > n) seg_end = n;
    int left = seg_end - fed;
    if (left <= chunk) return left;
    return left - chunk < 4 ? left : chunk;
}

/* ---- a slot's text: token bytes -> whole UTF-8 characters -> stop sequences -> the job ---- */

static void emit(serve_sched *s, slot *sl, const char *bytes, size_t len, int tokens, int *stopped)
{
    char buf[512];
    size_t n = len + 8 <= sizeof buf ? q3_utf8_stream_push(&sl->utf8, bytes, len, buf, sizeof buf) : 0;
    const char *out;
    size_t n_out;
    int rc = serve_stop_push(&sl->stop, buf, n, &out, &n_out);
    if (rc < 0 || serve_job_emit(sl->job, out, n_out, tokens)) {
        serve_job_finish(sl->job, SERVE_FINISH_ERROR, "out of memory");
        *stopped = 1;
        return;
    }
    if (rc == 1) *stopped = 1;
    (void)s;
}

/* The end of a sequence: what the UTF-8 stream and the stop matcher still hold goes out. */
static void flush(slot *sl)
{
    char buf[16];
    size_t n = q3_utf8_stream_flush(&sl->utf8, buf, sizeof buf);
    const char *out;
    size_t n_out;
    if (n && serve_stop_push(&sl->stop, buf, n, &out, &n_out) == 0) serve_job_emit(sl->job, out, n_out, 0);
    serve_stop_flush(&sl->stop, &out, &n_out);
    if (n_out) serve_job_emit(sl->job, out, n_out, 0);
}

/* The sequence ends; with_tail: what the UTF-8 stream and the stop matcher hold goes
 * out first (not after a stop sequence, which ends the text where it begins). */
static void release_slot(serve_sched *s, slot *sl, serve_finish f, const char *error, int with_tail)
{
    if (with_tail) flush(sl);
    if (f == SERVE_FINISH_CANCELLED) serve_metrics_cancelled(s->metrics);
    serve_job_finish(sl->job, f, error);
    serve_job_unref(sl->job);
    q3_sampler_destroy(sl->sampler);
    serve_stop_free(&sl->stop);
    sl->job = NULL;
    sl->sampler = NULL;
    sl->state = SLOT_FREE;
    pthread_mutex_lock(&s->lock);
    s->running--;
    pthread_mutex_unlock(&s->lock);
}

/* The slot's sampled token t, taken as q3run takes it: EOS ends it unprinted; a token
 * that fills the context or reaches max_tokens is the last one. Returns 1 when the token
 * is to be decoded, 0 when the sequence ended. */
static int take_token(serve_sched *s, slot *sl, int32_t t)
{
    sl->has_logits = 0;
    if (t < 0) {
        release_slot(s, sl, SERVE_FINISH_ERROR, "the model's computation gave a non-finite logit", 0);
        return 0;
    }
    q3_sampler_accept(sl->sampler, t);
    if (q3_token_is_eos(s->model, t)) {
        release_slot(s, sl, SERVE_FINISH_STOP, NULL, 1);
        return 0;
    }
    size_t len = 0;
    const char *b = q3_token_bytes(s->tk, t, &len);
    int stopped = 0;
    sl->generated++;
    s->step_tokens++;
    emit(s, sl, b ? b : "", b ? len : 0, 1, &stopped);
    if (stopped) { /* a stop sequence (or an emit that failed and already said so) */
        release_slot(s, sl, SERVE_FINISH_STOP, NULL, 0);
        return 0;
    }
    int max = sl->job->max_tokens;
    if (q3_context_used(sl->ctx) >= s->n_ctx || (max > 0 && sl->generated >= max)) {
        release_slot(s, sl, SERVE_FINISH_LENGTH, NULL, 1);
        return 0;
    }
    sl->next = t;
    return 1;
}

/* ---- the queue ---- */

int serve_sched_submit(serve_sched *s, serve_job *j)
{
    pthread_mutex_lock(&s->lock);
    int rc = s->draining || s->stopping ? SERVE_SUBMIT_DRAINING
             : s->queued >= s->p.queue_max && s->running + s->queued >= s->p.n_slots ? SERVE_SUBMIT_FULL
                                                                                       : SERVE_SUBMIT_OK;
    if (rc == SERVE_SUBMIT_OK) {
        serve_job_ref(j);
        j->next = NULL;
        if (s->tail) s->tail->next = j;
        else s->head = j;
        s->tail = j;
        s->queued++;
        pthread_cond_signal(&s->wake);
    }
    serve_metrics_load(s->metrics, s->queued, s->running);
    pthread_mutex_unlock(&s->lock);
    return rc;
}

void serve_sched_drain(serve_sched *s)
{
    pthread_mutex_lock(&s->lock);
    s->draining = 1;
    pthread_mutex_unlock(&s->lock);
}

int serve_sched_pending(serve_sched *s)
{
    pthread_mutex_lock(&s->lock);
    int n = s->queued + s->running;
    pthread_mutex_unlock(&s->lock);
    return n;
}

int serve_sched_ctx(const serve_sched *s) { return s->n_ctx; }

/* Queued jobs into free slots (a job cancelled while it waited is dropped here).
 * Called with s->lock held. */
static void admit_locked(serve_sched *s)
{
    for (int i = 0; i < s->p.n_slots && s->head; i++) {
        slot *sl = &s->slots[i];
        if (sl->state != SLOT_FREE) continue;
        serve_job *j = s->head;
        s->head = j->next;
        if (!s->head) s->tail = NULL;
        s->queued--;
        q3_err err = {{0}};
        if (atomic_load(&j->cancelled)) {
            serve_metrics_cancelled(s->metrics);
            serve_job_finish(j, SERVE_FINISH_CANCELLED, NULL);
            serve_job_unref(j);
            i--; /* the slot is still free */
            continue;
        }
        if (q3_kv_truncate(sl->ctx, 0, &err) || q3_sampler_create(s->model, &j->sp, &sl->sampler, &err)) {
            serve_job_finish(j, SERVE_FINISH_ERROR, err.msg);
            serve_job_unref(j);
            i--;
            continue;
        }
        sl->job = j;
        sl->state = SLOT_PREFILL;
        sl->fed = 0;
        sl->generated = 0;
        sl->has_logits = 0;
        sl->greedy = NO_GREEDY;
        memset(&sl->utf8, 0, sizeof sl->utf8);
        serve_stop_init(&sl->stop, j->req.stop, j->req.n_stop);
        s->running++;
    }
}

/* Waits for work; 0 when the thread is to stop. */
static int wait_for_work(serve_sched *s)
{
    pthread_mutex_lock(&s->lock);
    while (!s->stopping && s->running == 0 && !s->head) {
        serve_metrics_load(s->metrics, 0, 0);
        pthread_cond_wait(&s->wake, &s->lock);
    }
    int go = !s->stopping;
    if (go) admit_locked(s);
    serve_metrics_load(s->metrics, s->queued, s->running);
    pthread_mutex_unlock(&s->lock);
    return go;
}

static void step(serve_sched *s)
{
    double t_start = now_s(), t_decode = 0, t_prefill = 0;
    int n = s->p.n_slots;
    /* Abandoned sequences leave before any work is spent on them. */
    for (int i = 0; i < n; i++)
        if (s->slots[i].state != SLOT_FREE && atomic_load(&s->slots[i].job->cancelled))
            release_slot(s, &s->slots[i], SERVE_FINISH_CANCELLED, NULL, 0);
    /* Sample every sequence that has logits (the draws side by side, then taken in slot
     * order; a greedy sampler's token may have come with the last step); the ones that go
     * on decode together, the greedy ones wanting only their next greedy token (on OpenCL
     * taken on the device: no logits copied out). */
    q3_context *ctxs[n];
    int32_t toks[n], drawn[n], greedy[n];
    slot *rows[n], *ready[n];
    q3_sampler *samplers[n];
    float *logits[n];
    unsigned char only[n];
    int nb = 0, n_ready = 0, sampled = 0;
    s->step_tokens = 0;
    for (int i = 0; i < n; i++) {
        slot *sl = &s->slots[i];
        if (sl->state != SLOT_DECODE || !sl->has_logits) continue;
        ready[n_ready++] = sl;
        if (sl->greedy == NO_GREEDY) samplers[sampled] = sl->sampler, logits[sampled++] = q3_logits(sl->ctx);
    }
    serve_draw_run(s->draw, samplers, logits, drawn, sampled);
    for (int i = 0, d = 0; i < n_ready; i++) {
        slot *sl = ready[i];
        int32_t t = sl->greedy == NO_GREEDY ? drawn[d++] : sl->greedy;
        sl->greedy = NO_GREEDY;
        if (take_token(s, sl, t))
            only[nb] = (unsigned char)q3_sampler_is_greedy(sl->sampler), ctxs[nb] = sl->ctx, toks[nb] = sl->next,
            rows[nb++] = sl;
    }
    q3_err err = {{0}};
    double t0 = now_s();
    int failed = nb && q3_decode_batch_greedy(ctxs, toks, (size_t)nb, only, greedy, &err);
    t_decode = now_s() - t0;
    if (failed)
        for (int i = 0; i < nb; i++) release_slot(s, rows[i], SERVE_FINISH_ERROR, err.msg, 0), rows[i] = NULL;
    for (int i = 0; i < nb; i++)
        if (rows[i]) rows[i]->has_logits = 1, rows[i]->greedy = only[i] ? greedy[i] : NO_GREEDY;
    if (n_ready) serve_metrics_step(s->metrics, nb, s->step_tokens, now_s());
    /* One chunk of the prompt that has waited longest (the lowest slot as tie-break is
     * good enough: slots are taken in queue order). */
    slot *pf = NULL;
    for (int i = 0; i < n && !pf; i++)
        if (s->slots[i].state == SLOT_PREFILL) pf = &s->slots[i];
    if (pf) {
        serve_job *j = pf->job;
        int k = serve_prefill_chunk((int)pf->fed, (int)j->n_prompt, s->p.chunk, s->pass);
        double t1 = now_s();
        int pf_failed = q3_prefill(pf->ctx, j->prompt + pf->fed, (size_t)k, &err);
        t_prefill = now_s() - t1;
        if (pf_failed) {
            release_slot(s, pf, SERVE_FINISH_ERROR, err.msg, 0);
        } else {
            for (int i = 0; i < k; i++) q3_sampler_accept(pf->sampler, j->prompt[pf->fed + (size_t)i]);
            pf->fed += (size_t)k;
            serve_metrics_prefill_chunk(s->metrics);
            if (pf->fed == j->n_prompt) {
                serve_metrics_prompt(s->metrics, (int)j->n_prompt);
                pf->state = SLOT_DECODE;
                pf->has_logits = 1;
            }
        }
    }
    serve_metrics_time(s->metrics, t_decode, t_prefill, now_s() - t_start - t_decode - t_prefill);
}

static void *sched_main(void *arg)
{
    serve_sched *s = arg;
    while (wait_for_work(s)) step(s);
    /* Stopping: whatever is left ends as cancelled, so every connection wakes up. */
    for (int i = 0; i < s->p.n_slots; i++)
        if (s->slots[i].state != SLOT_FREE) release_slot(s, &s->slots[i], SERVE_FINISH_CANCELLED, NULL, 0);
    pthread_mutex_lock(&s->lock);
    while (s->head) {
        serve_job *j = s->head;
        s->head = j->next;
        serve_job_finish(j, SERVE_FINISH_CANCELLED, NULL);
        serve_job_unref(j);
    }
    s->tail = NULL;
    s->queued = 0;
    pthread_mutex_unlock(&s->lock);
    return NULL;
}

int serve_sched_create(q3_model *m, const serve_sched_params *p, serve_metrics *metrics, serve_sched **out,
                       q3_err *err)
{
    *out = NULL;
    serve_sched *s = calloc(1, sizeof *s);
    if (!s || !(s->slots = calloc((size_t)p->n_slots, sizeof *s->slots))) {
        free(s);
        return fail(err, "q3serve: out of memory");
    }
    s->model = m;
    s->metrics = metrics;
    s->p = *p;
    pthread_mutex_init(&s->lock, NULL);
    pthread_cond_init(&s->wake, NULL);
    /* a helper for each further sequence a step samples, up to the cores there are */
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    int helpers = (int)(cores < p->n_slots ? cores : p->n_slots) - 1;
    int rc = q3_model_tokenizer(m, &s->tk, err);
    if (!rc) rc = serve_draw_create(helpers > 0 ? helpers : 0, &s->draw, err);
    for (int i = 0; i < p->n_slots && !rc; i++) rc = q3_context_create(m, &p->ctx, &s->slots[i].ctx, err);
    if (!rc) {
        s->n_ctx = q3_context_size(s->slots[0].ctx);
        s->pass = q3_context_pass_size(s->slots[0].ctx);
        if (pthread_create(&s->thread, NULL, sched_main, s)) {
            rc = fail(err, "q3serve: cannot start the scheduler thread");
        }
    }
    if (rc) {
        for (int i = 0; i < p->n_slots; i++) q3_context_free(s->slots[i].ctx);
        serve_draw_destroy(s->draw);
        free(s->slots);
        pthread_cond_destroy(&s->wake);
        pthread_mutex_destroy(&s->lock);
        free(s);
        return -1;
    }
    *out = s;
    return 0;
}

void serve_sched_destroy(serve_sched *s)
{
    if (!s) return;
    pthread_mutex_lock(&s->lock);
    s->stopping = 1;
    pthread_cond_signal(&s->wake);
    pthread_mutex_unlock(&s->lock);
    pthread_join(s->thread, NULL);
    for (int i = 0; i < s->p.n_slots; i++) q3_context_free(s->slots[i].ctx);
    serve_draw_destroy(s->draw);
    free(s->slots);
    pthread_cond_destroy(&s->wake);
    pthread_mutex_destroy(&s->lock);
    free(s);
}
