/* fuzz_hf_tokenizer.c - tokenizer.json loading (q3_hf_tokenizer_load): the input is
 * tokenizer.json, optionally followed by a NUL byte and tokenizer_config.json
 * (default "{}"). The loader reads a directory, so both go to a private temp dir.
 * Records the converter accepts go on to the runtime tokenizer, which must build
 * from them or refuse in one line, and then encode and decode a fixed text. */
#include <unistd.h>
#include "fuzz_util.h"
#include "../convert/hf_tokenizer.h"
#include "../runtime/tokenizer.h"

static char htf_dir[64];

static void htf_cleanup(void)
{
    char p[128];
    snprintf(p, sizeof p, "%s/tokenizer.json", htf_dir);
    unlink(p);
    snprintf(p, sizeof p, "%s/tokenizer_config.json", htf_dir);
    unlink(p);
    rmdir(htf_dir);
}

static void htf_write(const char *name, const char *text, size_t len)
{
    char p[128];
    snprintf(p, sizeof p, "%s/%s", htf_dir, name);
    FILE *f = fopen(p, "wb");
    FUZZ_ASSERT(f != NULL, "cannot write %s", p);
    FUZZ_ASSERT(fwrite(text, 1, len, f) == len && fclose(f) == 0, "cannot write %s", p);
}

int fuzz_hf_tokenizer(const uint8_t *data, size_t size)
{
    if (!htf_dir[0]) {
        snprintf(htf_dir, sizeof htf_dir, "/tmp/q3_fuzz_tok_XXXXXX");
        FUZZ_ASSERT(mkdtemp(htf_dir) != NULL, "mkdtemp");
        atexit(htf_cleanup);
    }
    const char *tok, *cfg;
    size_t tok_len, cfg_len;
    fuzz_split(data, size, &tok, &tok_len, &cfg, &cfg_len);
    htf_write("tokenizer.json", tok, tok_len);
    if (cfg)
        htf_write("tokenizer_config.json", cfg, cfg_len);
    else
        htf_write("tokenizer_config.json", "{}", 2);

    q3_tokdata td;
    q3_err err = {{0}};
    if (q3_hf_tokenizer_load(htf_dir, &td, &err)) {
        fuzz_check_err(&err, htf_dir);
        return 0;
    }
    /* What the converter stores, the reader parses back to the same records. */
    uint8_t *blob;
    size_t blob_size;
    FUZZ_ASSERT(q3_tokdata_serialize(&td, &blob, &blob_size, &err) == 0, "%s", err.msg);
    q3_tokdata back;
    FUZZ_ASSERT(q3_tokdata_parse(blob, blob_size, &back, "rec", &err) == 0, "reader refuses the records: %s", err.msg);
    FUZZ_ASSERT(back.n_vocab == td.n_vocab && back.n_merges == td.n_merges && back.n_added == td.n_added,
                "counts changed");
    for (uint32_t i = 0; i < td.n_merges; i++)
        FUZZ_ASSERT(td.merges[i].left < (1u << 31) && td.merges[i].right < (1u << 31) &&
                    td.merges[i].result < (1u << 31), "merge %u ids", i);
    q3_tokdata_free(&back);

    q3_tokenizer *tk = q3_tokenizer_create(&td, &err);
    if (!tk) {
        fuzz_check_err(&err, "tokenizer");
    } else {
        static const char text[] = "Hello, world! <|im_start|>user\n  123 caf\xc3\xa9 \xff\xfe<|im_end|>\n";
        int32_t *ids;
        size_t n_ids;
        FUZZ_ASSERT(q3_tokenize(tk, text, sizeof text - 1, &ids, &n_ids, &err) == 0, "q3_tokenize: %s", err.msg);
        uint32_t vsize = q3_tokenizer_size(tk);
        for (size_t i = 0; i < n_ids; i++) FUZZ_ASSERT(ids[i] >= 0 && (uint32_t)ids[i] < vsize, "id %d", ids[i]);
        char *dec;
        size_t dec_len;
        /* A vocabulary without every byte may leave some text unencodable, but never crash. */
        if (q3_detokenize(tk, ids, n_ids, 0, &dec, &dec_len, &err) == 0) free(dec);
        else fuzz_check_err(&err, "tokenizer");
        free(ids);
        q3_tokenizer_free(tk);
    }
    q3_tokdata_free(&td);
    return 0;
}

FUZZ_ENTRY(fuzz_hf_tokenizer)
