/* q3_tokdata.c - the TOKENIZER section's records (spec.md 6), before compression. */
#include <stdlib.h>
#include <string.h>
#include "q3_format.h"

#define TK_MAGIC 0x4B543351u /* "Q3TK" */
#define TK_VERSION 1u
#define TK_HEADER 24u

typedef struct {
    uint8_t *p;
    size_t len, cap;
    int failed;
} buf;

static void put(buf *b, const void *src, size_t n)
{
    if (b->failed) return;
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->len + n) cap *= 2;
        uint8_t *p = realloc(b->p, cap);
        if (!p) {
            b->failed = 1;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, src, n);
    b->len += n;
}
static void put32(buf *b, uint32_t v)
{
    uint8_t le[4];
    q3_wr32(le, v);
    put(b, le, 4);
}
static void put_str(buf *b, uint32_t len, const char *text)
{
    put32(b, len);
    if (len) put(b, text, len);
}

int q3_tokdata_serialize(const q3_tokdata *td, uint8_t **out, size_t *out_size, q3_err *err)
{
    buf b = {0};
    put32(&b, TK_MAGIC);
    put32(&b, TK_VERSION);
    put32(&b, td->n_vocab);
    put32(&b, td->n_merges);
    put32(&b, td->n_added);
    put32(&b, td->add_bos_token);
    for (uint32_t i = 0; i < td->n_vocab; i++) {
        put32(&b, td->vocab[i].id);
        put_str(&b, td->vocab[i].len, td->vocab[i].text);
    }
    for (uint32_t i = 0; i < td->n_merges; i++) {
        put32(&b, td->merges[i].left);
        put32(&b, td->merges[i].right);
        put32(&b, td->merges[i].result);
    }
    for (uint32_t i = 0; i < td->n_added; i++) {
        put32(&b, td->added[i].id);
        put32(&b, td->added[i].flags);
        put_str(&b, td->added[i].len, td->added[i].text);
    }
    const q3_str *strs[] = {&td->model_json, &td->normalizer_json, &td->pretok_json, &td->decoder_json,
                            &td->chat_template, &td->bos_token, &td->eos_token, &td->pad_token,
                            &td->unk_token};
    for (size_t i = 0; i < sizeof strs / sizeof strs[0]; i++) put_str(&b, strs[i]->len, strs[i]->text);
    if (b.failed) {
        free(b.p);
        q3_set_err(err, "tokenizer: out of memory serializing %zu bytes", b.cap);
        return -1;
    }
    *out = b.p;
    *out_size = b.len;
    return 0;
}

typedef struct {
    const uint8_t *p;
    size_t size, off;
    const char *path;
    q3_err *err;
} cursor;

static int take32(cursor *c, uint32_t *v, const char *what)
{
    if (c->size - c->off < 4) {
        q3_set_err(c->err, "%s: tokenizer section: %s at offset %zu runs past its end (%zu bytes)",
                   c->path, what, c->off, c->size);
        return -1;
    }
    *v = q3_rd32(c->p + c->off);
    c->off += 4;
    return 0;
}
static int take_str(cursor *c, uint32_t *len, const char **text, const char *what)
{
    if (take32(c, len, what)) return -1;
    if (c->size - c->off < *len) {
        q3_set_err(c->err, "%s: tokenizer section: %s of %u bytes at offset %zu runs past its end (%zu bytes)",
                   c->path, what, *len, c->off, c->size);
        return -1;
    }
    *text = (const char *)c->p + c->off;
    c->off += *len;
    return 0;
}
static int check_id(cursor *c, uint32_t id, const char *what, uint32_t index)
{
    if (id >= (1u << 31)) {
        q3_set_err(c->err, "%s: tokenizer section: %s %u has id %u, expected below 2^31", c->path, what, index, id);
        return -1;
    }
    return 0;
}

