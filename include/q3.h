/* q3.h - the q3 library: run Qwen3 models stored as .q3 files (spec.md).
 *
 * The one public header; plain C, no global state. A program opens a model once
 * (q3_model_open), creates as many contexts on it as it needs (q3_context_create:
 * a backend by name, a KV cache each; the weights are shared: on the CPU the one
 * mapping, on OpenCL one upload per device), and drives tokenize / prefill / decode /
 * sample itself; a context's cache can be truncated, saved and restored (q3_state_*).
 * examples/simple.c is the smallest complete program.
 *
 * Errors: every call that can fail returns Q3_OK (0) or a negative Q3_ERROR_* code
 * and fills the caller's q3_err with one line naming the file, the offset, section,
 * tensor or argument, and what was expected. err may be NULL.
 *
 * Threads: a q3_model may be used from any number of threads at once (tokenizing,
 * the chat template, creating contexts and samplers). A q3_context or a q3_sampler
 * is used by one thread at a time; different contexts run in parallel.
 *
 * Memory: buffers the library returns through a pointer argument (token ids, text)
 * are released with q3_free, which is the C library's free: a C program may also
 * realloc or free them. */
#ifndef Q3_H
#define Q3_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The library exports these declarations and nothing else: it is built with
 * -fvisibility=hidden, and Q3_API marks what a program may call
 * (tests/e2e_public_api.sh checks the two lists are the same). */
#if defined(__GNUC__)
#define Q3_API __attribute__((visibility("default")))
#else
#define Q3_API
#endif

/* ---- errors ---- */

enum q3_status {
    Q3_OK = 0,
    Q3_ERROR = -1,              /* bad input (a damaged file, a bad token id) or a failure of the backend */
    Q3_ERROR_ARG = -2,          /* an argument the call does not take (an unknown backend, a bad option) */
    Q3_ERROR_CONTEXT_FULL = -3, /* the tokens do not fit the context's free positions */
    Q3_ERROR_NOMEM = -4
};

typedef struct {
    char msg[512];
} q3_err;

Q3_API void q3_free(void *p);
/* Fill err with a formatted one-line message as the library's own are (a control
 * byte, e.g. a newline quoted from a file name, becomes '?'), for programs that
 * report their errors the same way. err may be NULL. */
