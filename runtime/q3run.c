/* q3run - generate text with a Qwen3 model from a .q3 file.
 * usage: q3run [options] MODEL.q3 ["PROMPT" | -]   (see --help) */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include "../include/q3.h"

#define EXIT_USAGE 2

typedef struct {
    const char *model, *prompt, *system, *backend;
    int n_predict, n_threads, n_ctx, device;
    int chat, think, interactive, print_ids, tokenize, pieces, verify, verbose, no_mmap;
    int have_temp, have_top_k, have_top_p, have_min_p, have_penalty;
    q3_sampler_params sp;
} options;

/* "cpu, opencl": the backends the library has, for messages. */
static void backend_list(char *buf, size_t cap, const char *sep)
{
    size_t used = 0;
    buf[0] = 0;
    for (const char *const *n = q3_backend_names(); *n && used < cap; n++)
        used += (size_t)snprintf(buf + used, cap - used, "%s%s", used ? sep : "", *n);
}

static void usage(FILE *f)
{
    char backends[128];
    backend_list(backends, sizeof backends, "|");
    fprintf(f,
            "usage: q3run [options] MODEL.q3 [\"PROMPT\" | -]\n"
            "  Generates a continuation of PROMPT (raw text; - or none reads stdin).\n"
            "  -n N                 tokens to generate (default 256; -1 = until EOS or --ctx)\n"
            "  --temp T             temperature (0 = greedy; default from the model's generation config)\n"
            "  --top-k K, --top-p P, --min-p P, --repeat-penalty R   sampling filters\n"
            "  --seed S             random seed (same seed, same output; default 0)\n"
            "  -t N                 CPU threads (default: all cores)\n"
            "  --ctx N              KV cache positions (default min(max_position_embeddings, 4096))\n"
            "  --chat               apply the model's chat template to PROMPT (a user turn)\n"
            "  --no-think           with --chat: thinking off (empty <think></think>)\n"
            "  --system TEXT        with --chat: a system turn\n"
            "  -i, --interactive    chat turn by turn on the terminal (implies --chat)\n"
            "  --ids                print generated token ids instead of text\n"
            "  --tokenize           print the ids of PROMPT (no template) and exit\n"
            "  --pieces             with --tokenize: also each token's piece\n"
            "  --backend %-10s compute backend (default %s)\n"
            "  --device N           OpenCL device (default: the first GPU, else device 0)\n"
            "  --list-devices       print the OpenCL devices and exit\n"
            "  --verify             hash every tensor before running (q3check does the same)\n"
            "  --no-mmap            read the weights into memory (huge pages) instead of mapping the\n"
            "                       file: slower to load, faster to decode on few cores\n"
            "  -v                   print backend details\n"
            "exit status: 0 ok, 1 error (bad model, prompt too long, ...), 2 usage\n",
            backends, q3_backend_names()[0]);
}

static int parse_int(const char *s, int *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || *end || end == s || v < -1 || v > 1 << 30) return -1;
    *out = (int)v;
    return 0;
}
static int parse_float(const char *s, float *out)
{
    char *end;
    float v = strtof(s, &end);
    if (*end || end == s || !(v >= 0)) return -1;
    *out = v;
    return 0;
}

/* --list-devices: one line per device of each backend that numbers its devices
 * (OpenCL), numbered as --device takes them. */
static int list_devices(void)
{
    for (const char *const *b = q3_backend_names(); *b; b++) {
        int n;
        q3_err err;
        if (q3_backend_device_count(*b, &n, &err)) {
            fprintf(stderr, "q3run: %s\n", err.msg);
            return 1;
        }
        for (int i = 0; i < n; i++) {
            char line[512];
            if (q3_backend_device_describe(*b, i, line, sizeof line, &err) == Q3_OK) printf("%d: %s\n", i, line);
        }
    }
    return 0;
}

