/* sampler.c - next-token selection. The order of operations follows HF
 * transformers' logits processors: repetition penalty, temperature, top-k,
 * top-p, min-p, then a draw from the renormalized distribution. */
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "../format/q3_format.h"
#include "sampler.h"

/* The first index of the largest logit (a NaN is never larger; a NaN first is kept, as a
 * scan that compares each logit with the best so far keeps it). Two passes: eight running
 * maxima (each `v > m ? v : m`, one maxss), then the first index holding their largest.
 * One pass through the best index waits on each load of logits[best] before the next
 * comparison: 626 us for Qwen3's 151 936 logits on a 2-core Xeon, most of q3serve's host
 * time a token on the H200. */
#define MAX_IF_GREATER(m, v) ((v) > (m) ? (v) : (m))
/* One step of the eight running maxima m0..m7 (in the caller's scope) over the 8 logits at p. */
#define MAX8_STEP(p)                                                                                          \
    (m0 = MAX_IF_GREATER(m0, (p)[0]), m1 = MAX_IF_GREATER(m1, (p)[1]), m2 = MAX_IF_GREATER(m2, (p)[2]),      \
     m3 = MAX_IF_GREATER(m3, (p)[3]), m4 = MAX_IF_GREATER(m4, (p)[4]), m5 = MAX_IF_GREATER(m5, (p)[5]),      \
     m6 = MAX_IF_GREATER(m6, (p)[6]), m7 = MAX_IF_GREATER(m7, (p)[7]))

/* The first index of the n logits holding the largest of the eight running maxima. */
static inline int32_t first_of_max8(const float *logits, uint32_t n, float m0, float m1, float m2, float m3, float m4,
                                    float m5, float m6, float m7)
{
    m0 = MAX_IF_GREATER(m0, m1), m2 = MAX_IF_GREATER(m2, m3), m4 = MAX_IF_GREATER(m4, m5), m6 = MAX_IF_GREATER(m6, m7);
    m0 = MAX_IF_GREATER(m0, m2), m4 = MAX_IF_GREATER(m4, m6);
    float best = MAX_IF_GREATER(m0, m4);
    uint32_t i = 0;
    while (i < n && logits[i] != best) i++;
    return (int32_t)i;
}

int32_t q3_argmax(const float *logits, uint32_t n)
{
    if (n == 0 || isnan(logits[0])) return 0;
    float m0 = logits[0], m1 = m0, m2 = m0, m3 = m0, m4 = m0, m5 = m0, m6 = m0, m7 = m0;
    uint32_t i = 0;
    for (; i + 8 <= n; i += 8) MAX8_STEP(logits + i);
    for (; i < n; i++) m0 = MAX_IF_GREATER(m0, logits[i]);
    return first_of_max8(logits, n, m0, m1, m2, m3, m4, m5, m6, m7);
}

int q3_sampler_init(q3_sampler *s, const q3_sampler_params *p, uint32_t vocab)
{
    memset(s, 0, sizeof *s);
    s->p = *p;
    s->vocab = vocab;
    s->rng = p->seed ? p->seed : 0x9e3779b97f4a7c15ull; /* xorshift needs a non-zero state */
    s->order = malloc(vocab * sizeof *s->order);
    s->probs = malloc(vocab * sizeof *s->probs);
    s->seen = calloc(vocab, 1);
    if (!s->order || !s->probs || !s->seen) {
        q3_sampler_free(s);
        return -1;
    }
    return 0;
}

q3_sampler_params q3_sampler_defaults(const q3_model *m)
{
    const q3_generation *g = q3_model_generation(m);
    return (q3_sampler_params){g->do_sample ? g->temperature : 0.0f, g->top_k, g->top_p, g->min_p,
                               g->repetition_penalty, 0};
}

int q3_sampler_create(const q3_model *m, const q3_sampler_params *p, q3_sampler **out, q3_err *err)
{
    q3_sampler_params d = q3_sampler_defaults(m);
    q3_sampler *s = malloc(sizeof *s);
    *out = NULL;
    if (!s || q3_sampler_init(s, p ? p : &d, q3_model_config(m)->vocab_size)) {
        free(s);
        q3_set_err(err, "out of memory for a sampler over %u tokens", q3_model_config(m)->vocab_size);
        return Q3_ERROR_NOMEM;
    }
    *out = s;
    return Q3_OK;
}

void q3_sampler_destroy(q3_sampler *s)
{
    if (!s) return;
    q3_sampler_free(s);
    free(s);
}

void q3_sampler_free(q3_sampler *s)
{
    free(s->order);
    free(s->probs);
    free(s->seen);
    memset(s, 0, sizeof *s);
}

