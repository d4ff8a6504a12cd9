/* q3synth - deterministic synthetic Qwen3 checkpoint, the C port of
 * tests/fixtures/synth_qwen3.py: `q3synth CONFIG.json OUTDIR` writes
 * OUTDIR/model.safetensors (byte-identical to the script's) and OUTDIR/config.json. */
#include <stdio.h>
#include "../convert/synth.h"

int main(int argc, char **argv)
{
    if (argc != 3 || argv[1][0] == '-') {
        fprintf(stderr, "usage: q3synth CONFIG.json OUTDIR\n"
                        "  writes OUTDIR/model.safetensors (synthetic BF16 weights) and OUTDIR/config.json\n");
        return 2;
    }
    q3_err err = {{0}};
    if (q3_synth_checkpoint(argv[1], argv[2], &err)) {
        fprintf(stderr, "q3synth: %s\n", err.msg);
        return 1;
    }
    return 0;
}
