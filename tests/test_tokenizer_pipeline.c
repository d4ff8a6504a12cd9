/* test_tokenizer_pipeline.c - the pipeline pieces Qwen3 does not exercise, on
 * tiny byte-level tokenizers written to a scratch directory and read through
 * q3_hf_tokenizer_load: merge ranks, ignore_merges, every Split behaviour and
 * invert, add_prefix_space per piece, added-token flags (lstrip, rstrip,
 * single_word, normalized), decoding through the ByteLevel rule, and the
 * refusals of the converter and of the runtime. Expected results follow HF
 * tokenizers' documented semantics (added_vocabulary.rs, normalizer.rs split). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "../convert/hf_tokenizer.h"
#include "../runtime/tokenizer.h"

#define G "\xc4\xa0" /* U+0120, the byte-level alphabet's space */

static char scratch[256];

static int setup(void **state)
{
    (void)state;
    snprintf(scratch, sizeof scratch, "/tmp/q3_tokpipe_XXXXXX");
    return mkdtemp(scratch) ? 0 : -1;
}

static void rm(const char *name)
{
    char p[512];
    snprintf(p, sizeof p, "%s/%s", scratch, name);
    unlink(p);
}

static int teardown(void **state)
{
    (void)state;
    rm("tokenizer.json");
    rm("tokenizer_config.json");
    rm("chat_template.jinja");
    return rmdir(scratch);
}

static void write_file(const char *name, const char *text)
{
    char p[512];
    snprintf(p, sizeof p, "%s/%s", scratch, name);
    FILE *f = fopen(p, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(text, 1, strlen(text), f), strlen(text));
    fclose(f);
}

typedef struct {
    const char *extra[8];  /* vocab after the 256 byte tokens, alphabet form, ids 256.. */
    const char *merges[8]; /* "a b" */
    const char *added;     /* JSON array, ids from 300 */
    const char *normalizer, *pretok, *decoder, *model_extra, *model_type;
    int merges_as_arrays;
} spec;

static const char *BYTELEVEL = "{\"type\":\"ByteLevel\",\"add_prefix_space\":false,\"trim_offsets\":false,\"use_regex\":false}";

/* UTF-8 of one code point (< 0x800 is all the alphabet needs). */
static void put_cp(char *o, uint32_t c)
{
    if (c < 0x80) o[0] = (char)c, o[1] = 0;
    else o[0] = (char)(0xc0 | c >> 6), o[1] = (char)(0x80 | (c & 0x3f)), o[2] = 0;
}