void q3_sampler_accept(q3_sampler *s, int32_t token)
{
    if (token >= 0 && (uint32_t)token < s->vocab) s->seen[token] = 1;
}

static double next_uniform(q3_sampler *s)
{
    s->rng ^= s->rng >> 12;
    s->rng ^= s->rng << 25;
    s->rng ^= s->rng >> 27;
    return (double)((s->rng * 0x2545f4914f6cdd1dull) >> 11) / 9007199254740992.0; /* [0, 1) */
}

/* The probabilities the comparator orders by (qsort passes no context): one per thread, as
 * samplers run on threads of their own (q3.h; q3serve draws a step's samples side by side). */
static _Thread_local const float *cmp_base;
static int by_prob_desc(const void *a, const void *b)
{
    float x = cmp_base[*(const uint32_t *)a], y = cmp_base[*(const uint32_t *)b];
    if (x != y) return x > y ? -1 : 1;
    uint32_t i = *(const uint32_t *)a, j = *(const uint32_t *)b;
    return i < j ? -1 : i > j; /* ties: lower id first, so the order is deterministic */
}

/* Move the k most likely ids to the front of ids (quickselect, O(n)): afterwards
 * ids[k - 1] is the k-th most likely and every id before it is more likely.
 * Hoare's partition with the lower middle as pivot leaves lo <= j < hi - 1, so
 * every round shrinks [lo, hi) (the pivot at hi - 1 let a two-id range loop forever). */
static void select_top(uint32_t *ids, uint32_t n, uint32_t k)
{
    size_t lo = 0, hi = n, target = k - 1; /* ids[target] lies in [lo, hi) */
    while (hi - lo > 1) {
        uint32_t pivot = ids[lo + (hi - lo - 1) / 2];
        size_t i = lo, j = hi - 1;
        for (;;) { /* by descending probability */
            while (by_prob_desc(&ids[i], &pivot) < 0) i++;
            while (by_prob_desc(&pivot, &ids[j]) < 0) j--;
            if (i >= j) break;
            uint32_t t = ids[i];
            ids[i++] = ids[j];
            ids[j--] = t;
        }
        if (target <= j) hi = j + 1;
        else lo = j + 1;
    }
}

/* Blocks of 64 tested without a branch (an all-ones exponent, infinity or NaN, is the only
 * one that carries into bit 31 when the exponent's lowest bit is added to it), so that the
 * compiler may vectorize them; the index is then found within the block that has one. */
#define NONFINITE_BLOCK 64
static inline int block_has_nonfinite(const float *p)
{
    uint32_t bad = 0;
    for (uint32_t k = 0; k < NONFINITE_BLOCK; k++) {
        uint32_t u;
        memcpy(&u, p + k, sizeof u);
        bad |= (u & 0x7f800000u) + 0x00800000u;
    }
    return (int)(bad >> 31);
}

int64_t q3_logits_first_nonfinite(const float *logits, uint32_t n)
{
    uint32_t i = 0;
    for (; i + NONFINITE_BLOCK <= n; i += NONFINITE_BLOCK)
        if (block_has_nonfinite(logits + i)) break;
    for (; i < n; i++)
        if (!isfinite(logits[i])) return i;
    return -1;
}

/* Greedy without a penalty: the finite test and q3_argmax's eight running maxima in one
 * pass over the logits, block by block while the block is still in L1 (two passes read
 * Qwen3's 608 KB of logits twice; q3serve samples 16 of them a step), then the first
 * index holding the largest. -1 where a logit is infinite or NaN. */
int32_t q3_greedy_token(const float *logits, uint32_t n)
{
    if (n < NONFINITE_BLOCK) return q3_logits_first_nonfinite(logits, n) >= 0 ? -1 : q3_argmax(logits, n);
    float m0 = logits[0], m1 = m0, m2 = m0, m3 = m0, m4 = m0, m5 = m0, m6 = m0, m7 = m0;
    uint32_t i = 0;
    for (; i + NONFINITE_BLOCK <= n; i += NONFINITE_BLOCK) {
        if (block_has_nonfinite(logits + i)) return -1;
        for (uint32_t k = 0; k < NONFINITE_BLOCK; k += 8) MAX8_STEP(logits + i + k);
    }
    for (; i < n; i++) {
        if (!isfinite(logits[i])) return -1;
        m0 = MAX_IF_GREATER(m0, logits[i]);
    }
    return first_of_max8(logits, n, m0, m1, m2, m3, m4, m5, m6, m7);
}

/* HF's repetition penalty. Kept finite: a tiny penalty divides a large logit past
 * FLT_MAX, and an infinity would turn the softmax below into NaN. */
