/* q3_map.c - map a whole regular file read-only (shared by the .q3 and safetensors readers),
 * or load it into anonymous memory. */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include "q3_format.h"

const char *q3_file_type_name(unsigned mode)
{
    switch (mode & S_IFMT) {
    case S_IFREG: return "a regular file";
    case S_IFDIR: return "a directory";
    case S_IFIFO: return "a FIFO";
    case S_IFSOCK: return "a socket";
    case S_IFCHR: return "a character device";
    case S_IFBLK: return "a block device";
    case S_IFLNK: return "a symbolic link";
    default: return "not a regular file";
    }
}

/* Open path for reading and take its size; a path that is not a regular file
 * is refused. O_NONBLOCK: opening a FIFO would otherwise wait for a writer
 * forever; for a regular file it changes nothing. Returns the descriptor, or -1 with err. */
static int open_regular(const char *path, size_t *size, q3_err *err)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) {
        q3_set_err(err, "%s: cannot open: %s", path, strerror(errno));
        return -1;
    }
    struct stat st;
    if (fstat(fd, &st) != 0) {
        q3_set_err(err, "%s: cannot stat: %s", path, strerror(errno));
        close(fd);
        return -1;
    }
    if (!S_ISREG(st.st_mode)) {
        q3_set_err(err, "%s: not a regular file (it is %s)", path, q3_file_type_name(st.st_mode));
        close(fd);
        return -1;
    }
    *size = (size_t)st.st_size;
    return fd;
}

int q3_map_file(const char *path, const uint8_t **map, uint64_t *size, q3_err *err)
{
    *map = NULL;
    *size = 0;
    size_t n;
    int fd = open_regular(path, &n, err);
    if (fd < 0) return -1;
    if (n == 0) { /* mmap refuses length 0; an empty file maps to nothing */
        close(fd);
        return 0;
    }
    void *m = mmap(NULL, n, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (m == MAP_FAILED) {
        q3_set_err(err, "%s: mmap of %lld bytes failed: %s", path, (long long)n, strerror(errno));
        return -1;
    }
#ifdef MADV_HUGEPAGE
    /* Decode streams every weight once a token through this mapping: with 4 KiB
     * pages that is ~290 000 TLB entries a token at 0.6B. Pages of the file that
     * are not yet in the page cache are then read as 2 MiB folios and mapped by
     * PMD, as far as the kernel allows (docs/perf.md: decode +2-8 % against the
     * same file cached in 4 KiB pages). Advice only: a refusal changes nothing. */
    (void)madvise(m, n, MADV_HUGEPAGE);
#endif
    *map = m;
    *size = (uint64_t)n;
    q3_mapguard_add(*map, *size, path);
    return 0;
}

int q3_load_file(const char *path, const uint8_t **map, uint64_t *size, q3_err *err)
{
    *map = NULL;
    *size = 0;
    size_t n;
    int fd = open_regular(path, &n, err);
    if (fd < 0) return -1;
    if (n == 0) {
        close(fd);
        return 0;
    }
    uint8_t *m = mmap(NULL, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED) {
        q3_set_err(err, "%s: cannot allocate %zu bytes to load it: %s", path, n, strerror(errno));
        close(fd);
        return -1;
    }
    (void)madvise(m, n, MADV_HUGEPAGE); /* a request: without THP the copy still works */
    for (size_t done = 0; done < n;) {
        ssize_t r = pread(fd, m + done, n - done < (1u << 30) ? n - done : (1u << 30), (off_t)done);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) {
            q3_set_err(err, "%s: read failed at offset %zu of %zu: %s", path, done, n,
                       r < 0 ? strerror(errno) : "the file shrank");
            munmap(m, n);
            close(fd);
            return -1;
        }
        done += (size_t)r;
    }
    close(fd);
    (void)mprotect(m, n, PROT_READ); /* as read-only as the mapping it replaces */
    *map = m;
    *size = (uint64_t)n;
    return 0;
}

void q3_unmap_file(const uint8_t *map, uint64_t size)
{
    q3_mapguard_remove(map);
    if (map && size) munmap((void *)map, (size_t)size);
}
