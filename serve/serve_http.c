/* serve_http.c - routing, auth, limits and responses on libmicrohttpd (serve_http.h). */
#include "serve_http.h"
#include <arpa/inet.h>
#include <microhttpd.h>
#include <netdb.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <unistd.h>
#include <time.h>
#include "serve_openai.h"
#include "serve_request.h"
#include "serve_sse.h"

/* How long a wait for the job lasts before it looks again (the socket check is what
 * notices a hang-up at once; this only bounds a wait nobody wakes). */
#define WAIT_MS 1000

struct serve_http {
    struct MHD_Daemon *d;
    serve_http_params p;
    q3_model *model;
    serve_sched *sched;
    serve_metrics *metrics;
    atomic_int in_flight;
    atomic_uint next_id;
    atomic_int draining;
};

enum route { R_NONE, R_HEALTH, R_METRICS, R_MODELS, R_CHAT, R_COMPLETIONS };

/* One request's state (libmicrohttpd's con_cls). */
typedef struct {
    serve_http *h;
    enum route route;
    char *body;
    size_t len, cap;
    int too_large;
    serve_job *job;
} request;

/* What a streamed response sends from (owned by the response: its free callback). */
typedef struct {
    serve_http *h;
    serve_job *job;
    serve_reply reply;
    char id[48];
    int fd;          /* the client's socket */
    int first;       /* the chat's role is still to be sent */
    int ended;       /* the last event is in sse */
    int abort;       /* close without the end of the stream (the server stopped) */
    serve_sse sse;
} stream;

static int64_t unix_now(void) { return (int64_t)time(NULL); }

/* ---- plain responses ---- */

static enum MHD_Result send_text(struct MHD_Connection *c, serve_http *h, int status, const char *type, char *body,
                                 size_t len)
{
    if (!body) { /* out of memory while building it */
        static const char oom[] = "{\"error\":{\"message\":\"out of memory\",\"type\":\"server_error\",\"param\":null,\"code\":null}}";
        status = 500;
        body = (char *)oom, len = sizeof oom - 1;
        struct MHD_Response *r = MHD_create_response_from_buffer(len, body, MHD_RESPMEM_PERSISTENT);
        if (!r) return MHD_NO;
        MHD_add_response_header(r, "Content-Type", "application/json");
        enum MHD_Result rc = MHD_queue_response(c, (unsigned)status, r);
        MHD_destroy_response(r);
        serve_metrics_request(h->metrics, status);
        return rc;
    }
    struct MHD_Response *r = MHD_create_response_from_buffer(len, body, MHD_RESPMEM_MUST_FREE);
    if (!r) {
        free(body);
        return MHD_NO;
    }
    MHD_add_response_header(r, "Content-Type", type);
    if (status == 503) MHD_add_response_header(r, "Retry-After", "1");
    if (status == 401) MHD_add_response_header(r, "WWW-Authenticate", "Bearer");
    enum MHD_Result rc = MHD_queue_response(c, (unsigned)status, r);
    MHD_destroy_response(r);
    serve_metrics_request(h->metrics, status);
    return rc;
}

static enum MHD_Result send_json(struct MHD_Connection *c, serve_http *h, int status, char *json)
{
    return send_text(c, h, status, "application/json", json, json ? strlen(json) : 0);
}

static enum MHD_Result send_error(struct MHD_Connection *c, serve_http *h, const serve_error *e)
{
    return send_json(c, h, e->status, serve_openai_error(e));
}

static enum MHD_Result fail(struct MHD_Connection *c, serve_http *h, int status, const char *type, const char *code,
                            const char *param, const char *msg)
{
    serve_error e;
    serve_error_set(&e, status, type, param, "%s", msg);
    e.code = code;
    return send_error(c, h, &e);
}

/* ---- routing and auth ---- */

static enum route find_route(const char *url, const char *method, int *bad_method)
{
    static const struct {
        const char *url, *method;
        enum route r;
    } routes[] = {
        {"/health", "GET", R_HEALTH},
        {"/metrics", "GET", R_METRICS},
        {"/v1/models", "GET", R_MODELS},
        {"/v1/chat/completions", "POST", R_CHAT},
        {"/v1/completions", "POST", R_COMPLETIONS},
    };
    *bad_method = 0;
    for (size_t i = 0; i < sizeof routes / sizeof routes[0]; i++)
        if (strcmp(url, routes[i].url) == 0) {
            if (strcmp(method, routes[i].method) == 0) return routes[i].r;
            *bad_method = 1;
        }
    return R_NONE;
}

