/* q3_read.c - open a .q3 file: mmap, validate every record before use, verify checksums. */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>
#include <zlib.h>
#include "q3_format.h"

static const char *const section_names[] = {"?", "config", "generation", "tokenizer", "tensors", "weights"};

const char *q3_section_name(uint32_t kind)
{
    return kind >= 1 && kind <= Q3_SEC_KIND_MAX ? section_names[kind] : "unknown";
}

const q3_section *q3_get_section(const q3_file *f, uint32_t kind)
{
    if (kind < 1 || kind > Q3_SEC_KIND_MAX || !f->have_section[kind]) return NULL;
    return &f->sections[kind - 1];
}

static int is_pow2(uint32_t v) { return v && !(v & (v - 1)); }

static int read_header(q3_file *f, q3_err *err)
{
    const uint8_t *h = f->map;
    if (f->size < Q3_HEADER_SIZE) {
        q3_set_err(err, "%s: file is %llu byte%s, too short for the %u-byte header", f->path,
                   (unsigned long long)f->size, f->size == 1 ? "" : "s", Q3_HEADER_SIZE);
        return -1;
    }
    if (memcmp(h, Q3_MAGIC, 8) != 0) {
        q3_set_err(err, "%s: offset 0: bad magic, expected \"Q3MODEL\\0\" (not a .q3 file)", f->path);
        return -1;
    }
    f->version = q3_rd32(h + 8);
    if (f->version != Q3_VERSION) {
        q3_set_err(err, "%s: offset 8: version %u, this reader understands version %u", f->path, f->version, Q3_VERSION);
        return -1;
    }
    if (q3_rd32(h + 12) != Q3_HEADER_SIZE) {
        q3_set_err(err, "%s: offset 12: header_size %u, expected %u", f->path, q3_rd32(h + 12), Q3_HEADER_SIZE);
        return -1;
    }
    uint64_t declared = q3_rd64(h + 16);
    if (declared != f->size) {
        q3_set_err(err, "%s: offset 16: header says the file is %llu bytes but it is %llu (truncated or extended)",
                   f->path, (unsigned long long)declared, (unsigned long long)f->size);
        return -1;
    }
    f->section_table_offset = q3_rd64(h + 24);
    f->n_sections = q3_rd32(h + 32);
    f->file_checksum = q3_rd64(h + 40);
    f->header_checksum = q3_rd64(h + 56);
    if (f->n_sections != Q3_SEC_KIND_MAX) {
        q3_set_err(err, "%s: offset 32: section_count %u, expected %u", f->path, f->n_sections, Q3_SEC_KIND_MAX);
        return -1;
    }
    uint64_t table_size = (uint64_t)f->n_sections * Q3_SECTION_ENTRY_SIZE;
    if (f->section_table_offset < Q3_HEADER_SIZE || f->section_table_offset % 8 != 0 ||
        f->section_table_offset > f->size || f->size - f->section_table_offset < table_size) {
        q3_set_err(err, "%s: offset 24: section table at %llu (%llu bytes) does not fit in the file (%llu bytes)",
                   f->path, (unsigned long long)f->section_table_offset, (unsigned long long)table_size,
                   (unsigned long long)f->size);
        return -1;
    }
    return 0;
}

static int overlaps(uint64_t a, uint64_t an, uint64_t b, uint64_t bn) { return a < b + bn && b < a + an; }

