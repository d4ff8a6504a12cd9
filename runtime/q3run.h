/* q3run.h - what the parts of q3run share: its options (q3run_args.c), the
 * session that generates (q3run.c) and the interactive chat (q3run_chat.c).
 * These files make the q3run program only, on the public include/q3.h alone (it
 * links the shared library, which exports nothing else): backend names, special
 * tokens and a turn's end come from the library, never spelled here. */
#ifndef Q3RUN_H
#define Q3RUN_H

#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include "../include/q3.h"

#define EXIT_USAGE 2

typedef struct {
    const char *model, *prompt, *system, *backend;
    int n_predict, n_threads, n_ctx, device;
    q3_cache_type cache_type;
    int chat, think, interactive, print_ids, tokenize, pieces, verify, verbose, no_mmap;
    int have_temp, have_top_k, have_top_p, have_min_p, have_penalty, have_seed, have_no_think;
    q3_sampler_params sp;
} q3run_options;

/* argv into o; usage errors are one line on stderr and -1 (exit 2). --help and
 * --list-devices exit here. */
int q3run_parse_args(int argc, char **argv, q3run_options *o);
/* What the options mean together: no prompt on a terminal starts the chat; -t is
 * capped at the online CPUs; options without effect in this mode are warned about. */
void q3run_settle_options(q3run_options *o, int stdin_is_terminal);
/* A random seed, for when --seed is not given. */
uint64_t q3run_random_seed(void);

/* Why a reply ended. */
typedef enum { Q3RUN_STOP_EOS, Q3RUN_STOP_LIMIT, Q3RUN_STOP_CONTEXT, Q3RUN_STOP_INTERRUPT } q3run_stop;

/* The reply's bytes as generated (the chat keeps them in its history). */
typedef struct {
    char *text;
    size_t len, cap;
} q3run_text;

typedef struct {
    const q3run_options *o;
    q3_model *model;
    const q3_tokenizer *tk; /* the model's */
    q3_context *ctx;        /* its KV cache: q3_context_used positions in use */
    q3_sampler *sampler;
    q3_sampler_params sp;   /* what the sampler was made with (the stats line's seed) */
    int feed_last_token; /* the chat goes on after a reply: its last token goes into the cache too */
    double prefill_ms, decode_ms;
    int n_prefill, n_decode_steps, n_decoded;
} q3run_session;

/* Set by q3run_chat's SIGINT handler: the reply being generated stops. */
extern volatile sig_atomic_t q3run_interrupted;

int q3run_encode(q3run_session *s, const char *text, size_t len, int32_t **ids, size_t *n, q3_err *err);
/* The chat template over msgs with the generation prompt, tokenized. */
int q3run_render(q3run_session *s, const q3_chat_message *msgs, size_t n_msgs, int32_t **ids, size_t *n, q3_err *err);
/* Feed tokens into the KV cache after what it holds; the logits of the last one. */
int q3run_feed(q3run_session *s, const int32_t *ids, size_t n, q3_err *err);
/* Sample and stream until EOS, -n, a full context or q3run_interrupted; the
 * reply's bytes are appended to reply when it is not NULL. */
int q3run_generate(q3run_session *s, q3run_text *reply, q3run_stop *why, q3_err *err);

/* -i: turn by turn from stdin until /exit, EOF or Ctrl-C at the prompt. */
int q3run_chat(q3run_session *s, q3_err *err);
/* Before the backend starts its threads: SIGINT blocked, so that they inherit the
 * block and a Ctrl-C in the chat reaches the main thread (q3run_chat.c). */
void q3run_chat_prepare_signals(void);

#endif
