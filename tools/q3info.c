/* q3info - print what a .q3 file holds: config, generation defaults, section
 * table, tensor table and a tokenizer summary. */
#include <stdio.h>
#include <string.h>
#include <utf8proc.h>
#include "../format/q3_format.h"

/* Text from the file, made safe to print: a crafted token or tensor name must not
 * drive the terminal (ESC, CSI as C0 or C1 control) or break the line. Control
 * characters, backslashes and quotes are escaped, invalid UTF-8 is shown as \xNN,
 * the rest is printed as it is. Returns out (NUL-terminated, cut to cap). */
static const char *escaped(const char *s, size_t n, char *out, size_t cap)
{
    size_t o = 0;
    for (size_t i = 0; i < n && o + 12 < cap;) {
        utf8proc_int32_t cp;
        utf8proc_ssize_t k = utf8proc_iterate((const utf8proc_uint8_t *)s + i, (utf8proc_ssize_t)(n - i), &cp);
        if (k <= 0) {
            o += (size_t)snprintf(out + o, cap - o, "\\x%02x", (unsigned char)s[i]);
            i++;
        } else if (cp < 0x20 || (cp >= 0x7f && cp < 0xa0)) {
            const char *c = cp == '\n' ? "n" : cp == '\t' ? "t" : cp == '\r' ? "r" : NULL;
            o += (size_t)(c ? snprintf(out + o, cap - o, "\\%s", c) : snprintf(out + o, cap - o, "\\u%04x", (unsigned)cp));
            i += (size_t)k;
        } else {
            if (cp == '\\' || cp == '"') out[o++] = '\\';
            memcpy(out + o, s + i, (size_t)k);
            o += (size_t)k;
            i += (size_t)k;
        }
    }
    out[o] = 0;
    return out;
}

static void print_config(const q3_config *c)
{
    printf("config:\n"
           "  vocab_size %u, hidden_size %u, intermediate_size %u, num_hidden_layers %u\n"
           "  num_attention_heads %u, num_key_value_heads %u, head_dim %u, max_position_embeddings %u\n"
           "  tie_word_embeddings %u, bos_token_id %d, eos_token_id %d, pad_token_id %d\n"
           "  rope_theta %.10g, rms_norm_eps %.10g\n",
           c->vocab_size, c->hidden_size, c->intermediate_size, c->num_layers, c->num_heads, c->num_kv_heads,
           c->head_dim, c->max_position_embeddings, c->tie_word_embeddings, c->bos_token_id, c->eos_token_id,
           c->pad_token_id, c->rope_theta, c->rms_norm_eps);
}

static void print_generation(const q3_generation *g)
{
    printf("generation:\n"
           "  do_sample %u, top_k %u, temperature %.9g, top_p %.9g, min_p %.9g, repetition_penalty %.9g\n"
           "  bos_token_id %d, pad_token_id %d, eos_token_ids [",
           g->do_sample, g->top_k, g->temperature, g->top_p, g->min_p, g->repetition_penalty, g->bos_token_id,
           g->pad_token_id);
    for (uint32_t i = 0; i < g->n_eos; i++) printf("%s%d", i ? ", " : "", g->eos_token_ids[i]);
    printf("]\n");
}

static void print_sections(const q3_file *f)
{
    printf("sections:\n  %-10s %12s %12s %12s %-5s %6s  %s\n", "kind", "offset", "size", "raw_size", "comp", "align",
           "checksum");
    for (uint32_t k = 1; k <= Q3_SEC_KIND_MAX; k++) {
        const q3_section *s = q3_get_section(f, k);
        printf("  %-10s %12llu %12llu %12llu %-5s %6u  %016llx\n", q3_section_name(k), (unsigned long long)s->offset,
               (unsigned long long)s->size, (unsigned long long)s->raw_size,
               s->compression == Q3_COMP_ZLIB ? "zlib" : "none", s->alignment, (unsigned long long)s->checksum);
    }
}

