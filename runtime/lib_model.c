/* lib_model.c - q3.h's model: opening and checking the file, its config and
 * special tokens, the tokenizer and chat template built on first use, and the
 * weights each backend shares between the model's contexts. */
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include "chat_template.h"
#include "lib_model.h"
#include "model_check.h"
#include "weights.h"

void q3_free(void *p) { free(p); }

int q3_model_open(const char *path, const q3_model_params *params, q3_model **model, q3_err *err)
{
    q3_model_params none = {0};
    const q3_model_params *p = params ? params : &none;
    *model = NULL;
    unsigned flags = p->verify == Q3_VERIFY_NONE ? Q3_OPEN_NO_SECTION_CHECKS
                     : p->verify == Q3_VERIFY_ALL ? Q3_OPEN_VERIFY_META | Q3_OPEN_VERIFY_WEIGHTS
                                                  : Q3_OPEN_VERIFY_META;
    if (p->no_mmap) flags |= Q3_OPEN_LOAD;
    q3_model *m = calloc(1, sizeof *m);
    if (!m) {
        q3_set_err(err, "%s: out of memory", path);
        return Q3_ERROR_NOMEM;
    }
    if (q3_open(&m->file, path, flags, err)) {
        free(m);
        return Q3_ERROR;
    }
    /* What loading needs (model_check.h); it builds the tokenizer, which the model keeps. */
    if (p->verify != Q3_VERIFY_NONE && q3_model_check(&m->file, &m->td, &m->tk, err)) {
        q3_close(&m->file);
        free(m);
        return Q3_ERROR;
    }
    pthread_mutex_init(&m->lock, NULL);
    *model = m;
    return Q3_OK;
}

void q3_model_close(q3_model *m)
{
    if (!m) return;
    for (int i = 0; i < m->n_backends; i++) q3_backend_model_free(m->backends[i]);
    free(m->backends);
    q3_tokenizer_free(m->tk);
    q3_tokdata_free(&m->td);
    pthread_mutex_destroy(&m->lock);
    q3_close(&m->file);
    free(m);
}

const q3_config *q3_model_config(const q3_model *m) { return &m->file.config; }
const q3_generation *q3_model_generation(const q3_model *m) { return &m->file.generation; }

int q3_model_describe(const q3_model *m, q3_model_info *info, q3_err *err)
{
    memset(info, 0, sizeof *info);
    info->path = m->file.path;
    info->file_bytes = m->file.size;
    info->n_sections = Q3_SEC_KIND_MAX;
    info->n_tensors = m->file.n_tensors;
    for (uint32_t i = 0; i < m->file.n_tensors; i++) info->n_params += m->file.tensors[i].shape[0] * m->file.tensors[i].shape[1];
    q3_weights w;
    if (q3_weights_bind(&w, &m->file, err)) return Q3_ERROR;
    info->bytes_per_token = q3_weights_bytes_per_token(&w);
    q3_weights_free(&w);
    /* read, not kept: a program that never tokenizes does not hold the tokenizer */
    q3_tokdata td;
    if (q3_read_tokenizer(&m->file, &td, err)) return Q3_ERROR;
    info->bpe_vocab = td.n_vocab;
    q3_tokdata_free(&td);
    return Q3_OK;
}

int q3_model_verify(const q3_model *m, void (*report)(void *ctx, const char *line), void *ctx, unsigned *n_checked,
                    unsigned *n_bad)
{
    const q3_file *f = &m->file;
    q3_err e = {{0}};
    unsigned bad = 0;
#define CHECK(call)                          \
    do {                                     \
        if (call) {                          \
            if (report) report(ctx, e.msg);  \
            bad++;                           \
        }                                    \
    } while (0)
    CHECK(q3_verify_header(f, &e));
    for (uint32_t k = 1; k <= Q3_SEC_KIND_MAX; k++) CHECK(q3_verify_section(f, k, &e));
    for (uint32_t i = 0; i < f->n_tensors; i++) CHECK(q3_verify_tensor(f, &f->tensors[i], &e));
    CHECK(q3_verify_file(f, &e));
#undef CHECK
    /* That read the whole mapping; hand its pages back (the page cache keeps them) so
     * the process's resident size is what running costs. A loaded copy (no_mmap) is
     * the weights themselves: dropping it would zero them. A failure costs only memory. */
    if (f->size && !f->loaded) (void)madvise((void *)f->map, (size_t)f->size, MADV_DONTNEED);
    if (n_checked) *n_checked = f->n_tensors + Q3_SEC_KIND_MAX + 2;
    if (n_bad) *n_bad = bad;
    return bad ? Q3_ERROR : Q3_OK;
}

