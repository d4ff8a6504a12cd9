/* utf8.c - UTF-8 validation and the streaming decoder. Invalid input becomes
 * U+FFFD per maximal invalid subpart, as Rust's from_utf8_lossy (HF decode) does. */
#include <string.h>
#include "tokenizer.h"
#include "utf8.h"

/* Length of the valid sequence at s (n bytes available): >0 valid length,
 * 0 incomplete but valid so far, -k an invalid subpart of k bytes. */
int q3_utf8_seq(const uint8_t *s, size_t n)
{
    uint8_t c = s[0];
    int need;
    uint8_t lo = 0x80, hi = 0xbf;
    if (c < 0x80) return 1;
    if (c >= 0xc2 && c <= 0xdf) need = 1;
    else if (c >= 0xe0 && c <= 0xef) {
        need = 2;
        if (c == 0xe0) lo = 0xa0;
        if (c == 0xed) hi = 0x9f;
    } else if (c >= 0xf0 && c <= 0xf4) {
        need = 3;
        if (c == 0xf0) lo = 0x90;
        if (c == 0xf4) hi = 0x8f;
    } else {
        return -1;
    }
    for (int i = 1; i <= need; i++) {
        if ((size_t)i >= n) return 0;
        uint8_t b = s[i];
        if (i == 1 ? (b < lo || b > hi) : (b < 0x80 || b > 0xbf)) return -i;
    }
    return need + 1;
}

static size_t put_replacement(char *out) { memcpy(out, "\xef\xbf\xbd", 3); return 3; }

size_t q3_utf8_stream_push(q3_utf8_stream *s, const char *bytes, size_t len, char *out, size_t cap)
{
    size_t o = 0, i = 0;
    /* Complete a pending sequence first, one byte at a time. */
    while (s->n_pending && i < len) {
        s->pending[s->n_pending++] = (uint8_t)bytes[i++];
        int k = q3_utf8_seq(s->pending, s->n_pending);
        if (k == 0) continue;
        if (k > 0) {
            memcpy(out + o, s->pending, (size_t)k);
            o += (size_t)k;
            s->n_pending = 0;
        } else {
            /* Invalid: one U+FFFD for the subpart, then re-read what follows it. */
            size_t bad = (size_t)-k, rest = s->n_pending - bad;
            uint8_t tail[8];
            memcpy(tail, s->pending + bad, rest);
            o += put_replacement(out + o);
            s->n_pending = 0;
            o += q3_utf8_stream_push(s, (const char *)tail, rest, out + o, cap - o);
        }
    }
    while (i < len) {
        int k = q3_utf8_seq((const uint8_t *)bytes + i, len - i);
        if (k > 0) {
            memcpy(out + o, bytes + i, (size_t)k);
            o += (size_t)k;
            i += (size_t)k;
        } else if (k == 0) {
            memcpy(s->pending, bytes + i, len - i);
            s->n_pending = len - i;
            i = len;
        } else {
            o += put_replacement(out + o);
            i += (size_t)-k;
        }
    }
    return o;
}

size_t q3_utf8_stream_flush(q3_utf8_stream *s, char *out, size_t cap)
{
    (void)cap;
    size_t o = 0;
    if (s->n_pending) o = put_replacement(out);
    s->n_pending = 0;
    return o;
}

size_t q3_utf8_lossy(const uint8_t *in, size_t n, char *out)
{
    size_t o = 0, i = 0;
    while (i < n) {
        int k = q3_utf8_seq(in + i, n - i);
        if (k > 0) {
            memcpy(out + o, in + i, (size_t)k);
            o += (size_t)k;
            i += (size_t)k;
        } else {
            o += put_replacement(out + o);
            i += k == 0 ? n - i : (size_t)-k; /* an incomplete tail is one subpart */
        }
    }
    return o;
}
