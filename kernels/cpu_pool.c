/* cpu_pool.c - persistent worker threads. A job is published by bumping a
 * generation counter; workers spin briefly (a decode step launches ~200 jobs,
 * so waking must be cheap) and then sleep on a futex. The caller waits for the
 * workers the same way: spin briefly, then sleep until the last one wakes it,
 * so a pool never burns a core another process (or its own late worker) needs. */
#include <limits.h>
#include <linux/futex.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <unistd.h>
#include "cpu_kernels.h"

/* About 100 us of pause instructions (~10 ns each on Sapphire Rapids): longer
 * than the gap between two products of one token, short enough not to hog a
 * shared core. */
#define SPIN_ITERS 10000

typedef struct {
    q3_pool *pool;
    int ith;
} worker_arg;

struct q3_pool {
    int n;
    pthread_t *threads;
    worker_arg *args;
    _Atomic uint32_t gen;
    _Atomic uint32_t pending;    /* workers still running the current job */
    _Atomic int caller_sleeping; /* the caller sleeps on pending: the last worker wakes it */
    _Atomic int stop;
    _Atomic int sleepers; /* workers inside futex_wait: wake only when needed */
    void (*fn)(void *ctx, int ith, int nth);
    void *ctx;
    void *scratch;
    size_t scratch_size;
};

static void futex_wait(_Atomic uint32_t *addr, uint32_t expected)
{
    syscall(SYS_futex, (uint32_t *)addr, FUTEX_WAIT_PRIVATE, expected, NULL, NULL, 0);
}
static void futex_wake(_Atomic uint32_t *addr, int n)
{
    syscall(SYS_futex, (uint32_t *)addr, FUTEX_WAKE_PRIVATE, n, NULL, NULL, 0);
}
static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

static void *worker_main(void *p)
{
    worker_arg *a = p;
    q3_pool *pool = a->pool;
    uint32_t seen = 0;
    for (;;) {
        uint32_t g;
        int spins = 0;
        while ((g = atomic_load_explicit(&pool->gen, memory_order_acquire)) == seen) {
            if (++spins < SPIN_ITERS) cpu_relax();
            else {
                atomic_fetch_add(&pool->sleepers, 1);
                futex_wait(&pool->gen, seen);
                atomic_fetch_sub(&pool->sleepers, 1);
            }
        }
        seen = g;
        if (atomic_load_explicit(&pool->stop, memory_order_acquire)) break;
        pool->fn(pool->ctx, a->ith, pool->n);
        /* seq_cst pairs with the caller's store to caller_sleeping: either it sees
         * pending reach 0 or this thread sees it asleep and wakes it. */
        if (atomic_fetch_sub(&pool->pending, 1) == 1 && atomic_load(&pool->caller_sleeping))
            futex_wake(&pool->pending, 1);
    }
    return NULL;
}

q3_pool *q3_pool_create(int n_threads)
{
    if (n_threads <= 0) {
        long online = sysconf(_SC_NPROCESSORS_ONLN);
        n_threads = online > 0 ? (int)online : 1;
    }
    if (n_threads > 256) n_threads = 256;
    q3_pool *p = calloc(1, sizeof *p);
    if (!p) return NULL;
    p->n = n_threads;
    p->threads = calloc((size_t)n_threads, sizeof *p->threads);
    p->args = calloc((size_t)n_threads, sizeof *p->args);
    if (!p->threads || !p->args) {
        free(p->threads);
        free(p->args);
        free(p);
        return NULL;
    }
    for (int i = 1; i < n_threads; i++) {
        p->args[i] = (worker_arg){p, i};
        if (pthread_create(&p->threads[i], NULL, worker_main, &p->args[i]) != 0) {
            p->n = i; /* run with the threads we got */
            break;
        }
    }
    return p;
}

void q3_pool_destroy(q3_pool *p)
{
    if (!p) return;
    atomic_store_explicit(&p->stop, 1, memory_order_release);
    atomic_fetch_add_explicit(&p->gen, 1, memory_order_release);
    futex_wake(&p->gen, INT_MAX);
    for (int i = 1; i < p->n; i++) pthread_join(p->threads[i], NULL);
    free(p->threads);
    free(p->args);
    free(p->scratch);
    free(p);
}

void *q3_pool_scratch(q3_pool *p, size_t bytes)
{
    if (bytes <= p->scratch_size) return p->scratch;
    void *mem = NULL;
    if (posix_memalign(&mem, 64, bytes) != 0) return NULL;
    free(p->scratch);
    p->scratch = mem;
    p->scratch_size = bytes;
    return mem;
}

int q3_pool_size(const q3_pool *p) { return p ? p->n : 1; }

void q3_pool_run(q3_pool *p, void (*fn)(void *ctx, int ith, int nth), void *ctx)
{
    if (!p || p->n == 1) {
        fn(ctx, 0, 1);
        return;
    }
    p->fn = fn;
    p->ctx = ctx;
    atomic_store_explicit(&p->pending, (uint32_t)(p->n - 1), memory_order_relaxed);
    atomic_store_explicit(&p->caller_sleeping, 0, memory_order_relaxed);
    atomic_fetch_add(&p->gen, 1); /* seq_cst: publishes fn, ctx and pending */
    if (atomic_load(&p->sleepers) > 0) futex_wake(&p->gen, INT_MAX);
    fn(ctx, 0, p->n);
    uint32_t left;
    for (int spins = 0; (left = atomic_load_explicit(&p->pending, memory_order_acquire)) != 0; spins++) {
        if (spins < SPIN_ITERS) {
            cpu_relax();
            continue;
        }
        atomic_store(&p->caller_sleeping, 1);
        while ((left = atomic_load(&p->pending)) != 0) futex_wait(&p->pending, left);
        break;
    }
}
