/* serve_job.c - a request in flight between a connection and the scheduler (serve_job.h). */
#include "serve_job.h"
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

serve_job *serve_job_new(void)
{
    serve_job *j = calloc(1, sizeof *j);
    if (!j) return NULL;
    j->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (j->wake_fd < 0) {
        free(j);
        return NULL;
    }
    pthread_mutex_init(&j->lock, NULL);
    atomic_init(&j->refs, 1);
    atomic_init(&j->cancelled, 0);
    return j;
}

void serve_job_ref(serve_job *j) { atomic_fetch_add(&j->refs, 1); }

void serve_job_unref(serve_job *j)
{
    if (!j || atomic_fetch_sub(&j->refs, 1) != 1) return;
    serve_request_free(&j->req);
    free(j->prompt);
    free(j->text);
    close(j->wake_fd);
    pthread_mutex_destroy(&j->lock);
    free(j);
}

static void wake(serve_job *j)
{
    uint64_t one = 1;
    /* The counter only saturates after 2^64 - 2 writes: a failure here means nothing. */
    ssize_t w = write(j->wake_fd, &one, sizeof one);
    (void)w;
}

int serve_job_emit(serve_job *j, const char *text, size_t len, int tokens)
{
    pthread_mutex_lock(&j->lock);
    int rc = 0;
    if (j->n_text + len + 1 > j->cap) {
        size_t cap = j->cap ? j->cap : 256;
        while (cap < j->n_text + len + 1) cap *= 2;
        char *p = realloc(j->text, cap);
        if (p) j->text = p, j->cap = cap;
        else rc = -1;
    }
    if (!rc) {
        memcpy(j->text + j->n_text, text, len);
        j->n_text += len;
    }
    j->n_generated += tokens;
    pthread_mutex_unlock(&j->lock);
    wake(j);
    return rc;
}

void serve_job_finish(serve_job *j, serve_finish f, const char *error)
{
    pthread_mutex_lock(&j->lock);
    if (j->finish == SERVE_RUNNING) {
        j->finish = f;
        if (error) snprintf(j->error, sizeof j->error, "%s", error);
    }
    pthread_mutex_unlock(&j->lock);
    wake(j);
}

int serve_job_wait(serve_job *j, int client_fd, int timeout_ms)
{
    struct pollfd p[2] = {{j->wake_fd, POLLIN, 0}, {client_fd, POLLRDHUP, 0}};
    int n = poll(p, client_fd >= 0 ? 2 : 1, timeout_ms);
    if (n > 0 && (p[0].revents & POLLIN)) {
        uint64_t v;
        ssize_t r = read(j->wake_fd, &v, sizeof v);
        (void)r;
    }
    /* A closed or reset connection: the peer will read nothing more from us. */
    return n > 0 && client_fd >= 0 && (p[1].revents & (POLLRDHUP | POLLHUP | POLLERR)) ? 1 : 0;
}

void serve_job_take(serve_job *j, char **text, size_t *len, serve_finish *finish, int *n_generated)
{
    pthread_mutex_lock(&j->lock);
    *text = j->n_text ? j->text : NULL;
    *len = j->n_text;
    if (j->n_text) j->text = NULL, j->n_text = j->cap = 0;
    *finish = j->finish;
    if (n_generated) *n_generated = j->n_generated;
    pthread_mutex_unlock(&j->lock);
}

void serve_job_cancel(serve_job *j) { atomic_store(&j->cancelled, 1); }
