/* q3_arch.h - the tensors of an architecture's checkpoint, as one table per
 * architecture (spec.md 7): the converter writes what the table lists, the
 * loader binds it, the byte counts sum it. tests/test_format_arch.c checks the
 * Qwen3 table against spec.md's list. */
#ifndef Q3_ARCH_H
#define Q3_ARCH_H

#include "q3_format.h"

/* A tensor dimension, in terms of the config. */
typedef enum {
    Q3_DIM_ONE,    /* 1: the tensor is a vector */
    Q3_DIM_VOCAB,  /* vocab_size */
    Q3_DIM_HIDDEN, /* hidden_size */
    Q3_DIM_INTER,  /* intermediate_size */
    Q3_DIM_HEAD,   /* head_dim */
    Q3_DIM_Q,      /* num_attention_heads * head_dim */
    Q3_DIM_KV      /* num_key_value_heads * head_dim */
} q3_dim;

enum q3_tensor_def_flags {
    Q3_TDEF_AFTER_LAYERS = 1u << 0, /* model-wide, written after the layers (HF order) */
    Q3_TDEF_UNTIED_ONLY = 1u << 1,  /* only when tie_word_embeddings is 0; else tied_to stands in */
    Q3_TDEF_ROW_READ = 1u << 2      /* a decoded token reads one row of it (an embedding) */
};

typedef struct {
    const char *name;  /* HF name; a layer's tensors without the layer prefix */
    q3_dim rows, cols; /* cols Q3_DIM_ONE: a vector, row-major; else a matrix, R16C32 */
    unsigned flags;    /* Q3_TDEF_* */
    int tied_to;       /* with Q3_TDEF_UNTIED_ONLY: the model tensor that stands in when tied */
} q3_tensor_def;

typedef struct {
    const char *name;
    const char *layer_prefix; /* printf format of a layer's name prefix, one %u */
    /* Model-wide tensors; their index is their slot in the runtime's binding. */
    const q3_tensor_def *model;
    uint32_t n_model;
    /* Each layer's tensors, in order. */
    const q3_tensor_def *layer;
    uint32_t n_layer;
} q3_arch;

/* Qwen3 dense (every size): slots of its model and layer tensors, in table order. */
enum { Q3_QWEN3_EMBED, Q3_QWEN3_NORM, Q3_QWEN3_LM_HEAD, Q3_QWEN3_MODEL_TENSORS };
enum {
    Q3_QWEN3_INPUT_NORM, Q3_QWEN3_WQ, Q3_QWEN3_WK, Q3_QWEN3_WV, Q3_QWEN3_WO, Q3_QWEN3_Q_NORM, Q3_QWEN3_K_NORM,
    Q3_QWEN3_POST_NORM, Q3_QWEN3_W_GATE, Q3_QWEN3_W_UP, Q3_QWEN3_W_DOWN, Q3_QWEN3_LAYER_TENSORS
};
extern const q3_arch q3_arch_qwen3;

/* The size a dimension has under config c. */
uint64_t q3_dim_size(const q3_config *c, q3_dim d);
/* Whether model tensor def is in a checkpoint with config c (UNTIED_ONLY ones are not when tied). */
int q3_tensor_def_present(const q3_tensor_def *def, const q3_config *c);
/* Names, shapes and .q3 layouts of every tensor the config implies, in HF order:
 * model tensors before the layers, each layer, those after the layers. *specs is malloc'd. */
int q3_arch_tensor_specs(const q3_arch *a, const q3_config *c, q3_tensor_spec **specs, uint32_t *n, q3_err *err);

#endif