Q3_API void q3_set_err(q3_err *err, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;
/* Put "path: " before err's message, for messages from code that does not know which
 * file its input came from (the tokenizer, the chat template). Returns -1. */
Q3_API int q3_err_name_file(q3_err *err, const char *path);
/* For command-line programs: flush stdout at exit; a write error (full disk, closed
 * pipe) becomes one line on stderr and exit status 1. Returns the status to exit with. */
Q3_API int q3_finish_stdout(const char *prog, int rc);

/* ---- model ---- */

typedef struct q3_model q3_model;

/* Model hyperparameters (spec.md 4). */
typedef struct {
    uint32_t vocab_size;        /* rows of embed_tokens (and lm_head) */
    uint32_t hidden_size;
    uint32_t intermediate_size;
    uint32_t num_layers;
    uint32_t num_heads;
    uint32_t num_kv_heads;
    uint32_t head_dim;
    uint32_t max_position_embeddings;
    uint32_t tie_word_embeddings; /* 1: lm_head is embed_tokens */
    int32_t bos_token_id;         /* -1 when absent */
    int32_t eos_token_id;         /* -1 when absent */
    int32_t pad_token_id;         /* -1 when absent */
    double rope_theta;
    double rms_norm_eps;
} q3_config;

#define Q3_MAX_EOS 7u
/* Sampling defaults from generation_config.json (spec.md 5). */
typedef struct {
    uint32_t do_sample;
    uint32_t top_k;
    float temperature;
    float top_p;
    float min_p;
    float repetition_penalty;
    int32_t bos_token_id;
    int32_t pad_token_id;
    uint32_t n_eos;
    int32_t eos_token_ids[Q3_MAX_EOS];
} q3_generation;

enum q3_verify {
    Q3_VERIFY_META = 0,  /* the default: the structure, the checksums of everything but the weights, and
                            what loading needs (tensors bind to the config, the tokenizer builds, the
                            chat template renders) */
    Q3_VERIFY_ALL = 1,   /* also hash every tensor (reads the whole file) */
    Q3_VERIFY_NONE = 2   /* the structure only; q3_model_verify reports each checksum */
};

typedef struct {
    int verify;  /* enum q3_verify */
    int no_mmap; /* 1: read the weights into memory (huge pages) instead of mapping the file:
                    slower to load, faster to decode on few cores */
} q3_model_params;

/* params NULL: the defaults (all zero). */
Q3_API int q3_model_open(const char *path, const q3_model_params *params, q3_model **model, q3_err *err);
/* After every context and sampler made on it is gone. */
Q3_API void q3_model_close(q3_model *model);
Q3_API const q3_config *q3_model_config(const q3_model *model);
Q3_API const q3_generation *q3_model_generation(const q3_model *model);

typedef struct {
    const char *path;
    uint64_t file_bytes;
    uint64_t n_params;        /* elements of every tensor */
    uint64_t bytes_per_token; /* weights one decoded token reads */
    uint32_t n_sections, n_tensors;
    uint32_t bpe_vocab;       /* ids below it are the tokenizer's BPE vocabulary: no added or special tokens */
} q3_model_info;
Q3_API int q3_model_describe(const q3_model *model, q3_model_info *info, q3_err *err);

/* Every checksum of the file (the header, each section, each tensor, the whole file);
 * report(ctx, line) for each one that does not match. Reading the weights leaves
 * the mapping's pages to the page cache, not to the process. Returns Q3_OK when all
 * match, else Q3_ERROR; *n_checked and *n_bad (may be NULL) count them. */
Q3_API int q3_model_verify(const q3_model *model, void (*report)(void *ctx, const char *line), void *ctx,
                    unsigned *n_checked, unsigned *n_bad);

/* Special tokens: -1 where the model has none. */
Q3_API int32_t q3_token_bos(const q3_model *model);
/* 1 when generation stops at id (any of the generation config's EOS ids, or the config's). */
Q3_API int q3_token_is_eos(const q3_model *model, int32_t id);

/* ---- tokenizer (byte-level BPE, identical to HuggingFace tokenizers) ---- */

typedef struct q3_tokenizer q3_tokenizer;

/* The model's tokenizer, built on first use (the model keeps it). */
Q3_API int q3_model_tokenizer(q3_model *model, const q3_tokenizer **tk, q3_err *err);
/* Encode len bytes of text (special tokens are matched, as HF does with
 * add_special_tokens=False). Invalid UTF-8 is encoded byte by byte through the
 * byte-level alphabet, never rejected. *ids: release with q3_free. Threads may call
 * it with one tokenizer at once; they take turns (encoding writes the tokenizer's
 * scratch and word cache). */
Q3_API int q3_tokenize(const q3_tokenizer *tk, const char *text, size_t len, int32_t **ids, size_t *n_ids, q3_err *err);
/* Raw bytes a token stands for (byte-level alphabet undone); NULL when id is unknown. */
Q3_API const char *q3_token_bytes(const q3_tokenizer *tk, int32_t id, size_t *len);
/* The token's text as tokenizer.json writes it; NULL when unknown. */
Q3_API const char *q3_token_piece(const q3_tokenizer *tk, int32_t id, size_t *len);
/* Id of a vocab or added token with exactly this text, or -1. */
Q3_API int32_t q3_token_lookup(const q3_tokenizer *tk, const char *text, size_t len);
Q3_API int q3_token_is_special(const q3_tokenizer *tk, int32_t id);
Q3_API uint32_t q3_tokenizer_size(const q3_tokenizer *tk); /* 1 + highest id */
/* Decode ids to bytes (skip_special = 0 keeps special tokens' text); *out NUL-terminated, release with q3_free. */
Q3_API int q3_detokenize(const q3_tokenizer *tk, const int32_t *ids, size_t n_ids, int skip_special, char **out,
                  size_t *out_len, q3_err *err);

/* Streaming decode: emits only complete UTF-8 sequences, so a character split
 * across tokens prints once, whole. Invalid sequences come out as U+FFFD as HF does.
 * Zero-initialise one per stream. */
typedef struct {
    uint8_t pending[8];
    size_t n_pending;
} q3_utf8_stream;
/* Append a token's bytes; writes the printable complete part into out (cap >= len + 8)
 * and returns its length. */
Q3_API size_t q3_utf8_stream_push(q3_utf8_stream *s, const char *bytes, size_t len, char *out, size_t cap);
/* Flush what remains at the end of generation (an incomplete tail as U+FFFD). */
Q3_API size_t q3_utf8_stream_flush(q3_utf8_stream *s, char *out, size_t cap);
/* The UTF-8 sequence at s, n bytes available: > 0 the length of a valid one; 0 valid
 * so far but cut off at n; -k an invalid maximal subpart of k bytes (one U+FFFD in
 * the stream above). For programs that show a token's bytes themselves. */
Q3_API int q3_utf8_seq(const uint8_t *s, size_t n);

/* ---- chat template ---- */

typedef struct {
    const char *role; /* "system", "user", "assistant" */
    const char *content;
} q3_chat_message;

/* The conversation rendered with the model's chat template, byte for byte as
 * transformers' apply_chat_template does; enable_thinking = 0 appends the empty
 * <think></think> block. *text is NUL-terminated; release with q3_free. */
Q3_API int q3_chat_apply(q3_model *model, const q3_chat_message *msgs, size_t n_msgs, int add_generation_prompt,
                  int enable_thinking, char **text, size_t *len, q3_err *err);
/* The tokens that close an assistant turn whose generation stopped (at an EOS or a
 * length limit), so that the next user turn continues the same cache. *ids: q3_free. */
Q3_API int q3_chat_end_turn(q3_model *model, int32_t **ids, size_t *n_ids, q3_err *err);

/* ---- backends ---- */

/* NULL-terminated names of the compiled-in backends ("cpu" first: the default). */
Q3_API const char *const *q3_backend_names(void);
/* Numbered devices of a backend: *n = -1 when it has none to choose (the CPU);
 * Q3_ERROR when it has a numbering but no device (err says how to get one). */
Q3_API int q3_backend_device_count(const char *backend, int *n, q3_err *err);
/* One line describing device i. */
Q3_API int q3_backend_device_describe(const char *backend, int i, char *buf, size_t cap, q3_err *err);
/* 1 when the backend numbers its devices (q3_context_params.device picks one), 0 when
 * it has none to choose or is unknown. Looks for no device (cheap, no driver loaded). */
Q3_API int q3_backend_has_devices(const char *backend);
/* The environment variables the backend reads, one line each ("  NAME=VALUES   what
 * it does\n"), for a program's --help; "" when it reads none, NULL when unknown. */
Q3_API const char *q3_backend_env_help(const char *backend);

/* ---- context: one KV cache on one backend ---- */

typedef struct q3_context q3_context;

/* The KV cache's element type. F16: exact for what the model computes in f32 to 11
 * bits. Q8_0: 8 bits and an F16 scale per 32 values (llama.cpp's -ctk/-ctv q8_0),
 * 53 % of F16's bytes, so a long context takes about half the memory and a decode step
 * at depth reads less; the logits move by the rounding (docs/kernels.md). The cpu
 * backend has both; opencl has F16. */
typedef enum { Q3_CACHE_F16 = 0, Q3_CACHE_Q8_0 = 1 } q3_cache_type;
/* "f16" or "q8_0" (what --cache-type takes); NULL for another value. */
Q3_API const char *q3_cache_type_name(q3_cache_type type);
/* The type a name gives; Q3_ERROR_ARG (err names the choices) for another name. */
Q3_API int q3_cache_type_parse(const char *name, q3_cache_type *type, q3_err *err);

typedef struct {
    const char *backend; /* a name of q3_backend_names(); NULL: the first */
    int n_ctx;           /* KV cache positions; 0: min(max_position_embeddings, 4096) */
    int n_threads;       /* CPU worker threads; 0: every core */
    int device;          /* device index (q3_backend_device_describe); -1: the backend's choice */
    int verbose;         /* print the backend and device chosen on stderr */
    q3_cache_type cache_type; /* the KV cache's elements; Q3_CACHE_F16 by default */
} q3_context_params;

Q3_API q3_context_params q3_context_default_params(void);
/* params NULL: the defaults. */
Q3_API int q3_context_create(q3_model *model, const q3_context_params *params, q3_context **ctx, q3_err *err);
Q3_API void q3_context_free(q3_context *ctx);
Q3_API int q3_context_size(const q3_context *ctx); /* n_ctx */
/* Tokens the backend evaluates in one pass: q3_prefill cuts a longer batch into passes
 * of this many (a program that feeds a prompt in chunks and wants the cache bit for bit
 * as one q3_prefill leaves it cuts at the same places). */
Q3_API int q3_context_pass_size(const q3_context *ctx);
Q3_API int q3_context_used(const q3_context *ctx); /* positions the cache holds */

typedef struct {
    const char *backend;
    int threads;         /* CPU worker threads; 0 where the backend has none */
    const char *variant; /* the kernels in use (the CPU's SIMD level); NULL where the backend names none */
} q3_context_info;
Q3_API void q3_context_describe(const q3_context *ctx, q3_context_info *info);

/* Append n tokens to the cache (a prompt batch, or one token to decode) and compute
 * the logits of the last one (q3_logits). Q3_ERROR_CONTEXT_FULL when they do not fit. */
Q3_API int q3_prefill(q3_context *ctx, const int32_t *tokens, size_t n, q3_err *err);
Q3_API int q3_decode(q3_context *ctx, int32_t token, q3_err *err);
/* The same, with every token's logits into all (n * vocab_size floats). */
Q3_API int q3_prefill_all(q3_context *ctx, const int32_t *tokens, size_t n, float *all, q3_err *err);
/* One decode step of n contexts at once: ctxs[i] decodes tokens[i], after which
 * q3_logits(ctxs[i]) holds bit for bit what q3_decode(ctxs[i], tokens[i]) would have
 * given. For serving several sequences: the weights (what bounds decode) are read once
 * for the whole step (the OpenCL backend runs contexts one after another where its
 * batched step cannot take the model). The contexts are of one model on one backend and
 * device, each at most once in the list, none in use by another thread. Nothing runs
 * unless every context has a free position (Q3_ERROR_CONTEXT_FULL names the first that
 * has none). */
Q3_API int q3_decode_batch(q3_context *const *ctxs, const int32_t *tokens, size_t n, q3_err *err);
/* q3_decode_batch where some contexts want only their greedy token: for each i with
 * only_greedy[i] nonzero, greedy[i] gets what a greedy sampler without a penalty picks
 * from the step's logits (the first index of the largest; -1 when one is NaN or
 * infinite), taken where the logits are: the OpenCL backend reads 4 bytes for the
 * context instead of vocab_size floats. q3_logits(ctxs[i]) is then not valid until its
 * next step. The other contexts get their logits as from q3_decode_batch (greedy[i] is
 * left as it was). */
Q3_API int q3_decode_batch_greedy(q3_context *const *ctxs, const int32_t *tokens, size_t n,
                                  const unsigned char *only_greedy, int32_t *greedy, q3_err *err);
/* vocab_size logits of the last token evaluated, valid until the next call on ctx
 * (the caller may modify them, e.g. a sampler does). */
Q3_API float *q3_logits(q3_context *ctx);
/* Forget every position from n_keep on (0: an empty cache); the next tokens go there. */
Q3_API int q3_kv_truncate(q3_context *ctx, int n_keep, q3_err *err);

/* ---- context state: save and restore ---- */

/* A context's state is the positions its KV cache holds and the logits of the last
 * one (q3_logits), as bytes in a layout of the library's (runtime/lib_state.c), not
 * a backend's: a state saved on one backend loads on any, into any context of the
 * same model with room for its positions. Keep a prompt's cache and start from it
 * again, or resume a conversation in another context. Checksummed; host byte order. */

/* The bytes q3_state_save writes for the context as it is now. */
Q3_API size_t q3_state_size(const q3_context *ctx);
/* The state into buf (cap bytes, at least q3_state_size); *written (may be NULL) gets
 * its size. The context is unchanged. Q3_ERROR_ARG when buf is too small. */
Q3_API int q3_state_save(q3_context *ctx, void *buf, size_t cap, size_t *written, q3_err *err);
/* The context's cache and logits replaced by a saved state's (len bytes): decoding
 * then goes on as it would have in the context that saved it. Q3_ERROR_ARG, and the
 * context unchanged, when the state is of another model (another file checksum or
 * shape), holds more positions than this context has, or is damaged (not a state,
 * cut short, its checksum wrong); err says which. Q3_ERROR when the backend fails
 * while copying (the context is then empty). */
Q3_API int q3_state_load(q3_context *ctx, const void *buf, size_t len, q3_err *err);

/* ---- sampler ---- */

typedef struct q3_sampler q3_sampler;

/* The domain: temperature finite and >= 0, top_p and min_p in [0, 1],
 * repetition_penalty finite and > 0 (q3run's options enforce it). */
typedef struct {
    float temperature;        /* 0: greedy (argmax) */
    uint32_t top_k;           /* 0: off */
    float top_p;              /* 1: off */
    float min_p;              /* 0: off */
    float repetition_penalty; /* 1: off (HF semantics) */
    uint64_t seed;            /* the same seed gives the same tokens */
} q3_sampler_params;

/* The model's generation defaults (greedy when it does not sample), seed 0. */
Q3_API q3_sampler_params q3_sampler_defaults(const q3_model *model);
Q3_API int q3_sampler_create(const q3_model *model, const q3_sampler_params *params, q3_sampler **sampler, q3_err *err);
Q3_API void q3_sampler_destroy(q3_sampler *sampler);
/* Record a token of the prompt or the output (for the repetition penalty). */
Q3_API void q3_sampler_accept(q3_sampler *sampler, int32_t token);
/* Forget the recorded tokens (a conversation started over). */
Q3_API void q3_sampler_forget(q3_sampler *sampler);
/* Pick a token; logits are modified in place (penalty). At least the most likely
 * token survives every filter. -1 when a logit is NaN or infinite: the model's
 * computation went wrong, and no choice among such numbers means anything. */
Q3_API int32_t q3_sampler_sample(q3_sampler *sampler, float *logits);
/* 1 when q3_sampler_sample picks the largest logit as it is (temperature 0, no
 * repetition penalty): then q3_decode_batch_greedy's token is the one it would pick. */
Q3_API int q3_sampler_is_greedy(const q3_sampler *sampler);
/* Index of the first logit that is NaN or infinite, or -1: what to name in the
 * message when q3_sampler_sample returns -1. */
Q3_API int64_t q3_logits_first_nonfinite(const float *logits, uint32_t n);
Q3_API int32_t q3_argmax(const float *logits, uint32_t n);

#ifdef __cplusplus
}
#endif
#endif
