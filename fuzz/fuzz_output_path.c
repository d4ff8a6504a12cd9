/* fuzz_output_path.c - the converter's output-path check (convert/output_path.h).
 * The input builds a scene in a scratch folder: what is at the output path (nothing,
 * a regular file, a folder, a FIFO, a socket, a symlink to an input, to a FIFO, to a
 * folder or to nothing, a hard link to an input) and how the path names it (directly,
 * through ./ and ../, through a symlinked folder, an input's own path, empty, or a
 * name taken from the input). Byte 0 picks what is there, byte 1 how it is named,
 * byte 2 which input; the rest is the name.
 * Invariants: a refusal is one line naming the path; an accepted path is then
 * written as the writer writes it (a temp file renamed over it), and every input must
 * still hold its bytes, and what was replaced must have been a regular file or nothing. */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>
#include "fuzz_util.h"
#include "../convert/output_path.h"

#define N_INPUTS 4
static const char *const input_names[N_INPUTS] = {"config.json", "model.safetensors", "tokenizer.json",
                                                  "model-00001-of-00002.safetensors"};
static char fuzz_outpath_root[64];

static int fuzz_outpath_rm(const char *p, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb, (void)flag, (void)ftw;
    return remove(p);
}
static void fuzz_outpath_cleanup(void) { nftw(fuzz_outpath_root, fuzz_outpath_rm, 16, FTW_DEPTH | FTW_PHYS); }

static void fuzz_outpath_write(const char *path, const char *text)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    FUZZ_ASSERT(fd >= 0, "create %s: %s", path, strerror(errno));
    FUZZ_ASSERT(write(fd, text, strlen(text)) == (ssize_t)strlen(text), "write %s", path);
    close(fd);
}

static int fuzz_outpath_holds(const char *path, const char *text)
{
    char buf[64] = {0};
    int fd = open(path, O_RDONLY);
    if (fd < 0) return 0;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    return n == (ssize_t)strlen(text) && memcmp(buf, text, (size_t)n) == 0;
}

/* Put what kind names at path (the inputs and the scene folders exist). */
static void fuzz_outpath_place(unsigned kind, const char *path, const char *input, const char *scene)
{
    char other[256];
    switch (kind) {
    case 1: fuzz_outpath_write(path, "old"); break;
    case 2: FUZZ_ASSERT(mkdir(path, 0755) == 0, "mkdir"); break;
    case 3: FUZZ_ASSERT(mkfifo(path, 0644) == 0, "mkfifo"); break;
    case 4: {
        struct sockaddr_un a = {.sun_family = AF_UNIX};
        int s = socket(AF_UNIX, SOCK_STREAM, 0);
        size_t n = strlen(path);
        FUZZ_ASSERT(n < sizeof a.sun_path, "socket path too long: %s", path); /* bind would name another */
        memcpy(a.sun_path, path, n + 1);
        FUZZ_ASSERT(s >= 0 && bind(s, (struct sockaddr *)&a, sizeof a) == 0, "socket %s", path);
        close(s);
        break;
    }
    case 5: FUZZ_ASSERT(symlink(input, path) == 0, "symlink"); break;
    case 6: FUZZ_ASSERT(link(input, path) == 0, "link"); break;
    case 7:
        snprintf(other, sizeof other, "%s/out/fifo", scene);
        FUZZ_ASSERT(mkfifo(other, 0644) == 0 && symlink(other, path) == 0, "symlink to a FIFO");
        break;
    case 8: FUZZ_ASSERT(symlink("nowhere", path) == 0, "dangling symlink"); break;
    case 9:
        snprintf(other, sizeof other, "%s/in", scene);
        FUZZ_ASSERT(symlink(other, path) == 0, "symlink to a folder");
        break;
    default: break; /* nothing there */
    }
}

