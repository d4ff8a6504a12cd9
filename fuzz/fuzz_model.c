/* fuzz_model.c - what q3run does with a .q3 file, minus the command line: open it
 * (no checksums: a forger recomputes them), build the tokenizer from its section,
 * render a chat turn with its template, bind the weights on the CPU backend (1
 * thread, 16 positions), run the prompt and two decode steps. The seeds are tiny
 * models, so each run is cheap. */
#include "fuzz_util.h"
#include "../runtime/backend.h"
#include "../runtime/chat_template.h"
#include "../runtime/tokenizer.h"

#define MF_CTX 16

static void mf_run(const q3_file *f, q3_tokenizer *tk, const q3_tokdata *td)
{
    q3_err err = {{0}};
    q3_backend_opts bo = {.n_threads = 1, .n_ctx = MF_CTX, .device = -1, .verbose = 0};
    q3_backend *be = q3_backend_create("cpu", f, &bo, &err);
    if (!be) {
        fuzz_check_err(&err, "fuzz.q3");
        return;
    }
    q3_chat_message msg = {"user", "ab c!"};
    char *text = NULL;
    size_t len = 0;
    if (q3_chat_render(td->chat_template.text, td->chat_template.len, &msg, 1, 1, 0, &text, &len, &err)) {
        fuzz_check_err(&err, "chat template");
        text = strdup("abc de a!");
        FUZZ_ASSERT(text != NULL, "out of memory");
        len = strlen(text);
    }
    int32_t *ids = NULL;
    size_t n = 0;
    if (q3_tokenize(tk, text, len, &ids, &n, &err)) {
        fuzz_check_err(&err, "tokenizer");
        n = 0;
    }
    free(text);
    if (n > MF_CTX - 2) n = MF_CTX - 2;
    uint32_t V = f->config.vocab_size;
    float *logits = malloc((size_t)V * sizeof *logits);
    FUZZ_ASSERT(logits != NULL, "out of memory");
    int pos = 0;
    /* Ids the tokenizer gives may lie beyond the embedding (a hostile file): refused, not read. */
    if (n && q3_backend_forward(be, ids, (int)n, 0, logits, 0, &err) == 0) {
        pos = (int)n;
        for (int step = 0; step < 2; step++) {
            int32_t best = 0;
            for (uint32_t v = 1; v < V; v++) best = logits[v] > logits[best] ? (int32_t)v : best;
            if (q3_backend_forward(be, &best, 1, pos, logits, 0, &err)) {
                fuzz_check_err(&err, "fuzz.q3");
                break;
            }
            pos++;
        }
    } else if (n) {
        fuzz_check_err(&err, "fuzz.q3");
    }
    /* Past the context: refused. */
    int32_t zero = 0;
    FUZZ_ASSERT(q3_backend_forward(be, &zero, 1, MF_CTX, logits, 0, &err) != 0, "forward past --ctx accepted");
    free(logits);
    free(ids);
    q3_backend_destroy(be);
}

int fuzz_model(const uint8_t *data, size_t size)
{
    q3_file f;
    q3_err err = {{0}};
    if (q3_open_mem(&f, data, size, "fuzz.q3", 0, &err)) return 0; /* the reader has its own target */
    /* Bigger models than the seeds' only make the run slow, not more interesting. */
    const q3_config *c = &f.config;
    if ((uint64_t)c->vocab_size * c->hidden_size > (1u << 20) || c->num_layers > 4 ||
        (uint64_t)c->intermediate_size * c->hidden_size > (1u << 20) || (uint64_t)c->num_heads * c->head_dim > 4096) {
        q3_close(&f);
        return 0;
    }
    q3_tokdata td;
    if (q3_read_tokenizer(&f, &td, &err)) {
        q3_close(&f);
        return 0;
    }
    q3_tokenizer *tk = q3_tokenizer_create(&td, &err);
    if (tk) {
        mf_run(&f, tk, &td);
        q3_tokenizer_free(tk);
    }
    q3_tokdata_free(&td);
    q3_close(&f);
    return 0;
}

FUZZ_ENTRY(fuzz_model)