static void write_tokenizer(const spec *sp)
{
    cJSON *root = cJSON_CreateObject(), *model = cJSON_CreateObject(), *vocab = cJSON_CreateObject();
    int n = 0;
    for (int b = 0; b < 256; b++) {
        int printable = (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
        char s[4];
        put_cp(s, printable ? (uint32_t)b : 256u + (uint32_t)n++);
        cJSON_AddNumberToObject(vocab, s, b);
    }
    for (int i = 0; i < 8 && sp->extra[i]; i++) cJSON_AddNumberToObject(vocab, sp->extra[i], 256 + i);
    cJSON *merges = cJSON_CreateArray();
    for (int i = 0; i < 8 && sp->merges[i]; i++) {
        if (!sp->merges_as_arrays) {
            cJSON_AddItemToArray(merges, cJSON_CreateString(sp->merges[i]));
            continue;
        }
        char l[64];
        snprintf(l, sizeof l, "%s", sp->merges[i]);
        char *r = strchr(l, ' ');
        *r++ = 0;
        cJSON *pair = cJSON_CreateArray();
        cJSON_AddItemToArray(pair, cJSON_CreateString(l));
        cJSON_AddItemToArray(pair, cJSON_CreateString(r));
        cJSON_AddItemToArray(merges, pair);
    }
    cJSON_AddStringToObject(model, "type", sp->model_type ? sp->model_type : "BPE");
    cJSON_AddNullToObject(model, "dropout");
    cJSON_AddFalseToObject(model, "byte_fallback");
    if (sp->model_extra) {
        cJSON *x = cJSON_Parse(sp->model_extra), *e;
        assert_non_null(x);
        while ((e = x->child)) cJSON_AddItemToObject(model, e->string, cJSON_DetachItemViaPointer(x, e));
        cJSON_Delete(x);
    }
    cJSON_AddItemToObject(model, "vocab", vocab);
    cJSON_AddItemToObject(model, "merges", merges);
    cJSON_AddItemToObject(root, "added_tokens", cJSON_Parse(sp->added ? sp->added : "[]"));
    cJSON_AddItemToObject(root, "normalizer", cJSON_Parse(sp->normalizer ? sp->normalizer : "null"));
    cJSON_AddItemToObject(root, "pre_tokenizer", cJSON_Parse(sp->pretok ? sp->pretok : BYTELEVEL));
    cJSON_AddItemToObject(root, "post_processor", cJSON_CreateNull());
    cJSON_AddItemToObject(root, "decoder", cJSON_Parse(sp->decoder ? sp->decoder : BYTELEVEL));
    cJSON_AddItemToObject(root, "model", model);
    char *text = cJSON_Print(root);
    write_file("tokenizer.json", text);
    free(text);
    cJSON_Delete(root);
}

/* Load through the converter and build; NULL with err when either refuses. */
static q3_tokenizer *build(const spec *sp, q3_err *err)
{
    write_tokenizer(sp);
    q3_tokdata td;
    if (q3_hf_tokenizer_load(scratch, &td, err)) return NULL;
    q3_tokenizer *tk = q3_tokenizer_create(&td, err);
    q3_tokdata_free(&td);
    return tk;
}

static q3_tokenizer *must_build(const spec *sp)
{
    q3_err err;
    q3_tokenizer *tk = build(sp, &err);
    if (!tk) fail_msg("%s", err.msg);
    return tk;
}

/* The pieces of text's ids joined by '|'. */
static void check_pieces(q3_tokenizer *tk, const char *text, const char *want)
{
    int32_t *ids;
    size_t n;
    q3_err err;
    assert_int_equal(q3_tokenize(tk, text, strlen(text), &ids, &n, &err), 0);
    char got[512] = "";
    for (size_t i = 0; i < n; i++) {
        size_t len;
        const char *p = q3_token_piece(tk, ids[i], &len);
        assert_non_null(p);
        snprintf(got + strlen(got), sizeof got - strlen(got), "%s%.*s", i ? "|" : "", (int)len, p);
    }
    free(ids);
    if (strcmp(got, want) != 0) fail_msg("\"%s\": pieces %s, expected %s", text, got, want);
}

static void test_merge_ranks(void **state)
{
    (void)state;
    spec sp = {.extra = {"ab", "bc"}, .merges = {"a b", "b c"}};
    q3_tokenizer *tk = must_build(&sp);
    check_pieces(tk, "abc", "ab|c");
    check_pieces(tk, "", "");
    q3_tokenizer_free(tk);
    spec rev = {.extra = {"ab", "bc"}, .merges = {"b c", "a b"}, .merges_as_arrays = 1};
    tk = must_build(&rev);
    check_pieces(tk, "abc", "a|bc");
    check_pieces(tk, "abab", "ab|ab");
    q3_tokenizer_free(tk);
}

static void test_ignore_merges(void **state)
{
    (void)state;
    spec sp = {.extra = {"abc"}};
    q3_tokenizer *tk = must_build(&sp);
    check_pieces(tk, "abc", "a|b|c");
    q3_tokenizer_free(tk);
    sp.model_extra = "{\"ignore_merges\": true}";
    tk = must_build(&sp);
    check_pieces(tk, "abc", "abc");
    check_pieces(tk, "abcd", "a|b|c|d");
    q3_tokenizer_free(tk);
}

static q3_tokenizer *split_tokenizer(const char *pattern, const char *behavior, int invert)
{
    char pre[512];
    snprintf(pre, sizeof pre,
             "{\"type\":\"Sequence\",\"pretokenizers\":[{\"type\":\"Split\",\"pattern\":%s,\"behavior\":\"%s\","
             "\"invert\":%s},%s]}",
             pattern, behavior, invert ? "true" : "false", BYTELEVEL);
    spec sp = {.extra = {"a" G, G "b", G G}, .merges = {G " b", "a " G, G " " G}, .pretok = pre};
    return must_build(&sp);
}

static void test_split_behaviours(void **state)
{
    (void)state;
    const char *sp = "{\"String\":\" \"}";
    q3_tokenizer *tk;
    /* Without a split, BPE alone: "Ġ b" has the best rank. */
    spec none = {.extra = {"a" G, G "b", G G}, .merges = {G " b", "a " G, G " " G}};
    tk = must_build(&none);
    check_pieces(tk, "a b", "a|" G "b");
    q3_tokenizer_free(tk);
    tk = split_tokenizer(sp, "Removed", 0);
    check_pieces(tk, "a b", "a|b");
    q3_tokenizer_free(tk);
    tk = split_tokenizer(sp, "Isolated", 0);
    check_pieces(tk, "a b", "a|" G "|b");
    check_pieces(tk, "a  b", "a|" G "|" G "|b");
    q3_tokenizer_free(tk);
    tk = split_tokenizer(sp, "MergedWithPrevious", 0);
    check_pieces(tk, "a b", "a" G "|b");
    check_pieces(tk, "a  b", "a" G "|" G "|b");
    q3_tokenizer_free(tk);
    tk = split_tokenizer(sp, "MergedWithNext", 0);
    check_pieces(tk, "a b", "a|" G "b");
    check_pieces(tk, "a  b", "a|" G "|" G "b");
    q3_tokenizer_free(tk);
    tk = split_tokenizer(sp, "Contiguous", 0);
    check_pieces(tk, "a  b", "a|" G G "|b");
    q3_tokenizer_free(tk);
    tk = split_tokenizer(sp, "Removed", 1); /* invert: the text between spaces is the "match" */
    check_pieces(tk, "a b", G);
    q3_tokenizer_free(tk);
    tk = split_tokenizer("{\"Regex\":\" +\"}", "Isolated", 0);
    check_pieces(tk, "a  b", "a|" G G "|b");
    q3_tokenizer_free(tk);
}

static void test_prefix_space(void **state)
{
    (void)state;
    /* add_prefix_space applies to every piece the earlier Split made. */
    char pre[512];
    snprintf(pre, sizeof pre,
             "{\"type\":\"Sequence\",\"pretokenizers\":[{\"type\":\"Split\",\"pattern\":{\"String\":\" \"},"
             "\"behavior\":\"Isolated\",\"invert\":false},{\"type\":\"ByteLevel\",\"add_prefix_space\":true,"
             "\"trim_offsets\":false,\"use_regex\":false}]}");
    spec sp = {.extra = {"a" G, G "b", G G}, .merges = {G " b", "a " G, G " " G}, .pretok = pre};
    q3_tokenizer *tk = must_build(&sp);
    check_pieces(tk, "a b", G "|a|" G "|" G "b");
    q3_tokenizer_free(tk);
    /* ByteLevel alone with its own regex. */
    spec bl = {.extra = {"a" G, G "b", G G},
               .merges = {G " b", "a " G, G " " G},
               .pretok = "{\"type\":\"ByteLevel\",\"add_prefix_space\":true,\"use_regex\":true}"};
    tk = must_build(&bl);
    check_pieces(tk, "a b", G "|a|" G "b");
    check_pieces(tk, " b", G "b");
    q3_tokenizer_free(tk);
}

static void test_added_tokens(void **state)
{
    (void)state;
    spec sp = {
        .normalizer = "{\"type\":\"NFC\"}",
        .added = "[{\"id\":300,\"content\":\"<m>\",\"lstrip\":true,\"special\":true,\"normalized\":false},"
                 "{\"id\":301,\"content\":\"<r>\",\"rstrip\":true,\"special\":true,\"normalized\":false},"
                 "{\"id\":302,\"content\":\"tok\",\"single_word\":true,\"special\":false,\"normalized\":false},"
                 "{\"id\":303,\"content\":\"<m>>\",\"special\":true,\"normalized\":false},"
                 "{\"id\":304,\"content\":\"\xc3\xa9\",\"special\":false,\"normalized\":true},"
                 "{\"id\":305,\"content\":\"o\xcc\x88\",\"special\":false,\"normalized\":false},"
                 "{\"id\":306,\"content\":\"" G "z\",\"special\":false,\"normalized\":false}]"};
    q3_tokenizer *tk = must_build(&sp);
    check_pieces(tk, "x  <m>y", "x|<m>|y");           /* lstrip takes the spaces before */
    check_pieces(tk, "<r>x <m>", "<r>|x|<m>");         /* ... and rstrip those after */
    check_pieces(tk, "x<r>  y", "x|<r>|y");
    check_pieces(tk, "a tok b", "a|" G "|tok|" G "|b"); /* single_word: alone */
    check_pieces(tk, "atok", "a|t|o|k");               /* ... not inside a word */
    check_pieces(tk, "tok.", "tok|.");
    check_pieces(tk, "\xc3\xa9tok", "\xc3\xa9|t|o|k"); /* é is a word char (Unicode \w) */
    check_pieces(tk, "<m>>", "<m>>");                  /* leftmost-longest */
    check_pieces(tk, "e\xcc\x81", "\xc3\xa9");         /* normalized token matched after NFC */
    check_pieces(tk, "o\xcc\x88", "o\xcc\x88");        /* raw token matched before NFC */
    check_pieces(tk, "\xc3\xb6", "\xc3\x83|\xc2\xb6"); /* ... and not on the composed form */
    /* Decoding an added token goes through the ByteLevel decoder as HF does. */
    int32_t ids[] = {'x' , 300, 306, 'y'};
    char *out;
    size_t len;
    q3_err err;
    assert_int_equal(q3_detokenize(tk, ids, 4, 0, &out, &len, &err), 0);
    assert_string_equal(out, "x<m> zy");
    free(out);
    assert_int_equal(q3_detokenize(tk, ids, 4, 1, &out, &len, &err), 0); /* skip special: <m> */
    assert_string_equal(out, "x zy");
    free(out);
    int32_t bad = 999;
    assert_int_equal(q3_detokenize(tk, &bad, 1, 0, &out, &len, &err), -1);
    assert_non_null(strstr(err.msg, "999"));
    assert_int_equal(q3_token_lookup(tk, "<m>", 3), 300);
    assert_int_equal(q3_token_lookup(tk, "a", 1), 'a');
    assert_int_equal(q3_token_lookup(tk, "nope", 4), -1);
    assert_true(q3_token_is_special(tk, 300));
    assert_false(q3_token_is_special(tk, 302));
    assert_int_equal(q3_tokenizer_size(tk), 307);
    q3_tokenizer_free(tk);
}

static void expect_refusal(const spec *sp, const char *needle)
{
    q3_err err;
    q3_tokenizer *tk = build(sp, &err);
    if (tk) {
        q3_tokenizer_free(tk);
        fail_msg("accepted; expected an error with \"%s\"", needle);
    }
    if (!strstr(err.msg, needle)) fail_msg("error \"%s\" lacks \"%s\"", err.msg, needle);
    assert_null(strchr(err.msg, '\n'));
}

static void test_refusals(void **state)
{
    (void)state;
    expect_refusal(&(spec){.model_type = "WordPiece"}, "BPE");
    expect_refusal(&(spec){.extra = {"ab"}, .merges = {"a b", "a zz"}}, "merges[1]");
    expect_refusal(&(spec){.extra = {"ab"}, .merges = {"a b", "ab"}}, "merges[1]");
    expect_refusal(&(spec){.decoder = "{\"type\":\"WordPiece\",\"prefix\":\"##\"}"}, "decoder WordPiece");
    expect_refusal(&(spec){.normalizer = "{\"type\":\"Lowercase\"}"}, "normalizer type \"Lowercase\"");
    expect_refusal(&(spec){.pretok = "{\"type\":\"Whitespace\"}"}, "pre-tokenizer type \"Whitespace\"");
    expect_refusal(&(spec){.pretok = "{\"type\":\"Split\",\"pattern\":{\"String\":\" \"},\"behavior\":\"Isolated\"}"},
                   "byte-level");
    expect_refusal(&(spec){.pretok = "{\"type\":\"Sequence\",\"pretokenizers\":[{\"type\":\"Split\",\"pattern\":"
                                     "{\"Regex\":\"(\"},\"behavior\":\"Isolated\"},{\"type\":\"ByteLevel\"}]}"},
                   "does not compile");
    expect_refusal(&(spec){.pretok = "{\"type\":\"Split\",\"pattern\":{\"String\":\" \"},\"behavior\":\"Bogus\"}"},
                   "behavior");
    expect_refusal(&(spec){.model_extra = "{\"continuing_subword_prefix\":\"##\"}"}, "continuing_subword_prefix");
    expect_refusal(&(spec){.added = "[{\"id\":0,\"content\":\"zz\",\"special\":true}]"}, "another text");

    /* Sparse ids and a missing tokenizer.json. */
    write_tokenizer(&(spec){.extra = {"ab"}});
    q3_tokdata td;
    q3_err err;
    assert_int_equal(q3_hf_tokenizer_load(scratch, &td, &err), 0);
    td.vocab[td.n_vocab - 1].id = 5000000;
    assert_null(q3_tokenizer_create(&td, &err));
    assert_non_null(strstr(err.msg, "dense"));
    q3_tokdata_free(&td);
    rm("tokenizer.json");
    assert_int_equal(q3_hf_tokenizer_load(scratch, &td, &err), -1);
    assert_non_null(strstr(err.msg, "tokenizer.json"));
}

/* tokenizer_config.json: token strings as strings, {"content"} objects or null;
 * the chat template inline, else chat_template.jinja, else none. */
static void test_config(void **state)
{
    (void)state;
    write_tokenizer(&(spec){0});
    q3_tokdata td;
    q3_err err;
    write_file("tokenizer_config.json", "{\"bos_token\": null, \"eos_token\": {\"content\": \"<e>\", \"lstrip\": false},"
                                        " \"pad_token\": \"<p>\", \"add_bos_token\": true, \"chat_template\": \"T1\"}");
    write_file("chat_template.jinja", "T2");
    assert_int_equal(q3_hf_tokenizer_load(scratch, &td, &err), 0);
    assert_int_equal(td.bos_token.len, 0);
    assert_int_equal(td.unk_token.len, 0);
    assert_int_equal(td.eos_token.len, 3);
    assert_memory_equal(td.eos_token.text, "<e>", 3);
    assert_int_equal(td.pad_token.len, 3);
    assert_memory_equal(td.pad_token.text, "<p>", 3);
    assert_int_equal(td.add_bos_token, 1);
    assert_int_equal(td.chat_template.len, 2);
    assert_memory_equal(td.chat_template.text, "T1", 2);
    assert_int_equal(td.n_vocab, 256);
    q3_tokdata_free(&td);
    write_file("tokenizer_config.json", "{\"eos_token\": \"<e>\"}");
    assert_int_equal(q3_hf_tokenizer_load(scratch, &td, &err), 0);
    assert_int_equal(td.chat_template.len, 2);
    assert_memory_equal(td.chat_template.text, "T2", 2);
    q3_tokdata_free(&td);
    rm("chat_template.jinja");
    assert_int_equal(q3_hf_tokenizer_load(scratch, &td, &err), 0);
    assert_int_equal(td.chat_template.len, 0);
    q3_tokdata_free(&td);
    rm("tokenizer_config.json"); /* optional: a bare tokenizer.json loads */
    assert_int_equal(q3_hf_tokenizer_load(scratch, &td, &err), 0);
    assert_int_equal(td.eos_token.len, 0);
    q3_tokdata_free(&td);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_merge_ranks),     cmocka_unit_test(test_ignore_merges),
        cmocka_unit_test(test_split_behaviours), cmocka_unit_test(test_prefix_space),
        cmocka_unit_test(test_added_tokens),    cmocka_unit_test(test_refusals),
        cmocka_unit_test(test_config),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
