/* serve_draw.h - a step's samplers run side by side. Between two batched decode steps
 * q3serve samples every decoding sequence, and each sample is a pass over the model's
 * logits at memory speed (Qwen3: 151 936 floats, 608 KB, ~80 us on one core): 16 of
 * them one after another were most of q3serve's host time on the H200 (0.23 s of a
 * 1.24 s run at 16 streams, 4B). Helper threads take sequences from a shared counter
 * beside the caller's own thread. Each sampler is used by one thread at a time, so the
 * draws are the ones a single thread would make. */
#ifndef Q3_SERVE_DRAW_H
#define Q3_SERVE_DRAW_H

#include "../include/q3.h"

typedef struct serve_draw serve_draw;

/* n_helpers threads beside the caller's (0: every draw on the caller's thread). */
int serve_draw_create(int n_helpers, serve_draw **out, q3_err *err);
void serve_draw_destroy(serve_draw *d);
/* out[i] = q3_sampler_sample(samplers[i], logits[i]) for i < n, returning when all are done. */
void serve_draw_run(serve_draw *d, q3_sampler *const *samplers, float *const *logits, int32_t *out, int n);

#endif
