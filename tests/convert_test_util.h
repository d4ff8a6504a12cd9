/* convert_test_util.h - small file helpers shared by the tests/test_convert_*.c binaries
 * (header-only: each test binary links only the format and convert libraries). */
#ifndef Q3_CONVERT_TEST_UTIL_H
#define Q3_CONVERT_TEST_UTIL_H

#include <dirent.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* A fresh directory under /tmp; free with tu_rm_rf + free. */
static inline char *tu_mkdtemp(void)
{
    char *d = strdup("/tmp/q3_test_convert_XXXXXX");
    assert_non_null(d);
    assert_non_null(mkdtemp(d));
    return d;
}

static inline void tu_path(char *out, size_t cap, const char *dir, const char *name)
{
    assert_true((size_t)snprintf(out, cap, "%s/%s", dir, name) < cap);
}

static inline void tu_write(const char *path, const void *data, size_t n)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(data, 1, n, f), n);
    assert_int_equal(fclose(f), 0);
}

static inline void tu_write_text(const char *dir, const char *name, const char *text)
{
    char p[4096];
    tu_path(p, sizeof p, dir, name);
    tu_write(p, text, strlen(text));
}

static inline void tu_copy(const char *from, const char *to)
{
    FILE *in = fopen(from, "rb");
    if (!in) fail_msg("cannot open %s (run `make fixtures`)", from);
    FILE *out = fopen(to, "wb");
    assert_non_null(out);
    char buf[1 << 16];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, in)) > 0) assert_int_equal(fwrite(buf, 1, n, out), n);
    fclose(in);
    assert_int_equal(fclose(out), 0);
}

static inline int tu_unlink_cb(const char *p, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(p);
}

static inline void tu_rm_rf(char *dir)
{
    if (!dir) return;
    nftw(dir, tu_unlink_cb, 16, FTW_DEPTH | FTW_PHYS);
    free(dir);
}

/* The per-binary scratch directory: cmocka group setup / teardown. */
static char *tu_tmp;
static inline int tu_setup(void **state)
{
    (void)state;
    tu_tmp = tu_mkdtemp();
    return 0;
}
static inline int tu_teardown(void **state)
{
    (void)state;
    tu_rm_rf(tu_tmp);
    return 0;
}

/* Entries of dir whose names start with prefix (to prove nothing was left behind). */
static inline int tu_count_prefix(const char *dir, const char *prefix)
{
    DIR *d = opendir(dir);
    assert_non_null(d);
    int n = 0;
    for (struct dirent *e; (e = readdir(d));)
        n += strncmp(e->d_name, prefix, strlen(prefix)) == 0;
    closedir(d);
    return n;
}

static inline void tu_assert_contains(const char *msg, const char *needle)
{
    if (!strstr(msg, needle)) fail_msg("message \"%s\" does not contain \"%s\"", msg, needle);
}

/* The build directory ($BUILD, default build): tests run from the repo root. */
static inline const char *tu_build(void)
{
    const char *b = getenv("BUILD");
    return b && *b ? b : "build";
}

#endif
