/* progress.c - "\rlabel  42% [########............]  512/1192 MiB  1.8 s" on stderr. */
#include <stdio.h>
#include <time.h>
#include "progress.h"

#define BAR 24

double q3_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

void q3_progress_start(q3_progress *p, const char *label)
{
    p->label = label;
    p->last_pct = -1;
    p->t0 = q3_now();
}

void q3_progress_update(void *ctx, uint64_t done, uint64_t total)
{
    q3_progress *p = ctx;
    int pct = total ? (int)(done * 100 / total) : 100;
    if (pct == p->last_pct) return;
    p->last_pct = pct;
    char bar[BAR + 1];
    for (int i = 0; i < BAR; i++) bar[i] = i < pct * BAR / 100 ? '#' : '.';
    bar[BAR] = 0;
    fprintf(stderr, "\r%s %3d%% [%s] %6.0f/%.0f MiB %6.1f s", p->label, pct, bar, (double)done / 1048576.0,
            (double)total / 1048576.0, q3_now() - p->t0);
    fflush(stderr);
}

void q3_progress_finish(q3_progress *p)
{
    if (p->last_pct >= 0) fputc('\n', stderr);
}
