/* hf_tokenizer.c - tokenizer.json + tokenizer_config.json (+ chat_template.jinja)
 * to the TOKENIZER section records. The vocab keeps tokenizer.json's strings; the
 * merges become vocab ids; normalizer, pre-tokenizer and decoder stay JSON so the
 * runtime interprets exactly what the checkpoint declares. */
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include "hf_files.h"
#include "hf_tokenizer.h"
#include "json_util.h"

/* String -> id over the vocab, open addressing (FNV-1a). */
typedef struct {
    const q3_tok_entry **slots;
    uint64_t mask;
} vocab_index;

static uint64_t fnv1a(const char *s, size_t n)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; i++) h = (h ^ (uint8_t)s[i]) * 0x100000001b3ull;
    return h;
}

static int index_build(vocab_index *ix, const q3_tok_entry *v, uint32_t n)
{
    uint64_t cap = 16;
    while (cap < 2ull * n) cap *= 2;
    ix->slots = calloc(cap, sizeof *ix->slots);
    if (!ix->slots) return -1;
    ix->mask = cap - 1;
    for (uint32_t i = 0; i < n; i++) {
        uint64_t h = fnv1a(v[i].text, v[i].len) & ix->mask;
        while (ix->slots[h]) h = (h + 1) & ix->mask;
        ix->slots[h] = &v[i];
    }
    return 0;
}

static const q3_tok_entry *index_find(const vocab_index *ix, const char *s, size_t n)
{
    for (uint64_t h = fnv1a(s, n) & ix->mask; ix->slots[h]; h = (h + 1) & ix->mask)
        if (ix->slots[h]->len == n && memcmp(ix->slots[h]->text, s, n) == 0) return ix->slots[h];
    return NULL;
}

static int cmp_entry_id(const void *a, const void *b)
{
    uint32_t x = ((const q3_tok_entry *)a)->id, y = ((const q3_tok_entry *)b)->id;
    return x < y ? -1 : x > y;
}

/* A special-token field of tokenizer_config.json: a string, {"content": ...} or null. */
static q3_str token_string(const cJSON *cfg, const char *key)
{
    const cJSON *v = cfg ? cJSON_GetObjectItemCaseSensitive(cfg, key) : NULL;
    if (cJSON_IsObject(v)) v = cJSON_GetObjectItemCaseSensitive(v, "content");
    if (cJSON_IsString(v)) return (q3_str){(uint32_t)strlen(v->valuestring), v->valuestring};
    return (q3_str){0, ""};
}

static char *print_or_null(const cJSON *v)
{
    return v ? cJSON_PrintUnformatted(v) : strdup("null");
}

static int file_exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0;
}

