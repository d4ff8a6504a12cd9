/* serve_http.h - the HTTP side of q3serve on libmicrohttpd: routing, the API key,
 * the body limit, turning a request into a job for the scheduler, and sending its
 * answer whole or as server-sent events. A thread per connection: a connection waits
 * on its job and on its client's socket at once, so a client that hangs up frees its
 * slot at the next step. */
#ifndef Q3_SERVE_HTTP_H
#define Q3_SERVE_HTTP_H

#include <stddef.h>
#include "../include/q3.h"
#include "serve_metrics.h"
#include "serve_sched.h"

typedef struct {
    const char *host;     /* an address to bind (IPv4 or IPv6 literal, or a name) */
    int port;             /* 0: any free port (serve_http_port says which) */
    const char *api_key;  /* NULL: no key needed */
    size_t max_body;      /* bytes; a larger body gets 413 */
    const char *model_id; /* what /v1/models lists and responses name */
    int thinking;         /* the chat template's default (chat_template_kwargs may override) */
    int max_connections;
} serve_http_params;

typedef struct serve_http serve_http;

/* Binds and starts serving; -1 with err (one line) when it cannot. */
int serve_http_start(const serve_http_params *p, q3_model *m, serve_sched *s, serve_metrics *metrics,
                     serve_http **out, q3_err *err);
int serve_http_port(const serve_http *h);
/* Stop accepting connections (the listening socket is closed); requests in flight go on. */
void serve_http_quiesce(serve_http *h);
/* Requests received and not yet answered to the end. */
int serve_http_in_flight(serve_http *h);
void serve_http_stop(serve_http *h);

#endif