/* "Bearer KEY", compared in time that does not depend on where it differs. */
static int authorized(struct MHD_Connection *c, const char *key)
{
    if (!key) return 1;
    const char *v = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Authorization");
    if (!v || strncmp(v, "Bearer ", 7) != 0) return 0;
    v += 7;
    size_t n = strlen(v), k = strlen(key);
    unsigned diff = (unsigned)(n != k);
    for (size_t i = 0; i < k; i++) diff |= (unsigned char)key[i] ^ (unsigned char)(i < n ? v[i] : 0);
    return diff == 0;
}

/* ---- completions ---- */

static void make_id(serve_http *h, int endpoint, char *id, size_t cap)
{
    uint64_t r = 0;
    if (getrandom(&r, sizeof r, GRND_NONBLOCK) != (ssize_t)sizeof r) r = (uint64_t)time(NULL);
    snprintf(id, cap, "%s-%016llx%04x", endpoint == SERVE_CHAT ? "chatcmpl" : "cmpl", (unsigned long long)r,
             atomic_fetch_add(&h->next_id, 1) & 0xffff);
}

/* The request's prompt as token ids: the chat template over the messages, or the raw
 * prompt (an empty one starts from BOS, as q3run does). */
static int prompt_ids(serve_http *h, serve_job *j, serve_error *e)
{
    const q3_tokenizer *tk;
    q3_err err = {{0}};
    char *text = NULL;
    size_t len = 0;
    const serve_request *r = &j->req;
    if (q3_model_tokenizer(h->model, &tk, &err))
        return serve_error_set(e, 500, "server_error", NULL, "%s", err.msg);
    if (r->endpoint == SERVE_CHAT) {
        int think = r->thinking >= 0 ? r->thinking : h->p.thinking;
        if (q3_chat_apply(h->model, r->msgs, r->n_msgs, 1, think, &text, &len, &err))
            return serve_error_set(e, 400, "invalid_request_error", "messages", "%s", err.msg);
    }
    int32_t *ids = NULL;
    size_t n = 0;
    int rc = q3_tokenize(tk, text ? text : r->prompt, text ? len : strlen(r->prompt), &ids, &n, &err);
    q3_free(text);
    if (rc) return serve_error_set(e, 400, "invalid_request_error", NULL, "%s", err.msg);
    if (n == 0) {
        int32_t bos = q3_token_bos(h->model);
        q3_free(ids);
        if (bos < 0)
            return serve_error_set(e, 400, "invalid_request_error", "prompt",
                                   "the prompt is empty and the model has no BOS token to start from");
        if (!(ids = malloc(sizeof *ids))) return serve_error_set(e, 500, "server_error", NULL, "out of memory");
        ids[0] = bos;
        n = 1;
    }
    j->prompt = ids;
    j->n_prompt = n;
    int n_ctx = serve_sched_ctx(h->sched);
    if (n > (size_t)n_ctx) {
        serve_error_set(e, 400, "invalid_request_error", r->endpoint == SERVE_CHAT ? "messages" : "prompt",
                        "the prompt is %zu tokens; this server's context holds %d (--ctx)", n, n_ctx);
        e->code = "context_length_exceeded";
        return -1;
    }
    return 0;
}

/* The model's generation defaults, overridden by what the request set. */
static void sampler_params(serve_http *h, serve_job *j)
{
    const serve_request *r = &j->req;
    q3_sampler_params sp = q3_sampler_defaults(h->model);
    if (r->have & SERVE_HAVE_TEMPERATURE) sp.temperature = r->sp.temperature;
    if (r->have & SERVE_HAVE_TOP_P) sp.top_p = r->sp.top_p;
    if (r->have & SERVE_HAVE_TOP_K) sp.top_k = r->sp.top_k;
    if (r->have & SERVE_HAVE_MIN_P) sp.min_p = r->sp.min_p;
    if (r->have & SERVE_HAVE_PENALTY) sp.repetition_penalty = r->sp.repetition_penalty;
    if (r->have & SERVE_HAVE_SEED) sp.seed = r->sp.seed;
    else if (getrandom(&sp.seed, sizeof sp.seed, GRND_NONBLOCK) != (ssize_t)sizeof sp.seed)
        sp.seed = (uint64_t)time(NULL) ^ atomic_fetch_add(&h->next_id, 1);
    j->sp = sp;
    j->max_tokens = r->max_tokens;
}

