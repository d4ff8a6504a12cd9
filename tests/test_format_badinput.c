/* test_format_badinput.c - forged .q3 files whose checksums are all correct, so
 * only the reader's structural checks stand between them and the runtime: sizes,
 * offsets and counts that overflow 64 bits or point outside the file. Each must be
 * refused with one line that names the file; the base is fuzz/corpus/q3/tiny-tied. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zlib.h>
#include "../format/q3_format.h"
#include "forge_util.h"

#define BASE "fuzz/corpus/q3/tiny-tied"
#define NAME "forged.q3"

static uint8_t *base;
static size_t base_size;

static int setup(void **state)
{
    (void)state;
    FILE *f = fopen(BASE, "rb");
    if (!f) {
        fprintf(stderr, "cannot open %s (run from the repo root)\n", BASE);
        return -1;
    }
    fseek(f, 0, SEEK_END);
    base_size = (size_t)ftell(f);
    rewind(f);
    base = malloc(base_size);
    if (!base || fread(base, 1, base_size, f) != base_size) return -1;
    fclose(f);
    return 0;
}
static int teardown(void **state)
{
    (void)state;
    free(base);
    return 0;
}

/* A writable copy of the base file. */
static forged copy_base(void) { return forge_copy(base, base_size); }

/* The file must be refused, by every flag combination, in one line naming it and containing want. */
static void expect_refused(forged *f, const char *want)
{
    reseal(f);
    for (unsigned flags = 0; flags < 8; flags++) {
        q3_file qf;
        q3_err err = {{0}};
        int rc = q3_open_mem(&qf, f->p, f->size, NAME, flags, &err);
        if (rc == 0) {
            q3_close(&qf);
            fail_msg("flags %u: forged file accepted (expected: %s)", flags, want);
        }
        assert_non_null(strstr(err.msg, NAME));
        assert_null(strchr(err.msg, '\n'));
        if (!strstr(err.msg, want)) fail_msg("flags %u: message \"%s\" lacks \"%s\"", flags, err.msg, want);
    }
    free(f->p);
}

static void test_base_is_valid(void **state)
{
    (void)state;
    forged f = copy_base();
    reseal(&f);
    assert_memory_equal(f.p, base, base_size); /* reseal of an intact file changes nothing */
    q3_file qf;
    q3_err err = {{0}};
    assert_int_equal(q3_open_mem(&qf, f.p, f.size, NAME, Q3_OPEN_VERIFY_META | Q3_OPEN_VERIFY_WEIGHTS, &err), 0);
    q3_close(&qf);
    free(f.p);
}

static void test_header(void **state)
{
    (void)state;
    forged f = copy_base();
    memcpy(f.p, "Q3MODEM", 8);
    expect_refused(&f, "bad magic");
    f = copy_base();
    q3_wr32(f.p + 8, 2);
    expect_refused(&f, "version 2");
    f = copy_base();
    q3_wr32(f.p + 12, 0xffffffffu);
    expect_refused(&f, "header_size");
    f = copy_base();
    q3_wr64(f.p + 16, UINT64_MAX);
    expect_refused(&f, "truncated or extended");
    f = copy_base();
    q3_wr64(f.p + 16, (uint64_t)base_size - 1);
    expect_refused(&f, "truncated or extended");
}

static void test_section_table(void **state)
{
    (void)state;
    forged f = copy_base();
    q3_wr64(f.p + 24, UINT64_MAX - 7); /* offset + table size wraps to a small number */
    expect_refused(&f, "section table");
    f = copy_base();
    q3_wr64(f.p + 24, (uint64_t)base_size - 8);
    expect_refused(&f, "section table");
    f = copy_base();
    q3_wr32(f.p + 32, 0xffffffffu);
    expect_refused(&f, "section_count");
    f = copy_base();
    q3_wr32(f.p + 32, 0);
    expect_refused(&f, "section_count");
}

static void test_section_entries(void **state)
{
    (void)state;
    forged f = copy_base();
    q3_wr64(entry(&f, Q3_SEC_WEIGHTS) + 16, UINT64_MAX);
    expect_refused(&f, "outside the file");
    f = copy_base();
    uint8_t *e = entry(&f, Q3_SEC_WEIGHTS);
    q3_wr64(e + 8, UINT64_MAX - 4095); /* aligned, and offset + size wraps */
    q3_wr64(e + 16, 8192);
    expect_refused(&f, "outside the file");
    f = copy_base();
    q3_wr64(entry(&f, Q3_SEC_CONFIG) + 8, 0); /* over the header */
    expect_refused(&f, "outside the file");
    f = copy_base();
    q3_wr64(entry(&f, Q3_SEC_GENERATION) + 8, q3_rd64(entry(&f, Q3_SEC_CONFIG) + 8));
    expect_refused(&f, "overlap");
    f = copy_base();
    q3_wr32(entry(&f, Q3_SEC_CONFIG) + 32, 3);
    expect_refused(&f, "alignment");
    f = copy_base();
    q3_wr32(entry(&f, Q3_SEC_CONFIG) + 32, 0);
    expect_refused(&f, "alignment");
    f = copy_base();
    q3_wr32(entry(&f, Q3_SEC_WEIGHTS) + 32, 1u << 31);
    expect_refused(&f, "alignment");
    f = copy_base();
    q3_wr32(entry(&f, Q3_SEC_TENSORS), Q3_SEC_CONFIG);
    expect_refused(&f, "repeated");
    f = copy_base();
    q3_wr32(entry(&f, Q3_SEC_WEIGHTS) + 4, Q3_COMP_ZLIB);
    expect_refused(&f, "compression");
    f = copy_base();
    q3_wr64(entry(&f, Q3_SEC_CONFIG) + 24, 1ull << 63);
    expect_refused(&f, "raw_size");
    f = copy_base();
    q3_wr64(entry(&f, Q3_SEC_CONFIG) + 16, 32);
    q3_wr64(entry(&f, Q3_SEC_CONFIG) + 24, 32);
    expect_refused(&f, "config section is 32 bytes");
}

