/* hf_files.h - the files of a HuggingFace checkpoint directory that q3convert reads.
 * One definition: the readers open them by these names, and the output check
 * (output_path.h) refuses to write over any of them. */
#ifndef Q3_HF_FILES_H
#define Q3_HF_FILES_H

#define Q3_HF_CONFIG "config.json"
#define Q3_HF_GENERATION "generation_config.json"
#define Q3_HF_TOKENIZER "tokenizer.json"
#define Q3_HF_TOKENIZER_CONFIG "tokenizer_config.json"
#define Q3_HF_CHAT_TEMPLATE "chat_template.jinja"
#define Q3_HF_WEIGHTS "model.safetensors"
#define Q3_HF_WEIGHTS_INDEX "model.safetensors.index.json"
/* Shards are named by the index (model-00001-of-00002.safetensors); they end so. */
#define Q3_HF_SHARD_SUFFIX ".safetensors"

/* Every fixed name above, for the output check. */
#define Q3_HF_INPUT_NAMES                                                                           \
    {Q3_HF_CONFIG, Q3_HF_GENERATION, Q3_HF_TOKENIZER, Q3_HF_TOKENIZER_CONFIG, Q3_HF_CHAT_TEMPLATE, \
     Q3_HF_WEIGHTS, Q3_HF_WEIGHTS_INDEX}

#endif
