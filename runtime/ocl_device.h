/* ocl_device.h - finding OpenCL devices: one numbering across all platforms, shared
 * by the OpenCL backend, q3run --list-devices and the tests. */
#ifndef Q3_OCL_DEVICE_H
#define Q3_OCL_DEVICE_H

#define CL_TARGET_OPENCL_VERSION 120
#include <CL/cl.h>
#include "../format/q3_format.h"

typedef struct {
    cl_device_id id;
    cl_platform_id platform;
    int index;               /* across all platforms, as --device takes it */
    int is_gpu;
    char name[128];
    char platform_name[128];
    char c_version[64];      /* CL_DEVICE_OPENCL_C_VERSION */
    unsigned compute_units;
    unsigned long long global_mem, max_alloc;
} q3_cl_device;

/* Number of devices on all platforms; 0 when there is no platform or device. */
int q3_cl_count_devices(void);
/* Fills d with device `want` (want < 0: the first GPU, else device 0).
 * Returns 0, or -1 with a one-line err (no platform, no device, index out of range). */
int q3_cl_pick_device(int want, q3_cl_device *d, q3_err *err);
/* Human name of an OpenCL error code. */
const char *q3_cl_err_name(cl_int e);

#endif
