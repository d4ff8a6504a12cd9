/* fuzz_q3.c - the .q3 reader on arbitrary bytes: q3_open_mem with every flag
 * combination, then everything a tool does with an opened file (checksums,
 * tokenizer section, a walk over every tensor's data). */
#include "fuzz_util.h"

#define Q3_FUZZ_NAME "fuzz.q3"

/* An opened file must only point inside the input. */
static void q3f_walk(const q3_file *f, const uint8_t *data, size_t size)
{
    q3_err err = {{0}};
    if (q3_verify_header(f, &err)) fuzz_check_err(&err, Q3_FUZZ_NAME);
    for (uint32_t k = 1; k <= Q3_SEC_KIND_MAX; k++) {
        const q3_section *s = q3_get_section(f, k);
        FUZZ_ASSERT(s && s->offset <= size && size - s->offset >= s->size, "section %u outside the input", k);
        if (q3_verify_section(f, k, &err)) fuzz_check_err(&err, Q3_FUZZ_NAME);
    }
    for (uint32_t i = 0; i < f->n_tensors; i++) {
        const q3_tensor *t = &f->tensors[i];
        FUZZ_ASSERT(t->offset <= size && size - t->offset >= t->size, "tensor '%s' data outside the input", t->name);
        FUZZ_ASSERT((const uint8_t *)t->data == data + t->offset, "tensor '%s' data pointer", t->name);
        FUZZ_ASSERT(memchr(t->name, 0, sizeof t->name) != NULL, "tensor name not terminated");
        FUZZ_ASSERT(q3_find_tensor(f, t->name) == t, "q3_find_tensor('%s')", t->name);
        /* The shape must not claim more elements than the stored bytes hold. */
        uint64_t elems;
        FUZZ_ASSERT(!__builtin_mul_overflow(t->shape[0], t->shape[1], &elems) && elems <= t->size / 2,
                    "tensor '%s' shape [%llu, %llu] needs more than its %llu bytes", t->name,
                    (unsigned long long)t->shape[0], (unsigned long long)t->shape[1], (unsigned long long)t->size);
        /* An embedding lookup of the first and the last row stays inside the data. */
        if (t->shape[1] <= (1u << 20)) {
            uint16_t *row = malloc(t->shape[1] * sizeof *row);
            FUZZ_ASSERT(row != NULL, "out of memory");
            q3_tensor_row_bf16(t, 0, row);
            q3_tensor_row_bf16(t, t->shape[0] - 1, row);
            free(row);
        }
        if (q3_verify_tensor(f, t, &err)) fuzz_check_err(&err, Q3_FUZZ_NAME);
    }
    if (q3_verify_file(f, &err)) fuzz_check_err(&err, Q3_FUZZ_NAME);

    q3_tokdata td;
    if (q3_read_tokenizer(f, &td, &err)) {
        fuzz_check_err(&err, Q3_FUZZ_NAME);
        return;
    }
    const uint8_t *lo = td.blob, *hi = td.blob + td.blob_size;
    for (uint32_t i = 0; i < td.n_vocab; i++) {
        const uint8_t *p = (const uint8_t *)td.vocab[i].text;
        FUZZ_ASSERT(td.vocab[i].len == 0 || (p >= lo && p <= hi && (size_t)(hi - p) >= td.vocab[i].len),
                    "vocab %u text outside the section", i);
    }
    for (uint32_t i = 0; i < td.n_added; i++) {
        const uint8_t *p = (const uint8_t *)td.added[i].text;
        FUZZ_ASSERT(td.added[i].len == 0 || (p >= lo && p <= hi && (size_t)(hi - p) >= td.added[i].len),
                    "added token %u text outside the section", i);
    }
    /* The records re-serialize to exactly the bytes they came from. */
    uint8_t *again;
    size_t again_size;
    FUZZ_ASSERT(q3_tokdata_serialize(&td, &again, &again_size, &err) == 0, "%s", err.msg);
    FUZZ_ASSERT(again_size == td.blob_size && memcmp(again, td.blob, again_size) == 0,
                "tokenizer records do not re-serialize to the same bytes");
    free(again);
    q3_tokdata_free(&td);
}

int fuzz_q3(const uint8_t *data, size_t size)
{
    /* All 8 combinations of the 3 flags, including the odd ones. */
    for (unsigned flags = 0; flags < 8; flags++) {
        q3_file f;
        q3_err err = {{0}};
        if (q3_open_mem(&f, data, size, Q3_FUZZ_NAME, flags, &err)) {
            fuzz_check_err(&err, Q3_FUZZ_NAME);
            continue;
        }
        FUZZ_ASSERT(f.size == size && f.map == data, "q3_file does not describe the input");
        q3f_walk(&f, data, size);
        q3_close(&f);
    }
    return 0;
}

FUZZ_ENTRY(fuzz_q3)
