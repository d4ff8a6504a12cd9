/* progress.h - a one-line progress bar on stderr for long conversions. */
#ifndef Q3_PROGRESS_H
#define Q3_PROGRESS_H

#include <stdint.h>

typedef struct {
    const char *label;
    int last_pct;    /* -1 before the first update */
    double t0;       /* seconds, monotonic */
} q3_progress;

void q3_progress_start(q3_progress *p, const char *label);
/* A q3_progress_fn: ctx is a q3_progress. Redraws only when the percentage changes. */
void q3_progress_update(void *ctx, uint64_t done, uint64_t total);
/* End the line (after the last update). */
void q3_progress_finish(q3_progress *p);
/* Seconds on the monotonic clock. */
double q3_now(void);

#endif
