/* fuzz_serve_request.c - q3serve's request parser (serve/serve_request.c) on arbitrary
 * bodies. Input: one byte choosing the endpoint (even: chat, odd: completions), then the
 * body. Checks: a refusal is a 400 (500 only for memory) with a non-empty message;
 * an accepted request holds what the scheduler relies on: a prompt or at least one
 * message with a known role and text, at most 4 non-empty stop strings, sampling values
 * inside the sampler's domain, max_tokens >= 0, thinking -1, 0 or 1. */
#include <math.h>
#include "fuzz_util.h"
#include "../serve/serve_request.h"

int fuzz_serve_request(const uint8_t *data, size_t size)
{
    if (size == 0) return 0;
    int endpoint = data[0] & 1 ? SERVE_COMPLETIONS : SERVE_CHAT;
    serve_request r;
    serve_error e;
    if (serve_request_parse((const char *)data + 1, size - 1, endpoint, &r, &e)) {
        FUZZ_ASSERT(e.status == 400 || e.status == 500, "status %d", e.status);
        size_t n = strnlen(e.message, sizeof e.message);
        FUZZ_ASSERT(n > 0 && n < sizeof e.message, "empty or unterminated message");
        FUZZ_ASSERT(e.type != NULL, "no error type");
        return 0;
    }
    if (endpoint == SERVE_CHAT) {
        FUZZ_ASSERT(r.n_msgs >= 1 && r.msgs, "a chat with no message");
        for (size_t i = 0; i < r.n_msgs; i++) {
            const char *role = r.msgs[i].role;
            FUZZ_ASSERT(!strcmp(role, "system") || !strcmp(role, "user") || !strcmp(role, "assistant"),
                        "role '%s'", role);
            FUZZ_ASSERT(r.msgs[i].content != NULL, "message %zu has no content", i);
        }
    } else {
        FUZZ_ASSERT(r.prompt != NULL, "a completion with no prompt");
    }
    FUZZ_ASSERT(r.n_stop >= 0 && r.n_stop <= SERVE_MAX_STOP, "%d stop strings", r.n_stop);
    for (int i = 0; i < r.n_stop; i++) FUZZ_ASSERT(r.stop[i] && r.stop[i][0], "stop string %d is empty", i);
    FUZZ_ASSERT(r.max_tokens >= 0, "max_tokens %d", r.max_tokens);
    FUZZ_ASSERT(r.thinking >= -1 && r.thinking <= 1, "thinking %d", r.thinking);
    if (r.have & SERVE_HAVE_TEMPERATURE)
        FUZZ_ASSERT(isfinite(r.sp.temperature) && r.sp.temperature >= 0, "temperature %g", r.sp.temperature);
    if (r.have & SERVE_HAVE_TOP_P) FUZZ_ASSERT(r.sp.top_p >= 0 && r.sp.top_p <= 1, "top_p %g", r.sp.top_p);
    if (r.have & SERVE_HAVE_MIN_P) FUZZ_ASSERT(r.sp.min_p >= 0 && r.sp.min_p <= 1, "min_p %g", r.sp.min_p);
    if (r.have & SERVE_HAVE_PENALTY)
        FUZZ_ASSERT(isfinite(r.sp.repetition_penalty) && r.sp.repetition_penalty > 0, "penalty %g",
                    r.sp.repetition_penalty);
    serve_request_free(&r);
    return 0;
}

FUZZ_ENTRY(fuzz_serve_request)
