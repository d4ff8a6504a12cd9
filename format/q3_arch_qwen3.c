/* q3_arch_qwen3.c - the Qwen3 dense tensor table (spec.md 7, HF Qwen3ForCausalLM). */
#include "q3_arch.h"

static const q3_tensor_def qwen3_model[Q3_QWEN3_MODEL_TENSORS] = {
    [Q3_QWEN3_EMBED] = {"model.embed_tokens.weight", Q3_DIM_VOCAB, Q3_DIM_HIDDEN, Q3_TDEF_ROW_READ, -1},
    [Q3_QWEN3_NORM] = {"model.norm.weight", Q3_DIM_HIDDEN, Q3_DIM_ONE, Q3_TDEF_AFTER_LAYERS, -1},
    [Q3_QWEN3_LM_HEAD] = {"lm_head.weight", Q3_DIM_VOCAB, Q3_DIM_HIDDEN, Q3_TDEF_AFTER_LAYERS | Q3_TDEF_UNTIED_ONLY,
                          Q3_QWEN3_EMBED},
};

static const q3_tensor_def qwen3_layer[Q3_QWEN3_LAYER_TENSORS] = {
    [Q3_QWEN3_INPUT_NORM] = {"input_layernorm.weight", Q3_DIM_HIDDEN, Q3_DIM_ONE, 0, -1},
    [Q3_QWEN3_WQ] = {"self_attn.q_proj.weight", Q3_DIM_Q, Q3_DIM_HIDDEN, 0, -1},
    [Q3_QWEN3_WK] = {"self_attn.k_proj.weight", Q3_DIM_KV, Q3_DIM_HIDDEN, 0, -1},
    [Q3_QWEN3_WV] = {"self_attn.v_proj.weight", Q3_DIM_KV, Q3_DIM_HIDDEN, 0, -1},
    [Q3_QWEN3_WO] = {"self_attn.o_proj.weight", Q3_DIM_HIDDEN, Q3_DIM_Q, 0, -1},
    [Q3_QWEN3_Q_NORM] = {"self_attn.q_norm.weight", Q3_DIM_HEAD, Q3_DIM_ONE, 0, -1},
    [Q3_QWEN3_K_NORM] = {"self_attn.k_norm.weight", Q3_DIM_HEAD, Q3_DIM_ONE, 0, -1},
    [Q3_QWEN3_POST_NORM] = {"post_attention_layernorm.weight", Q3_DIM_HIDDEN, Q3_DIM_ONE, 0, -1},
    [Q3_QWEN3_W_GATE] = {"mlp.gate_proj.weight", Q3_DIM_INTER, Q3_DIM_HIDDEN, 0, -1},
    [Q3_QWEN3_W_UP] = {"mlp.up_proj.weight", Q3_DIM_INTER, Q3_DIM_HIDDEN, 0, -1},
    [Q3_QWEN3_W_DOWN] = {"mlp.down_proj.weight", Q3_DIM_HIDDEN, Q3_DIM_INTER, 0, -1},
};

const q3_arch q3_arch_qwen3 = {
    "qwen3", "model.layers.%u.", qwen3_model, Q3_QWEN3_MODEL_TENSORS, qwen3_layer, Q3_QWEN3_LAYER_TENSORS,
};
