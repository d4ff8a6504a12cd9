/* chat_template.h - render a conversation with Qwen3's chat template, byte for
 * byte as transformers' apply_chat_template(add_generation_prompt=True) does. */
#ifndef Q3_CHAT_TEMPLATE_H
#define Q3_CHAT_TEMPLATE_H

#include <stddef.h>
#include "../format/q3_format.h"

/* What ends a turn in the templates q3 renders (ChatML's end-of-turn token and the
 * newline after it): also what closes an assistant turn that generation left open. */
#define Q3_CHAT_TURN_END "<|im_end|>\n"

/* template_text: the file's chat template (q3_tokdata.chat_template); rendering
 * follows it. enable_thinking = 0 appends the empty <think></think> block.
 * *out is malloc'd and NUL-terminated. Returns 0 or -1 with err. */
int q3_chat_render(const char *template_text, size_t template_len,
                   const q3_chat_message *msgs, size_t n_msgs,
                   int add_generation_prompt, int enable_thinking,
                   char **out, size_t *out_len, q3_err *err);

/* Which renderer a template gets: Qwen3's (recognised by the text of its
 * branches), plain ChatML (a ChatML template that never mentions <think>:
 * one turn per message, nothing else), or none (q3_chat_render refuses). */
enum { Q3_CHAT_UNKNOWN = 0, Q3_CHAT_QWEN3 = 1, Q3_CHAT_CHATML = 2 };
int q3_chat_template_kind(const char *template_text, size_t template_len);

#endif
