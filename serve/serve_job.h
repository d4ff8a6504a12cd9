/* serve_job.h - one request in flight, shared by the connection's thread (which made
 * it and sends what it produces) and the scheduler (which generates into it). The
 * text produced waits here until the connection takes it; an eventfd tells the
 * connection there is news, so it can wait on that and on its client's socket at once. */
#ifndef Q3_SERVE_JOB_H
#define Q3_SERVE_JOB_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include "../include/q3.h"
#include "serve_request.h"

typedef enum {
    SERVE_RUNNING = 0,
    SERVE_FINISH_STOP,      /* EOS or a stop sequence: OpenAI's "stop" */
    SERVE_FINISH_LENGTH,    /* max_tokens or the context: "length" */
    SERVE_FINISH_ERROR,     /* the model's computation failed; error says how */
    SERVE_FINISH_CANCELLED, /* the client went away, or the server stopped */
} serve_finish;

typedef struct serve_job {
    /* Set before submission, read-only after. */
    serve_request req;
    int32_t *prompt;        /* token ids */
    size_t n_prompt;
    q3_sampler_params sp;
    int max_tokens;         /* 0: until the context is full */
    char id[48];
    int64_t created;        /* unix seconds */
    double t_submit;        /* monotonic seconds, for the metrics */

    pthread_mutex_t lock;   /* guards the fields below */
    char *text;             /* produced, not yet taken */
    size_t n_text, cap;
    int n_generated;        /* completion tokens */
    serve_finish finish;
    char error[256];
    int wake_fd;            /* eventfd: written on news */
    atomic_int cancelled;   /* the connection's side: nobody is listening any more */
    atomic_int refs;
    struct serve_job *next; /* the scheduler's queue */
} serve_job;

/* A job with one reference (the caller's); NULL when out of memory or file descriptors. */
serve_job *serve_job_new(void);
void serve_job_ref(serve_job *j);
void serve_job_unref(serve_job *j);

/* Scheduler side. */
int serve_job_emit(serve_job *j, const char *text, size_t len, int tokens);
void serve_job_finish(serve_job *j, serve_finish f, const char *error);

/* Connection side. Waits until there is news, the client's socket (client_fd, -1: none)
 * is hung up, or timeout_ms passes. Returns 1 when the client is gone, else 0. */
int serve_job_wait(serve_job *j, int client_fd, int timeout_ms);
/* Takes the text produced so far (*text: malloc'd, the caller frees; NULL when none)
 * and the state. */
void serve_job_take(serve_job *j, char **text, size_t *len, serve_finish *finish, int *n_generated);
void serve_job_cancel(serve_job *j);

#endif
