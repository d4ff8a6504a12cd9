/* fuzz_sampler.c - q3_sampler_sample on arbitrary logits and settings. Input: one
 * byte of vocabulary size - 1 (1..256), three bytes of settings (temperature and
 * top-k; top-p and min-p; penalty: each picked from a table of edges, 0 to 3e38), a
 * seed byte, a byte of "seen" tokens, then the logits as floats (any bit pattern:
 * NaN, Inf, subnormals), repeated to fill the vocabulary. Checks: -1 exactly when a
 * logit is not finite; otherwise an id inside the vocabulary, penalized logits still
 * finite, the argmax when greedy (as likely as it with top-k 1), and the same id
 * again for the same seed. */
#include <math.h>
#include "fuzz_util.h"
#include "../runtime/sampler.h"

static const float fzs_temps[] = {0.0f, 1e-30f, 1e-3f, 0.7f, 1.0f, 2.0f, 1e5f, 3e38f};
static const float fzs_probs[] = {0.0f, 1e-9f, 0.05f, 0.5f, 0.9f, 0.999f, 1.0f, 1.0f};
static const float fzs_penalties[] = {1.0f, 1e-30f, 0.5f, 1.0f, 1.3f, 10.0f, 1e30f, 3e38f};
static const uint32_t fzs_top_ks[] = {0, 1, 2, 3, 5, 40, 255, 1000};

static int32_t fzs_sample(const q3_sampler_params *p, uint32_t vocab, const float *logits, uint8_t seen_bits, float *work)
{
    q3_sampler s;
    FUZZ_ASSERT(q3_sampler_init(&s, p, vocab) == 0, "out of memory");
    for (uint32_t i = 0; i < vocab; i++)
        if (seen_bits >> (i % 8) & 1 && i < 64) q3_sampler_accept(&s, (int32_t)i);
    memcpy(work, logits, vocab * sizeof *work);
    int32_t t = q3_sampler_sample(&s, work);
    q3_sampler_free(&s);
    return t;
}

int fuzz_sampler(const uint8_t *data, size_t size)
{
    if (size < 6) return 0;
    uint32_t vocab = 1 + data[0];
    q3_sampler_params p = {
        .temperature = fzs_temps[data[1] & 7],
        .top_k = fzs_top_ks[data[1] >> 3 & 7],
        .top_p = fzs_probs[data[2] & 7],
        .min_p = fzs_probs[data[2] >> 3 & 7] * (data[2] >> 6 & 1),
        .repetition_penalty = fzs_penalties[data[3] & 7],
        .seed = data[4],
    };
    uint8_t seen_bits = data[5];
    const uint8_t *raw = data + 6;
    size_t n_raw = (size - 6) / 4;
    if (n_raw == 0) return 0;
    float logits[256], work[256];
    for (uint32_t i = 0; i < vocab; i++) memcpy(&logits[i], raw + 4 * (i % n_raw), 4);

    int nonfinite = 0;
    for (uint32_t i = 0; i < vocab; i++) nonfinite |= !isfinite(logits[i]);
    int32_t t = fzs_sample(&p, vocab, logits, seen_bits, work);
    if (nonfinite) {
        FUZZ_ASSERT(t == -1, "non-finite logits gave token %d", t);
        FUZZ_ASSERT(q3_logits_first_nonfinite(logits, vocab) >= 0, "the non-finite logit is not found");
        return 0;
    }
    FUZZ_ASSERT(t >= 0 && (uint32_t)t < vocab, "token %d outside the vocabulary of %u", t, vocab);
    /* work now holds the penalized logits */
    for (uint32_t i = 0; i < vocab; i++) FUZZ_ASSERT(isfinite(work[i]), "penalized logit %u is not finite", i);
    int32_t best = q3_argmax(work, vocab);
    if (p.temperature == 0.0f) FUZZ_ASSERT(t == best, "greedy gave %d, not the argmax %d", t, best);
    /* top-k 1 ranks by probability: logits a subnormal apart are equally likely (ties go to
     * the lowest id), so only a probability as high as the best's is required. */
    else if (p.top_k == 1)
        FUZZ_ASSERT((work[best] - work[t]) / p.temperature <= 1e-5f, "top-k 1 gave %d (%g), the argmax is %d (%g)", t,
                    work[t], best, work[best]);
    FUZZ_ASSERT(fzs_sample(&p, vocab, logits, seen_bits, work) == t, "the same seed gave another token");
    return 0;
}

FUZZ_ENTRY(fuzz_sampler)
