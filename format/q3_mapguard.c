/* q3_mapguard.c - a mapped file that shrinks under us (another process truncates or
 * rewrites it) turns every read of a page past its new end into SIGBUS, which would
 * kill the tool with a core dump and no word about the cause. Every mapping made by
 * q3_map_file is registered here; a SIGBUS inside one becomes one line on stderr that
 * names the file and the offset, the converter's temp file is removed, and the
 * process exits with status 1. A SIGBUS anywhere else keeps its default action. */
#include <errno.h>
#include <signal.h>
#include <string.h>
#include <unistd.h>
#include "q3_format.h"

#define GUARD_SLOTS 64 /* the converter maps a few dozen shards at most; more are simply not guarded */

typedef struct {
    const uint8_t *volatile start; /* NULL: free slot; written last on add, first on remove */
    size_t size;
    char path[256];
} guard_slot;

static guard_slot slots[GUARD_SLOTS];
static volatile sig_atomic_t handler_installed;

/* Async-signal-safe string building (no stdio in a signal handler). */
typedef struct {
    char buf[512];
    size_t n;
} line;

static void put_str(line *l, const char *s)
{
    for (; *s && l->n < sizeof l->buf - 1; s++)
        l->buf[l->n++] = (unsigned char)*s < 0x20 || *s == 0x7f ? '?' : *s; /* one line, no escapes */
}

static void put_u64(line *l, uint64_t v)
{
    char digits[24];
    int k = 0;
    do digits[k++] = (char)('0' + v % 10); while ((v /= 10) && k < 24);
    while (k && l->n < sizeof l->buf - 1) l->buf[l->n++] = digits[--k];
}

static void on_sigbus(int sig, siginfo_t *si, void *ctx)
{
    (void)ctx;
    const uint8_t *addr = si->si_addr;
    for (int i = 0; i < GUARD_SLOTS; i++) {
        const uint8_t *start = slots[i].start;
        if (!start || addr < start || addr >= start + slots[i].size) continue;
        line l = {.n = 0};
        put_str(&l, program_invocation_short_name);
        put_str(&l, ": ");
        put_str(&l, slots[i].path);
        put_str(&l, ": offset ");
        put_u64(&l, (uint64_t)(addr - start));
        put_str(&l, " cannot be read: the file shrank while it was in use (truncated or rewritten by another program)");
        l.buf[l.n++] = '\n';
        ssize_t unused = write(STDERR_FILENO, l.buf, l.n);
        (void)unused;
        q3_write_abandon();
        _exit(1);
    }
    /* Not a mapped file: the default action (core dump) on return, when the access faults again. */
    signal(sig, SIG_DFL);
}

void q3_mapguard_add(const uint8_t *map, uint64_t size, const char *path)
{
    if (!handler_installed) {
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_sigaction = on_sigbus;
        sa.sa_flags = SA_SIGINFO;
        sigemptyset(&sa.sa_mask);
        if (sigaction(SIGBUS, &sa, NULL) == 0) handler_installed = 1;
    }
    for (int i = 0; i < GUARD_SLOTS; i++)
        if (!slots[i].start) {
            slots[i].size = (size_t)size;
            snprintf(slots[i].path, sizeof slots[i].path, "%s", path);
            slots[i].start = map;
            return;
        }
}

void q3_mapguard_remove(const uint8_t *map)
{
    for (int i = 0; i < GUARD_SLOTS; i++)
        if (map && slots[i].start == map) slots[i].start = NULL;
}
