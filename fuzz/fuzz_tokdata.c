/* fuzz_tokdata.c - the TOKENIZER section as q3run meets it in a hostile file: the
 * inflated records (q3_tokdata_parse), the runtime tokenizer built from them
 * (q3_tokenizer_create interprets the normalizer, pre-tokenizer and decoder JSON
 * and the regex they carry), then a fixed text encoded and decoded. */
#include "fuzz_util.h"
#include "../runtime/tokenizer.h"

int fuzz_tokdata(const uint8_t *data, size_t size)
{
    uint8_t *blob = malloc(size ? size : 1);
    FUZZ_ASSERT(blob != NULL, "out of memory");
    if (size) memcpy(blob, data, size);
    q3_tokdata td;
    q3_err err = {{0}};
    if (q3_tokdata_parse(blob, size, &td, "fuzz.q3", &err)) { /* takes blob either way */
        fuzz_check_err(&err, "fuzz.q3");
        return 0;
    }
    q3_tokenizer *tk = q3_tokenizer_create(&td, &err);
    if (!tk) {
        fuzz_check_err(&err, "tokenizer");
    } else {
        static const char text[] = "Hello, world! <|im_start|>user\n  123 caf\xc3\xa9 \xff\xfe<|im_end|>\n";
        int32_t *ids;
        size_t n_ids;
        if (q3_tokenize(tk, text, sizeof text - 1, &ids, &n_ids, &err) == 0) {
            uint32_t vsize = q3_tokenizer_size(tk);
            for (size_t i = 0; i < n_ids; i++) FUZZ_ASSERT(ids[i] >= 0 && (uint32_t)ids[i] < vsize, "id %d", ids[i]);
            char *dec;
            size_t dec_len;
            if (q3_detokenize(tk, ids, n_ids, 0, &dec, &dec_len, &err) == 0) free(dec);
            else fuzz_check_err(&err, "tokenizer");
            free(ids);
        } else {
            fuzz_check_err(&err, "tokenizer"); /* e.g. a regex hitting a PCRE2 limit */
        }
        q3_tokenizer_free(tk);
    }
    q3_tokdata_free(&td);
    return 0;
}

FUZZ_ENTRY(fuzz_tokdata)