static int parse_args(int argc, char **argv, options *o)
{
    memset(o, 0, sizeof *o);
    o->n_predict = 256;
    o->think = 1;
    o->device = -1;
    o->backend = q3_backend_names()[0];
    const char *positional[2] = {NULL, NULL};
    int n_pos = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        int bad = 0, takes = 1;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            exit(0);
        } else if (!strcmp(a, "-n")) bad = !v || parse_int(v, &o->n_predict);
        else if (!strcmp(a, "-t")) bad = !v || parse_int(v, &o->n_threads);
        else if (!strcmp(a, "--ctx")) bad = !v || parse_int(v, &o->n_ctx) || o->n_ctx < 1;
        else if (!strcmp(a, "--device")) bad = !v || parse_int(v, &o->device);
        else if (!strcmp(a, "--temp")) bad = !v || parse_float(v, &o->sp.temperature), o->have_temp = 1;
        else if (!strcmp(a, "--top-k")) {
            int k = 0;
            bad = !v || parse_int(v, &k) || k < 0;
            o->sp.top_k = (uint32_t)k;
            o->have_top_k = 1;
        } else if (!strcmp(a, "--top-p")) bad = !v || parse_float(v, &o->sp.top_p) || o->sp.top_p > 1, o->have_top_p = 1;
        else if (!strcmp(a, "--min-p")) bad = !v || parse_float(v, &o->sp.min_p) || o->sp.min_p > 1, o->have_min_p = 1;
        else if (!strcmp(a, "--repeat-penalty"))
            bad = !v || parse_float(v, &o->sp.repetition_penalty) || o->sp.repetition_penalty <= 0, o->have_penalty = 1;
        else if (!strcmp(a, "--seed")) {
            char *end;
            bad = !v;
            if (v) o->sp.seed = strtoull(v, &end, 10), bad = *end != 0;
        } else if (!strcmp(a, "--system")) bad = !v, o->system = v;
        else if (!strcmp(a, "--backend")) bad = !v, o->backend = v;
        else {
            takes = 0;
            if (!strcmp(a, "--chat")) o->chat = 1;
            else if (!strcmp(a, "--no-think")) o->think = 0;
            else if (!strcmp(a, "-i") || !strcmp(a, "--interactive")) o->interactive = o->chat = 1;
            else if (!strcmp(a, "--ids")) o->print_ids = 1;
            else if (!strcmp(a, "--tokenize")) o->tokenize = 1;
            else if (!strcmp(a, "--pieces")) o->pieces = o->tokenize = 1;
            else if (!strcmp(a, "--verify")) o->verify = 1;
            else if (!strcmp(a, "--no-mmap")) o->no_mmap = 1;
            else if (!strcmp(a, "-v")) o->verbose = 1;
            else if (!strcmp(a, "--list-devices")) exit(list_devices());
            else if (a[0] == '-' && a[1] != 0) {
                fprintf(stderr, "q3run: unknown option '%s' (see --help)\n", a);
                return -1;
            } else if (n_pos < 2) positional[n_pos++] = a;
            else {
                fprintf(stderr, "q3run: too many arguments (quote the prompt)\n");
                return -1;
            }
        }
        if (bad) {
            fprintf(stderr, "q3run: option %s needs a valid value (see --help)\n", a);
            return -1;
        }
        i += takes;
    }
    if (!positional[0]) {
        fprintf(stderr, "q3run: no model given (usage: q3run [options] MODEL.q3 [\"PROMPT\" | -])\n");
        return -1;
    }
    int known = 0;
    for (const char *const *n = q3_backend_names(); *n; n++) known |= strcmp(o->backend, *n) == 0;
    if (!known) {
        char backends[128];
        backend_list(backends, sizeof backends, ", ");
        fprintf(stderr, "q3run: unknown backend '%s' (available: %s)\n", o->backend, backends);
        return -1;
    }
    o->model = positional[0];
    o->prompt = positional[1];
    return 0;
}

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

/* All of stdin, as raw bytes. */
static char *read_stdin(size_t *len)
{
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap + 1);
    size_t got;
    while (buf && (got = fread(buf + n, 1, cap - n, stdin)) > 0) {
        n += got;
        if (n == cap) {
            char *p = realloc(buf, 2 * cap + 1);
            if (!p) {
                free(buf);
                return NULL;
            }
            buf = p;
            cap *= 2;
        }
    }
    if (buf) buf[n] = 0;
    *len = n;
    return buf;
}

typedef struct {
    const options *o;
    q3_model *model;
    const q3_tokenizer *tk;
    q3_context *ctx;
    q3_sampler *sampler;
    double prefill_ms, decode_ms;
    int n_prefill, n_decoded;
} session;

