/* backend_registry.c - every backend q3 has, by name. Adding one: its file, and
 * its name in BACKENDS (the file defines q3_backend_NAME). */
#include <stdio.h>
#include <string.h>
#include "backend.h"

#define BACKENDS(X) X(cpu) X(opencl)

#define DECLARE(n) extern const q3_backend_impl q3_backend_##n;
BACKENDS(DECLARE)
#define ENTRY(n) &q3_backend_##n,
static const q3_backend_impl *const backends[] = {BACKENDS(ENTRY) NULL};
#define NAME(n) #n,
static const char *const names[] = {BACKENDS(NAME) NULL};

const char *const *q3_backend_names(void) { return names; }

const q3_backend_impl *q3_backend_find(const char *name)
{
    for (int i = 0; name && backends[i]; i++)
        if (strcmp(backends[i]->name, name) == 0) return backends[i];
    return NULL;
}

int q3_backend_has_devices(const char *name)
{
    const q3_backend_impl *impl = q3_backend_find(name);
    return impl && impl->device_count;
}

const char *q3_backend_env_help(const char *name)
{
    const q3_backend_impl *impl = q3_backend_find(name);
    return !impl ? NULL : impl->env_help ? impl->env_help : "";
}

void q3_backend_names_join(char *buf, size_t cap)
{
    size_t used = 0;
    if (cap) buf[0] = 0;
    for (int i = 0; names[i] && used < cap; i++)
        used += (size_t)snprintf(buf + used, cap - used, "%s%s", i ? ", " : "", names[i]);
}
