/* cl_sources.h - OpenCL C sources embedded at build time (tools/embed_cl.c). */
#ifndef Q3_CL_SOURCES_H
#define Q3_CL_SOURCES_H

typedef struct {
    const char *name; /* file name, e.g. "matmul.cl" */
    const char *text; /* NUL-terminated source */
} q3_cl_source;

/* Terminated by an entry whose name is NULL. */
extern const q3_cl_source q3_cl_sources[];

#endif