static void print_tensors(const q3_file *f)
{
    uint64_t elems = 0;
    for (uint32_t i = 0; i < f->n_tensors; i++) elems += f->tensors[i].shape[0] * f->tensors[i].shape[1];
    printf("tensors: %u, %llu parameters\n  %-52s %-16s %-9s %12s %12s  %s\n", f->n_tensors,
           (unsigned long long)elems, "name", "shape", "layout", "offset", "size", "checksum");
    for (uint32_t i = 0; i < f->n_tensors; i++) {
        const q3_tensor *t = &f->tensors[i];
        char shape[48];
        if (t->ndim == 1)
            snprintf(shape, sizeof shape, "[%llu]", (unsigned long long)t->shape[0]);
        else
            snprintf(shape, sizeof shape, "[%llu, %llu]", (unsigned long long)t->shape[0],
                     (unsigned long long)t->shape[1]);
        char name[4 * Q3_TENSOR_NAME_MAX + 16];
        printf("  %-52s %-16s %-9s %12llu %12llu  %016llx\n", escaped(t->name, strlen(t->name), name, sizeof name), shape,
               t->layout == Q3_LAYOUT_R16C32 ? "R16C32" : "row-major", (unsigned long long)t->offset,
               (unsigned long long)t->size, (unsigned long long)t->checksum);
    }
}

static void print_tokenizer(const q3_tokdata *td)
{
    uint32_t special = 0;
    for (uint32_t i = 0; i < td->n_added; i++) special += (td->added[i].flags & Q3_ADDED_SPECIAL) != 0;
    printf("tokenizer: %u vocab, %u merges, %u added tokens (%u special), add_bos_token %u\n", td->n_vocab,
           td->n_merges, td->n_added, special, td->add_bos_token);
    if (td->chat_template.len)
        printf("  chat template: present (%u bytes)\n", td->chat_template.len);
    else
        printf("  chat template: absent\n");
    const struct { const char *name; const q3_str *s; } named[] = {
        {"bos_token", &td->bos_token}, {"eos_token", &td->eos_token},
        {"pad_token", &td->pad_token}, {"unk_token", &td->unk_token},
    };
    char text[1024];
    for (size_t i = 0; i < sizeof named / sizeof named[0]; i++)
        if (named[i].s->len)
            printf("  %s: \"%s\"\n", named[i].name, escaped(named[i].s->text, named[i].s->len, text, sizeof text));
        else
            printf("  %s: (none)\n", named[i].name);
    for (uint32_t i = 0; i < td->n_added; i++)
        if (td->added[i].flags & Q3_ADDED_SPECIAL)
            printf("  special %u: %s\n", td->added[i].id, escaped(td->added[i].text, td->added[i].len, text, sizeof text));
}

static void usage(FILE *f)
{
    fprintf(f, "usage: q3info FILE.q3\n"
               "  prints config, generation defaults, sections, tensors and the tokenizer summary\n"
               "  -h, --help  this text\n"
               "environment: none read\n"
               "exit status: 0 printed, 1 invalid file, 2 usage\n");
}

/* --help anywhere: the usage on stdout, exit 0 (every tool does the same). */
static int wants_help(int argc, char **argv)
{
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) return 1;
    return 0;
}

int main(int argc, char **argv)
{
    if (wants_help(argc, argv)) {
        usage(stdout);
        return q3_finish_stdout("q3info", 0);
    }
    if (argc != 2 || argv[1][0] == '-') {
        usage(stderr);
        return 2;
    }
    q3_file f;
    q3_tokdata td;
    q3_err err = {{0}};
    if (q3_open(&f, argv[1], Q3_OPEN_VERIFY_META, &err)) {
        fprintf(stderr, "q3info: %s\n", err.msg);
        return 1;
    }
    if (q3_read_tokenizer(&f, &td, &err)) {
        fprintf(stderr, "q3info: %s\n", err.msg);
        q3_close(&f);
        return 1;
    }
    printf("file: %s (%llu bytes, version %u)\n", argv[1], (unsigned long long)f.size, f.version);
    print_config(&f.config);
    print_generation(&f.generation);
    print_sections(&f);
    print_tensors(&f);
    print_tokenizer(&td);
    q3_tokdata_free(&td);
    q3_close(&f);
    return q3_finish_stdout("q3info", 0);
}
