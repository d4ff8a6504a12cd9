/* serve_stop.h - stop sequences over streamed text: text that could be the start of a
 * stop sequence is held back until the next tokens tell, so a client never sees any
 * part of a stop sequence, even one split across tokens. */
#ifndef Q3_SERVE_STOP_H
#define Q3_SERVE_STOP_H

#include <stddef.h>

typedef struct {
    char *const *stop; /* the caller's strings, n_stop of them */
    int n_stop;
    char *held;        /* text not yet released: it may begin a stop sequence */
    size_t n_held, held_cap;
    char *out;         /* what the last call released */
    size_t out_cap;
} serve_stop;

void serve_stop_init(serve_stop *s, char *const *stop, int n_stop);
void serve_stop_free(serve_stop *s);
/* Add text; *out and *n_out: what can be released now (valid until the next call).
 * Returns 1 when a stop sequence is complete (out ends just before it; nothing more
 * is to be released), 0 otherwise, -1 out of memory. */
int serve_stop_push(serve_stop *s, const char *text, size_t len, const char **out, size_t *n_out);
/* At the end of generation: what is still held, released (valid until the next call). */
void serve_stop_flush(serve_stop *s, const char **out, size_t *n_out);

#endif
