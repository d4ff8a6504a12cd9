/* q3_write.c - write a .q3 file atomically: temp file beside the target, fsync, rename.
 * Every byte after the header is written once, in file order, so the whole-file
 * checksum is computed on the way; the header is written last. */
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <signal.h>
#include <sys/stat.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <xxhash.h>
#include <zlib.h>
#include "q3_format.h"

#define WRITE_BUF (4u << 20)

/* The temp file being written, for the signal handler (async-signal-safe unlink). */
static char active_temp[4096];
static volatile sig_atomic_t temp_active;

void q3_write_abandon(void)
{
    if (temp_active) unlink(active_temp);
}

static void on_fatal_signal(int sig)
{
    q3_write_abandon();
    signal(sig, SIG_DFL);
    raise(sig);
}

typedef struct {
    int fd;
    const char *path; /* the target, for messages */
    uint64_t off;     /* file offset of the next byte */
    uint8_t *buf;
    size_t fill;
    XXH3_state_t *file_hash;
    XXH3_state_t *section_hash; /* NULL outside a hashed section */
    q3_err *err;
    int failed;
} writer;

static int flush_buf(writer *w)
{
    size_t done = 0;
    while (done < w->fill) {
        ssize_t n = write(w->fd, w->buf + done, w->fill - done);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) {
            q3_set_err(w->err, "%s: write failed at offset %llu: %s", w->path,
                       (unsigned long long)(w->off - w->fill + done), n < 0 ? strerror(errno) : "short write");
            w->failed = 1;
            return -1;
        }
        done += (size_t)n;
    }
    w->fill = 0;
    return 0;
}

static int emit(writer *w, const void *data, size_t n)
{
    const uint8_t *p = data;
    if (w->failed) return -1;
    XXH3_64bits_update(w->file_hash, p, n);
    if (w->section_hash) XXH3_64bits_update(w->section_hash, p, n);
    w->off += n;
    while (n) {
        size_t take = WRITE_BUF - w->fill < n ? WRITE_BUF - w->fill : n;
        memcpy(w->buf + w->fill, p, take);
        w->fill += take;
        p += take;
        n -= take;
        if (w->fill == WRITE_BUF && flush_buf(w)) return -1;
    }
    return 0;
}

static int pad_to(writer *w, uint64_t target)
{
    static const uint8_t zeros[4096];
    while (w->off < target) {
        uint64_t n = target - w->off < sizeof zeros ? target - w->off : sizeof zeros;
        if (emit(w, zeros, (size_t)n)) return -1;
    }
    return 0;
}

static uint64_t align_up(uint64_t v, uint64_t a) { return (v + a - 1) / a * a; }

static void put_section(uint8_t *e, uint32_t kind, uint32_t comp, uint64_t off, uint64_t size, uint64_t raw,
                        uint32_t align, uint64_t checksum)
{
    memset(e, 0, Q3_SECTION_ENTRY_SIZE);
    q3_wr32(e + 0, kind);
    q3_wr32(e + 4, comp);
    q3_wr64(e + 8, off);
    q3_wr64(e + 16, size);
    q3_wr64(e + 24, raw);
    q3_wr32(e + 32, align);
    q3_wr64(e + 40, checksum);
}

static int check_job(const char *path, const q3_write_job *job, q3_err *err)
{
    for (uint32_t i = 0; i < job->n_tensors; i++) {
        const q3_tensor_spec *t = &job->tensors[i];
        if (!memchr(t->name, 0, Q3_TENSOR_NAME_MAX) || t->ndim < 1 || t->ndim > 2 || t->shape[0] == 0 ||
            t->shape[1] == 0 || (t->ndim == 1 && (t->shape[1] != 1 || t->layout != Q3_LAYOUT_ROWMAJOR)) ||
            t->layout > Q3_LAYOUT_R16C32 || t->shape[0] * t->shape[1] > (1ull << 40)) {
            q3_set_err(err, "%s: tensor %u ('%.63s'): invalid name, shape or layout for the writer", path, i,
                       t->name);
            return -1;
        }
    }
    return 0;
}