static void test_tensor_directory(void **state)
{
    (void)state;
    const char *emb = "model.embed_tokens.weight", *norm = "model.norm.weight";
    forged f = copy_base();
    uint8_t *dir = f.p + q3_rd64(entry(&f, Q3_SEC_TENSORS) + 8);
    q3_wr32(dir, 0xffffffffu);
    expect_refused(&f, "entries need");
    /* rows * cols = 2^64 wraps to 0, as does the size the layout implies. */
    f = copy_base();
    uint8_t *t = tensor_entry(&f, emb);
    q3_wr64(t + 88, 1ull << 32);
    q3_wr64(t + 96, 1ull << 32);
    q3_wr64(t + 112, 0);
    expect_refused(&f, "shape");
    f = copy_base();
    t = tensor_entry(&f, norm);
    q3_wr32(t + 68, Q3_LAYOUT_ROWMAJOR);
    q3_wr32(t + 72, 2);
    q3_wr64(t + 88, 1ull << 32);
    q3_wr64(t + 96, 1ull << 32);
    q3_wr64(t + 112, 0);
    expect_refused(&f, "shape");
    f = copy_base();
    t = tensor_entry(&f, emb);
    q3_wr64(t + 88, 1ull << 21);
    q3_wr64(t + 96, 1ull << 21); /* 2^42 elements */
    expect_refused(&f, "too large");
    f = copy_base();
    t = tensor_entry(&f, emb);
    q3_wr64(t + 104, UINT64_MAX - 255); /* aligned; offset + size wraps */
    expect_refused(&f, "inside the weights section");
    f = copy_base();
    t = tensor_entry(&f, emb);
    q3_wr64(t + 112, UINT64_MAX);
    expect_refused(&f, "size");
    f = copy_base();
    t = tensor_entry(&f, norm);
    q3_wr64(t + 104, q3_rd64(tensor_entry(&f, emb) + 104));
    expect_refused(&f, "overlap");
    f = copy_base();
    t = tensor_entry(&f, emb);
    memset(t, 'x', 64);
    expect_refused(&f, "not NUL-terminated");
    f = copy_base();
    t = tensor_entry(&f, norm);
    memcpy(t, emb, strlen(emb) + 1);
    expect_refused(&f, "twice");
    f = copy_base();
    q3_wr32(tensor_entry(&f, emb) + 64, 2);
    expect_refused(&f, "dtype 2");
}

/* The tokenizer section: inflate it, damage a record, deflate it back. */
static void tokenizer_forge(forged *f, void (*edit)(uint8_t *blob, size_t *size), const char *want)
{
    forge_tokenizer(f, edit);
    q3_file qf;
    q3_err err = {{0}};
    assert_int_equal(q3_open_mem(&qf, f->p, f->size, NAME, Q3_OPEN_VERIFY_META | Q3_OPEN_VERIFY_WEIGHTS, &err), 0);
    q3_tokdata td;
    int rc = q3_read_tokenizer(&qf, &td, &err);
    if (rc == 0) {
        q3_tokdata_free(&td);
        fail_msg("forged tokenizer accepted (expected: %s)", want);
    }
    q3_close(&qf);
    assert_non_null(strstr(err.msg, NAME));
    assert_null(strchr(err.msg, '\n'));
    if (!strstr(err.msg, want)) fail_msg("message \"%s\" lacks \"%s\"", err.msg, want);
    free(f->p);
}
static void huge_vocab(uint8_t *b, size_t *n) { (void)n; q3_wr32(b + 8, 0xffffffffu); }
static void huge_merges(uint8_t *b, size_t *n) { (void)n; q3_wr32(b + 12, 0x40000000u); }
static void huge_string(uint8_t *b, size_t *n) { (void)n; q3_wr32(b + 24 + 4, 0xffffffffu); } /* vocab[0] length */
static void big_id(uint8_t *b, size_t *n) { (void)n; q3_wr32(b + 24, 0x80000000u); }              /* vocab[0] id */
static void bad_magic(uint8_t *b, size_t *n) { (void)n; b[0] ^= 1; }
static void trailing(uint8_t *b, size_t *n) { b[(*n)++] = 0; }
static void cut(uint8_t *b, size_t *n) { (void)b; *n -= 1; }