int q3_tokdata_parse(uint8_t *blob, size_t size, q3_tokdata *td, const char *path, q3_err *err)
{
    memset(td, 0, sizeof *td);
    td->blob = blob;
    td->blob_size = size;
    cursor c = {blob, size, 0, path, err};
    uint32_t magic, version;
    if (take32(&c, &magic, "magic") || take32(&c, &version, "version")) goto fail;
    if (magic != TK_MAGIC || version != TK_VERSION) {
        q3_set_err(err, "%s: tokenizer section: magic/version 0x%08x/%u, expected \"Q3TK\"/1", path, magic, version);
        goto fail;
    }
    if (take32(&c, &td->n_vocab, "n_vocab") || take32(&c, &td->n_merges, "n_merges") ||
        take32(&c, &td->n_added, "n_added") || take32(&c, &td->add_bos_token, "add_bos_token"))
        goto fail;
    /* Each record takes at least 8 or 12 bytes: bound the counts before allocating. */
    if ((uint64_t)td->n_vocab * 8 > size || (uint64_t)td->n_merges * 12 > size || (uint64_t)td->n_added * 12 > size) {
        q3_set_err(err, "%s: tokenizer section: counts (vocab %u, merges %u, added %u) exceed its %zu bytes",
                   path, td->n_vocab, td->n_merges, td->n_added, size);
        goto fail;
    }
    td->vocab = calloc(td->n_vocab ? td->n_vocab : 1, sizeof *td->vocab);
    td->merges = calloc(td->n_merges ? td->n_merges : 1, sizeof *td->merges);
    td->added = calloc(td->n_added ? td->n_added : 1, sizeof *td->added);
    if (!td->vocab || !td->merges || !td->added) {
        q3_set_err(err, "%s: tokenizer section: out of memory", path);
        goto fail;
    }
    for (uint32_t i = 0; i < td->n_vocab; i++) {
        q3_tok_entry *e = &td->vocab[i];
        if (take32(&c, &e->id, "vocab id") || take_str(&c, &e->len, &e->text, "vocab text") ||
            check_id(&c, e->id, "vocab entry", i))
            goto fail;
    }
    for (uint32_t i = 0; i < td->n_merges; i++) {
        q3_tok_merge *m = &td->merges[i];
        if (take32(&c, &m->left, "merge") || take32(&c, &m->right, "merge") || take32(&c, &m->result, "merge") ||
            check_id(&c, m->left, "merge", i) || check_id(&c, m->right, "merge", i) ||
            check_id(&c, m->result, "merge", i))
            goto fail;
    }
    for (uint32_t i = 0; i < td->n_added; i++) {
        q3_tok_added *a = &td->added[i];
        if (take32(&c, &a->id, "added token id") || take32(&c, &a->flags, "added token flags") ||
            take_str(&c, &a->len, &a->text, "added token text") || check_id(&c, a->id, "added token", i))
            goto fail;
    }
    q3_str *strs[] = {&td->model_json, &td->normalizer_json, &td->pretok_json, &td->decoder_json,
                      &td->chat_template, &td->bos_token, &td->eos_token, &td->pad_token, &td->unk_token};
    static const char *names[] = {"model json", "normalizer json", "pre_tokenizer json", "decoder json",
                                  "chat template", "bos_token", "eos_token", "pad_token", "unk_token"};
    for (size_t i = 0; i < sizeof strs / sizeof strs[0]; i++)
        if (take_str(&c, &strs[i]->len, &strs[i]->text, names[i])) goto fail;
    if (c.off != size) {
        q3_set_err(err, "%s: tokenizer section: %zu bytes left over after the last record at offset %zu",
                   path, size - c.off, c.off);
        goto fail;
    }
    return 0;
fail:
    q3_tokdata_free(td);
    return -1;
}

void q3_tokdata_free(q3_tokdata *td)
{
    if (!td) return;
    free(td->vocab);
    free(td->merges);
    free(td->added);
    free(td->blob);
    memset(td, 0, sizeof *td);
}
