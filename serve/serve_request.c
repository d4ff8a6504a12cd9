/* serve_request.c - OpenAI request bodies to serve_request (serve_request.h).
 * Unknown fields are ignored, as OpenAI's SDKs send some this server has no use
 * for (user, model, metadata); fields it cannot honour are refused, never ignored,
 * so a client never gets something other than it asked for. */
#include "serve_request.h"
#include <cjson/cJSON.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int serve_error_set(serve_error *e, int status, const char *type, const char *param, const char *fmt, ...)
{
    e->status = status;
    e->type = type;
    e->code = NULL;
    snprintf(e->param, sizeof e->param, "%s", param ? param : "");
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->message, sizeof e->message, fmt, ap);
    va_end(ap);
    return -1;
}

#define BAD(param, ...) serve_error_set(e, 400, "invalid_request_error", param, __VA_ARGS__)

/* A field present and not JSON null. */
static const cJSON *field(const cJSON *obj, const char *name)
{
    const cJSON *f = cJSON_GetObjectItemCaseSensitive(obj, name);
    return f && !cJSON_IsNull(f) ? f : NULL;
}

static int get_number(const cJSON *obj, const char *name, double lo, double hi, double *v, int *have,
                      serve_error *e)
{
    const cJSON *f = field(obj, name);
    *have = 0;
    if (!f) return 0;
    if (!cJSON_IsNumber(f) || !isfinite(f->valuedouble)) return BAD(name, "'%s' must be a number", name);
    if (f->valuedouble < lo || f->valuedouble > hi)
        return BAD(name, "'%s' is %g; it must be between %g and %g", name, f->valuedouble, lo, hi);
    *v = f->valuedouble;
    *have = 1;
    return 0;
}

static int get_int(const cJSON *obj, const char *name, double lo, double hi, double *v, int *have, serve_error *e)
{
    if (get_number(obj, name, lo, hi, v, have, e)) return -1;
    if (*have && *v != floor(*v)) return BAD(name, "'%s' must be an integer", name);
    return 0;
}

static int get_bool(const cJSON *obj, const char *name, int *v, serve_error *e)
{
    const cJSON *f = field(obj, name);
    if (!f) return 0;
    if (!cJSON_IsBool(f)) return BAD(name, "'%s' must be true or false", name);
    *v = cJSON_IsTrue(f);
    return 0;
}

static char *dup_or_fail(const char *s, size_t len, serve_error *e)
{
    char *d = malloc(len + 1);
    if (!d) {
        serve_error_set(e, 500, "server_error", NULL, "out of memory");
        return NULL;
    }
    memcpy(d, s, len);
    d[len] = 0;
    return d;
}

/* A message's content: a string, or an array of {"type": "text", "text": ...} parts
 * (what the SDKs send for multi-part messages), joined. */
static char *content_text(const cJSON *c, const char *param, serve_error *e)
{
    if (cJSON_IsString(c)) return dup_or_fail(c->valuestring, strlen(c->valuestring), e);
    if (!cJSON_IsArray(c)) return BAD(param, "'%s' must be a string or an array of text parts", param), NULL;
    size_t total = 0;
    const cJSON *part;
    cJSON_ArrayForEach(part, c)
    {
        const cJSON *type = field(part, "type"), *text = field(part, "text");
        if (!cJSON_IsObject(part) || !cJSON_IsString(type) || strcmp(type->valuestring, "text") != 0 ||
            !cJSON_IsString(text))
            return BAD(param, "'%s': only parts of type \"text\" with a string 'text' are supported", param), NULL;
        total += strlen(text->valuestring);
    }
    char *grown = malloc(total + 1);
    if (!grown) return serve_error_set(e, 500, "server_error", NULL, "out of memory"), NULL;
    size_t at = 0;
    cJSON_ArrayForEach(part, c)
    {
        const char *t = field(part, "text")->valuestring;
        size_t n = strlen(t);
        memcpy(grown + at, t, n);
        at += n;
    }
    grown[at] = 0;
    return grown;
}