static int read_section_table(q3_file *f, q3_err *err)
{
    uint64_t table_size = (uint64_t)f->n_sections * Q3_SECTION_ENTRY_SIZE;
    for (uint32_t i = 0; i < f->n_sections; i++) {
        uint64_t at = f->section_table_offset + (uint64_t)i * Q3_SECTION_ENTRY_SIZE;
        const uint8_t *e = f->map + at;
        q3_section s;
        s.kind = q3_rd32(e + 0);
        s.compression = q3_rd32(e + 4);
        s.offset = q3_rd64(e + 8);
        s.size = q3_rd64(e + 16);
        s.raw_size = q3_rd64(e + 24);
        s.alignment = q3_rd32(e + 32);
        s.checksum = q3_rd64(e + 40);
        if (s.kind < 1 || s.kind > Q3_SEC_KIND_MAX || f->have_section[s.kind]) {
            q3_set_err(err, "%s: offset %llu: section entry %u has kind %u (unknown or repeated)", f->path,
                       (unsigned long long)at, i, s.kind);
            return -1;
        }
        const char *name = q3_section_name(s.kind);
        if (s.compression > Q3_COMP_ZLIB || (s.compression == Q3_COMP_ZLIB && s.kind != Q3_SEC_TOKENIZER)) {
            q3_set_err(err, "%s: offset %llu: section '%s' has compression %u, not allowed there", f->path,
                       (unsigned long long)at, name, s.compression);
            return -1;
        }
        if (!is_pow2(s.alignment) || s.alignment > 65536 || s.offset % s.alignment != 0) {
            q3_set_err(err, "%s: offset %llu: section '%s' alignment %u / offset %llu invalid", f->path,
                       (unsigned long long)at, name, s.alignment, (unsigned long long)s.offset);
            return -1;
        }
        if (s.offset < Q3_HEADER_SIZE || s.offset > f->size || f->size - s.offset < s.size ||
            overlaps(s.offset, s.size, f->section_table_offset, table_size)) {
            q3_set_err(err, "%s: offset %llu: section '%s' [%llu, +%llu) lies outside the file (%llu bytes) or over the table",
                       f->path, (unsigned long long)at, name, (unsigned long long)s.offset,
                       (unsigned long long)s.size, (unsigned long long)f->size);
            return -1;
        }
        if (s.compression == Q3_COMP_NONE && s.raw_size != s.size) {
            q3_set_err(err, "%s: offset %llu: section '%s' raw_size %llu differs from size %llu though uncompressed",
                       f->path, (unsigned long long)at, name, (unsigned long long)s.raw_size,
                       (unsigned long long)s.size);
            return -1;
        }
        f->sections[s.kind - 1] = s;
        f->have_section[s.kind] = 1;
    }
    for (uint32_t a = 1; a <= Q3_SEC_KIND_MAX; a++)
        for (uint32_t b = a + 1; b <= Q3_SEC_KIND_MAX; b++) {
            const q3_section *sa = &f->sections[a - 1], *sb = &f->sections[b - 1];
            if (sa->size && sb->size && overlaps(sa->offset, sa->size, sb->offset, sb->size)) {
                q3_set_err(err, "%s: sections '%s' and '%s' overlap", f->path, q3_section_name(a), q3_section_name(b));
                return -1;
            }
        }
    return 0;
}

