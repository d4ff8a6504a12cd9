/* serve_openai.c - the OpenAI API's response objects (serve_openai.h), built with cJSON
 * (which escapes the text; the text is valid UTF-8: q3_utf8_stream made it so). */
#include "serve_openai.h"
#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>

const char *serve_finish_name(serve_finish f)
{
    return f == SERVE_FINISH_STOP ? "stop" : f == SERVE_FINISH_LENGTH ? "length" : NULL;
}

/* cJSON takes C strings: the text with its length, NUL-terminated. */
static cJSON *string_n(const char *text, size_t len)
{
    char *t = malloc(len + 1);
    if (!t) return NULL;
    memcpy(t, text, len);
    t[len] = 0;
    cJSON *s = cJSON_CreateString(t);
    free(t);
    return s;
}

static char *print_and_free(cJSON *root, int ok)
{
    char *out = ok ? cJSON_PrintUnformatted(root) : NULL;
    cJSON_Delete(root);
    return out;
}

static cJSON *head(const serve_reply *r, const char *object)
{
    cJSON *o = cJSON_CreateObject();
    if (!o) return NULL;
    cJSON_AddStringToObject(o, "id", r->id);
    cJSON_AddStringToObject(o, "object", object);
    cJSON_AddNumberToObject(o, "created", (double)r->created);
    cJSON_AddStringToObject(o, "model", r->model);
    return o;
}

static int add_usage(cJSON *o, serve_usage u)
{
    cJSON *us = cJSON_AddObjectToObject(o, "usage");
    return us && cJSON_AddNumberToObject(us, "prompt_tokens", u.prompt_tokens) &&
           cJSON_AddNumberToObject(us, "completion_tokens", u.completion_tokens) &&
           cJSON_AddNumberToObject(us, "total_tokens", u.prompt_tokens + u.completion_tokens);
}

static int add_finish(cJSON *choice, serve_finish f)
{
    const char *name = serve_finish_name(f);
    return (name ? cJSON_AddStringToObject(choice, "finish_reason", name)
                 : cJSON_AddNullToObject(choice, "finish_reason")) != NULL;
}

char *serve_openai_completion(const serve_reply *r, const char *text, size_t len, serve_finish f, serve_usage u)
{
    int chat = r->endpoint == SERVE_CHAT;
    cJSON *o = head(r, chat ? "chat.completion" : "text_completion");
    if (!o) return NULL;
    cJSON *choices = cJSON_AddArrayToObject(o, "choices"), *c = cJSON_CreateObject(), *s = string_n(text, len);
    int ok = choices && c && s && cJSON_AddItemToArray(choices, c);
    if (!ok) cJSON_Delete(c);
    if (ok && chat) {
        cJSON *msg = cJSON_AddObjectToObject(c, "message");
        ok = msg && cJSON_AddStringToObject(msg, "role", "assistant") && cJSON_AddItemToObject(msg, "content", s);
    } else if (ok) {
        ok = cJSON_AddItemToObject(c, "text", s);
    }
    if (!ok) cJSON_Delete(s);
    ok = ok && cJSON_AddNumberToObject(c, "index", 0) && cJSON_AddNullToObject(c, "logprobs") && add_finish(c, f) &&
         add_usage(o, u);
    return print_and_free(o, ok);
}

char *serve_openai_chunk(const serve_reply *r, const char *text, size_t len, int first, serve_finish f,
                         const serve_usage *usage)
{
    int chat = r->endpoint == SERVE_CHAT;
    cJSON *o = head(r, chat ? "chat.completion.chunk" : "text_completion");
    if (!o) return NULL;
    cJSON *choices = cJSON_AddArrayToObject(o, "choices");
    int ok = choices != NULL;
    if (usage) return print_and_free(o, ok && add_usage(o, *usage)); /* OpenAI's usage chunk: no choices */
    cJSON *c = cJSON_CreateObject();
    ok = ok && c && cJSON_AddItemToArray(choices, c);
    if (!ok) cJSON_Delete(c);
    ok = ok && cJSON_AddNumberToObject(c, "index", 0);
    cJSON *s = ok && (len || first || !chat) ? string_n(text, len) : NULL;
    if (ok && chat) {
        cJSON *delta = cJSON_AddObjectToObject(c, "delta");
        ok = delta && (!first || cJSON_AddStringToObject(delta, "role", "assistant"));
        if (ok && s) ok = cJSON_AddItemToObject(delta, "content", s), s = NULL;
    } else if (ok && s) {
        ok = cJSON_AddItemToObject(c, "text", s), s = NULL;
    }
    cJSON_Delete(s);
    ok = ok && cJSON_AddNullToObject(c, "logprobs") && add_finish(c, f);
    return print_and_free(o, ok);
}

char *serve_openai_error(const serve_error *e)
{
    cJSON *o = cJSON_CreateObject(), *err = o ? cJSON_AddObjectToObject(o, "error") : NULL;
    int ok = err && cJSON_AddStringToObject(err, "message", e->message) &&
             cJSON_AddStringToObject(err, "type", e->type ? e->type : "invalid_request_error") &&
             (e->param[0] ? cJSON_AddStringToObject(err, "param", e->param) : cJSON_AddNullToObject(err, "param")) &&
             (e->code ? cJSON_AddStringToObject(err, "code", e->code) : cJSON_AddNullToObject(err, "code"));
    return print_and_free(o, ok);
}

char *serve_openai_models(const char *model, int64_t created)
{
    cJSON *o = cJSON_CreateObject(), *data = o ? cJSON_AddArrayToObject(o, "data") : NULL, *m = cJSON_CreateObject();
    int ok = data && m && cJSON_AddStringToObject(o, "object", "list") && cJSON_AddItemToArray(data, m);
    if (!ok) cJSON_Delete(m);
    ok = ok && cJSON_AddStringToObject(m, "id", model) && cJSON_AddStringToObject(m, "object", "model") &&
         cJSON_AddNumberToObject(m, "created", (double)created) && cJSON_AddStringToObject(m, "owned_by", "q3");
    return print_and_free(o, ok);
}