static const char *role_name(const char *role)
{
    static const char *const roles[] = {"system", "user", "assistant"};
    for (size_t i = 0; i < 3; i++)
        if (strcmp(role, roles[i]) == 0) return roles[i];
    /* OpenAI's newer name for the system turn; the chat template knows only "system" */
    return strcmp(role, "developer") == 0 ? "system" : NULL;
}

static int parse_messages(const cJSON *root, serve_request *r, serve_error *e)
{
    const cJSON *msgs = field(root, "messages");
    if (!msgs) return BAD("messages", "'messages' is required");
    if (!cJSON_IsArray(msgs) || cJSON_GetArraySize(msgs) == 0)
        return BAD("messages", "'messages' must be a non-empty array of {role, content}");
    size_t n = (size_t)cJSON_GetArraySize(msgs);
    if (!(r->msgs = calloc(n, sizeof *r->msgs))) return serve_error_set(e, 500, "server_error", NULL, "out of memory");
    const cJSON *m;
    cJSON_ArrayForEach(m, msgs)
    {
        char param[48];
        snprintf(param, sizeof param, "messages[%zu]", r->n_msgs);
        const cJSON *role = field(m, "role"), *content = field(m, "content");
        if (!cJSON_IsObject(m) || !cJSON_IsString(role)) return BAD(param, "'%s' must be an object with a 'role'", param);
        const char *name = role_name(role->valuestring);
        if (!name)
            return BAD(param, "'%s': role '%.40s' is not supported (system, developer, user, assistant)", param,
                       role->valuestring);
        snprintf(param, sizeof param, "messages[%zu].content", r->n_msgs);
        if (!content) return BAD(param, "'%s' is required", param);
        char *text = content_text(content, param, e);
        if (!text) return -1;
        r->msgs[r->n_msgs].role = name;
        r->msgs[r->n_msgs++].content = text;
    }
    return 0;
}

static int parse_prompt(const cJSON *root, serve_request *r, serve_error *e)
{
    const cJSON *p = field(root, "prompt");
    if (!p) return BAD("prompt", "'prompt' is required");
    /* The SDKs may send a list; one prompt per request is what this server serves. */
    if (cJSON_IsArray(p) && cJSON_GetArraySize(p) == 1 && cJSON_IsString(cJSON_GetArrayItem(p, 0)))
        p = cJSON_GetArrayItem(p, 0);
    if (!cJSON_IsString(p)) return BAD("prompt", "'prompt' must be a string (or an array of one string)");
    return (r->prompt = dup_or_fail(p->valuestring, strlen(p->valuestring), e)) ? 0 : -1;
}

static int parse_stop(const cJSON *root, serve_request *r, serve_error *e)
{
    const cJSON *s = field(root, "stop");
    if (!s) return 0;
    if (cJSON_IsString(s)) {
        if (!s->valuestring[0]) return BAD("stop", "'stop' must not be empty");
        return (r->stop[r->n_stop++] = dup_or_fail(s->valuestring, strlen(s->valuestring), e)) ? 0 : -1;
    }
    if (!cJSON_IsArray(s) || cJSON_GetArraySize(s) > SERVE_MAX_STOP)
        return BAD("stop", "'stop' must be a string or an array of up to %d strings", SERVE_MAX_STOP);
    const cJSON *item;
    cJSON_ArrayForEach(item, s)
    {
        if (!cJSON_IsString(item) || !item->valuestring[0])
            return BAD("stop", "'stop' must hold non-empty strings");
        if (!(r->stop[r->n_stop++] = dup_or_fail(item->valuestring, strlen(item->valuestring), e))) return -1;
    }
    return 0;
}

