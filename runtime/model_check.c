/* model_check.c - the load-time checks of a model, shared by q3run, q3check and q3convert. */
#include <stdlib.h>
#include <string.h>
#include "chat_template.h"
#include "model_check.h"
#include "utf8.h"
#include "weights.h"

/* Offset of the first byte of text that is not valid UTF-8, or -1. */
static long invalid_utf8_at(const char *text, uint32_t len)
{
    for (uint32_t i = 0; i < len;) {
        int k = q3_utf8_seq((const uint8_t *)text + i, len - i);
        if (k <= 0) return (long)i;
        i += (uint32_t)k;
    }
    return -1;
}

/* tokenizer.json is JSON, which is UTF-8 (RFC 8259): HuggingFace's own loader refuses
 * a file with invalid bytes in a token, and a token's text is printed as it is. */
static int check_utf8(const q3_tokdata *td, const char *path, q3_err *err)
{
    for (uint32_t i = 0; i < td->n_vocab + td->n_added; i++) {
        int added = i >= td->n_vocab;
        uint32_t id = added ? td->added[i - td->n_vocab].id : td->vocab[i].id;
        const char *text = added ? td->added[i - td->n_vocab].text : td->vocab[i].text;
        uint32_t len = added ? td->added[i - td->n_vocab].len : td->vocab[i].len;
        long at = invalid_utf8_at(text, len);
        if (at >= 0) {
            q3_set_err(err, "%s: tokenizer: %s token %u is not valid UTF-8 (byte %ld of %u)", path,
                       added ? "added" : "vocab", id, at, len);
            return -1;
        }
    }
    return 0;
}

int q3_check_tokenizer(const q3_tokdata *td, uint32_t vocab_size, const char *path, q3_tokenizer **tk, q3_err *err)
{
    if (tk) *tk = NULL;
    if (check_utf8(td, path, err)) return -1;
    q3_tokenizer *t = q3_tokenizer_create(td, err);
    if (!t) return q3_err_name_file(err, path);
    /* The embedding has vocab_size rows: a token beyond them could be encoded but never run. */
    uint32_t size = q3_tokenizer_size(t);
    if (size > vocab_size) {
        q3_set_err(err, "%s: tokenizer: token id %u is not below vocab_size %u (the embedding's rows)", path, size - 1,
                   vocab_size);
        q3_tokenizer_free(t);
        return -1;
    }
    if (tk)
        *tk = t;
    else
        q3_tokenizer_free(t);
    return 0;
}

int q3_check_chat_template(const q3_tokdata *td, const char *path, q3_err *err)
{
    if (!td->chat_template.len) return 0;
    /* A one-turn render runs the same recognition --chat and -i run. */
    static const q3_chat_message probe[] = {{"system", "s"}, {"user", "u"}};
    char *text;
    size_t len;
    if (q3_chat_render(td->chat_template.text, td->chat_template.len, probe, 2, 1, 1, &text, &len, err))
        return q3_err_name_file(err, path);
    free(text);
    return 0;
}

int q3_model_check(const q3_file *f, q3_tokdata *td, q3_tokenizer **tk, q3_err *err)
{
    q3_weights w;
    memset(td, 0, sizeof *td);
    *tk = NULL;
    if (q3_weights_bind(&w, f, err)) return -1;
    q3_weights_free(&w);
    if (q3_read_tokenizer(f, td, err)) return -1;
    if (q3_check_tokenizer(td, f->config.vocab_size, f->path, tk, err) || q3_check_chat_template(td, f->path, err)) {
        q3_tokenizer_free(*tk);
        *tk = NULL;
        q3_tokdata_free(td);
        return -1;
    }
    return 0;
}
