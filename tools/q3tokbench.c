/* q3tokbench - tokenizer throughput, single thread: load time, encode MB/s
 * (cold word cache, then warm), decode MB/s, and a round-trip check.
 *
 *   q3tokbench [--q3 FILE.q3 | --hf HF_DIR] [--mb N] [--reps N] [TEXT_FILE...]
 *
 * Without text files it reads the repository's sources and docs (run from
 * the repo root) and repeats them up to --mb megabytes (default 4). */
#include <glob.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "../convert/hf_tokenizer.h"
#include "../format/q3_format.h"
#include "../runtime/tokenizer.h"

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

typedef struct {
    char *p;
    size_t len, cap;
} buf;

static int append_file(buf *b, const char *path)
{
    const uint8_t *map;
    uint64_t size;
    q3_err err;
    if (q3_map_file(path, &map, &size, &err)) {
        fprintf(stderr, "q3tokbench: %s\n", err.msg);
        return -1;
    }
    if (b->len + size + 1 > b->cap) {
        size_t cap = 2 * (b->len + size + 1);
        char *p = realloc(b->p, cap);
        if (!p) {
            q3_unmap_file(map, size);
            fprintf(stderr, "q3tokbench: out of memory reading %s\n", path);
            return -1;
        }
        b->p = p;
        b->cap = cap;
    }
    if (size) memcpy(b->p + b->len, map, size);
    b->len += size;
    q3_unmap_file(map, size);
    return 0;
}

static void usage(FILE *f)
{
    fprintf(f, "usage: q3tokbench [--q3 FILE.q3 | --hf HF_DIR] [--mb N] [--reps N] [TEXT_FILE...]\n"
               "  default tokenizer: build/fixtures/hf-tiny (the Qwen3 tokenizer); default text: the repo's\n"
               "  *.c, *.h and *.md files, repeated to --mb MB (default 4); --reps warm passes (default 3)\n"
               "  -h, --help  this text\n"
               "environment: none read\n"
               "exit status: 0 measured, 1 error, 2 usage\n");
}

int main(int argc, char **argv)
{
    const char *q3_path = NULL, *hf_dir = "build/fixtures/hf-tiny";
    double mb = 4.0;
    int reps = 3, n_files = 0;
    char **files = calloc((size_t)argc, sizeof *files);
    if (!files) return 1;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
            usage(stdout);
            free(files);
            return q3_finish_stdout("q3tokbench", 0);
        } else if (strcmp(argv[i], "--q3") == 0 && i + 1 < argc) q3_path = argv[++i];
        else if (strcmp(argv[i], "--hf") == 0 && i + 1 < argc) hf_dir = argv[++i];
        else if (strcmp(argv[i], "--mb") == 0 && i + 1 < argc) mb = atof(argv[++i]);
        else if (strcmp(argv[i], "--reps") == 0 && i + 1 < argc) reps = atoi(argv[++i]);
        else if (argv[i][0] == '-') {
            usage(stderr);
            free(files);
            return 2;
        } else files[n_files++] = argv[i];
    }
    if (mb <= 0 || mb > 4096 || reps < 1) {
        usage(stderr);
        free(files);
        return 2;
    }

    /* Load: .q3 section (inflate + parse) or the HF files, then build. */
    q3_err err;
    q3_tokdata td;
    q3_file f;
    double t0 = now_s();
    if (q3_path) {
        if (q3_open(&f, q3_path, 0, &err) || q3_read_tokenizer(&f, &td, &err)) {
            fprintf(stderr, "q3tokbench: %s\n", err.msg);
            return 1;
        }
        q3_close(&f);
    } else if (q3_hf_tokenizer_load(hf_dir, &td, &err)) {
        fprintf(stderr, "q3tokbench: %s\n", err.msg);
        return 1;
    }
    double t1 = now_s();
    q3_tokenizer *tk = q3_tokenizer_create(&td, &err);
    double t2 = now_s();
    q3_tokdata_free(&td);
    if (!tk) {
        fprintf(stderr, "q3tokbench: %s\n", err.msg);
        return 1;
    }

    /* Text. */
    buf src = {0};
    glob_t g = {0};
    if (!n_files) {
        const char *pats[] = {"*.md", "*/*.c", "*/*.h", "*/*.md", "*/*.cl"};
        for (size_t k = 0; k < sizeof pats / sizeof pats[0]; k++) glob(pats[k], k ? GLOB_APPEND : 0, NULL, &g);
        for (size_t k = 0; k < g.gl_pathc; k++)
            if (append_file(&src, g.gl_pathv[k])) return 1;
    }
    for (int k = 0; k < n_files; k++)
        if (append_file(&src, files[k])) return 1;
    if (!src.len) {
        fprintf(stderr, "q3tokbench: no text (run from the repo root or name text files)\n");
        return 1;
    }
    size_t want = (size_t)(mb * 1024 * 1024);
    char *text = malloc(want);
    if (!text) return 1;
    for (size_t o = 0; o < want; o += src.len) memcpy(text + o, src.p, want - o < src.len ? want - o : src.len);
    while (want > 1 && ((uint8_t)text[want - 1] & 0xc0) == 0x80) want--; /* end on a character boundary */
    if (want && (uint8_t)text[want - 1] >= 0xc0) want--;

    /* Encode: the first pass fills the word cache; later passes hit it. */
    double cold = 0, warm = 0;
    int32_t *ids = NULL;
    size_t n_ids = 0;
    for (int r = 0; r <= reps; r++) {
        free(ids);
        double a = now_s();
        if (q3_tokenize(tk, text, want, &ids, &n_ids, &err)) {
            fprintf(stderr, "q3tokbench: %s\n", err.msg);
            return 1;
        }
        double dt = now_s() - a;
        if (r == 0) cold = dt;
        else if (r == 1 || dt < warm) warm = dt;
    }
    double a = now_s();
    char *dec;
    size_t dec_len;
    if (q3_detokenize(tk, ids, n_ids, 0, &dec, &dec_len, &err)) {
        fprintf(stderr, "q3tokbench: %s\n", err.msg);
        return 1;
    }
    double dec_s = now_s() - a;
    int same = dec_len == want && memcmp(dec, text, want) == 0;

    double mib = (double)want / (1024.0 * 1024.0);
    printf("tokenizer   %s (%u ids)\n", q3_path ? q3_path : hf_dir, q3_tokenizer_size(tk));
    printf("load        %.1f ms %s + %.1f ms build\n", 1e3 * (t1 - t0), q3_path ? "read section" : "read HF files",
           1e3 * (t2 - t1));
    printf("text        %.2f MiB (%zu source bytes repeated), %zu tokens, %.2f bytes/token\n", mib, src.len, n_ids,
           (double)want / (double)(n_ids ? n_ids : 1));
    printf("encode      %.1f MiB/s cold cache, %.1f MiB/s warm (best of %d), %.2f M tokens/s warm\n", mib / cold,
           mib / warm, reps, (double)n_ids / warm / 1e6);
    printf("decode      %.1f MiB/s\n", mib / dec_s);
    printf("round trip  %s\n", same ? "identical" : "differs (NFC changes text that is not in NFC, as HF does)");
    free(dec);
    free(ids);
    free(text);
    free(src.p);
    free(files);
    globfree(&g);
    q3_tokenizer_free(tk);
    return 0;
}