static int parse_sampling(const cJSON *root, serve_request *r, serve_error *e)
{
    double v;
    int have;
    if (get_number(root, "temperature", 0, 2, &v, &have, e)) return -1;
    if (have) r->sp.temperature = (float)v, r->have |= SERVE_HAVE_TEMPERATURE;
    if (get_number(root, "top_p", 0, 1, &v, &have, e)) return -1;
    if (have) r->sp.top_p = (float)v, r->have |= SERVE_HAVE_TOP_P;
    if (get_int(root, "top_k", 0, 1e9, &v, &have, e)) return -1;
    if (have) r->sp.top_k = (uint32_t)v, r->have |= SERVE_HAVE_TOP_K;
    if (get_number(root, "min_p", 0, 1, &v, &have, e)) return -1;
    if (have) r->sp.min_p = (float)v, r->have |= SERVE_HAVE_MIN_P;
    if (get_number(root, "repetition_penalty", 1e-3, 100, &v, &have, e)) return -1;
    if (have) r->sp.repetition_penalty = (float)v, r->have |= SERVE_HAVE_PENALTY;
    /* seed: any integer a double holds exactly; negative ones wrap as C does */
    if (get_int(root, "seed", -9007199254740992.0, 9007199254740992.0, &v, &have, e)) return -1;
    if (have) r->sp.seed = (uint64_t)(int64_t)v, r->have |= SERVE_HAVE_SEED;
    /* The sampler has HF's repetition penalty, not OpenAI's additive ones: a request
     * that asks for them is told so rather than silently sampled without them. */
    static const char *const additive[] = {"frequency_penalty", "presence_penalty"};
    for (int i = 0; i < 2; i++) {
        if (get_number(root, additive[i], -2, 2, &v, &have, e)) return -1;
        if (have && v != 0)
            return BAD(additive[i], "'%s' is not supported; use 'repetition_penalty' (HF semantics, 1 = off)",
                       additive[i]);
    }
    return 0;
}

static int parse_options(const cJSON *root, serve_request *r, serve_error *e)
{
    double v;
    int have;
    if (get_int(root, "max_tokens", 1, 1e9, &v, &have, e)) return -1;
    if (have) r->max_tokens = (int)v;
    if (get_int(root, "max_completion_tokens", 1, 1e9, &v, &have, e)) return -1; /* the newer name */
    if (have) r->max_tokens = (int)v;
    if (get_int(root, "n", 1, 1, &v, &have, e)) return -1;
    if (get_bool(root, "stream", &r->stream, e)) return -1;
    /* a boolean in chat, a count in completions: either way only "none" is served */
    const cJSON *f = field(root, "logprobs");
    if (f && (cJSON_IsTrue(f) || (cJSON_IsNumber(f) && f->valuedouble != 0)))
        return BAD("logprobs", "'logprobs' is not supported");
    if (f && !cJSON_IsBool(f) && !cJSON_IsNumber(f)) return BAD("logprobs", "'logprobs' must be a boolean or a number");
    const cJSON *so = field(root, "stream_options");
    if (so && !cJSON_IsObject(so)) return BAD("stream_options", "'stream_options' must be an object");
    if (so && get_bool(so, "include_usage", &r->include_usage, e)) return -1;
    const cJSON *kw = field(root, "chat_template_kwargs");
    if (kw && !cJSON_IsObject(kw)) return BAD("chat_template_kwargs", "'chat_template_kwargs' must be an object");
    if (kw && get_bool(kw, "enable_thinking", &r->thinking, e)) return -1;
    return 0;
}

int serve_request_parse(const char *body, size_t len, int endpoint, serve_request *r, serve_error *e)
{
    memset(r, 0, sizeof *r);
    r->endpoint = endpoint;
    r->thinking = -1;
    cJSON *root = cJSON_ParseWithLength(body, len);
    int rc;
    if (!root || !cJSON_IsObject(root))
        rc = BAD(NULL, "the body must be a JSON object (%s)", root ? "it is another JSON value" : "it does not parse");
    else
        rc = (endpoint == SERVE_CHAT ? parse_messages(root, r, e) : parse_prompt(root, r, e)) ||
                     parse_sampling(root, r, e) || parse_options(root, r, e) || parse_stop(root, r, e)
                 ? -1
                 : 0;
    cJSON_Delete(root);
    if (rc) serve_request_free(r);
    return rc;
}

void serve_request_free(serve_request *r)
{
    for (size_t i = 0; i < r->n_msgs; i++) free((char *)r->msgs[i].content);
    free(r->msgs);
    free(r->prompt);
    for (int i = 0; i < r->n_stop; i++) free(r->stop[i]);
    memset(r, 0, sizeof *r);
}
