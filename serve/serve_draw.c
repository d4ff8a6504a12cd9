/* serve_draw.c - a step's samplers run side by side (serve_draw.h). */
#include "serve_draw.h"
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>

struct serve_draw {
    pthread_mutex_t lock;
    pthread_cond_t go, done;
    pthread_t *threads;
    int started; /* helper threads running */
    unsigned long run; /* bumped for each run: a helper works once per value */
    int stop, busy;    /* busy: helpers not yet through the current run */
    q3_sampler *const *samplers;
    float *const *logits;
    int32_t *out;
    int n;
    atomic_int next; /* the next draw to take */
};

static void take_draws(serve_draw *d)
{
    for (int i; (i = atomic_fetch_add(&d->next, 1)) < d->n;) d->out[i] = q3_sampler_sample(d->samplers[i], d->logits[i]);
}

static void *helper_main(void *arg)
{
    serve_draw *d = arg;
    unsigned long seen = 0;
    pthread_mutex_lock(&d->lock);
    for (;;) {
        while (!d->stop && d->run == seen) pthread_cond_wait(&d->go, &d->lock);
        if (d->stop) break;
        seen = d->run;
        pthread_mutex_unlock(&d->lock);
        take_draws(d);
        pthread_mutex_lock(&d->lock);
        if (--d->busy == 0) pthread_cond_signal(&d->done);
    }
    pthread_mutex_unlock(&d->lock);
    return NULL;
}

int serve_draw_create(int n_helpers, serve_draw **out, q3_err *err)
{
    *out = NULL;
    serve_draw *d = calloc(1, sizeof *d);
    if (!d || (n_helpers > 0 && !(d->threads = calloc((size_t)n_helpers, sizeof *d->threads)))) {
        free(d);
        if (err) snprintf(err->msg, sizeof err->msg, "q3serve: out of memory");
        return -1;
    }
    pthread_mutex_init(&d->lock, NULL);
    pthread_cond_init(&d->go, NULL);
    pthread_cond_init(&d->done, NULL);
    for (; d->started < n_helpers; d->started++)
        if (pthread_create(&d->threads[d->started], NULL, helper_main, d)) break;
    *out = d; /* fewer helpers than asked for (a thread limit) still work: the caller draws too */
    return 0;
}

void serve_draw_destroy(serve_draw *d)
{
    if (!d) return;
    pthread_mutex_lock(&d->lock);
    d->stop = 1;
    pthread_cond_broadcast(&d->go);
    pthread_mutex_unlock(&d->lock);
    for (int i = 0; i < d->started; i++) pthread_join(d->threads[i], NULL);
    pthread_cond_destroy(&d->go);
    pthread_cond_destroy(&d->done);
    pthread_mutex_destroy(&d->lock);
    free(d->threads);
    free(d);
}

void serve_draw_run(serve_draw *d, q3_sampler *const *samplers, float *const *logits, int32_t *out, int n)
{
    d->samplers = samplers, d->logits = logits, d->out = out, d->n = n;
    atomic_store(&d->next, 0);
    if (n <= 1 || d->started == 0) { /* waking a helper costs more than one draw saves */
        take_draws(d);
        return;
    }
    pthread_mutex_lock(&d->lock);
    d->busy = d->started;
    d->run++;
    pthread_cond_broadcast(&d->go);
    pthread_mutex_unlock(&d->lock);
    take_draws(d);
    pthread_mutex_lock(&d->lock);
    while (d->busy) pthread_cond_wait(&d->done, &d->lock);
    pthread_mutex_unlock(&d->lock);
}
