/* serve_sse.h - server-sent events for a streamed completion: each OpenAI chunk as
 * "data: {json}\n\n", "data: [DONE]\n\n" at the end, buffered until the HTTP layer
 * takes the bytes. */
#ifndef Q3_SERVE_SSE_H
#define Q3_SERVE_SSE_H

#include <stddef.h>

typedef struct {
    char *buf;
    size_t len, cap, sent; /* bytes [sent, len) are waiting */
} serve_sse;

/* Append one event holding data (one line: JSON has no raw newlines); -1 out of memory. */
int serve_sse_event(serve_sse *w, const char *data);
int serve_sse_done(serve_sse *w);
/* Copy up to max waiting bytes into out; returns how many. */
size_t serve_sse_take(serve_sse *w, char *out, size_t max);
size_t serve_sse_waiting(const serve_sse *w);
void serve_sse_free(serve_sse *w);

#endif
