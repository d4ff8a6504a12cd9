/* simple.c - the smallest complete program on the q3 library: open a model, feed a
 * prompt, decode greedily, stream the text. It prints exactly what
 * `q3run MODEL.q3 "PROMPT" -n N --temp 0` prints on stdout.
 * Build: cc simple.c $(pkg-config --cflags --libs q3) -o simple
 * usage: simple MODEL.q3 "PROMPT" [-n N] */
#include <q3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(int argc, char **argv)
{
    if (argc != 3 && !(argc == 5 && strcmp(argv[3], "-n") == 0)) {
        fprintf(stderr, "usage: simple MODEL.q3 \"PROMPT\" [-n N]\n");
        return 2;
    }
    int n_predict = argc == 5 ? atoi(argv[4]) : 256;
    q3_err err;
    q3_model *m = NULL;
    q3_context *ctx = NULL;
    q3_sampler *smp = NULL;
    const q3_tokenizer *tk;
    int32_t *ids = NULL, bos;
    size_t n = 0;
    if (q3_model_open(argv[1], NULL, &m, &err) || q3_model_tokenizer(m, &tk, &err) ||
        q3_tokenize(tk, argv[2], strlen(argv[2]), &ids, &n, &err) || q3_context_create(m, NULL, &ctx, &err))
        goto fail;
    /* Greedy, with the model's own repetition penalty, as q3run --temp 0. */
    q3_sampler_params sp = q3_sampler_defaults(m);
    sp.temperature = 0;
    if (q3_sampler_create(m, &sp, &smp, &err)) goto fail;
    bos = q3_token_bos(m); /* an empty prompt starts from BOS */
    const int32_t *prompt = n ? ids : &bos;
    size_t n_prompt = n ? n : 1;
    if (q3_prefill(ctx, prompt, n_prompt, &err)) goto fail;
    for (size_t i = 0; i < n_prompt; i++) q3_sampler_accept(smp, prompt[i]);

    q3_utf8_stream stream = {0};
    char out[4096];
    for (int i = 0; i < n_predict; i++) {
        int32_t t = q3_sampler_sample(smp, q3_logits(ctx));
        q3_sampler_accept(smp, t);
        if (q3_token_is_eos(m, t)) break;
        size_t len;
        const char *bytes = q3_token_bytes(tk, t, &len);
        if (bytes) fwrite(out, 1, q3_utf8_stream_push(&stream, bytes, len, out, sizeof out), stdout);
        fflush(stdout);
        if (q3_context_used(ctx) == q3_context_size(ctx)) break; /* the context is full */
        if (q3_decode(ctx, t, &err)) goto fail;
    }
    fwrite(out, 1, q3_utf8_stream_flush(&stream, out, sizeof out), stdout);
    printf("\n");
    q3_sampler_destroy(smp);
    q3_context_free(ctx);
    q3_free(ids);
    q3_model_close(m);
    return 0;
fail:
    fprintf(stderr, "%s\n", err.msg);
    return 1;
}
