/* q3check - verify a .q3 file and name each part that is damaged: every checksum (the
 * header, each section, each tensor, the whole file), every weight finite, and every
 * check q3run makes when it loads the file (runtime/model_check.h). Exit 0 only when
 * all pass: OK means q3run can load it. */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include "../format/q3_format.h"
#include "../runtime/model_check.h"

static int report(int failed, const q3_err *err)
{
    if (failed) printf("%s\n", err->msg);
    return failed ? 1 : 0;
}

static void usage(FILE *f)
{
    fprintf(f, "usage: q3check FILE.q3\n"
               "  verifies the header, section, tensor and whole-file checksums, that every\n"
               "  weight is finite, and that q3run can load the file\n"
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

/* Why the file could not even be opened, for the summary line. */
static const char *open_failure(const char *path)
{
    struct stat st;
    if (stat(path, &st) != 0) return errno == ENOENT ? "the file is missing" : "the file cannot be examined";
    if (!S_ISREG(st.st_mode)) return "not a regular file";
    return "the file's structure is invalid; no checksum was checked";
}

/* q3run's load checks; the tokenizer and records they build are not needed here. */
static int loadable(const q3_file *f, q3_err *err)
{
    q3_tokdata td;
    q3_tokenizer *tk;
    if (q3_model_check(f, &td, &tk, err)) return -1;
    q3_tokenizer_free(tk);
    q3_tokdata_free(&td);
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
        printf("%s\n%s: FAILED (%s)\n", err.msg, path, open_failure(path));
        return q3_finish_stdout("q3check", 1);
    }
    unsigned n_sums = f.n_tensors + Q3_SEC_KIND_MAX + 2;
    unsigned bad_sums = report(q3_verify_header(&f, &err), &err);
    for (uint32_t k = 1; k <= Q3_SEC_KIND_MAX; k++) bad_sums += report(q3_verify_section(&f, k, &err), &err);
    for (uint32_t i = 0; i < f.n_tensors; i++) bad_sums += report(q3_verify_tensor(&f, &f.tensors[i], &err), &err);
    bad_sums += report(q3_verify_file(&f, &err), &err);
    /* The contents are judged only when they are what the writer wrote: a damaged part
     * is named once, by its checksum, and not again by what the damage breaks. */
    unsigned nonfinite = 0;
    int unloadable = 0;
    if (!bad_sums) {
        for (uint32_t i = 0; i < f.n_tensors; i++) nonfinite += report(q3_verify_finite(&f, &f.tensors[i], &err), &err);
        unloadable = report(loadable(&f, &err), &err);
    }
    if (bad_sums || nonfinite || unloadable) {
        char why[256];
        size_t n = 0;
        if (bad_sums) n += (size_t)snprintf(why + n, sizeof why - n, "%u of %u checksums do not match", bad_sums, n_sums);
        if (nonfinite)
            n += (size_t)snprintf(why + n, sizeof why - n, "%s%u tensor%s with NaN or Inf", n ? "; " : "", nonfinite,
                                  nonfinite == 1 ? "" : "s");
        if (unloadable) snprintf(why + n, sizeof why - n, "%sq3run would refuse to load it", n ? "; " : "");
        printf("%s: FAILED (%s)\n", path, why);
    } else {
        printf("%s: OK (header, %u sections, %u tensors, whole file: %u checksums; weights finite; loadable)\n", path,
               Q3_SEC_KIND_MAX, f.n_tensors, n_sums);
    }
    q3_close(&f);
    return q3_finish_stdout("q3check", bad_sums || nonfinite || unloadable ? 1 : 0);
}
