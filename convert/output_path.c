/* output_path.c - refuse an output path that the final rename would make destructive. */
#include <dirent.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include "hf_files.h"
#include "json_util.h"
#include "output_path.h"

int q3_check_output_path(const char *out, const char *const *inputs, size_t n, q3_err *err)
{
    if (!out[0]) {
        q3_set_err(err, "the output path is empty");
        return -1;
    }
    struct stat so;
    if (stat(out, &so) != 0) return 0; /* nothing there (or nothing we may see): the writer decides */
    if (!S_ISREG(so.st_mode)) {
        q3_set_err(err, "%s: exists and is %s; q3convert writes a new file or replaces a regular one only", out,
                   q3_file_type_name(so.st_mode));
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        struct stat si;
        if (stat(inputs[i], &si) == 0 && si.st_dev == so.st_dev && si.st_ino == so.st_ino) {
            q3_set_err(err, "%s: is the same file as the input %s; writing there would destroy the checkpoint",
                       out, inputs[i]);
            return -1;
        }
    }
    return 0;
}

static int ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && strcmp(s + n - k, suffix) == 0;
}

typedef struct {
    char **v;
    size_t n, cap;
} path_list;

/* Append hf_dir/name; a name too long to join is no file the readers can open either. */
static int add_input(path_list *l, const char *hf_dir, const char *name)
{
    char p[4096];
    if (q3_path_join(p, sizeof p, hf_dir, name)) return 0;
    if (l->n == l->cap) {
        size_t cap = l->cap ? 2 * l->cap : 16;
        char **v = realloc(l->v, cap * sizeof *v);
        if (!v) return -1;
        l->v = v;
        l->cap = cap;
    }
    if (!(l->v[l->n] = strdup(p))) return -1;
    l->n++;
    return 0;
}

int q3_check_output_for_checkpoint(const char *out, const char *hf_dir, q3_err *err)
{
    static const char *const names[] = Q3_HF_INPUT_NAMES;
    path_list l = {0};
    int rc = -1, oom = 0;
    for (size_t i = 0; i < sizeof names / sizeof names[0] && !oom; i++) oom = add_input(&l, hf_dir, names[i]);
    DIR *d = opendir(hf_dir); /* an unreadable folder is reported by the readers */
    for (struct dirent *e; d && !oom && (e = readdir(d));)
        if (ends_with(e->d_name, Q3_HF_SHARD_SUFFIX)) oom = add_input(&l, hf_dir, e->d_name);
    if (d) closedir(d);
    if (oom)
        q3_set_err(err, "%s: out of memory listing the inputs in %s", out, hf_dir);
    else
        rc = q3_check_output_path(out, (const char *const *)l.v, l.n, err);
    for (size_t i = 0; i < l.n; i++) free(l.v[i]);
    free(l.v);
    return rc;
}
