/* chat.c - a terminal chat on the q3 library: each line of stdin is a user turn,
 * rendered with the model's chat template and appended to one KV cache; the reply
 * is sampled with the model's generation defaults (seeded) and streamed. It prints
 * what `q3run MODEL.q3 -i -n N` prints for the same lines.
 * Build: cc chat.c $(pkg-config --cflags --libs q3) -o chat
 * usage: chat MODEL.q3 [-n N]   (N: the most tokens of a reply, default 256) */
#include <q3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Samples and streams one reply; returns Q3_OK or the error of the call that failed. */
static int reply(q3_model *m, const q3_tokenizer *tk, q3_context *ctx, q3_sampler *smp, int n_max, q3_err *err)
{
    q3_utf8_stream stream = {0};
    char out[4096];
    int rc = Q3_OK;
    for (int i = 0; i < n_max && rc == Q3_OK; i++) {
        int32_t t = q3_sampler_sample(smp, q3_logits(ctx));
        q3_sampler_accept(smp, t);
        if (q3_token_is_eos(m, t)) break;
        size_t len;
        const char *bytes = q3_token_bytes(tk, t, &len);
        if (bytes) fwrite(out, 1, q3_utf8_stream_push(&stream, bytes, len, out, sizeof out), stdout);
        fflush(stdout);
        if (q3_context_used(ctx) == q3_context_size(ctx)) break;
        rc = q3_decode(ctx, t, err);
    }
    fwrite(out, 1, q3_utf8_stream_flush(&stream, out, sizeof out), stdout);
    printf("\n");
    fflush(stdout);
    return rc;
}

/* Appends tokens to the cache, and tells the sampler (for its repetition penalty). */
static int feed(q3_context *ctx, q3_sampler *smp, const int32_t *ids, size_t n, q3_err *err)
{
    for (size_t i = 0; i < n; i++) q3_sampler_accept(smp, ids[i]);
    return q3_prefill(ctx, ids, n, err);
}

int main(int argc, char **argv)
{
    if (argc != 2 && !(argc == 4 && strcmp(argv[2], "-n") == 0)) {
        fprintf(stderr, "usage: chat MODEL.q3 [-n N]\n");
        return 2;
    }
    int n_max = argc == 4 ? atoi(argv[3]) : 256;
    q3_err err;
    q3_model *m = NULL;
    q3_context *ctx = NULL;
    q3_sampler *smp = NULL;
    const q3_tokenizer *tk;
    if (q3_model_open(argv[1], NULL, &m, &err) || q3_model_tokenizer(m, &tk, &err) ||
        q3_context_create(m, NULL, &ctx, &err) || q3_sampler_create(m, NULL, &smp, &err))
        goto fail;
    char line[8192];
    for (int turn = 0;; turn++) {
        fprintf(stderr, "> ");
        if (!fgets(line, sizeof line, stdin)) break;
        line[strcspn(line, "\n")] = 0;
        if (!line[0]) {
            turn--;
            continue;
        }
        q3_chat_message msg = {"user", line};
        char *text = NULL;
        size_t len;
        int32_t *ids = NULL, *end = NULL;
        size_t n = 0, n_end = 0;
        /* From the second turn on, the previous reply's turn is closed first. */
        int rc = q3_chat_apply(m, &msg, 1, 1, 1, &text, &len, &err);
        if (!rc) rc = q3_tokenize(tk, text, len, &ids, &n, &err);
        if (!rc && turn > 0) rc = q3_chat_end_turn(m, &end, &n_end, &err);
        if (!rc && turn > 0) rc = feed(ctx, smp, end, n_end, &err);
        if (!rc) rc = feed(ctx, smp, ids, n, &err);
        if (!rc) rc = reply(m, tk, ctx, smp, n_max, &err);
        q3_free(text);
        q3_free(ids);
        q3_free(end);
        if (rc) goto fail;
    }
    q3_sampler_destroy(smp);
    q3_context_free(ctx);
    q3_model_close(m);
    return 0;
fail:
    fprintf(stderr, "%s\n", err.msg);
    return 1;
}
