/* serve_openai.h - the OpenAI API's JSON objects this server answers with: the
 * completion (chat.completion, text_completion), a streamed chunk, the error object
 * and the model list. Each returns a malloc'd NUL-terminated string, NULL when out
 * of memory. */
#ifndef Q3_SERVE_OPENAI_H
#define Q3_SERVE_OPENAI_H

#include <stddef.h>
#include <stdint.h>
#include "serve_job.h"
#include "serve_request.h"

typedef struct {
    int endpoint;          /* SERVE_CHAT or SERVE_COMPLETIONS */
    const char *id;        /* "chatcmpl-..." or "cmpl-..." */
    const char *model;
    int64_t created;
} serve_reply;

typedef struct {
    int prompt_tokens, completion_tokens;
} serve_usage;

/* "stop", "length", or NULL while running. */
const char *serve_finish_name(serve_finish f);
/* The whole answer of a request that was not streamed. */
char *serve_openai_completion(const serve_reply *r, const char *text, size_t len, serve_finish f, serve_usage u);
/* One chunk of a stream: text (may be empty), first: the chat's role comes with it,
 * f: the finish reason of the last chunk (SERVE_RUNNING before), usage: the optional
 * usage chunk (no choices) when not NULL. */
char *serve_openai_chunk(const serve_reply *r, const char *text, size_t len, int first, serve_finish f,
                         const serve_usage *usage);
/* {"error": {"message", "type", "param", "code"}} */
char *serve_openai_error(const serve_error *e);
char *serve_openai_models(const char *model, int64_t created);

#endif
