/* chat_template.c - Qwen3's chat template, implemented natively.
 *
 * Rather than a Jinja interpreter, this renders what Qwen3's template (as
 * published in tokenizer_config.json, or transformers 5's chat_template.jinja)
 * renders, branch for branch: the system turn, user/system/tool turns,
 * assistant turns with their <think> reasoning kept only after the last real
 * user query, and the generation prompt with the empty think block when
 * thinking is off. The template is recognised by the fragments that decide
 * that output (QWEN3_MARKS). A ChatML template that never mentions <think>
 * renders plain ChatML turns; anything else is refused with a clear error
 * rather than rendered wrongly. */
#include <stdlib.h>
#include <string.h>
#include "chat_template.h"

typedef struct {
    char *p;
    size_t len, cap;
    int failed;
} sbuf;

static void put(sbuf *b, const char *s, size_t n)
{
    if (b->failed) return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n + 1) cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p) {
            b->failed = 1;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = 0;
}
static void puts_(sbuf *b, const char *s) { put(b, s, strlen(s)); }

typedef struct {
    const char *s;
    size_t n;
} view;

static view lstrip_nl(view v)
{
    while (v.n && v.s[0] == '\n') v.s++, v.n--;
    return v;
}
static view rstrip_nl(view v)
{
    while (v.n && v.s[v.n - 1] == '\n') v.n--;
    return v;
}

static const char *find_in(view v, const char *needle)
{
    size_t k = strlen(needle);
    for (size_t i = 0; i + k <= v.n; i++)
        if (memcmp(v.s + i, needle, k) == 0) return v.s + i;
    return NULL;
}
static const char *find_last(view v, const char *needle)
{
    size_t k = strlen(needle);
    for (size_t i = v.n; i >= k; i--)
        if (memcmp(v.s + i - k, needle, k) == 0) return v.s + i - k;
    return NULL;
}

static int starts_ends(const char *s, const char *pre, const char *suf)
{
    size_t n = strlen(s), a = strlen(pre), b = strlen(suf);
    return n >= a && n >= b && memcmp(s, pre, a) == 0 && memcmp(s + n - b, suf, b) == 0;
}

/* content.split('</think>')[-1].lstrip('\n') and
 * content.split('</think>')[0].rstrip('\n').split('<think>')[-1].lstrip('\n') */
static void split_reasoning(const char *content, view *answer, view *reasoning)
{
    view all = {content, strlen(content)};
    *answer = all;
    *reasoning = (view){"", 0};
    const char *first_end = find_in(all, "</think>");
    if (!first_end) return;
    const char *last_end = find_last(all, "</think>");
    const char *after = last_end + strlen("</think>");
    *answer = lstrip_nl((view){after, (size_t)(all.s + all.n - after)});
    view head = rstrip_nl((view){all.s, (size_t)(first_end - all.s)});
    const char *open = find_last(head, "<think>");
    if (open) head = (view){open + strlen("<think>"), (size_t)(head.s + head.n - open - strlen("<think>"))};
    *reasoning = lstrip_nl(head);
}

static int finish(sbuf *b, char **out, size_t *out_len, q3_err *err)
{
    if (!b->p) put(b, "", 0);
    if (b->failed) {
        free(b->p);
        q3_set_err(err, "chat template: out of memory");
        return -1;
    }
    *out = b->p;
    *out_len = b->len;
    return 0;
}

/* Plain ChatML: every message as one turn. */
static int render_chatml(const q3_chat_message *msgs, size_t n_msgs, int add_generation_prompt, char **out,
                         size_t *out_len, q3_err *err)
{
    sbuf b = {0};
    for (size_t i = 0; i < n_msgs; i++) {
        puts_(&b, "<|im_start|>");
        puts_(&b, msgs[i].role);
        puts_(&b, "\n");
        puts_(&b, msgs[i].content);
        puts_(&b, Q3_CHAT_TURN_END);
    }
    if (add_generation_prompt) puts_(&b, "<|im_start|>assistant\n");
    return finish(&b, out, out_len, err);
}

/* The template's own text for each branch rendered below (Jinja source,
 * as both the inline and the .jinja form of Qwen3's template have it). */
static const char *QWEN3_MARKS[] = {
    "namespace(multi_step_tool=true, last_query_index=messages|length - 1)",
    "message.content.startswith('<tool_response>') and message.content.endswith('</tool_response>')",
    "(message.role == \"user\") or (message.role == \"system\" and not loop.first)",
    "message.content.split('</think>')[-1].lstrip('\\n')",
    "message.content.split('</think>')[0].rstrip('\\n').split('<think>')[-1].lstrip('\\n')",
    "loop.index0 > ns.last_query_index",
    "loop.last or (not loop.last and reasoning_content)",
    "'\\n<think>\\n' + reasoning_content.strip('\\n') + '\\n</think>\\n\\n' + content.lstrip('\\n')",
    "'<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n'",
    "'<|im_start|>system\\n' + messages[0].content + '<|im_end|>\\n'",
    "{{- '<|im_start|>user' }}",
    "{{- '\\n<tool_response>\\n' }}",
    "{{- '<|im_start|>assistant\\n' }}",
    "enable_thinking is defined and enable_thinking is false",
    "{{- '<think>\\n\\n</think>\\n\\n' }}",
};

