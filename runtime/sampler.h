/* sampler.h - choose the next token from logits: greedy, or temperature with
 * top-k, top-p, min-p, and a repetition penalty; seeded and reproducible. */
#ifndef Q3_SAMPLER_H
#define Q3_SAMPLER_H

#include <stddef.h>
#include <stdint.h>

/* The domain q3run's options enforce: temperature finite and >= 0, top_p and min_p
 * in [0, 1], repetition_penalty finite and > 0. */
typedef struct {
    float temperature;        /* 0: greedy (argmax) */
    uint32_t top_k;           /* 0: off */
    float top_p;              /* 1: off */
    float min_p;              /* 0: off */
    float repetition_penalty; /* 1: off (HF semantics) */
    uint64_t seed;
} q3_sampler_params;

typedef struct {
    q3_sampler_params p;
    uint32_t vocab;
    uint64_t rng;       /* xorshift64* state */
    uint32_t *order;    /* vocab scratch: candidate ids */
    float *probs;       /* vocab scratch */
    uint8_t *seen;      /* tokens of prompt + output, for the penalty */
} q3_sampler;

int q3_sampler_init(q3_sampler *s, const q3_sampler_params *p, uint32_t vocab);
void q3_sampler_free(q3_sampler *s);
/* Record a token of the prompt or the output (for the repetition penalty). */
void q3_sampler_accept(q3_sampler *s, int32_t token);
/* Forget the recorded tokens (a conversation started over). */
void q3_sampler_forget(q3_sampler *s);
/* Pick a token; logits are modified in place (penalty). At least the most likely
 * token survives every filter. -1 when a logit is NaN or infinite: the model's
 * computation went wrong, and no choice among such numbers means anything. */
int32_t q3_sampler_sample(q3_sampler *s, float *logits);
/* Index of the first logit that is NaN or infinite, or -1 (for the caller's message). */
int64_t q3_logits_first_nonfinite(const float *logits, uint32_t n);
int32_t q3_argmax(const float *logits, uint32_t n);

#endif