int fuzz_output_path(const uint8_t *data, size_t size)
{
    if (!fuzz_outpath_root[0]) {
        snprintf(fuzz_outpath_root, sizeof fuzz_outpath_root, "/tmp/q3_fuzz_output_path_XXXXXX");
        FUZZ_ASSERT(mkdtemp(fuzz_outpath_root), "mkdtemp: %s", strerror(errno));
        atexit(fuzz_outpath_cleanup);
    }
    unsigned kind = size > 0 ? data[0] % 10 : 0, naming = size > 1 ? data[1] % 7 : 0;
    unsigned k = size > 2 ? data[2] % N_INPUTS : 0;
    char scene[128], p[256], out[512], inputs[N_INPUTS][256];
    const char *input_ptrs[N_INPUTS];
    snprintf(scene, sizeof scene, "%s/s", fuzz_outpath_root);
    nftw(scene, fuzz_outpath_rm, 16, FTW_DEPTH | FTW_PHYS);
    FUZZ_ASSERT(mkdir(scene, 0755) == 0, "mkdir %s: %s", scene, strerror(errno));
    snprintf(p, sizeof p, "%s/in", scene);
    FUZZ_ASSERT(mkdir(p, 0755) == 0, "mkdir in");
    snprintf(p, sizeof p, "%s/out", scene);
    FUZZ_ASSERT(mkdir(p, 0755) == 0, "mkdir out");
    snprintf(p, sizeof p, "%s/indir", scene);
    FUZZ_ASSERT(symlink("in", p) == 0, "symlink indir");
    for (unsigned i = 0; i < N_INPUTS; i++) {
        snprintf(inputs[i], sizeof inputs[i], "%s/in/%s", scene, input_names[i]);
        fuzz_outpath_write(inputs[i], input_names[i]); /* each input holds its own name */
        input_ptrs[i] = inputs[i];
    }
    snprintf(p, sizeof p, "%s/out/x.q3", scene);
    fuzz_outpath_place(kind, p, inputs[k], scene);

    switch (naming) {
    case 1: snprintf(out, sizeof out, "%s", inputs[k]); break;
    case 2: snprintf(out, sizeof out, "%s/out/./x.q3", scene); break;
    case 3: snprintf(out, sizeof out, "%s/indir/%s", scene, input_names[k]); break;
    case 4: snprintf(out, sizeof out, "%s/out/../in/%s", scene, input_names[k]); break;
    case 5: out[0] = 0; break;
    case 6: { /* a name from the input, below out/: letters, dots and slashes reach anything */
        size_t n = (size_t)snprintf(out, sizeof out, "%s/out/", scene);
        for (size_t i = 3; i < size && n < sizeof out - 1; i++) {
            static const char alphabet[] = "x.q3/._-inoutdirconfig.jsonmodel.safetensors";
            out[n++] = alphabet[data[i] % (sizeof alphabet - 1)];
        }
        out[n] = 0;
        break;
    }
    default: snprintf(out, sizeof out, "%s/out/x.q3", scene); break;
    }

    struct stat before;
    int existed = stat(out, &before) == 0;
    q3_err err = {{0}};
    if (q3_check_output_path(out, input_ptrs, N_INPUTS, &err)) {
        fuzz_check_err(&err, out);
    } else {
        FUZZ_ASSERT(!existed || S_ISREG(before.st_mode), "accepted %s, which is not a regular file", out);
        /* What q3_write_file does once the model is written. */
        snprintf(p, sizeof p, "%s/out/.tmp", scene);
        fuzz_outpath_write(p, "new");
        if (rename(p, out) != 0) unlink(p); /* e.g. a missing folder on the way: the writer reports it */
        for (unsigned i = 0; i < N_INPUTS; i++)
            FUZZ_ASSERT(fuzz_outpath_holds(inputs[i], input_names[i]), "writing %s destroyed the input %s", out,
                        inputs[i]);
    }
    nftw(scene, fuzz_outpath_rm, 16, FTW_DEPTH | FTW_PHYS);
    return 0;
}

FUZZ_ENTRY(fuzz_output_path)
