/* q3run - generate text with a Qwen3 model from a .q3 file.
 * usage: q3run [options] MODEL.q3 ["PROMPT" | -]   (see --help)
 * This file: the session (load, prompt, generate, stats); the command line is
 * q3run_args.c, the interactive chat q3run_chat.c. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include "q3run.h"

volatile sig_atomic_t q3run_interrupted;

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

/* All of stdin, as raw bytes; NULL with err on a read error (not an empty prompt). */
static char *read_stdin(size_t *len, q3_err *err)
{
    size_t cap = 1 << 16, n = 0, got;
    char *buf = malloc(cap + 1);
    while (buf && (got = fread(buf + n, 1, cap - n, stdin)) > 0) {
        n += got;
        if (n == cap) {
            char *p = realloc(buf, 2 * cap + 1);
            if (!p) break;
            buf = p;
            cap *= 2;
        }
    }
    if (!buf || n == cap) {
        free(buf);
        q3_set_err(err, "q3run: out of memory reading the prompt from standard input");
        return NULL;
    }
    if (ferror(stdin)) {
        q3_set_err(err, "q3run: cannot read the prompt from standard input: %s", strerror(errno));
        free(buf);
        return NULL;
    }
    buf[n] = 0;
    *len = n;
    return buf;
}

/* The prompt: the argument, or stdin for "-" (and for no prompt off a terminal).
 * A prompt is text: a NUL byte is refused in every mode (the chat template takes C
 * strings and would cut there, raw mode would keep it: one rule instead of two). */
static char *read_prompt(const q3run_options *o, size_t *len, q3_err *err)
{
    if (o->prompt && strcmp(o->prompt, "-") != 0) {
        *len = strlen(o->prompt);
        char *p = strdup(o->prompt);
        if (!p) q3_set_err(err, "q3run: out of memory");
        return p;
    }
    char *p = read_stdin(len, err);
    const char *nul = p ? memchr(p, 0, *len) : NULL;
    if (nul) {
        q3_set_err(err, "q3run: the prompt from standard input has a NUL byte at offset %zu; a prompt is text",
                   (size_t)(nul - p));
        free(p);
        return NULL;
    }
    return p;
}

/* A prompt that does not fit what is left of the context is refused by the library
 * before any work, with a message naming --ctx. */
int q3run_feed(q3run_session *s, const int32_t *ids, size_t n, q3_err *err)
{
    if (n == 0) return 0;
    double t0 = now_ms();
    if (q3_prefill(s->ctx, ids, n, err)) return -1;
    s->prefill_ms += now_ms() - t0;
    s->n_prefill += (int)n;
    for (size_t i = 0; i < n; i++) q3_sampler_accept(s->sampler, ids[i]);
    return 0;
}

static int append_text(q3run_text *t, const char *b, size_t len)
{
    if (t->len + len + 1 > t->cap) {
        size_t cap = t->cap ? t->cap : 256;
        while (cap < t->len + len + 1) cap *= 2;
        char *p = realloc(t->text, cap);
        if (!p) return -1;
        t->text = p;
        t->cap = cap;
    }
    memcpy(t->text + t->len, b, len);
    t->len += len;
    t->text[t->len] = 0;
    return 0;
}

static const char *nonfinite_name(float v) { return v != v ? "NaN" : v > 0 ? "+Inf" : "-Inf"; }

/* One sampled token; -1 with err naming the step when the logits are not finite. */
static int32_t sample(const q3run_session *s, int step, q3_err *err)
{
    float *logits = q3_logits(s->ctx);
    int32_t t = q3_sampler_sample(s->sampler, logits);
    if (t < 0) {
        int64_t bad = q3_logits_first_nonfinite(logits, q3_model_config(s->model)->vocab_size);
        q3_set_err(err, "%s: decode step %d (position %d): the logit of token %lld is %s; the model's weights or its "
                   "computation gave a non-finite value",
                   s->o->model, step, q3_context_used(s->ctx), (long long)bad,
                   bad >= 0 ? nonfinite_name(logits[bad]) : "?");
    }
    return t;
}

static void print_token(const q3run_session *s, int32_t t, q3_utf8_stream *stream)
{
    if (s->o->print_ids) {
        printf("%s%d", s->n_decoded ? " " : "", t);
        return;
    }
    char out[4096];
    size_t len = 0;
    const char *b = q3_token_bytes(s->tk, t, &len);
    if (b && len < sizeof out / 3 - 8) fwrite(out, 1, q3_utf8_stream_push(stream, b, len, out, sizeof out), stdout);
}

