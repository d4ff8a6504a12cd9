/* fuzz_tokenizer.c - q3_tokenize on arbitrary bytes with the demo-tiny tokenizer
 * ($BUILD/fixtures/demo-tiny, built once), then decoding back. Checks: every id
 * is known, the token bytes concatenate to the input for ASCII text (byte-level
 * BPE loses nothing and NFC does not change ASCII), q3_detokenize agrees with the
 * token bytes (invalid UTF-8 as U+FFFD), and the streaming decoder prints only valid UTF-8. */
#include "fuzz_util.h"
#include "../convert/hf_tokenizer.h"
#include "../runtime/tokenizer.h"
#include "../runtime/utf8.h"

static q3_tokenizer *tkf_tok;

static void tkf_free(void) { q3_tokenizer_free(tkf_tok); }

static void tkf_init(void)
{
    char dir[512];
    snprintf(dir, sizeof dir, "%s/fixtures/demo-tiny", fuzz_build_dir());
    q3_tokdata td;
    q3_err err = {{0}};
    FUZZ_ASSERT(q3_hf_tokenizer_load(dir, &td, &err) == 0, "cannot load the demo tokenizer (make fixtures): %s",
                err.msg);
    tkf_tok = q3_tokenizer_create(&td, &err);
    FUZZ_ASSERT(tkf_tok != NULL, "%s", err.msg);
    q3_tokdata_free(&td);
    atexit(tkf_free);
}

static int tkf_valid_utf8(const char *s, size_t n)
{
    for (size_t i = 0; i < n;) {
        int k = q3_utf8_seq((const uint8_t *)s + i, n - i);
        if (k <= 0) return 0;
        i += (size_t)k;
    }
    return 1;
}

int fuzz_tokenizer(const uint8_t *data, size_t size)
{
    if (!tkf_tok) tkf_init();
    int32_t *ids = NULL;
    size_t n_ids = 0;
    q3_err err = {{0}};
    FUZZ_ASSERT(q3_tokenize(tkf_tok, (const char *)data, size, &ids, &n_ids, &err) == 0, "q3_tokenize: %s", err.msg);
    FUZZ_ASSERT(size == 0 || n_ids > 0, "no tokens for %zu bytes", size);

    int ascii = 1;
    for (size_t i = 0; i < size; i++) ascii &= data[i] < 0x80;
    char *cat = malloc(size * 4 + 64), *streamed = malloc(size * 4 + 64 + 8 * n_ids);
    FUZZ_ASSERT(cat && streamed, "out of memory");
    size_t cat_len = 0, st_len = 0;
    q3_utf8_stream us = {{0}, 0};
    uint32_t vsize = q3_tokenizer_size(tkf_tok);
    for (size_t i = 0; i < n_ids; i++) {
        FUZZ_ASSERT(ids[i] >= 0 && (uint32_t)ids[i] < vsize, "id %d outside the vocabulary", ids[i]);
        size_t len;
        const char *b = q3_token_bytes(tkf_tok, ids[i], &len);
        FUZZ_ASSERT(b != NULL && len > 0, "token %d has no bytes", ids[i]);
        FUZZ_ASSERT(cat_len + len <= size * 4 + 64, "tokens hold more bytes than plausible");
        memcpy(cat + cat_len, b, len);
        cat_len += len;
        st_len += q3_utf8_stream_push(&us, b, len, streamed + st_len, len + 8);
    }
    st_len += q3_utf8_stream_flush(&us, streamed + st_len, 8 + 8);
    FUZZ_ASSERT(tkf_valid_utf8(streamed, st_len), "streaming decoder printed invalid UTF-8");
    if (ascii) {
        FUZZ_ASSERT(cat_len == size && memcmp(cat, data, size) == 0, "ASCII text does not round-trip");
        FUZZ_ASSERT(st_len == size && memcmp(streamed, data, size) == 0, "ASCII text does not stream back");
    }
    char *dec;
    size_t dec_len;
    FUZZ_ASSERT(q3_detokenize(tkf_tok, ids, n_ids, 0, &dec, &dec_len, &err) == 0, "q3_detokenize: %s", err.msg);
    /* Decoding gives the token bytes with each invalid UTF-8 subpart as U+FFFD, as HF does. */
    char *lossy = malloc(3 * cat_len + 1);
    FUZZ_ASSERT(lossy != NULL, "out of memory");
    size_t lossy_len = q3_utf8_lossy((const uint8_t *)cat, cat_len, lossy);
    FUZZ_ASSERT(dec_len == lossy_len && memcmp(dec, lossy, lossy_len) == 0 && dec[dec_len] == 0,
                "q3_detokenize differs from the token bytes");
    FUZZ_ASSERT(tkf_valid_utf8(dec, dec_len), "q3_detokenize gave invalid UTF-8");
    free(lossy);
    free(dec);
    free(cat);
    free(streamed);
    free(ids);
    return 0;
}

FUZZ_ENTRY(fuzz_tokenizer)
