/* q3synth - deterministic synthetic Qwen3 checkpoint, the C port of
 * tests/fixtures/synth_qwen3.py: `q3synth CONFIG.json OUTDIR` writes
 * OUTDIR/model.safetensors (byte-identical to the script's) and OUTDIR/config.json. */
#include <stdio.h>
#include <string.h>
#include "../convert/synth.h"

static void usage(FILE *f)
{
    fprintf(f, "usage: q3synth CONFIG.json OUTDIR\n"
               "  writes OUTDIR/model.safetensors (synthetic BF16 weights) and OUTDIR/config.json\n"
               "  -h, --help  this text\n"
               "environment: none read\n"
               "exit status: 0 written, 1 error, 2 usage\n");
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
        return q3_finish_stdout("q3synth", 0);
    }
    if (argc != 3 || argv[1][0] == '-') {
        usage(stderr);
        return 2;
    }
    q3_err err = {{0}};
    if (q3_synth_checkpoint(argv[1], argv[2], &err)) {
        fprintf(stderr, "q3synth: %s\n", err.msg);
        return 1;
    }
    return 0;
}
