/* fuzz_safetensors.c - the safetensors header parser (q3_st_open_file) on
 * arbitrary bytes. The parser reads a file through mmap, so the input is written
 * to a memfd and opened by its /proc/self/fd path. */
#include <sys/mman.h>
#include <unistd.h>
#include "fuzz_util.h"
#include "../convert/safetensors.h"

static int stf_fd = -1;
static char stf_path[64];

int fuzz_safetensors(const uint8_t *data, size_t size)
{
    if (stf_fd < 0) {
        stf_fd = memfd_create("fuzz.safetensors", MFD_CLOEXEC);
        FUZZ_ASSERT(stf_fd >= 0, "memfd_create failed");
        snprintf(stf_path, sizeof stf_path, "/proc/self/fd/%d", stf_fd);
    }
    FUZZ_ASSERT(ftruncate(stf_fd, 0) == 0, "ftruncate");
    FUZZ_ASSERT(size == 0 || pwrite(stf_fd, data, size, 0) == (ssize_t)size, "pwrite");

    q3_st_model m;
    q3_err err = {{0}};
    if (q3_st_open_file(&m, stf_path, &err)) {
        fuzz_check_err(&err, stf_path);
        return 0;
    }
    FUZZ_ASSERT(m.n_files == 1 && m.files[0].size == size, "one file of the input's size");
    const uint8_t *base = m.files[0].map;
    uint64_t hlen = q3_rd64(base);
    for (uint32_t i = 0; i < m.n_tensors; i++) {
        const q3_st_tensor *t = &m.tensors[i];
        FUZZ_ASSERT(t->name && t->file == 0, "tensor %u name/file", i);
        FUZZ_ASSERT(t->dtype >= Q3_ST_BF16 && t->dtype <= Q3_ST_F32 && t->ndim <= Q3_ST_MAX_DIMS, "dtype/ndim");
        uint64_t elems = 1;
        for (uint32_t d = 0; d < t->ndim; d++)
            FUZZ_ASSERT(!__builtin_mul_overflow(elems, t->shape[d], &elems), "shape overflows");
        FUZZ_ASSERT(elems == t->n_elems && t->nbytes == elems * q3_st_dtype_size(t->dtype),
                    "tensor '%s' bytes do not match its shape", t->name);
        /* The data lies in the data area, after the header. */
        FUZZ_ASSERT(t->data >= base + 8 + hlen && t->data <= base + size &&
                    (uint64_t)(base + size - t->data) >= t->nbytes, "tensor '%s' data outside the file", t->name);
        FUZZ_ASSERT(q3_st_find(&m, t->name) == t, "q3_st_find('%s')", t->name);
        if (i) FUZZ_ASSERT(strcmp(m.tensors[i - 1].name, t->name) < 0, "tensors not sorted and unique");
    }
    q3_st_close(&m);
    return 0;
}

FUZZ_ENTRY(fuzz_safetensors)