/* Feed tokens (prompt or turn) into the KV cache; logits of the last one. */
static int feed(session *s, const int32_t *ids, size_t n, q3_err *err)
{
    if (n == 0) return 0;
    double t0 = now_ms();
    if (q3_prefill(s->ctx, ids, n, err)) return -1;
    s->prefill_ms += now_ms() - t0;
    s->n_prefill += (int)n;
    for (size_t i = 0; i < n; i++) q3_sampler_accept(s->sampler, ids[i]);
    return 0;
}

/* Sample and stream until EOS, -n or the context is full. */
static int generate(session *s, q3_err *err)
{
    q3_utf8_stream stream = {0};
    char out[4096];
    int limit = s->o->n_predict;
    for (int i = 0; limit < 0 || i < limit; i++) {
        int32_t t = q3_sampler_sample(s->sampler, q3_logits(s->ctx));
        q3_sampler_accept(s->sampler, t);
        if (q3_token_is_eos(s->model, t)) break;
        if (s->o->print_ids) {
            printf("%s%d", s->n_decoded ? " " : "", t);
        } else {
            size_t len = 0;
            const char *b = q3_token_bytes(s->tk, t, &len);
            if (b && len < sizeof out / 3 - 8) fwrite(out, 1, q3_utf8_stream_push(&stream, b, len, out, sizeof out), stdout);
        }
        fflush(stdout);
        s->n_decoded++;
        if (q3_context_used(s->ctx) >= q3_context_size(s->ctx)) break;
        double t0 = now_ms();
        if (q3_decode(s->ctx, t, err)) return -1;
        s->decode_ms += now_ms() - t0;
    }
    size_t n = q3_utf8_stream_flush(&stream, out, sizeof out);
    fwrite(out, 1, n, stdout);
    printf("\n");
    fflush(stdout);
    return 0;
}

static int encode(session *s, const char *text, size_t len, int32_t **ids, size_t *n, q3_err *err)
{
    return q3_tokenize(s->tk, text, len, ids, n, err) ? q3_err_name_file(err, s->o->model) : 0;
}

static int render_and_encode(session *s, const q3_chat_message *msgs, size_t n_msgs, int32_t **ids, size_t *n,
                             q3_err *err)
{
    char *text;
    size_t len;
    if (q3_chat_apply(s->model, msgs, n_msgs, 1, s->o->think, &text, &len, err)) return -1;
    int rc = encode(s, text, len, ids, n, err);
    q3_free(text);
    return rc;
}

static int run_interactive(session *s, q3_err *err)
{
    char line[8192];
    int first = 1;
    for (;;) {
        fprintf(stderr, "> ");
        if (!fgets(line, sizeof line, stdin)) break;
        line[strcspn(line, "\n")] = 0;
        if (!line[0]) continue;
        q3_chat_message msgs[2];
        size_t n_msgs = 0;
        if (first && s->o->system) msgs[n_msgs++] = (q3_chat_message){"system", s->o->system};
        msgs[n_msgs++] = (q3_chat_message){"user", line};
        int32_t *ids;
        size_t n;
        if (render_and_encode(s, msgs, n_msgs, &ids, &n, err)) return -1;
        /* Later turns continue the cache after the previous reply, its turn closed. */
        if (!first) {
            int32_t *end = NULL;
            size_t n_end = 0;
            int bad = q3_chat_end_turn(s->model, &end, &n_end, err) || feed(s, end, n_end, err);
            q3_free(end);
            if (bad) {
                q3_free(ids);
                return -1;
            }
        }
        int rc = feed(s, ids, n, err);
        q3_free(ids);
        if (rc || generate(s, err)) return -1;
        first = 0;
    }
    return 0;
}