static void test_tokenizer_records(void **state)
{
    (void)state;
    forged f = copy_base();
    tokenizer_forge(&f, huge_vocab, "exceed");
    f = copy_base();
    tokenizer_forge(&f, huge_merges, "exceed");
    f = copy_base();
    tokenizer_forge(&f, huge_string, "runs past its end");
    f = copy_base();
    tokenizer_forge(&f, big_id, "below 2^31");
    f = copy_base();
    tokenizer_forge(&f, bad_magic, "magic");
    f = copy_base();
    tokenizer_forge(&f, trailing, "left over");
    f = copy_base();
    tokenizer_forge(&f, cut, "runs past its end");
}

static void test_tokenizer_inflate(void **state)
{
    (void)state;
    /* raw_size larger than the stream inflates to: refused before the records are read. */
    forged f = copy_base();
    uint8_t *e = entry(&f, Q3_SEC_TOKENIZER);
    q3_wr64(e + 24, q3_rd64(e + 24) + 1);
    reseal(&f);
    q3_file qf;
    q3_err err = {{0}};
    assert_int_equal(q3_open_mem(&qf, f.p, f.size, NAME, Q3_OPEN_VERIFY_META, &err), 0);
    q3_tokdata td;
    assert_int_not_equal(q3_read_tokenizer(&qf, &td, &err), 0);
    assert_non_null(strstr(err.msg, "zlib"));
    /* A raw_size of 2^40: refused without trying to allocate it. */
    q3_close(&qf);
    e = entry(&f, Q3_SEC_TOKENIZER);
    q3_wr64(e + 24, 1ull << 40);
    reseal(&f);
    assert_int_equal(q3_open_mem(&qf, f.p, f.size, NAME, Q3_OPEN_VERIFY_META, &err), 0);
    assert_int_not_equal(q3_read_tokenizer(&qf, &td, &err), 0);
    assert_non_null(strstr(err.msg, "limit"));
    q3_close(&qf);
    free(f.p);
}

/* Issue 14: "file is 1 bytes". */
static void test_one_byte_file(void **state)
{
    (void)state;
    static const uint8_t one[1] = {'Q'};
    q3_file qf;
    q3_err err = {{0}};
    assert_int_equal(q3_open_mem(&qf, one, 1, NAME, 0, &err), -1);
    if (!strstr(err.msg, NAME ": file is 1 byte, too short")) fail_msg("message \"%s\"", err.msg);
}

/* Issue 14: the mapped file is truncated while it is in use (another program rewrites
 * it): the next read of a page past the new end raises SIGBUS. Made deterministic
 * here: map, truncate, read. The child must print one line naming the file and the
 * offset, and exit 1 (not die of the signal). */
static void test_truncated_while_mapped(void **state)
{
    (void)state;
    char path[] = "/tmp/q3_test_sigbus_XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    static const uint8_t pages[3 * 4096];
    assert_int_equal(write(fd, pages, sizeof pages), (ssize_t)sizeof pages);
    int out[2];
    assert_int_equal(pipe(out), 0);
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        dup2(out[1], STDERR_FILENO);
        const uint8_t *map;
        uint64_t size;
        q3_err err;
        if (q3_map_file(path, &map, &size, &err) || ftruncate(fd, 0)) _exit(3);
        volatile uint8_t b = map[2 * 4096 + 5];
        (void)b;
        _exit(4); /* not reached */
    }
    close(out[1]);
    char msg[1024];
    ssize_t n = 0, k;
    while (n < (ssize_t)sizeof msg - 1 && (k = read(out[0], msg + n, sizeof msg - 1 - (size_t)n)) > 0) n += k;
    msg[n > 0 ? n : 0] = 0;
    close(out[0]);
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    close(fd);
    unlink(path);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 1)
        fail_msg("child: %s %d, stderr \"%s\"", WIFSIGNALED(status) ? "signal" : "exit",
                 WIFSIGNALED(status) ? WTERMSIG(status) : WEXITSTATUS(status), msg);
    char want[256];
    snprintf(want, sizeof want, "%s: offset 8197 cannot be read: the file shrank while it was in use", path);
    if (!strstr(msg, want)) fail_msg("stderr \"%s\" lacks \"%s\"", msg, want);
    assert_true(n > 0 && msg[n - 1] == '\n' && !memchr(msg, '\n', (size_t)n - 1)); /* one line */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_base_is_valid),     cmocka_unit_test(test_header),
        cmocka_unit_test(test_section_table),     cmocka_unit_test(test_section_entries),
        cmocka_unit_test(test_tensor_directory),  cmocka_unit_test(test_tokenizer_records),
        cmocka_unit_test(test_tokenizer_inflate), cmocka_unit_test(test_one_byte_file),
        cmocka_unit_test(test_truncated_while_mapped),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