static int read_tensor_dir(q3_file *f, q3_err *err)
{
    const q3_section *dir = q3_get_section(f, Q3_SEC_TENSORS);
    const q3_section *w = q3_get_section(f, Q3_SEC_WEIGHTS);
    const uint8_t *p = f->map + dir->offset;
    if (dir->size < 8) {
        q3_set_err(err, "%s: section 'tensors' at %llu is %llu bytes, too short for its count", f->path,
                   (unsigned long long)dir->offset, (unsigned long long)dir->size);
        return -1;
    }
    uint32_t n = q3_rd32(p);
    if (dir->size != 8 + (uint64_t)n * Q3_TENSOR_ENTRY_SIZE) {
        q3_set_err(err, "%s: section 'tensors' at %llu: %u entries need %llu bytes, section has %llu", f->path,
                   (unsigned long long)dir->offset, n, (unsigned long long)(8 + (uint64_t)n * Q3_TENSOR_ENTRY_SIZE),
                   (unsigned long long)dir->size);
        return -1;
    }
    f->tensors = calloc(n ? n : 1, sizeof *f->tensors);
    if (!f->tensors) {
        q3_set_err(err, "%s: out of memory for %u tensor entries", f->path, n);
        return -1;
    }
    f->n_tensors = n;
    for (uint32_t i = 0; i < n; i++) {
        uint64_t at = dir->offset + 8 + (uint64_t)i * Q3_TENSOR_ENTRY_SIZE;
        const uint8_t *e = f->map + at;
        q3_tensor *t = &f->tensors[i];
        if (!memchr(e, 0, Q3_TENSOR_NAME_MAX)) {
            q3_set_err(err, "%s: offset %llu: tensor entry %u name is not NUL-terminated", f->path,
                       (unsigned long long)at, i);
            return -1;
        }
        memcpy(t->name, e, Q3_TENSOR_NAME_MAX);
        t->dtype = q3_rd32(e + 64);
        t->layout = q3_rd32(e + 68);
        t->ndim = q3_rd32(e + 72);
        t->tile_rows = q3_rd32(e + 76);
        t->tile_cols = q3_rd32(e + 80);
        t->shape[0] = q3_rd64(e + 88);
        t->shape[1] = q3_rd64(e + 96);
        t->offset = q3_rd64(e + 104);
        t->size = q3_rd64(e + 112);
        t->checksum = q3_rd64(e + 120);
        int tiled = t->layout == Q3_LAYOUT_R16C32;
        if (t->dtype != Q3_DTYPE_BF16 || t->layout > Q3_LAYOUT_R16C32 || t->ndim < 1 || t->ndim > 2 ||
            t->tile_rows != (tiled ? Q3_TILE_ROWS : 0) || t->tile_cols != (tiled ? Q3_TILE_COLS : 0) ||
            (t->ndim == 1 && (t->shape[1] != 1 || tiled))) {
            q3_set_err(err, "%s: tensor '%s' (entry at %llu): dtype %u / layout %u / ndim %u / tile %ux%u / shape "
                       "[%llu, %llu] is not a valid combination", f->path, t->name, (unsigned long long)at,
                       t->dtype, t->layout, t->ndim, t->tile_rows, t->tile_cols,
                       (unsigned long long)t->shape[0], (unsigned long long)t->shape[1]);
            return -1;
        }
        /* Divide, not multiply: [2^32, 2^32] would wrap rows * cols (and the size it implies) to 0. */
        if (t->shape[0] == 0 || t->shape[1] == 0 || t->shape[0] > (1ull << 32) || t->shape[1] > (1ull << 32) ||
            t->shape[0] > (1ull << 40) / t->shape[1]) {
            q3_set_err(err, "%s: tensor '%s': shape [%llu, %llu] is empty or too large", f->path, t->name,
                       (unsigned long long)t->shape[0], (unsigned long long)t->shape[1]);
            return -1;
        }
        uint64_t want = 2 * q3_layout_elems(t->layout, t->shape[0], t->shape[1]);
        if (t->size != want) {
            q3_set_err(err, "%s: tensor '%s': size %llu bytes, its shape and layout need %llu", f->path, t->name,
                       (unsigned long long)t->size, (unsigned long long)want);
            return -1;
        }
        if (t->offset % Q3_TENSOR_ALIGN != 0 || t->offset < w->offset || t->offset > w->offset + w->size ||
            w->offset + w->size - t->offset < t->size) {
            q3_set_err(err, "%s: tensor '%s': data [%llu, +%llu) is not a %u-aligned range inside the weights section "
                       "[%llu, +%llu)", f->path, t->name, (unsigned long long)t->offset,
                       (unsigned long long)t->size, Q3_TENSOR_ALIGN, (unsigned long long)w->offset,
                       (unsigned long long)w->size);
            return -1;
        }
        t->data = (const uint16_t *)(f->map + t->offset);
    }
    /* Names unique and data ranges disjoint: sort a copy of the offsets. */
    for (uint32_t i = 0; i < n; i++)
        for (uint32_t j = i + 1; j < n; j++) {
            const q3_tensor *a = &f->tensors[i], *b = &f->tensors[j];
            if (strcmp(a->name, b->name) == 0) {
                q3_set_err(err, "%s: tensor '%s' appears twice in the directory", f->path, a->name);
                return -1;
            }
            if (overlaps(a->offset, a->size, b->offset, b->size)) {
                q3_set_err(err, "%s: tensors '%s' and '%s' overlap", f->path, a->name, b->name);
                return -1;
            }
        }
    return 0;
}

