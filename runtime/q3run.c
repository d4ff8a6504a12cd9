/* q3run - generate text with a Qwen3 model from a .q3 file.
 * usage: q3run [options] MODEL.q3 ["PROMPT" | -]   (see --help) */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include "../format/q3_format.h"
#include "backend.h"
#include "ocl_device.h"
#include "chat_template.h"
#include "sampler.h"
#include "tokenizer.h"

#define EXIT_USAGE 2

typedef struct {
    const char *model, *prompt, *system, *backend;
    int n_predict, n_threads, n_ctx, device;
    int chat, think, interactive, print_ids, tokenize, pieces, verify, verbose, no_mmap;
    int have_temp, have_top_k, have_top_p, have_min_p, have_penalty;
    q3_sampler_params sp;
} options;

static void usage(FILE *f)
{
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
            "  --backend cpu|opencl compute backend (default cpu)\n"
            "  --device N           OpenCL device (default: the first GPU, else device 0)\n"
            "  --list-devices       print the OpenCL devices and exit\n"
            "  --verify             hash every tensor before running (q3check does the same)\n"
            "  --no-mmap            read the weights into memory (huge pages) instead of mapping the\n"
            "                       file: slower to load, faster to decode on few cores\n"
            "  -v                   print backend details\n"
            "exit status: 0 ok, 1 error (bad model, prompt too long, ...), 2 usage\n");
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

/* --list-devices: one line per OpenCL device, numbered as --device takes them. */
static int list_devices(void)
{
    int n = q3_cl_count_devices();
    if (n == 0) {
        fprintf(stderr, "q3run: no OpenCL device found (install an ICD such as pocl-opencl-icd, or set OCL_ICD_VENDORS)\n");
        return 1;
    }
    for (int i = 0; i < n; i++) {
        q3_cl_device d;
        q3_err err;
        if (q3_cl_pick_device(i, &d, &err)) continue;
        printf("%d: %s | %s | %s | %u compute units | %.1f GiB%s\n", i, d.name, d.platform_name, d.c_version,
               d.compute_units, (double)d.global_mem / (1u << 30), d.is_gpu ? " | GPU" : "");
    }
    return 0;
}