static void apply_penalty(const q3_sampler *s, float *logits)
{
    float r = s->p.repetition_penalty;
    for (uint32_t i = 0; i < s->vocab; i++) {
        if (!s->seen[i]) continue;
        float v = logits[i] > 0 ? logits[i] / r : logits[i] * r;
        logits[i] = v > FLT_MAX ? FLT_MAX : v < -FLT_MAX ? -FLT_MAX : v;
    }
}

/* Softmax at temperature T over all tokens. The best token gets exp(0) = 1, so the
 * sum is at least 1; a difference that overflows (or a subnormal T) gives 0, never NaN. */
static void softmax_at(q3_sampler *s, const float *logits, float temperature)
{
    uint32_t n = s->vocab;
    float maxv = logits[q3_argmax(logits, n)];
    double sum = 0;
    for (uint32_t i = 0; i < n; i++) {
        float z = (logits[i] - maxv) / temperature;
        s->probs[i] = z > -INFINITY ? expf(z) : 0.0f;
        sum += s->probs[i];
    }
    for (uint32_t i = 0; i < n; i++) s->probs[i] = (float)(s->probs[i] / sum);
}

/* Candidates into s->order, most likely first; returns how many (at least 1).
 * Sorting all 150k ids per token would cost more than the forward pass, so only
 * what can survive is sorted: the k largest for top-k (quickselect), or for top-p
 * the ids at or above (1 - top_p) / (n - 1) (as llama2.c does): an id below it,
 * other than the most likely, cannot be in the nucleus, since it and every id after
 * it sum to less than 1 - top_p. The most likely id always is, so it is always kept
 * (transformers' min_tokens_to_keep = 1); at a high temperature with top_p near 0
 * every id may fall below the cut. */
static uint32_t candidates(q3_sampler *s)
{
    const q3_sampler_params *p = &s->p;
    uint32_t n = s->vocab, m = 0;
    cmp_base = s->probs;
    if (p->top_k > 0 && p->top_k < n) {
        for (uint32_t i = 0; i < n; i++) s->order[i] = i;
        select_top(s->order, n, p->top_k);
        m = p->top_k;
    } else if (p->top_p < 1.0f && n > 1) {
        uint32_t best = (uint32_t)q3_argmax(s->probs, n);
        float cut = (1.0f - p->top_p) / (float)(n - 1);
        s->order[m++] = best;
        for (uint32_t i = 0; i < n; i++)
            if (i != best && s->probs[i] >= cut) s->order[m++] = i;
    } else {
        for (uint32_t i = 0; i < n; i++) s->order[i] = i;
        m = n;
    }
    qsort(s->order, m, sizeof *s->order, by_prob_desc);
    return m;
}

/* top-p then min-p over the sorted candidates; each keeps at least the first. */
static uint32_t filter(const q3_sampler *s, uint32_t m)
{
    const q3_sampler_params *p = &s->p;
    if (p->top_p < 1.0f) {
        double cum = 0;
        uint32_t keep = 0;
        while (keep < m) {
            cum += s->probs[s->order[keep++]];
            if (cum >= p->top_p) break;
        }
        m = keep;
    }
    if (p->min_p > 0.0f) {
        float floor_p = p->min_p * s->probs[s->order[0]];
        uint32_t keep = 1;
        while (keep < m && s->probs[s->order[keep]] >= floor_p) keep++;
        m = keep;
    }
    return m;
}

int q3_sampler_is_greedy(const q3_sampler *s) { return s->p.temperature <= 0.0f && s->p.repetition_penalty == 1.0f; }

int32_t q3_sampler_sample(q3_sampler *s, float *logits)
{
    if (s->vocab == 0) return -1;
    if (q3_sampler_is_greedy(s)) return q3_greedy_token(logits, s->vocab);
    if (q3_logits_first_nonfinite(logits, s->vocab) >= 0) return -1;
    if (s->p.repetition_penalty != 1.0f) apply_penalty(s, logits);
    if (s->p.temperature <= 0.0f) return q3_argmax(logits, s->vocab);
    softmax_at(s, logits, s->p.temperature);
    uint32_t m = filter(s, candidates(s));
    double total = 0;
    for (uint32_t i = 0; i < m; i++) total += s->probs[s->order[i]];
    double r = next_uniform(s) * total, acc = 0;
    for (uint32_t i = 0; i < m; i++) {
        acc += s->probs[s->order[i]];
        if (r < acc) return (int32_t)s->order[i];
    }
    return (int32_t)s->order[m - 1];
}

void q3_sampler_forget(q3_sampler *s)
{
    memset(s->seen, 0, s->vocab);
}