static int client_fd(struct MHD_Connection *c)
{
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
    return ci ? ci->connect_fd : -1;
}

/* Moves what the job produced into the stream's events; sets ended at the end. */
static int stream_events(stream *s)
{
    char *text;
    size_t len;
    serve_finish f;
    int n_gen;
    serve_job_take(s->job, &text, &len, &f, &n_gen);
    int rc = 0;
    if (len || s->first) {
        char *ev = serve_openai_chunk(&s->reply, text ? text : "", len, s->first, SERVE_RUNNING, NULL);
        rc = !ev || serve_sse_event(&s->sse, ev);
        free(ev);
        s->first = 0;
    }
    free(text);
    if (rc || f == SERVE_RUNNING) return rc ? -1 : 0;
    s->ended = 1;
    if (f == SERVE_FINISH_CANCELLED) {
        s->abort = 1;
        return 0;
    }
    char *ev = NULL;
    if (f == SERVE_FINISH_ERROR) {
        serve_error e;
        pthread_mutex_lock(&s->job->lock);
        serve_error_set(&e, 500, "server_error", NULL, "%s", s->job->error);
        pthread_mutex_unlock(&s->job->lock);
        ev = serve_openai_error(&e);
    } else {
        ev = serve_openai_chunk(&s->reply, "", 0, 0, f, NULL);
    }
    rc = !ev || serve_sse_event(&s->sse, ev);
    free(ev);
    if (!rc && f != SERVE_FINISH_ERROR && s->job->req.include_usage) {
        serve_usage u = {(int)s->job->n_prompt, n_gen};
        ev = serve_openai_chunk(&s->reply, "", 0, 0, f, &u);
        rc = !ev || serve_sse_event(&s->sse, ev);
        free(ev);
    }
    return rc || serve_sse_done(&s->sse) ? -1 : 0;
}

static ssize_t stream_read(void *cls, uint64_t pos, char *buf, size_t max)
{
    (void)pos;
    stream *s = cls;
    for (;;) {
        if (serve_sse_waiting(&s->sse)) return (ssize_t)serve_sse_take(&s->sse, buf, max);
        if (s->ended) return s->abort ? MHD_CONTENT_READER_END_WITH_ERROR : MHD_CONTENT_READER_END_OF_STREAM;
        if (stream_events(s)) {
            serve_job_cancel(s->job);
            return MHD_CONTENT_READER_END_WITH_ERROR;
        }
        if (serve_sse_waiting(&s->sse) || s->ended) continue;
        if (serve_job_wait(s->job, s->fd, WAIT_MS)) { /* the client hung up */
            serve_job_cancel(s->job);
            return MHD_CONTENT_READER_END_WITH_ERROR;
        }
    }
}

static void stream_free(void *cls)
{
    stream *s = cls;
    pthread_mutex_lock(&s->job->lock);
    int running = s->job->finish == SERVE_RUNNING;
    pthread_mutex_unlock(&s->job->lock);
    if (running) serve_job_cancel(s->job); /* the connection ended before the stream did */
    serve_job_unref(s->job);
    serve_sse_free(&s->sse);
    free(s);
}

static enum MHD_Result answer_stream(struct MHD_Connection *c, serve_http *h, serve_job *j)
{
    stream *s = calloc(1, sizeof *s);
    if (!s) return fail(c, h, 500, "server_error", NULL, NULL, "out of memory");
    s->h = h;
    s->job = j;
    serve_job_ref(j);
    snprintf(s->id, sizeof s->id, "%s", j->id);
    s->reply = (serve_reply){j->req.endpoint, s->id, h->p.model_id, j->created};
    s->fd = client_fd(c);
    s->first = j->req.endpoint == SERVE_CHAT;
    struct MHD_Response *r = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 16384, stream_read, s, stream_free);
    if (!r) {
        stream_free(s);
        return MHD_NO;
    }
    MHD_add_response_header(r, "Content-Type", "text/event-stream");
    MHD_add_response_header(r, "Cache-Control", "no-cache");
    enum MHD_Result rc = MHD_queue_response(c, 200, r);
    MHD_destroy_response(r);
    serve_metrics_request(h->metrics, 200);
    return rc;
}

