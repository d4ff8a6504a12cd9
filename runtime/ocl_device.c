/* ocl_device.c - OpenCL device enumeration (see ocl_device.h). */
#include "ocl_device.h"
#include <stdio.h>
#include <string.h>

#define MAX_PLATFORMS 16
#define MAX_DEVICES 64

typedef struct {
    cl_device_id dev[MAX_DEVICES];
    cl_platform_id plat[MAX_DEVICES];
    int n, n_platforms;
} device_list;

static void list_devices(device_list *l)
{
    cl_platform_id plats[MAX_PLATFORMS];
    cl_uint n_plat = 0;
    l->n = 0;
    l->n_platforms = 0;
    if (clGetPlatformIDs(MAX_PLATFORMS, plats, &n_plat) != CL_SUCCESS) return;
    l->n_platforms = (int)n_plat;
    for (cl_uint p = 0; p < n_plat && l->n < MAX_DEVICES; p++) {
        cl_uint nd = 0;
        if (clGetDeviceIDs(plats[p], CL_DEVICE_TYPE_ALL, (cl_uint)(MAX_DEVICES - l->n), l->dev + l->n, &nd) !=
            CL_SUCCESS)
            continue; /* CL_DEVICE_NOT_FOUND: a platform without devices */
        for (cl_uint d = 0; d < nd; d++) l->plat[l->n + (int)d] = plats[p];
        l->n += (int)nd;
    }
}

int q3_cl_count_devices(void)
{
    device_list l;
    list_devices(&l);
    return l.n;
}

int q3_cl_pick_device(int want, q3_cl_device *d, q3_err *err)
{
    device_list l;
    list_devices(&l);
    memset(d, 0, sizeof *d);
    if (l.n_platforms == 0) {
        q3_set_err(err, "OpenCL: no platform found (install an ICD such as pocl-opencl-icd, or point "
                        "OCL_ICD_VENDORS at a folder holding one)");
        return -1;
    }
    if (l.n == 0) {
        q3_set_err(err, "OpenCL: %d platform(s) but no device", l.n_platforms);
        return -1;
    }
    if (want >= l.n) {
        q3_set_err(err, "OpenCL: device %d requested but only %d device(s) exist (q3run --list-devices)", want, l.n);
        return -1;
    }
    int pick = want;
    for (int i = 0; i < l.n && pick < 0; i++) {
        cl_device_type t = 0;
        clGetDeviceInfo(l.dev[i], CL_DEVICE_TYPE, sizeof t, &t, NULL);
        if (t & CL_DEVICE_TYPE_GPU) pick = i;
    }
    if (pick < 0) pick = 0;
    d->id = l.dev[pick];
    d->platform = l.plat[pick];
    d->index = pick;
    cl_device_type t = 0;
    cl_uint cu = 0;
    cl_ulong gm = 0, ma = 0;
    clGetDeviceInfo(d->id, CL_DEVICE_TYPE, sizeof t, &t, NULL);
    clGetDeviceInfo(d->id, CL_DEVICE_MAX_COMPUTE_UNITS, sizeof cu, &cu, NULL);
    clGetDeviceInfo(d->id, CL_DEVICE_GLOBAL_MEM_SIZE, sizeof gm, &gm, NULL);
    clGetDeviceInfo(d->id, CL_DEVICE_MAX_MEM_ALLOC_SIZE, sizeof ma, &ma, NULL);
    clGetDeviceInfo(d->id, CL_DEVICE_NAME, sizeof d->name - 1, d->name, NULL);
    clGetDeviceInfo(d->id, CL_DEVICE_OPENCL_C_VERSION, sizeof d->c_version - 1, d->c_version, NULL);
    clGetPlatformInfo(d->platform, CL_PLATFORM_NAME, sizeof d->platform_name - 1, d->platform_name, NULL);
    d->is_gpu = (t & CL_DEVICE_TYPE_GPU) != 0;
    d->compute_units = cu;
    d->global_mem = gm;
    d->max_alloc = ma;
    return 0;
}

const char *q3_cl_err_name(cl_int e)
{
    switch (e) {
    case CL_DEVICE_NOT_FOUND: return "CL_DEVICE_NOT_FOUND";
    case CL_OUT_OF_RESOURCES: return "CL_OUT_OF_RESOURCES";
    case CL_OUT_OF_HOST_MEMORY: return "CL_OUT_OF_HOST_MEMORY";
    case CL_MEM_OBJECT_ALLOCATION_FAILURE: return "CL_MEM_OBJECT_ALLOCATION_FAILURE (out of device memory)";
    case CL_BUILD_PROGRAM_FAILURE: return "CL_BUILD_PROGRAM_FAILURE";
    case CL_INVALID_BUFFER_SIZE: return "CL_INVALID_BUFFER_SIZE (larger than the device allows)";
    case CL_INVALID_WORK_GROUP_SIZE: return "CL_INVALID_WORK_GROUP_SIZE";
    case CL_INVALID_KERNEL_ARGS: return "CL_INVALID_KERNEL_ARGS";
    case CL_INVALID_VALUE: return "CL_INVALID_VALUE";
    default: return "OpenCL error";
    }
}
