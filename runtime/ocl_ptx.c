/* ocl_ptx.c - NVIDIA OpenCL PTX retargeted to sm_90a (see ocl_ptx.h for why). */
#include "ocl_ptx.h"

#include <stdlib.h>
#include <string.h>

/* The first `.target sm_90` directive at the start of a line, not already sm_90a
 * (or sm_90 followed by any other name character: sm_900 is not sm_90). */
static const char *find_target(const char *p, const char *end)
{
    static const char dir[] = ".target sm_90";
    size_t dl = sizeof dir - 1;
    for (const char *line = p; line < end;) {
        const char *s = line;
        while (s < end && (*s == ' ' || *s == '\t')) s++;
        if ((size_t)(end - s) >= dl && !memcmp(s, dir, dl)) {
            const char *after = s + dl;
            int more = after < end && ((*after >= '0' && *after <= '9') || (*after >= 'a' && *after <= 'z') ||
                                       (*after >= 'A' && *after <= 'Z') || *after == '_');
            return more ? NULL : s;
        }
        const char *nl = memchr(line, '\n', (size_t)(end - line));
        if (!nl) break;
        line = nl + 1;
    }
    return NULL;
}

int q3_ptx_to_sm90a(const char *ptx, size_t n, char **out, size_t *out_len)
{
    const char *end = ptx + strnlen(ptx, n);
    const char *target = find_target(ptx, end);
    if (!target) return -1;
    const char *mark = Q3_PTX_SM90A_MARK;
    size_t ml = strlen(mark);
    char *buf = malloc((size_t)(end - ptx) + 2); /* one byte more ("a") and the NUL */
    if (!buf) return -1;
    char *o = buf;
    for (const char *p = ptx; p < end;) {
        if (p == target) {
            static const char dir[] = ".target sm_90a";
            memcpy(o, dir, sizeof dir - 1);
            o += sizeof dir - 1, p += sizeof dir - 2;
        } else if ((size_t)(end - p) >= ml && !memcmp(p, mark, ml))
            p += ml;
        else
            *o++ = *p++;
    }
    *o = 0;
    *out = buf, *out_len = (size_t)(o - buf);
    return 0;
}

int q3_cl_program_to_sm90a(cl_context ctx, cl_device_id dev, cl_program *prog, const char *opts, cl_int *rc)
{
    size_t n = 0;
    unsigned char *ptx = NULL;
    if (clGetProgramInfo(*prog, CL_PROGRAM_BINARY_SIZES, sizeof n, &n, NULL) != CL_SUCCESS || !n ||
        !(ptx = malloc(n + 1)))
        return -1;
    unsigned char *bins[1] = {ptx};
    char *patched = NULL;
    size_t plen = 0;
    int bad = clGetProgramInfo(*prog, CL_PROGRAM_BINARIES, sizeof bins, bins, NULL) != CL_SUCCESS ||
              q3_ptx_to_sm90a((const char *)ptx, n, &patched, &plen);
    free(ptx);
    if (bad) return -1;
    clReleaseProgram(*prog);
    const unsigned char *pb = (const unsigned char *)patched;
    *prog = clCreateProgramWithBinary(ctx, 1, &dev, &plen, &pb, NULL, rc);
    free(patched);
    if (*rc == CL_SUCCESS) *rc = clBuildProgram(*prog, 1, &dev, opts, NULL, NULL);
    return *rc == CL_SUCCESS ? 0 : -2;
}