/* Compress the tokenizer records; *out is malloc'd. */
static int pack_tokenizer(const char *path, const q3_tokdata *td, uint8_t **out, uint64_t *size, uint64_t *raw,
                          q3_err *err)
{
    uint8_t *plain;
    size_t plain_size;
    if (q3_tokdata_serialize(td, &plain, &plain_size, err)) return -1;
    uLongf bound = compressBound((uLong)plain_size);
    uint8_t *z = malloc(bound);
    if (!z) {
        free(plain);
        q3_set_err(err, "%s: out of memory compressing the tokenizer", path);
        return -1;
    }
    int rc = compress2(z, &bound, plain, (uLong)plain_size, 6);
    free(plain);
    if (rc != Z_OK) {
        free(z);
        q3_set_err(err, "%s: zlib compress of the tokenizer failed: %s", path, zError(rc));
        return -1;
    }
    *out = z;
    *size = bound;
    *raw = plain_size;
    return 0;
}

static int write_body(writer *w, const q3_write_job *job, int fd_unused)
{
    (void)fd_unused;
    q3_err *err = w->err;
    uint8_t cfg[Q3_CONFIG_SIZE], gen[Q3_GENERATION_SIZE];
    q3_encode_config(job->config, cfg);
    q3_encode_generation(job->generation, gen);
    uint8_t *tok = NULL;
    uint64_t tok_size, tok_raw;
    if (pack_tokenizer(w->path, job->tokenizer, &tok, &tok_size, &tok_raw, err)) return -1;

    /* Plan every offset first (spec.md 1). */
    uint64_t cfg_off = Q3_HEADER_SIZE, gen_off = cfg_off + Q3_CONFIG_SIZE, tok_off = gen_off + Q3_GENERATION_SIZE;
    uint64_t weights_off = align_up(tok_off + tok_size, Q3_WEIGHTS_ALIGN);
    uint32_t n = job->n_tensors;
    uint64_t *t_off = calloc(n ? n : 1, sizeof *t_off), *t_size = calloc(n ? n : 1, sizeof *t_size);
    uint64_t *t_sum = calloc(n ? n : 1, sizeof *t_sum);
    uint8_t *dir = NULL;
    uint16_t *rowmajor = NULL, *tiled = NULL;
    XXH3_state_t *sec = XXH3_createState();
    int rc = -1;
    if (!t_off || !t_size || !t_sum || !sec) {
        q3_set_err(err, "%s: out of memory planning %u tensors", w->path, n);
        goto out;
    }
    uint64_t at = weights_off, max_elems = 1, total = 0;
    for (uint32_t i = 0; i < n; i++) {
        const q3_tensor_spec *t = &job->tensors[i];
        uint64_t elems = q3_layout_elems(t->layout, t->shape[0], t->shape[1]);
        at = align_up(at, Q3_TENSOR_ALIGN);
        t_off[i] = at;
        t_size[i] = 2 * elems;
        at += t_size[i];
        total += t_size[i];
        if (elems > max_elems) max_elems = elems;
    }
    uint64_t weights_size = at - weights_off;
    uint64_t dir_off = align_up(at, 8), dir_size = 8 + (uint64_t)n * Q3_TENSOR_ENTRY_SIZE;
    uint64_t table_off = align_up(dir_off + dir_size, 8);
    uint64_t file_size = table_off + Q3_SEC_KIND_MAX * Q3_SECTION_ENTRY_SIZE;

    rowmajor = malloc(max_elems * 2);
    tiled = malloc(max_elems * 2);
    dir = calloc(1, dir_size);
    if (!rowmajor || !tiled || !dir) {
        q3_set_err(err, "%s: out of memory for a %llu-element tensor buffer", w->path, (unsigned long long)max_elems);
        goto out;
    }
    /* The header is written last; reserve its bytes without hashing them. */
    static const uint8_t zero_header[Q3_HEADER_SIZE];
    if (write(w->fd, zero_header, Q3_HEADER_SIZE) != Q3_HEADER_SIZE) {
        q3_set_err(err, "%s: write failed at offset 0: %s", w->path, strerror(errno));
        goto out;
    }
    w->off = Q3_HEADER_SIZE;
    if (emit(w, cfg, sizeof cfg) || emit(w, gen, sizeof gen) || emit(w, tok, tok_size) || pad_to(w, weights_off))
        goto out;

    XXH3_64bits_reset(sec);
    w->section_hash = sec;
    uint64_t done = 0;
    for (uint32_t i = 0; i < n; i++) {
        const q3_tensor_spec *t = &job->tensors[i];
        if (pad_to(w, t_off[i])) goto out;
        if (job->fill(job->fill_ctx, i, rowmajor, err)) goto out;
        q3_tile_pack(t->layout, rowmajor, t->shape[0], t->shape[1], tiled);
        t_sum[i] = XXH3_64bits(tiled, t_size[i]);
        if (emit(w, tiled, t_size[i])) goto out;
        done += t_size[i];
        if (job->progress) job->progress(job->progress_ctx, done, total);
    }
    uint64_t weights_sum = XXH3_64bits_digest(sec);
    w->section_hash = NULL;

    q3_wr32(dir, n);
    for (uint32_t i = 0; i < n; i++) {
        const q3_tensor_spec *t = &job->tensors[i];
        uint8_t *e = dir + 8 + (uint64_t)i * Q3_TENSOR_ENTRY_SIZE;
        memcpy(e, t->name, strnlen(t->name, Q3_TENSOR_NAME_MAX - 1));
        int tiled_layout = t->layout == Q3_LAYOUT_R16C32;
        q3_wr32(e + 64, Q3_DTYPE_BF16);
        q3_wr32(e + 68, t->layout);
        q3_wr32(e + 72, t->ndim);
        q3_wr32(e + 76, tiled_layout ? Q3_TILE_ROWS : 0);
        q3_wr32(e + 80, tiled_layout ? Q3_TILE_COLS : 0);
        q3_wr64(e + 88, t->shape[0]);
        q3_wr64(e + 96, t->shape[1]);
        q3_wr64(e + 104, t_off[i]);
        q3_wr64(e + 112, t_size[i]);
        q3_wr64(e + 120, t_sum[i]);
    }
    if (pad_to(w, dir_off) || emit(w, dir, dir_size) || pad_to(w, table_off)) goto out;

    uint8_t table[Q3_SEC_KIND_MAX * Q3_SECTION_ENTRY_SIZE];
    put_section(table + 0 * Q3_SECTION_ENTRY_SIZE, Q3_SEC_CONFIG, Q3_COMP_NONE, cfg_off, Q3_CONFIG_SIZE,
                Q3_CONFIG_SIZE, 8, XXH3_64bits(cfg, sizeof cfg));
    put_section(table + 1 * Q3_SECTION_ENTRY_SIZE, Q3_SEC_GENERATION, Q3_COMP_NONE, gen_off, Q3_GENERATION_SIZE,
                Q3_GENERATION_SIZE, 8, XXH3_64bits(gen, sizeof gen));
    put_section(table + 2 * Q3_SECTION_ENTRY_SIZE, Q3_SEC_TOKENIZER, Q3_COMP_ZLIB, tok_off, tok_size, tok_raw, 1,
                XXH3_64bits(tok, tok_size));
    put_section(table + 3 * Q3_SECTION_ENTRY_SIZE, Q3_SEC_WEIGHTS, Q3_COMP_NONE, weights_off, weights_size,
                weights_size, Q3_WEIGHTS_ALIGN, weights_sum);
    put_section(table + 4 * Q3_SECTION_ENTRY_SIZE, Q3_SEC_TENSORS, Q3_COMP_NONE, dir_off, dir_size, dir_size, 8,
                XXH3_64bits(dir, dir_size));
    if (emit(w, table, sizeof table) || flush_buf(w)) goto out;
    if (w->off != file_size) {
        q3_set_err(err, "%s: internal error: wrote %llu bytes, planned %llu", w->path, (unsigned long long)w->off,
                   (unsigned long long)file_size);
        goto out;
    }

    uint8_t header[Q3_HEADER_SIZE] = {0};
    memcpy(header, Q3_MAGIC, 8);
    q3_wr32(header + 8, Q3_VERSION);
    q3_wr32(header + 12, Q3_HEADER_SIZE);
    q3_wr64(header + 16, file_size);
    q3_wr64(header + 24, table_off);
    q3_wr32(header + 32, Q3_SEC_KIND_MAX);
    q3_wr64(header + 40, XXH3_64bits_digest(w->file_hash));
    q3_wr64(header + 56, XXH3_64bits(header, 56));
    if (pwrite(w->fd, header, sizeof header, 0) != (ssize_t)sizeof header) {
        q3_set_err(err, "%s: writing the header failed: %s", w->path, strerror(errno));
        goto out;
    }
    rc = 0;
out:
    free(tok);
    free(t_off);
    free(t_size);
    free(t_sum);
    free(dir);
    free(rowmajor);
    free(tiled);
    XXH3_freeState(sec);
    return rc;
}