static int parse_args(int argc, char **argv, options *o)
{
    memset(o, 0, sizeof *o);
    o->n_predict = 256;
    o->think = 1;
    o->device = -1;
    o->backend = "cpu";
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
    if (strcmp(o->backend, "cpu") != 0 && strcmp(o->backend, "opencl") != 0) {
        fprintf(stderr, "q3run: unknown backend '%s' (available: cpu, opencl)\n", o->backend);
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
    q3_file file;
    q3_tokenizer *tk;
    q3_backend *be;
    q3_sampler sampler;
    float *logits;
    int logits_owned; /* malloc'd here, not the backend's */
    int pos;
    const q3_generation *gen;
    double prefill_ms, decode_ms;
    int n_prefill, n_decoded;
} session;

static int is_eos(const session *s, int32_t t)
{
    for (uint32_t i = 0; i < s->gen->n_eos; i++)
        if (s->gen->eos_token_ids[i] == t) return 1;
    return s->file.config.eos_token_id == t;
}

/* Feed tokens (prompt or turn) into the KV cache; logits of the last one. */
static int feed(session *s, const int32_t *ids, size_t n, q3_err *err)
{
    if (n == 0) return 0;
    if ((size_t)s->pos + n > (size_t)s->be->n_ctx) {
        q3_set_err(err, "%s: the prompt needs %zu positions but only %d of the context (--ctx %d) are left", s->o->model,
                   n, s->be->n_ctx - s->pos, s->be->n_ctx);
        return -1;
    }
    double t0 = now_ms();
    if (q3_backend_forward(s->be, ids, (int)n, s->pos, s->logits, 0, err)) return -1;
    s->prefill_ms += now_ms() - t0;
    s->n_prefill += (int)n;
    s->pos += (int)n;
    for (size_t i = 0; i < n; i++) q3_sampler_accept(&s->sampler, ids[i]);
    return 0;
}

/* Sample and stream until EOS, -n or the context is full. */
static int generate(session *s, q3_err *err)
{
    q3_utf8_stream stream = {0};
    char out[4096];
    int limit = s->o->n_predict;
    for (int i = 0; limit < 0 || i < limit; i++) {
        int32_t t = q3_sampler_sample(&s->sampler, s->logits);
        q3_sampler_accept(&s->sampler, t);
        if (is_eos(s, t)) break;
        if (s->o->print_ids) {
            printf("%s%d", s->n_decoded ? " " : "", t);
        } else {
            size_t len = 0;
            const char *b = q3_token_bytes(s->tk, t, &len);
            if (b && len < sizeof out / 3 - 8) fwrite(out, 1, q3_utf8_stream_push(&stream, b, len, out, sizeof out), stdout);
        }
        fflush(stdout);
        s->n_decoded++;
        if (s->pos >= s->be->n_ctx) break;
        double t0 = now_ms();
        if (q3_backend_forward(s->be, &t, 1, s->pos, s->logits, 0, err)) return -1;
        s->decode_ms += now_ms() - t0;
        s->pos++;
    }
    size_t n = q3_utf8_stream_flush(&stream, out, sizeof out);
    fwrite(out, 1, n, stdout);
    printf("\n");
    fflush(stdout);
    return 0;
}

static int encode(session *s, const char *text, size_t len, int32_t **ids, size_t *n, q3_err *err)
{
    return q3_tokenize(s->tk, text, len, ids, n, err);
}

static int render_and_encode(session *s, const q3_chat_message *msgs, size_t n_msgs, int32_t **ids, size_t *n,
                             const q3_tokdata *td, q3_err *err)
{
    char *text;
    size_t len;
    if (q3_chat_render(td->chat_template.text, td->chat_template.len, msgs, n_msgs, 1, s->o->think, &text, &len, err))
        return -1;
    int rc = encode(s, text, len, ids, n, err);
    free(text);
    return rc;
}

static int run_interactive(session *s, const q3_tokdata *td, q3_err *err)
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
        if (render_and_encode(s, msgs, n_msgs, &ids, &n, td, err)) return -1;
        /* Later turns continue the cache after the previous <|im_end|>. */
        int32_t nl_ids[1];
        if (!first) {
            int32_t *nl;
            size_t nn;
            if (encode(s, "\n", 1, &nl, &nn, err)) return -1;
            nl_ids[0] = nn ? nl[0] : 198;
            free(nl);
            int32_t end_id = q3_token_lookup(s->tk, "<|im_end|>", 10);
            int32_t seq[2] = {end_id, nl_ids[0]};
            if (feed(s, seq, 2, err)) {
                free(ids);
                return -1;
            }
        }
        int rc = feed(s, ids, n, err);
        free(ids);
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
    q3_tokdata td;
    memset(&td, 0, sizeof td);
    int rc = 1;
    char *prompt = NULL;
    size_t prompt_len = 0;
    int32_t *ids = NULL;
    size_t n_ids = 0;

    double t0 = now_ms();
    if (q3_open(&s.file, o.model,
                Q3_OPEN_VERIFY_META | (o.verify ? Q3_OPEN_VERIFY_WEIGHTS : 0) | (o.no_mmap ? Q3_OPEN_LOAD : 0), &err) ||
        q3_read_tokenizer(&s.file, &td, &err) || !(s.tk = q3_tokenizer_create(&td, &err)))
        goto fail;

    if (o.prompt && strcmp(o.prompt, "-") != 0) {
        prompt_len = strlen(o.prompt);
        prompt = malloc(prompt_len + 1);
        if (prompt) memcpy(prompt, o.prompt, prompt_len + 1);
    } else if (!o.interactive) {
        prompt = read_stdin(&prompt_len);
    }
    if (!prompt && !o.interactive) {
        q3_set_err(&err, "q3run: cannot read the prompt");
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

    q3_backend_opts bo = {.n_threads = o.n_threads, .n_ctx = o.n_ctx, .device = o.device, .verbose = o.verbose};
    s.be = !strcmp(o.backend, "opencl") ? q3_backend_create("opencl", &s.file, &bo, &err)
                                         : q3_backend_create("cpu", &s.file, &bo, &err);
    if (!s.be) goto fail;
    double load_ms = now_ms() - t0;
    s.gen = &s.file.generation;
    q3_sampler_params sp = {s.gen->do_sample ? s.gen->temperature : 0.0f, s.gen->top_k, s.gen->top_p, s.gen->min_p,
                            s.gen->repetition_penalty, o.sp.seed};
    if (o.have_temp) sp.temperature = o.sp.temperature;
    if (o.have_top_k) sp.top_k = o.sp.top_k;
    if (o.have_top_p) sp.top_p = o.sp.top_p;
    if (o.have_min_p) sp.min_p = o.sp.min_p;
    if (o.have_penalty) sp.repetition_penalty = o.sp.repetition_penalty;
    s.logits = q3_backend_logits(s.be, s.file.config.vocab_size, &s.logits_owned);
    if (!s.logits || q3_sampler_init(&s.sampler, &sp, s.file.config.vocab_size)) {
        q3_set_err(&err, "q3run: out of memory");
        goto fail;
    }

    if (o.interactive) {
        if (run_interactive(&s, &td, &err)) goto fail;
    } else {
        if (o.chat) {
            q3_chat_message msgs[2];
            size_t n_msgs = 0;
            if (o.system) msgs[n_msgs++] = (q3_chat_message){"system", o.system};
            msgs[n_msgs++] = (q3_chat_message){"user", prompt};
            if (render_and_encode(&s, msgs, n_msgs, &ids, &n_ids, &td, &err)) goto fail;
        } else if (encode(&s, prompt, prompt_len, &ids, &n_ids, &err)) {
            goto fail;
        }
        if (n_ids == 0) {
            /* An empty prompt starts from BOS when the model has one. */
            int32_t bos = s.gen->bos_token_id >= 0 ? s.gen->bos_token_id : s.file.config.bos_token_id;
            if (bos < 0) {
                q3_set_err(&err, "%s: the prompt is empty and the model has no BOS token to start from", o.model);
                goto fail;
            }
            free(ids);
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
    free(ids);
    free(prompt);
    if (s.logits_owned) free(s.logits);
    q3_sampler_free(&s.sampler);
    if (s.be) q3_backend_destroy(s.be);
    q3_tokenizer_free(s.tk);
    q3_tokdata_free(&td);
    q3_close(&s.file);
    return q3_finish_stdout("q3run", rc);
}
