/* fuzz_util.h - shared by the fuzz targets (fuzz/fuzz_*.c) and the replay test
 * (tests/test_fuzz_replay.c). Each target defines `int fuzz_NAME(const uint8_t *, size_t)`;
 * the libFuzzer entry point is added unless Q3_FUZZ_NO_MAIN is defined.
 *
 * A target aborts (a "crash" to libFuzzer and to the replay test) when the code
 * under test breaks one of the house rules: a refusal that is not one line naming
 * the input, or an accepted input whose pointers or sizes leave the input. */
#ifndef Q3_FUZZ_UTIL_H
#define Q3_FUZZ_UTIL_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "../format/q3_format.h"

#define FUZZ_ASSERT(cond, ...)                                              \
    do {                                                                    \
        if (!(cond)) {                                                      \
            fprintf(stderr, "%s:%d: fuzz invariant failed: %s: ", __FILE__, \
                    __LINE__, #cond);                                       \
            fprintf(stderr, __VA_ARGS__);                                   \
            fputc('\n', stderr);                                            \
            abort();                                                        \
        }                                                                   \
    } while (0)

/* A refusal: one non-empty line that names the input. */
static inline void fuzz_check_err(const q3_err *err, const char *name)
{
    size_t n = strnlen(err->msg, sizeof err->msg);
    FUZZ_ASSERT(n > 0 && n < sizeof err->msg, "empty or unterminated error message");
    FUZZ_ASSERT(!memchr(err->msg, '\n', n), "error message is more than one line: %s", err->msg);
    FUZZ_ASSERT(strstr(err->msg, name) != NULL, "error message does not name '%s': %s", name, err->msg);
}

/* Split the input at its first NUL byte: part 1 before it, part 2 after it (may be absent).
 * The JSON targets use it to carry two files in one input. */
static inline void fuzz_split(const uint8_t *data, size_t size, const char **a, size_t *an, const char **b,
                              size_t *bn)
{
    const uint8_t *z = size ? memchr(data, 0, size) : NULL;
    *a = (const char *)data;
    *an = z ? (size_t)(z - data) : size;
    *b = z ? (const char *)z + 1 : NULL;
    *bn = z ? size - *an - 1 : 0;
}

/* $BUILD of the test run (tests find the fixtures under it), default "build". */
static inline const char *fuzz_build_dir(void)
{
    const char *b = getenv("BUILD");
    return b && *b ? b : "build";
}

#ifdef Q3_FUZZ_NO_MAIN
#define FUZZ_ENTRY(fn)
#else
#define FUZZ_ENTRY(fn)                                                    \
    int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);         \
    int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)          \
    {                                                                     \
        fn(data, size);                                                   \
        return 0;                                                         \
    }
#endif

#endif