int q3_write_file(const char *path, const q3_write_job *job, q3_err *err)
{
    if (check_job(path, job, err)) return -1;
    if (strlen(path) + 16 > sizeof active_temp) {
        q3_set_err(err, "%s: output path is too long", path);
        return -1;
    }
    snprintf(active_temp, sizeof active_temp, "%s.tmp.XXXXXX", path);
    int fd = mkstemp(active_temp);
    if (fd < 0) {
        char dir_copy[4096];
        snprintf(dir_copy, sizeof dir_copy, "%s", path);
        q3_set_err(err, "%s: cannot create a temporary file in %s: %s", path, dirname(dir_copy), strerror(errno));
        return -1;
    }
    temp_active = 1;
    struct sigaction sa, old_int, old_term, old_hup;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_fatal_signal;
    sigaction(SIGINT, &sa, &old_int);
    sigaction(SIGTERM, &sa, &old_term);
    sigaction(SIGHUP, &sa, &old_hup);

    writer w = {.fd = fd, .path = path, .err = err};
    w.buf = malloc(WRITE_BUF);
    w.file_hash = XXH3_createState();
    int rc = -1;
    if (!w.buf || !w.file_hash) {
        q3_set_err(err, "%s: out of memory for the write buffer", path);
    } else {
        XXH3_64bits_reset(w.file_hash);
        (void)fchmod(fd, 0644); /* mkstemp makes 0600; a model file is not secret */
        rc = write_body(&w, job, fd);
    }
    if (rc == 0 && fsync(fd) != 0) {
        q3_set_err(err, "%s: fsync failed: %s", path, strerror(errno));
        rc = -1;
    }
    if (close(fd) != 0 && rc == 0) {
        q3_set_err(err, "%s: close failed: %s", path, strerror(errno));
        rc = -1;
    }
    if (rc == 0 && rename(active_temp, path) != 0) {
        q3_set_err(err, "%s: cannot rename %s into place: %s", path, active_temp, strerror(errno));
        rc = -1;
    }
    if (rc != 0) unlink(active_temp);
    temp_active = 0;
    sigaction(SIGINT, &old_int, NULL);
    sigaction(SIGTERM, &old_term, NULL);
    sigaction(SIGHUP, &old_hup, NULL);
    free(w.buf);
    XXH3_freeState(w.file_hash);
    return rc;
}