int q3_hf_tokenizer_load(const char *hf_dir, q3_tokdata *out, q3_err *err)
{
    char path[4096];
    cJSON *tok = NULL, *cfg = NULL, *model_copy = NULL;
    char *jinja = NULL, *model_json = NULL, *norm_json = NULL, *pre_json = NULL, *dec_json = NULL;
    size_t jinja_len = 0;
    q3_tokdata td;
    vocab_index ix = {0};
    int rc = -1;
    memset(&td, 0, sizeof td);
    memset(out, 0, sizeof *out);

    if (q3_path_join(path, sizeof path, hf_dir, Q3_HF_TOKENIZER) || q3_json_load(path, &tok, err)) goto done;
    const cJSON *model = cJSON_GetObjectItemCaseSensitive(tok, "model");
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(model, "type");
    if (!cJSON_IsObject(model) || !cJSON_IsString(type) || strcmp(type->valuestring, "BPE") != 0) {
        q3_set_err(err, "%s: \"model\" must be an object of type \"BPE\"", path);
        goto done;
    }
    const cJSON *vocab = cJSON_GetObjectItemCaseSensitive(model, "vocab");
    const cJSON *merges = cJSON_GetObjectItemCaseSensitive(model, "merges");
    if (!cJSON_IsObject(vocab) || !cJSON_IsArray(merges)) {
        q3_set_err(err, "%s: model.vocab must be an object and model.merges an array", path);
        goto done;
    }

    /* Vocab, sorted by id; ids unique. */
    td.n_vocab = (uint32_t)cJSON_GetArraySize(vocab);
    td.vocab = calloc(td.n_vocab ? td.n_vocab : 1, sizeof *td.vocab);
    if (!td.vocab) goto oom;
    uint32_t i = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, vocab)
    {
        int64_t id;
        if (q3_json_int(e, 0, INT32_MAX, &id)) {
            q3_set_err(err, "%s: model.vocab[\"%.40s\"] must be an integer id >= 0", path, e->string);
            goto done;
        }
        td.vocab[i++] = (q3_tok_entry){(uint32_t)id, (uint32_t)strlen(e->string), e->string};
    }
    qsort(td.vocab, td.n_vocab, sizeof *td.vocab, cmp_entry_id);
    for (i = 1; i < td.n_vocab; i++)
        if (td.vocab[i].id == td.vocab[i - 1].id) {
            q3_set_err(err, "%s: model.vocab gives id %u to two tokens", path, td.vocab[i].id);
            goto done;
        }
    if (index_build(&ix, td.vocab, td.n_vocab)) goto oom;

    /* Merges: "left right" strings (older files) or ["left", "right"] pairs. */
    td.n_merges = (uint32_t)cJSON_GetArraySize(merges);
    td.merges = calloc(td.n_merges ? td.n_merges : 1, sizeof *td.merges);
    if (!td.merges) goto oom;
    char *joined = NULL;
    size_t joined_cap = 0;
    i = 0;
    cJSON_ArrayForEach(e, merges)
    {
        const char *l = NULL, *r = NULL;
        size_t ln = 0, rn = 0;
        if (cJSON_IsString(e)) {
            const char *sp = strchr(e->valuestring, ' ');
            if (sp) {
                l = e->valuestring;
                ln = (size_t)(sp - l);
                r = sp + 1;
                rn = strlen(r);
            }
        } else if (cJSON_IsArray(e) && cJSON_GetArraySize(e) == 2 && cJSON_IsString(cJSON_GetArrayItem(e, 0)) &&
                   cJSON_IsString(cJSON_GetArrayItem(e, 1))) {
            l = cJSON_GetArrayItem(e, 0)->valuestring;
            r = cJSON_GetArrayItem(e, 1)->valuestring;
            ln = strlen(l);
            rn = strlen(r);
        }
        if (!l) {
            q3_set_err(err, "%s: model.merges[%u] is neither \"a b\" nor [\"a\", \"b\"]", path, i);
            free(joined);
            goto done;
        }
        if (ln + rn > joined_cap) {
            joined_cap = 2 * (ln + rn);
            char *p = realloc(joined, joined_cap);
            if (!p) {
                free(joined);
                goto oom;
            }
            joined = p;
        }
        memcpy(joined, l, ln);
        memcpy(joined + ln, r, rn);
        const q3_tok_entry *a = index_find(&ix, l, ln), *b = index_find(&ix, r, rn);
        const q3_tok_entry *m = index_find(&ix, joined, ln + rn);
        if (!a || !b || !m) {
            q3_set_err(err, "%s: model.merges[%u] (\"%.*s\" + \"%.*s\"): %s is not in the vocab", path, i, (int)ln, l,
                       (int)rn, r, !a ? "the left part" : !b ? "the right part" : "the merged token");
            free(joined);
            goto done;
        }
        td.merges[i++] = (q3_tok_merge){a->id, b->id, m->id};
    }
    free(joined);

    /* Added tokens. */
    const cJSON *added = cJSON_GetObjectItemCaseSensitive(tok, "added_tokens");
    if (added && !cJSON_IsArray(added)) {
        q3_set_err(err, "%s: added_tokens must be an array", path);
        goto done;
    }
    td.n_added = (uint32_t)cJSON_GetArraySize(added);
    td.added = calloc(td.n_added ? td.n_added : 1, sizeof *td.added);
    if (!td.added) goto oom;
    i = 0;
    cJSON_ArrayForEach(e, added)
    {
        int64_t id;
        const cJSON *content = cJSON_GetObjectItemCaseSensitive(e, "content");
        if (q3_json_int(cJSON_GetObjectItemCaseSensitive(e, "id"), 0, INT32_MAX, &id) || !cJSON_IsString(content) ||
            !content->valuestring[0]) {
            q3_set_err(err, "%s: added_tokens[%u] needs an integer \"id\" and a non-empty \"content\"", path, i);
            goto done;
        }
        static const struct { const char *key; uint32_t flag; } flags[] = {
            {"special", Q3_ADDED_SPECIAL}, {"lstrip", Q3_ADDED_LSTRIP}, {"rstrip", Q3_ADDED_RSTRIP},
            {"single_word", Q3_ADDED_SINGLE_WORD}, {"normalized", Q3_ADDED_NORMALIZED}};
        uint32_t f = 0;
        for (size_t k = 0; k < sizeof flags / sizeof flags[0]; k++)
            if (cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(e, flags[k].key))) f |= flags[k].flag;
        td.added[i++] = (q3_tok_added){(uint32_t)id, f, (uint32_t)strlen(content->valuestring), content->valuestring};
    }

    /* The model object without its two big members, and the pipeline stages verbatim. */
    model_copy = cJSON_Duplicate(model, 1);
    if (!model_copy) goto oom;
    cJSON_DeleteItemFromObjectCaseSensitive(model_copy, "vocab");
    cJSON_DeleteItemFromObjectCaseSensitive(model_copy, "merges");
    model_json = cJSON_PrintUnformatted(model_copy);
    norm_json = print_or_null(cJSON_GetObjectItemCaseSensitive(tok, "normalizer"));
    pre_json = print_or_null(cJSON_GetObjectItemCaseSensitive(tok, "pre_tokenizer"));
    dec_json = print_or_null(cJSON_GetObjectItemCaseSensitive(tok, "decoder"));
    if (!model_json || !norm_json || !pre_json || !dec_json) goto oom;
    td.model_json = (q3_str){(uint32_t)strlen(model_json), model_json};
    td.normalizer_json = (q3_str){(uint32_t)strlen(norm_json), norm_json};
    td.pretok_json = (q3_str){(uint32_t)strlen(pre_json), pre_json};
    td.decoder_json = (q3_str){(uint32_t)strlen(dec_json), dec_json};

    /* tokenizer_config.json: special token strings and the chat template
     * (inline, or chat_template.jinja as transformers 5 saves it). Without
     * the file those stay empty. */
    if (q3_path_join(path, sizeof path, hf_dir, Q3_HF_TOKENIZER_CONFIG)) goto toolong;
    if (file_exists(path) && q3_json_load(path, &cfg, err)) goto done; /* optional: tokenizer.json suffices */
    td.bos_token = token_string(cfg, "bos_token");
    td.eos_token = token_string(cfg, "eos_token");
    td.pad_token = token_string(cfg, "pad_token");
    td.unk_token = token_string(cfg, "unk_token");
    td.add_bos_token = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(cfg, "add_bos_token"));
    const cJSON *tpl = cJSON_GetObjectItemCaseSensitive(cfg, "chat_template");
    if (cJSON_IsArray(tpl)) { /* [{"name": "default", "template": ...}, ...] */
        const cJSON *t, *pick = NULL;
        cJSON_ArrayForEach(t, tpl)
        {
            const cJSON *nm = cJSON_GetObjectItemCaseSensitive(t, "name");
            if (cJSON_IsString(nm) && strcmp(nm->valuestring, "default") == 0) pick = t;
        }
        tpl = pick ? cJSON_GetObjectItemCaseSensitive(pick, "template") : NULL;
    }
    if (cJSON_IsString(tpl)) {
        td.chat_template = (q3_str){(uint32_t)strlen(tpl->valuestring), tpl->valuestring};
    } else {
        if (q3_path_join(path, sizeof path, hf_dir, Q3_HF_CHAT_TEMPLATE)) goto toolong;
        if (file_exists(path)) {
            if (q3_read_file(path, &jinja, &jinja_len, err)) goto done;
            td.chat_template = (q3_str){(uint32_t)jinja_len, jinja};
        }
    }

    uint8_t *blob;
    size_t blob_size;
    if (q3_tokdata_serialize(&td, &blob, &blob_size, err)) goto done;
    rc = q3_tokdata_parse(blob, blob_size, out, hf_dir, err);
    goto done;
toolong:
    q3_set_err(err, "%s: path too long", hf_dir);
    goto done;
oom:
    q3_set_err(err, "%s: out of memory reading the tokenizer", hf_dir);
done:
    free(ix.slots);
    free(td.vocab);
    free(td.merges);
    free(td.added);
    free(model_json);
    free(norm_json);
    free(pre_json);
    free(dec_json);
    free(jinja);
    cJSON_Delete(model_copy);
    cJSON_Delete(cfg);
    cJSON_Delete(tok);
    return rc;
}