int main(int argc, char **argv)
{
    options o;
    if (parse_args(argc, argv, &o)) return EXIT_USAGE;
    session s;
    memset(&s, 0, sizeof s);
    s.o = &o;
    q3_err err;
    int rc = 1;
    char *prompt = NULL;
    size_t prompt_len = 0;
    int32_t *ids = NULL;
    size_t n_ids = 0;

    double t0 = now_ms();
    q3_model_params mp = {.verify = o.verify ? Q3_VERIFY_ALL : Q3_VERIFY_META, .no_mmap = o.no_mmap};
    if (q3_model_open(o.model, &mp, &s.model, &err) || q3_model_tokenizer(s.model, &s.tk, &err)) goto fail;

    if (o.prompt && strcmp(o.prompt, "-") != 0) {
        prompt_len = strlen(o.prompt);
        prompt = malloc(prompt_len + 1);
        if (prompt) memcpy(prompt, o.prompt, prompt_len + 1);
    } else if (!o.interactive) {
        prompt = read_stdin(&prompt_len);
    }
    if (!prompt && !o.interactive) {
        snprintf(err.msg, sizeof err.msg, "q3run: cannot read the prompt");
        goto fail;
    }
    if (o.tokenize) {
        if (encode(&s, prompt, prompt_len, &ids, &n_ids, &err)) goto fail;
        for (size_t i = 0; i < n_ids; i++) {
            if (o.pieces) {
                size_t len;
                const char *p = q3_token_piece(s.tk, ids[i], &len);
                printf("%d\t%.*s\n", ids[i], (int)len, p);
            } else {
                printf("%s%d", i ? " " : "", ids[i]);
            }
        }
        if (!o.pieces) printf("\n");
        rc = 0;
        goto done;
    }

    q3_context_params cp = {.backend = o.backend, .n_ctx = o.n_ctx, .n_threads = o.n_threads, .device = o.device,
                            .verbose = o.verbose};
    if (q3_context_create(s.model, &cp, &s.ctx, &err)) goto fail;
    double load_ms = now_ms() - t0;
    q3_sampler_params sp = q3_sampler_defaults(s.model);
    sp.seed = o.sp.seed;
    if (o.have_temp) sp.temperature = o.sp.temperature;
    if (o.have_top_k) sp.top_k = o.sp.top_k;
    if (o.have_top_p) sp.top_p = o.sp.top_p;
    if (o.have_min_p) sp.min_p = o.sp.min_p;
    if (o.have_penalty) sp.repetition_penalty = o.sp.repetition_penalty;
    if (q3_sampler_create(s.model, &sp, &s.sampler, &err)) goto fail;

    if (o.interactive) {
        if (run_interactive(&s, &err)) goto fail;
    } else {
        if (o.chat) {
            q3_chat_message msgs[2];
            size_t n_msgs = 0;
            if (o.system) msgs[n_msgs++] = (q3_chat_message){"system", o.system};
            msgs[n_msgs++] = (q3_chat_message){"user", prompt};
            if (render_and_encode(&s, msgs, n_msgs, &ids, &n_ids, &err)) goto fail;
        } else if (encode(&s, prompt, prompt_len, &ids, &n_ids, &err)) {
            goto fail;
        }
        if (n_ids == 0) {
            /* An empty prompt starts from BOS when the model has one. */
            int32_t bos = q3_token_bos(s.model);
            if (bos < 0) {
                snprintf(err.msg, sizeof err.msg, "%s: the prompt is empty and the model has no BOS token to start from",
                         o.model);
                goto fail;
            }
            q3_free(ids);
            ids = malloc(sizeof *ids);
            if (!ids) goto fail;
            ids[0] = bos;
            n_ids = 1;
        }
        if (feed(&s, ids, n_ids, &err) || generate(&s, &err)) goto fail;
    }
    fprintf(stderr, "q3run: load %.0f ms, prefill %d tokens %.1f tok/s, decode %d tokens %.1f tok/s\n", load_ms,
            s.n_prefill, s.prefill_ms > 0 ? s.n_prefill * 1e3 / s.prefill_ms : 0.0, s.n_decoded,
            s.decode_ms > 0 ? (s.n_decoded > 1 ? s.n_decoded - 1 : 0) * 1e3 / s.decode_ms : 0.0);
    rc = 0;
    goto done;
fail:
    fprintf(stderr, "%s\n", err.msg);
done:
    q3_free(ids);
    free(prompt);
    q3_sampler_destroy(s.sampler);
    q3_context_free(s.ctx);
    q3_model_close(s.model);
    return q3_finish_stdout("q3run", rc);
}
