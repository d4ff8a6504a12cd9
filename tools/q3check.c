/* q3check - verify every checksum of a .q3 file and name each part that is damaged:
 * the header, each section, each tensor, the whole file. Exit 0 only when all match. */
#include <stdio.h>
#include <string.h>
#include "../format/q3_format.h"

static int report(int failed, const q3_err *err)
{
    if (failed) printf("%s\n", err->msg);
    return failed ? 1 : 0;
}

static void usage(FILE *f)
{
    fprintf(f, "usage: q3check FILE.q3\n"
               "  verifies the header, section, tensor and whole-file checksums\n"
               "  -h, --help  this text\n"
               "environment: none read\n"
               "exit status: 0 every checksum matches, 1 damaged or invalid, 2 usage\n");
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
        return q3_finish_stdout("q3check", 0);
    }
    if (argc != 2 || argv[1][0] == '-') {
        usage(stderr);
        return 2;
    }
    const char *path = argv[1];
    q3_file f;
    q3_err err = {{0}};
    /* Structure only: the checksums are checked one by one below, so that all failures are named. */
    if (q3_open(&f, path, Q3_OPEN_NO_SECTION_CHECKS, &err)) {
        printf("%s\n%s: FAILED (the file's structure is invalid; no checksum was checked)\n", err.msg, path);
        return q3_finish_stdout("q3check", 1);
    }
    unsigned bad = report(q3_verify_header(&f, &err), &err);
    for (uint32_t k = 1; k <= Q3_SEC_KIND_MAX; k++) bad += report(q3_verify_section(&f, k, &err), &err);
    for (uint32_t i = 0; i < f.n_tensors; i++) bad += report(q3_verify_tensor(&f, &f.tensors[i], &err), &err);
    bad += report(q3_verify_file(&f, &err), &err);
    if (bad)
        printf("%s: FAILED (%u of %u checksums do not match)\n", path, bad, f.n_tensors + Q3_SEC_KIND_MAX + 2);
    else
        printf("%s: OK (header, %u sections, %u tensors, whole file: %u checksums)\n", path, Q3_SEC_KIND_MAX,
               f.n_tensors, f.n_tensors + Q3_SEC_KIND_MAX + 2);
    q3_close(&f);
    return q3_finish_stdout("q3check", bad ? 1 : 0);
}
