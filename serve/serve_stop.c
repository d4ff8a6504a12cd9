/* serve_stop.c - stop sequences over streamed text (serve_stop.h). */
#include "serve_stop.h"
#include <stdlib.h>
#include <string.h>

void serve_stop_init(serve_stop *s, char *const *stop, int n_stop)
{
    memset(s, 0, sizeof *s);
    s->stop = stop;
    s->n_stop = n_stop;
}

void serve_stop_free(serve_stop *s)
{
    free(s->held);
    free(s->out);
    memset(s, 0, sizeof *s);
}

static int reserve(char **buf, size_t *cap, size_t need)
{
    if (need <= *cap) return 0;
    size_t c = *cap ? *cap : 64;
    while (c < need) c *= 2;
    char *p = realloc(*buf, c);
    if (!p) return -1;
    *buf = p;
    *cap = c;
    return 0;
}

/* Length of the longest tail of buf[0..n) that begins some stop sequence (shorter than it). */
static size_t partial_tail(const serve_stop *s, const char *buf, size_t n)
{
    size_t best = 0;
    for (int i = 0; i < s->n_stop; i++) {
        size_t len = strlen(s->stop[i]);
        for (size_t k = len - 1 < n ? len - 1 : n; k > best; k--)
            if (memcmp(buf + n - k, s->stop[i], k) == 0) {
                best = k;
                break;
            }
    }
    return best;
}

/* Move buf[0..n) into s->out and drop it from the held text. */
static int release(serve_stop *s, size_t n, const char **out, size_t *n_out)
{
    if (reserve(&s->out, &s->out_cap, n + 1)) return -1;
    memcpy(s->out, s->held, n);
    memmove(s->held, s->held + n, s->n_held - n);
    s->n_held -= n;
    *out = s->out;
    *n_out = n;
    return 0;
}

int serve_stop_push(serve_stop *s, const char *text, size_t len, const char **out, size_t *n_out)
{
    *out = "";
    *n_out = 0;
    if (reserve(&s->held, &s->held_cap, s->n_held + len + 1)) return -1;
    memcpy(s->held + s->n_held, text, len);
    s->n_held += len;
    /* The earliest complete stop sequence ends the text. */
    size_t first = s->n_held;
    for (int i = 0; i < s->n_stop; i++) {
        size_t sl = strlen(s->stop[i]);
        for (size_t at = 0; at + sl <= s->n_held && at < first; at++)
            if (memcmp(s->held + at, s->stop[i], sl) == 0) {
                first = at;
                break;
            }
    }
    if (first < s->n_held) {
        if (release(s, first, out, n_out)) return -1;
        s->n_held = 0;
        return 1;
    }
    return release(s, s->n_held - partial_tail(s, s->held, s->n_held), out, n_out);
}

void serve_stop_flush(serve_stop *s, const char **out, size_t *n_out)
{
    *out = s->held ? s->held : "";
    *n_out = s->n_held;
    s->n_held = 0;
}