int q3_chat_template_kind(const char *template_text, size_t template_len)
{
    view tpl = {template_text ? template_text : "", template_text ? template_len : 0};
    int all = 1;
    for (size_t i = 0; i < sizeof QWEN3_MARKS / sizeof QWEN3_MARKS[0]; i++)
        if (!find_in(tpl, QWEN3_MARKS[i])) all = 0;
    if (all) return Q3_CHAT_QWEN3;
    if (find_in(tpl, "<|im_start|>") && !find_in(tpl, "<think>")) return Q3_CHAT_CHATML;
    return Q3_CHAT_UNKNOWN;
}

int q3_chat_render(const char *template_text, size_t template_len, const q3_chat_message *msgs, size_t n_msgs,
                   int add_generation_prompt, int enable_thinking, char **out, size_t *out_len, q3_err *err)
{
    int kind = q3_chat_template_kind(template_text, template_len);
    if (kind == Q3_CHAT_UNKNOWN) {
        q3_set_err(err, "chat template: %s; only Qwen3's template and plain ChatML are supported",
                   !template_len ? "the model has none"
                   : find_in((view){template_text, template_len}, "<think>")
                       ? "it uses <think> but is not Qwen3's template"
                       : "it is not ChatML (no <|im_start|>)");
        return -1;
    }
    if (!n_msgs) { /* Qwen3's template reads messages[0]: transformers fails too */
        q3_set_err(err, "chat template: no messages to render");
        return -1;
    }
    for (size_t i = 0; i < n_msgs; i++) {
        const char *r = msgs[i].role;
        if (!r || !msgs[i].content ||
            (strcmp(r, "system") && strcmp(r, "user") && strcmp(r, "assistant") && strcmp(r, "tool"))) {
            q3_set_err(err, "chat template: message %zu needs a role (system, user, assistant, tool) and content", i);
            return -1;
        }
    }
    if (kind == Q3_CHAT_CHATML) return render_chatml(msgs, n_msgs, add_generation_prompt, out, out_len, err);
    /* The last user turn that is not a wrapped tool response. */
    size_t last_query = n_msgs ? n_msgs - 1 : 0;
    for (size_t k = n_msgs; k-- > 0;)
        if (strcmp(msgs[k].role, "user") == 0 &&
            !starts_ends(msgs[k].content, "<tool_response>", "</tool_response>")) {
            last_query = k;
            break;
        }
    sbuf b = {0};
    if (n_msgs && strcmp(msgs[0].role, "system") == 0) {
        puts_(&b, "<|im_start|>system\n");
        puts_(&b, msgs[0].content);
        puts_(&b, "<|im_end|>\n");
    }
    for (size_t i = 0; i < n_msgs; i++) {
        const char *role = msgs[i].role, *content = msgs[i].content;
        if (strcmp(role, "user") == 0 || (strcmp(role, "system") == 0 && i > 0)) {
            puts_(&b, "<|im_start|>");
            puts_(&b, role);
            puts_(&b, "\n");
            puts_(&b, content);
            puts_(&b, "<|im_end|>\n");
        } else if (strcmp(role, "assistant") == 0) {
            view answer = {content, strlen(content)}, reasoning = {"", 0};
            split_reasoning(content, &answer, &reasoning);
            puts_(&b, "<|im_start|>assistant\n");
            int last = i + 1 == n_msgs;
            if (i > last_query && (last || reasoning.n)) {
                view r = rstrip_nl(lstrip_nl(reasoning));
                puts_(&b, "<think>\n");
                put(&b, r.s, r.n);
                puts_(&b, "\n</think>\n\n");
                answer = lstrip_nl(answer);
            }
            put(&b, answer.s, answer.n);
            puts_(&b, "<|im_end|>\n");
        } else if (strcmp(role, "tool") == 0) { /* consecutive results share one user turn */
            if (i == 0 || strcmp(msgs[i - 1].role, "tool") != 0) puts_(&b, "<|im_start|>user");
            puts_(&b, "\n<tool_response>\n");
            puts_(&b, content);
            puts_(&b, "\n</tool_response>");
            if (i + 1 == n_msgs || strcmp(msgs[i + 1].role, "tool") != 0) puts_(&b, "<|im_end|>\n");
        }
    }
    if (add_generation_prompt) {
        puts_(&b, "<|im_start|>assistant\n");
        if (!enable_thinking) puts_(&b, "<think>\n\n</think>\n\n");
    }
    return finish(&b, out, out_len, err);
}