/* Not streamed: wait for the end here, watching the client's socket meanwhile. */
static enum MHD_Result answer_whole(struct MHD_Connection *c, serve_http *h, serve_job *j)
{
    int fd = client_fd(c);
    char *all = NULL;
    size_t n_all = 0;
    serve_finish f = SERVE_RUNNING;
    int n_gen = 0;
    for (;;) {
        char *text;
        size_t len;
        serve_job_take(j, &text, &len, &f, &n_gen);
        if (len) {
            char *p = realloc(all, n_all + len + 1);
            if (!p) {
                free(text);
                free(all);
                serve_job_cancel(j);
                return fail(c, h, 500, "server_error", NULL, NULL, "out of memory");
            }
            all = p;
            memcpy(all + n_all, text, len);
            n_all += len;
        }
        free(text);
        if (f != SERVE_RUNNING) break;
        if (serve_job_wait(j, fd, WAIT_MS)) { /* the client hung up: nobody to answer */
            serve_job_cancel(j);
            free(all);
            serve_metrics_request(h->metrics, 499);
            return MHD_NO;
        }
    }
    if (f == SERVE_FINISH_CANCELLED) {
        free(all);
        return fail(c, h, 503, "server_error", NULL, NULL, "the server is shutting down");
    }
    if (f == SERVE_FINISH_ERROR) {
        free(all);
        pthread_mutex_lock(&j->lock);
        enum MHD_Result rc = fail(c, h, 500, "server_error", NULL, NULL, j->error);
        pthread_mutex_unlock(&j->lock);
        return rc;
    }
    serve_reply reply = {j->req.endpoint, j->id, h->p.model_id, j->created};
    char *json = serve_openai_completion(&reply, all ? all : "", n_all, f, (serve_usage){(int)j->n_prompt, n_gen});
    free(all);
    return send_json(c, h, 200, json);
}

static enum MHD_Result answer_completion(struct MHD_Connection *c, serve_http *h, request *rq)
{
    serve_job *j = serve_job_new();
    if (!j) return fail(c, h, 500, "server_error", NULL, NULL, "out of memory or file descriptors");
    rq->job = j;
    serve_error e;
    int endpoint = rq->route == R_CHAT ? SERVE_CHAT : SERVE_COMPLETIONS;
    if (serve_request_parse(rq->body ? rq->body : "", rq->len, endpoint, &j->req, &e) || prompt_ids(h, j, &e))
        return send_error(c, h, &e);
    sampler_params(h, j);
    make_id(h, endpoint, j->id, sizeof j->id);
    j->created = unix_now();
    switch (serve_sched_submit(h->sched, j)) {
    case SERVE_SUBMIT_FULL:
        return fail(c, h, 503, "server_error", "queue_full", NULL,
                    "every slot is busy and the queue is full; retry later");
    case SERVE_SUBMIT_DRAINING:
        return fail(c, h, 503, "server_error", "shutting_down", NULL, "the server is shutting down");
    default: break;
    }
    return j->req.stream ? answer_stream(c, h, j) : answer_whole(c, h, j);
}