static int open_common(q3_file *f, unsigned flags, q3_err *err)
{
    if (read_header(f, err) || read_section_table(f, err)) return -1;
    for (uint32_t k = 1; k <= Q3_SEC_KIND_MAX; k++)
        if (!f->have_section[k]) {
            q3_set_err(err, "%s: section '%s' is missing from the section table", f->path, q3_section_name(k));
            return -1;
        }
    if ((flags & Q3_OPEN_VERIFY_META) && !(flags & Q3_OPEN_NO_SECTION_CHECKS)) {
        static const uint32_t meta[] = {Q3_SEC_CONFIG, Q3_SEC_GENERATION, Q3_SEC_TOKENIZER, Q3_SEC_TENSORS};
        if (q3_verify_header(f, err)) return -1;
        for (size_t i = 0; i < sizeof meta / sizeof meta[0]; i++)
            if (q3_verify_section(f, meta[i], err)) return -1;
    }
    const q3_section *cs = q3_get_section(f, Q3_SEC_CONFIG), *gs = q3_get_section(f, Q3_SEC_GENERATION);
    if (q3_decode_config(f->map + cs->offset, cs->size, &f->config, f->path, err) ||
        q3_decode_generation(f->map + gs->offset, gs->size, &f->generation, f->path, err))
        return -1;
    for (uint32_t i = 0; i < f->generation.n_eos; i++)
        if (f->generation.eos_token_ids[i] < 0 || (uint32_t)f->generation.eos_token_ids[i] >= f->config.vocab_size) {
            q3_set_err(err, "%s: generation: eos_token_ids[%u] = %d is outside the vocabulary (%u)", f->path, i,
                       f->generation.eos_token_ids[i], f->config.vocab_size);
            return -1;
        }
    if (read_tensor_dir(f, err)) return -1;
    if ((flags & Q3_OPEN_VERIFY_WEIGHTS) && !(flags & Q3_OPEN_NO_SECTION_CHECKS)) {
        if (q3_verify_section(f, Q3_SEC_WEIGHTS, err)) return -1;
        for (uint32_t i = 0; i < f->n_tensors; i++)
            if (q3_verify_tensor(f, &f->tensors[i], err)) return -1;
        if (q3_verify_file(f, err)) return -1;
    }
    return 0;
}

static void set_path(q3_file *f, const char *path)
{
    snprintf(f->path, sizeof f->path, "%s", path ? path : "(memory)");
}

int q3_open_mem(q3_file *f, const void *buf, size_t size, const char *name, unsigned flags, q3_err *err)
{
    memset(f, 0, sizeof *f);
    set_path(f, name);
    f->map = buf;
    f->size = size;
    if (open_common(f, flags, err)) {
        q3_close(f);
        return -1;
    }
    return 0;
}

int q3_open(q3_file *f, const char *path, unsigned flags, q3_err *err)
{
    memset(f, 0, sizeof *f);
    set_path(f, path);
    if ((flags & Q3_OPEN_LOAD ? q3_load_file : q3_map_file)(path, &f->map, &f->size, err)) return -1;
    f->owns_map = 1;
    f->loaded = (flags & Q3_OPEN_LOAD) != 0;
    if (open_common(f, flags, err)) {
        q3_close(f);
        return -1;
    }
    return 0;
}

void q3_close(q3_file *f)
{
    if (!f) return;
    free(f->tensors);
    if (f->owns_map) q3_unmap_file(f->map, f->size);
    memset(f, 0, sizeof *f);
}

const q3_tensor *q3_find_tensor(const q3_file *f, const char *name)
{
    for (uint32_t i = 0; i < f->n_tensors; i++)
        if (strcmp(f->tensors[i].name, name) == 0) return &f->tensors[i];
    return NULL;
}

int q3_verify_header(const q3_file *f, q3_err *err)
{
    uint64_t h = XXH3_64bits(f->map, 56);
    if (h != f->header_checksum) {
        q3_set_err(err, "%s: header (offset 0): checksum %016llx, stored %016llx", f->path,
                   (unsigned long long)h, (unsigned long long)f->header_checksum);
        return -1;
    }
    return 0;
}

