/* sampler.h - choose the next token from logits: greedy, or temperature with
 * top-k, top-p, min-p, and a repetition penalty; seeded and reproducible. */
#ifndef Q3_SAMPLER_H
#define Q3_SAMPLER_H

#include <stddef.h>
#include <stdint.h>
#include "../include/q3.h"

/* q3_sampler and q3_sampler_params of include/q3.h; accept, forget, sample, argmax
 * and q3_logits_first_nonfinite are declared there. */
struct q3_sampler {
    q3_sampler_params p;
    uint32_t vocab;
    uint64_t rng;       /* xorshift64* state */
    uint32_t *order;    /* vocab scratch: candidate ids */
    float *probs;       /* vocab scratch */
    uint8_t *seen;      /* tokens of prompt + output, for the penalty */
};

int q3_sampler_init(q3_sampler *s, const q3_sampler_params *p, uint32_t vocab);
void q3_sampler_free(q3_sampler *s);
/* What a greedy sampler without a penalty picks: the first index of the largest logit,
 * -1 where one is NaN or infinite (q3_decode_batch_greedy's fallback takes it too). */
int32_t q3_greedy_token(const float *logits, uint32_t n);

#endif