static enum MHD_Result answer_get(struct MHD_Connection *c, serve_http *h, enum route route)
{
    if (route == R_HEALTH) {
        /* 503 while draining: a load balancer stops sending new requests here */
        int draining = atomic_load(&h->draining);
        char *body = strdup(draining ? "{\"status\":\"draining\"}" : "{\"status\":\"ok\"}");
        return send_json(c, h, draining ? 503 : 200, body);
    }
    if (route == R_METRICS) {
        size_t len = 0;
        char *text = serve_metrics_text(h->metrics, &len);
        return send_text(c, h, 200, "text/plain; version=0.0.4", text, len);
    }
    return send_json(c, h, 200, serve_openai_models(h->p.model_id, unix_now()));
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url, const char *method,
                                  const char *version, const char *upload, size_t *upload_size, void **con_cls)
{
    (void)version;
    serve_http *h = cls;
    request *rq = *con_cls;
    if (!rq) { /* the headers are in: route, authorize, check the announced size */
        if (!(rq = calloc(1, sizeof *rq))) return MHD_NO;
        rq->h = h;
        *con_cls = rq;
        atomic_fetch_add(&h->in_flight, 1);
        int bad_method;
        rq->route = find_route(url, method, &bad_method);
        if (rq->route == R_NONE)
            return bad_method ? fail(c, h, 405, "invalid_request_error", NULL, NULL, "method not allowed on this path")
                              : fail(c, h, 404, "invalid_request_error", NULL, NULL, "no such path");
        if (rq->route != R_HEALTH && !authorized(c, h->p.api_key))
            return fail(c, h, 401, "invalid_request_error", "invalid_api_key", NULL,
                        "a valid API key is required: Authorization: Bearer KEY");
        if (rq->route < R_CHAT) return answer_get(c, h, rq->route);
        const char *cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Content-Length");
        if (cl && strtoull(cl, NULL, 10) > h->p.max_body) rq->too_large = 1;
        if (rq->too_large) return fail(c, h, 413, "invalid_request_error", NULL, NULL, "the request body is too large");
        return MHD_YES;
    }
    if (*upload_size) { /* a piece of the body */
        size_t n = *upload_size;
        *upload_size = 0;
        if (rq->too_large || rq->len + n > h->p.max_body) {
            /* a chunked body past the limit: read on (a response cannot be queued mid-upload), keep nothing;
             * a client that sends far more than it was told it may is cut off */
            rq->too_large = 1;
            rq->len += n;
            return rq->len > 16 * h->p.max_body ? MHD_NO : MHD_YES;
        }
        if (rq->len + n + 1 > rq->cap) {
            size_t cap = rq->cap ? rq->cap : 4096;
            while (cap < rq->len + n + 1) cap *= 2;
            char *p = realloc(rq->body, cap);
            if (!p) return MHD_NO;
            rq->body = p;
            rq->cap = cap;
        }
        memcpy(rq->body + rq->len, upload, n);
        rq->len += n;
        rq->body[rq->len] = 0;
        return MHD_YES;
    }
    if (rq->too_large) return fail(c, h, 413, "invalid_request_error", NULL, NULL, "the request body is too large");
    return answer_completion(c, h, rq);
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls, enum MHD_RequestTerminationCode why)
{
    (void)c;
    serve_http *h = cls;
    request *rq = *con_cls;
    if (!rq) return;
    if (rq->job) {
        if (why != MHD_REQUEST_TERMINATED_COMPLETED_OK) serve_job_cancel(rq->job);
        serve_job_unref(rq->job);
    }
    free(rq->body);
    free(rq);
    *con_cls = NULL;
    atomic_fetch_sub(&h->in_flight, 1);
}

int serve_http_start(const serve_http_params *p, q3_model *m, serve_sched *s, serve_metrics *metrics,
                     serve_http **out, q3_err *err)
{
    *out = NULL;
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV}, *ai;
    char port[16];
    snprintf(port, sizeof port, "%d", p->port);
    int gai = getaddrinfo(p->host, port, &hints, &ai);
    if (gai) {
        snprintf(err->msg, sizeof err->msg, "q3serve: --host %s: %s", p->host, gai_strerror(gai));
        return -1;
    }
    serve_http *h = calloc(1, sizeof *h);
    if (!h) {
        freeaddrinfo(ai);
        snprintf(err->msg, sizeof err->msg, "q3serve: out of memory");
        return -1;
    }
    h->p = *p;
    h->model = m;
    h->sched = s;
    h->metrics = metrics;
    unsigned flags = MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_POLL | MHD_USE_ITC |
                     (ai->ai_family == AF_INET6 ? MHD_USE_IPv6 : 0);
    h->d = MHD_start_daemon(flags, (uint16_t)p->port, NULL, NULL, on_request, h, MHD_OPTION_SOCK_ADDR, ai->ai_addr,
                            MHD_OPTION_NOTIFY_COMPLETED, on_completed, h, MHD_OPTION_CONNECTION_LIMIT,
                            (unsigned)p->max_connections, MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)60,
                            MHD_OPTION_END);
    freeaddrinfo(ai);
    if (!h->d) {
        snprintf(err->msg, sizeof err->msg, "q3serve: cannot listen on %s port %d (in use, or not an address here)",
                 p->host, p->port);
        free(h);
        return -1;
    }
    *out = h;
    return 0;
}

int serve_http_port(const serve_http *h)
{
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(h->d, MHD_DAEMON_INFO_BIND_PORT);
    return di ? di->port : -1;
}

void serve_http_quiesce(serve_http *h)
{
    atomic_store(&h->draining, 1);
    MHD_socket fd = MHD_quiesce_daemon(h->d);
    if (fd != MHD_INVALID_SOCKET) close(fd);
}

int serve_http_in_flight(serve_http *h) { return atomic_load(&h->in_flight); }

void serve_http_stop(serve_http *h)
{
    if (!h) return;
    MHD_stop_daemon(h->d);
    free(h);
}