int q3run_generate(q3run_session *s, q3run_text *reply, q3run_stop *why, q3_err *err)
{
    q3_utf8_stream stream = {0};
    int limit = s->o->n_predict;
    *why = Q3RUN_STOP_LIMIT;
    for (int i = 0; limit < 0 || i < limit; i++) {
        if (q3run_interrupted) {
            *why = Q3RUN_STOP_INTERRUPT;
            break;
        }
        int32_t t = sample(s, i + 1, err);
        if (t < 0) return -1;
        q3_sampler_accept(s->sampler, t);
        if (q3_token_is_eos(s->model, t)) {
            *why = Q3RUN_STOP_EOS;
            break;
        }
        print_token(s, t, &stream);
        fflush(stdout);
        size_t len;
        const char *b = q3_token_bytes(s->tk, t, &len);
        if (reply && b && append_text(reply, b, len)) {
            q3_set_err(err, "q3run: out of memory");
            return -1;
        }
        s->n_decoded++;
        if (q3_context_used(s->ctx) >= q3_context_size(s->ctx)) {
            *why = Q3RUN_STOP_CONTEXT;
            break;
        }
        if (!s->feed_last_token && i + 1 == limit) break; /* its logits would go unused */
        double t0 = now_ms();
        if (q3_decode(s->ctx, t, err)) return -1;
        s->decode_ms += now_ms() - t0;
        s->n_decode_steps++;
    }
    char out[16];
    fwrite(out, 1, q3_utf8_stream_flush(&stream, out, sizeof out), stdout);
    printf("\n");
    fflush(stdout);
    return 0;
}

int q3run_encode(q3run_session *s, const char *text, size_t len, int32_t **ids, size_t *n, q3_err *err)
{
    return q3_tokenize(s->tk, text, len, ids, n, err) ? q3_err_name_file(err, s->o->model) : 0;
}

int q3run_render(q3run_session *s, const q3_chat_message *msgs, size_t n_msgs, int32_t **ids, size_t *n, q3_err *err)
{
    char *text;
    size_t len;
    if (q3_chat_apply(s->model, msgs, n_msgs, 1, s->o->think, &text, &len, err)) return -1;
    int rc = q3run_encode(s, text, len, ids, n, err);
    q3_free(text);
    return rc;
}

/* A token's bytes as a quoted C string: spaces visible, control bytes and bytes
 * that are not UTF-8 escaped (the piece beside it is the byte-level form, "Ġ"). */
static void print_quoted(const char *b, size_t len)
{
    putchar('"');
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)b[i];
        if (c == '\n') fputs("\\n", stdout);
        else if (c == '\t') fputs("\\t", stdout);
        else if (c == '\r') fputs("\\r", stdout);
        else if (c == '"' || c == '\\') printf("\\%c", c);
        else if (c < 0x20 || c == 0x7f) printf("\\x%02x", c);
        else if (c >= 0x80) {
            int k = q3_utf8_seq((const uint8_t *)b + i, len - i);
            if (k <= 0) {
                printf("\\x%02x", c);
                continue;
            }
            fwrite(b + i, 1, (size_t)k, stdout);
            i += (size_t)k - 1;
        } else putchar(c);
    }
    putchar('"');
}

/* --tokenize: the ids in one line; --pieces: one token a line, id, piece, text. */
static void print_tokens(const q3run_session *s, const int32_t *ids, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (!s->o->pieces) {
            printf("%s%d", i ? " " : "", ids[i]);
            continue;
        }
        size_t plen, blen;
        const char *p = q3_token_piece(s->tk, ids[i], &plen);
        const char *b = q3_token_bytes(s->tk, ids[i], &blen);
        printf("%d\t%.*s\t", ids[i], (int)plen, p ? p : "");
        print_quoted(b ? b : "", b ? blen : 0);
        putchar('\n');
    }
    if (!s->o->pieces) printf("\n");
}

/* The raw or --chat prompt as ids; an empty prompt starts from BOS when the model has one. */
static int prompt_ids(q3run_session *s, const char *prompt, size_t len, int32_t **ids, size_t *n, q3_err *err)
{
    const q3run_options *o = s->o;
    if (o->chat) {
        q3_chat_message msgs[2];
        size_t n_msgs = 0;
        if (o->system) msgs[n_msgs++] = (q3_chat_message){"system", o->system};
        msgs[n_msgs++] = (q3_chat_message){"user", prompt};
        if (q3run_render(s, msgs, n_msgs, ids, n, err)) return -1;
    } else if (q3run_encode(s, prompt, len, ids, n, err)) {
        return -1;
    }
    if (*n > 0) return 0;
    int32_t bos = q3_token_bos(s->model);
    if (bos < 0) {
        q3_set_err(err, "%s: the prompt is empty and the model has no BOS token to start from", o->model);
        return -1;
    }
    q3_free(*ids);
    *ids = malloc(sizeof **ids);
    if (!*ids) {
        q3_set_err(err, "q3run: out of memory");
        return -1;
    }
    (*ids)[0] = bos;
    *n = 1;
    return 0;
}

