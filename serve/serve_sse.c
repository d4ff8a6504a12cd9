/* serve_sse.c - server-sent event framing (serve_sse.h). */
#include "serve_sse.h"
#include <stdlib.h>
#include <string.h>

static int append(serve_sse *w, const char *s, size_t n)
{
    if (w->sent == w->len) w->sent = w->len = 0; /* all taken: start over at the front */
    if (w->len + n > w->cap) {
        size_t cap = w->cap ? w->cap : 1024;
        while (cap < w->len + n) cap *= 2;
        char *p = realloc(w->buf, cap);
        if (!p) return -1;
        w->buf = p;
        w->cap = cap;
    }
    memcpy(w->buf + w->len, s, n);
    w->len += n;
    return 0;
}

int serve_sse_event(serve_sse *w, const char *data)
{
    return append(w, "data: ", 6) || append(w, data, strlen(data)) || append(w, "\n\n", 2) ? -1 : 0;
}

int serve_sse_done(serve_sse *w) { return serve_sse_event(w, "[DONE]"); }

size_t serve_sse_take(serve_sse *w, char *out, size_t max)
{
    size_t n = w->len - w->sent < max ? w->len - w->sent : max;
    memcpy(out, w->buf + w->sent, n);
    w->sent += n;
    return n;
}

size_t serve_sse_waiting(const serve_sse *w) { return w->len - w->sent; }

void serve_sse_free(serve_sse *w)
{
    free(w->buf);
    memset(w, 0, sizeof *w);
}