int q3_verify_section(const q3_file *f, uint32_t kind, q3_err *err)
{
    const q3_section *s = q3_get_section(f, kind);
    if (!s) {
        q3_set_err(err, "%s: section '%s' is missing", f->path, q3_section_name(kind));
        return -1;
    }
    uint64_t h = XXH3_64bits(f->map + s->offset, s->size);
    if (h != s->checksum) {
        q3_set_err(err, "%s: section '%s' (offset %llu, %llu bytes): checksum %016llx, stored %016llx", f->path,
                   q3_section_name(kind), (unsigned long long)s->offset, (unsigned long long)s->size,
                   (unsigned long long)h, (unsigned long long)s->checksum);
        return -1;
    }
    return 0;
}

int q3_verify_tensor(const q3_file *f, const q3_tensor *t, q3_err *err)
{
    uint64_t h = XXH3_64bits(f->map + t->offset, t->size);
    if (h != t->checksum) {
        q3_set_err(err, "%s: tensor '%s' (offset %llu, %llu bytes): checksum %016llx, stored %016llx", f->path,
                   t->name, (unsigned long long)t->offset, (unsigned long long)t->size, (unsigned long long)h,
                   (unsigned long long)t->checksum);
        return -1;
    }
    return 0;
}

int q3_verify_finite(const q3_file *f, const q3_tensor *t, q3_err *err)
{
    const uint8_t *p = f->map + t->offset; /* stored bytes; tile padding is zero, so finite */
    uint64_t n = t->size / 2, bad = 0, first = 0;
    for (uint64_t i = 0; i < n; i++)
        if (!q3_bf16_is_finite((uint16_t)(p[2 * i] | p[2 * i + 1] << 8)) && bad++ == 0) first = i;
    if (!bad) return 0;
    uint64_t r, c;
    char where[48];
    q3_layout_position(t->layout, t->shape[1], first, &r, &c);
    if (t->ndim == 1)
        snprintf(where, sizeof where, "[%llu]", (unsigned long long)r);
    else
        snprintf(where, sizeof where, "[%llu, %llu]", (unsigned long long)r, (unsigned long long)c);
    q3_set_err(err, "%s: tensor '%s': %llu non-finite value%s (NaN or Inf), the first at %s", f->path, t->name,
               (unsigned long long)bad, bad == 1 ? "" : "s", where);
    return -1;
}

int q3_verify_file(const q3_file *f, q3_err *err)
{
    uint64_t h = XXH3_64bits(f->map + Q3_HEADER_SIZE, f->size - Q3_HEADER_SIZE);
    if (h != f->file_checksum) {
        q3_set_err(err, "%s: whole file (offset 64 to end): checksum %016llx, stored %016llx", f->path,
                   (unsigned long long)h, (unsigned long long)f->file_checksum);
        return -1;
    }
    return 0;
}

int q3_read_tokenizer(const q3_file *f, q3_tokdata *td, q3_err *err)
{
    const q3_section *s = q3_get_section(f, Q3_SEC_TOKENIZER);
    /* The inflated size is bounded so a forged raw_size cannot exhaust memory. */
    if (s->raw_size > (1ull << 30)) {
        q3_set_err(err, "%s: section 'tokenizer': raw_size %llu exceeds the 1 GiB limit", f->path,
                   (unsigned long long)s->raw_size);
        return -1;
    }
    uint8_t *blob = malloc(s->raw_size ? s->raw_size : 1);
    if (!blob) {
        q3_set_err(err, "%s: section 'tokenizer': out of memory for %llu bytes", f->path, (unsigned long long)s->raw_size);
        return -1;
    }
    if (s->compression == Q3_COMP_ZLIB) {
        uLongf out_len = (uLongf)s->raw_size;
        uLong in_len = (uLong)s->size;
        int rc = uncompress2(blob, &out_len, f->map + s->offset, &in_len);
        if (rc != Z_OK || out_len != s->raw_size || in_len != s->size) {
            q3_set_err(err, "%s: section 'tokenizer' (offset %llu): zlib stream is corrupt or not %llu bytes inflated (%s)",
                       f->path, (unsigned long long)s->offset, (unsigned long long)s->raw_size, zError(rc));
            free(blob);
            return -1;
        }
    } else {
        memcpy(blob, f->map + s->offset, s->size);
    }
    return q3_tokdata_parse(blob, s->raw_size, td, f->path, err);
}
