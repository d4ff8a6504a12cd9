/* q3convert - convert a HuggingFace Qwen3 checkpoint directory into one .q3 file.
 * Exit status: 0 written, 1 bad input or conversion error, 2 usage. */
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include "convert.h"
#include "progress.h"

static void usage(FILE *f)
{
    fprintf(f, "usage: q3convert HF_DIR -o OUT.q3 [-q] [--allow-nonfinite]\n"
               "  HF_DIR   a Qwen3 checkpoint: config.json, model.safetensors (or shards +\n"
               "           model.safetensors.index.json), tokenizer.json, tokenizer_config.json,\n"
               "           optional generation_config.json and chat_template.jinja\n"
               "  -o FILE  the .q3 file to write (atomically: nothing appears there on failure);\n"
               "           if it exists it must be a regular file and none of HF_DIR's inputs\n"
               "  -q       print nothing on success\n"
               "  --allow-nonfinite  write NaN / Inf weights (refused by default, naming the tensor)\n"
               "  -h, --help  this text\n"
               "environment: none read\n"
               "exit status: 0 written, 1 bad input or conversion error, 2 usage\n");
}

int main(int argc, char **argv)
{
    const char *in = NULL, *out = NULL;
    int quiet = 0;
    q3_convert_opts opts = {0};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            usage(stdout);
            return q3_finish_stdout("q3convert", 0);
        } else if (strcmp(a, "-q") == 0 || strcmp(a, "--quiet") == 0) {
            quiet = 1;
        } else if (strcmp(a, "--allow-nonfinite") == 0) {
            opts.allow_nonfinite = 1;
        } else if (strcmp(a, "-o") == 0 || strcmp(a, "--output") == 0) {
            if (i + 1 >= argc || out || !argv[i + 1][0]) {
                fprintf(stderr, "q3convert: %s needs one non-empty file name\n", a);
                usage(stderr);
                return 2;
            }
            out = argv[++i];
        } else if (a[0] == '-' && a[1]) {
            fprintf(stderr, "q3convert: unknown option %s\n", a);
            usage(stderr);
            return 2;
        } else if (!in) {
            in = a;
        } else {
            fprintf(stderr, "q3convert: one HF_DIR only (got %s and %s)\n", in, a);
            usage(stderr);
            return 2;
        }
    }
    if (!in || !out) {
        fprintf(stderr, "q3convert: %s\n", !in ? "HF_DIR is missing" : "-o OUT.q3 is missing");
        usage(stderr);
        return 2;
    }
    /* A file-size limit must fail the write (EFBIG), not kill the process before it removes its temp file. */
    signal(SIGXFSZ, SIG_IGN);
    q3_progress bar;
    int show = !quiet && isatty(STDERR_FILENO);
    q3_progress_start(&bar, "q3convert");
    q3_err err = {{0}};
    q3_convert_stats stats;
    opts.progress = show ? q3_progress_update : NULL;
    opts.progress_ctx = &bar;
    int rc = q3_convert(in, out, &opts, &stats, &err);
    q3_progress_finish(&bar);
    if (rc) {
        fprintf(stderr, "q3convert: %s\n", err.msg);
        return 1;
    }
    if (!quiet)
        printf("q3convert: wrote %s (%u tensors, %.1f MiB of weights) in %.2f s\n", out, stats.n_tensors,
               (double)stats.weight_bytes / 1048576.0, q3_now() - bar.t0);
    return 0;
}
