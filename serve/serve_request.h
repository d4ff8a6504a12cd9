/* serve_request.h - an OpenAI request body (POST /v1/chat/completions or
 * /v1/completions) parsed and checked into what the scheduler needs, or the
 * OpenAI-style error that says which field is wrong. Pure: no model, no I/O. */
#ifndef Q3_SERVE_REQUEST_H
#define Q3_SERVE_REQUEST_H

#include <stddef.h>
#include "../include/q3.h"

enum serve_endpoint { SERVE_CHAT = 0, SERVE_COMPLETIONS = 1 };

/* OpenAI's limit on stop sequences. */
#define SERVE_MAX_STOP 4

/* Sampling fields the request set; the others come from the model's generation config. */
enum {
    SERVE_HAVE_TEMPERATURE = 1u << 0,
    SERVE_HAVE_TOP_P = 1u << 1,
    SERVE_HAVE_TOP_K = 1u << 2,
    SERVE_HAVE_MIN_P = 1u << 3,
    SERVE_HAVE_PENALTY = 1u << 4,
    SERVE_HAVE_SEED = 1u << 5,
};

typedef struct {
    int endpoint;
    q3_chat_message *msgs; /* chat: roles are static strings, contents owned here */
    size_t n_msgs;
    char *prompt;          /* completions */
    int max_tokens;        /* 0: until the context is full */
    q3_sampler_params sp;  /* the fields of `have` */
    unsigned have;
    char *stop[SERVE_MAX_STOP];
    int n_stop;
    int stream;
    int include_usage;     /* stream_options.include_usage: a last chunk with the usage */
    int thinking;          /* chat_template_kwargs.enable_thinking; -1: the server's default */
} serve_request;

typedef struct {
    int status;           /* HTTP status */
    const char *type;     /* OpenAI's error type: "invalid_request_error" */
    const char *code;     /* OpenAI's code, or NULL */
    char param[48];       /* the field at fault; "" for none */
    char message[256];
} serve_error;

/* 0 and *r filled (release with serve_request_free), or -1 and *e (400) for a body that
 * is not a JSON object, a missing or mistyped field, a value outside its domain, or a
 * feature this server does not have (n > 1, logprobs, penalties other than repetition). */
int serve_request_parse(const char *body, size_t len, int endpoint, serve_request *r, serve_error *e);
void serve_request_free(serve_request *r);

/* Fill e; returns -1. */
int serve_error_set(serve_error *e, int status, const char *type, const char *param, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

#endif