int32_t q3_token_bos(const q3_model *m)
{
    const q3_file *f = &m->file;
    return f->generation.bos_token_id >= 0 ? f->generation.bos_token_id : f->config.bos_token_id;
}

int q3_token_is_eos(const q3_model *m, int32_t id)
{
    const q3_file *f = &m->file;
    for (uint32_t i = 0; i < f->generation.n_eos; i++)
        if (f->generation.eos_token_ids[i] == id) return 1;
    return id >= 0 && f->config.eos_token_id == id;
}

/* Builds the tokenizer on first use; the caller holds m->lock. */
static int tokenizer_locked(q3_model *m, q3_err *err)
{
    if (m->tk) return Q3_OK;
    if (!m->td.blob && q3_read_tokenizer(&m->file, &m->td, err)) return Q3_ERROR;
    return (m->tk = q3_tokenizer_create(&m->td, err)) ? Q3_OK : Q3_ERROR;
}

int q3_model_tokenizer(q3_model *m, const q3_tokenizer **tk, q3_err *err)
{
    pthread_mutex_lock(&m->lock);
    int rc = tokenizer_locked(m, err);
    pthread_mutex_unlock(&m->lock);
    *tk = rc ? NULL : m->tk;
    return rc;
}

int q3_chat_apply(q3_model *m, const q3_chat_message *msgs, size_t n_msgs, int add_generation_prompt,
                  int enable_thinking, char **text, size_t *len, q3_err *err)
{
    const q3_tokenizer *tk; /* the template lives beside the tokenizer, read with it */
    if (q3_model_tokenizer(m, &tk, err)) return Q3_ERROR;
    return q3_chat_render(m->td.chat_template.text, m->td.chat_template.len, msgs, n_msgs, add_generation_prompt,
                          enable_thinking, text, len, err)
               ? Q3_ERROR
               : Q3_OK;
}

int q3_chat_end_turn(q3_model *m, int32_t **ids, size_t *n_ids, q3_err *err)
{
    const q3_tokenizer *tk;
    if (q3_model_tokenizer(m, &tk, err)) return Q3_ERROR;
    return q3_tokenize(tk, Q3_CHAT_TURN_END, strlen(Q3_CHAT_TURN_END), ids, n_ids, err) ? Q3_ERROR : Q3_OK;
}

q3_backend_model *q3_model_backend(q3_model *m, const q3_backend_impl *impl, const q3_backend_opts *o, q3_err *err)
{
    int device = 0;
    if (impl->resolve_device && impl->resolve_device(&m->file, o, &device, err)) return NULL;
    pthread_mutex_lock(&m->lock);
    q3_backend_model *bm = NULL;
    for (int i = 0; i < m->n_backends && !bm; i++)
        if (m->backends[i]->impl == impl && m->backends[i]->device == device) bm = m->backends[i];
    if (!bm) {
        q3_backend_model **grown = realloc(m->backends, (size_t)(m->n_backends + 1) * sizeof *grown);
        if (!grown) {
            q3_set_err(err, "%s: out of memory", m->file.path);
        } else {
            m->backends = grown;
            q3_backend_opts at = *o;
            at.device = device;
            bm = q3_backend_model_create(impl, &m->file, &at, err);
            if (bm) m->backends[m->n_backends++] = bm;
        }
    }
    pthread_mutex_unlock(&m->lock);
    return bm;
}