/* Sampling: the model's generation config, overridden by the options. */
static q3_sampler_params sampler_params(const q3run_session *s)
{
    const q3run_options *o = s->o;
    q3_sampler_params sp = q3_sampler_defaults(s->model);
    sp.seed = o->have_seed ? o->sp.seed : q3run_random_seed();
    if (o->have_temp) sp.temperature = o->sp.temperature;
    if (o->have_top_k) sp.top_k = o->sp.top_k;
    if (o->have_top_p) sp.top_p = o->sp.top_p;
    if (o->have_min_p) sp.min_p = o->sp.min_p;
    if (o->have_penalty) sp.repetition_penalty = o->sp.repetition_penalty;
    if (o->verbose)
        fprintf(stderr, "q3run: seed %llu, temperature %g, top-k %u, top-p %g, min-p %g, repeat-penalty %g\n",
                (unsigned long long)sp.seed, sp.temperature, sp.top_k, sp.top_p, sp.min_p, sp.repetition_penalty);
    return sp;
}

/* The checksums of everything but the weights (all with --verify) and the load
 * checks (the config binds to the tensors, the tokenizer builds, the template renders). */
static int open_model(q3run_session *s, q3_err *err)
{
    const q3run_options *o = s->o;
    q3_model_params mp = {.verify = o->verify ? Q3_VERIFY_ALL : Q3_VERIFY_META, .no_mmap = o->no_mmap};
    return q3_model_open(o->model, &mp, &s->model, err) || q3_model_tokenizer(s->model, &s->tk, err) ? -1 : 0;
}

static int start_backend(q3run_session *s, q3_err *err)
{
    const q3run_options *o = s->o;
    q3_context_params cp = {.backend = o->backend, .n_ctx = o->n_ctx, .n_threads = o->n_threads, .device = o->device,
                            .verbose = o->verbose, .cache_type = o->cache_type};
    if (q3_context_create(s->model, &cp, &s->ctx, err)) return -1;
    s->sp = sampler_params(s);
    if (q3_sampler_create(s->model, &s->sp, &s->sampler, err)) {
        q3_set_err(err, "q3run: out of memory");
        return -1;
    }
    return 0;
}

/* ", WHAT N tokens R tok/s": the rate over the timed forward steps, none without
 * one (a single generated token comes from the prompt's logits: no decode step). */
static void print_count(const char *what, int n, int steps, double ms)
{
    fprintf(stderr, ", %s %d token%s", what, n, n == 1 ? "" : "s");
    if (steps > 0 && ms > 0) fprintf(stderr, " %.1f tok/s", steps * 1e3 / ms);
}

static void print_stats(const q3run_session *s, double load_ms)
{
    fprintf(stderr, "q3run: load %.0f ms", load_ms);
    print_count("prefill", s->n_prefill, s->n_prefill, s->prefill_ms);
    print_count("decode", s->n_decoded, s->n_decode_steps, s->decode_ms);
    if (s->sp.temperature > 0) fprintf(stderr, ", seed %llu", (unsigned long long)s->sp.seed);
    fprintf(stderr, "\n");
}

static void session_free(q3run_session *s)
{
    q3_sampler_destroy(s->sampler);
    q3_context_free(s->ctx);
    q3_model_close(s->model);
}

int main(int argc, char **argv)
{
    q3run_options o;
    if (q3run_parse_args(argc, argv, &o)) return EXIT_USAGE;
    q3run_settle_options(&o, isatty(STDIN_FILENO));
    q3run_session s;
    memset(&s, 0, sizeof s);
    s.o = &o;
    q3_err err;
    int rc = 1;
    char *prompt = NULL;
    size_t prompt_len = 0;
    int32_t *ids = NULL;
    size_t n_ids = 0;

    double t0 = now_ms();
    if (open_model(&s, &err)) goto fail;
    if (!o.interactive && !(prompt = read_prompt(&o, &prompt_len, &err))) goto fail;
    if (o.tokenize) {
        if (q3run_encode(&s, prompt, prompt_len, &ids, &n_ids, &err)) goto fail;
        print_tokens(&s, ids, n_ids);
        rc = 0;
        goto done;
    }
    if (o.interactive) q3run_chat_prepare_signals();
    if (start_backend(&s, &err)) goto fail;
    double load_ms = now_ms() - t0;
    if (o.interactive) {
        if (q3run_chat(&s, &err)) goto fail;
    } else {
        q3run_stop why;
        if (prompt_ids(&s, prompt, prompt_len, &ids, &n_ids, &err) || q3run_feed(&s, ids, n_ids, &err) ||
            q3run_generate(&s, NULL, &why, &err))
            goto fail;
    }
    print_stats(&s, load_ms);
    rc = 0;
    goto done;
fail:
    fflush(stdout);
    fprintf(stderr, "%s\n", err.msg);
done:
    q3_free(ids);
    free(prompt);
    session_free(&s);
    return q3_finish_stdout("q3run", rc);
}
