/* fuzz_chat_template.c - q3_chat_render on an arbitrary template and messages.
 * Input: one flag byte (bit 0 add_generation_prompt, bit 1 enable_thinking, bit 2
 * use Qwen3's real template from $BUILD/fixtures/hf-tiny instead of the input's),
 * then NUL-separated parts: the template, then up to 16 messages, each a role
 * byte (modulo 4: '0' system, '1' user, '2' assistant, '3' tool) and its content. */
#include "fuzz_util.h"
#include "../convert/json_util.h"
#include "../runtime/chat_template.h"

static char *ctf_real;
static size_t ctf_real_len;

static void ctf_free(void) { free(ctf_real); }

int fuzz_chat_template(const uint8_t *data, size_t size)
{
    if (size == 0) return 0;
    unsigned flags = data[0];
    if ((flags & 4) && !ctf_real) {
        char path[512];
        q3_err err = {{0}};
        snprintf(path, sizeof path, "%s/fixtures/hf-tiny/chat_template.jinja", fuzz_build_dir());
        FUZZ_ASSERT(q3_read_file(path, &ctf_real, &ctf_real_len, &err) == 0, "%s (make fixtures)", err.msg);
        atexit(ctf_free);
    }
    static const char *roles[] = {"system", "user", "assistant", "tool"};
    q3_chat_message msgs[16];
    char *copy = malloc(size);
    FUZZ_ASSERT(copy != NULL, "out of memory");
    memcpy(copy, data + 1, size - 1);
    copy[size - 1] = 0; /* every part, the last included, ends in a NUL */
    const char *tpl = copy;
    size_t tpl_len = strlen(copy), n = 0;
    char *p = copy + tpl_len + 1, *end = copy + size - 1;
    while (p < end && n < 16) {
        size_t len = strlen(p);
        msgs[n].role = roles[(uint8_t)p[0] % 4];
        msgs[n].content = len ? p + 1 : p;
        n++;
        p += len + 1;
    }
    if (flags & 4) {
        tpl = ctf_real;
        tpl_len = ctf_real_len;
    }
    char *out = NULL;
    size_t out_len = 0;
    q3_err err = {{0}};
    if (q3_chat_render(tpl, tpl_len, msgs, n, flags & 1, (flags >> 1) & 1, &out, &out_len, &err)) {
        fuzz_check_err(&err, "chat template");
    } else {
        FUZZ_ASSERT(out != NULL && out[out_len] == 0 && strlen(out) == out_len, "rendered text not NUL-terminated");
        /* Qwen3's template ends with the generation prompt (and the empty think
         * block when thinking is off), whatever the messages are. */
        static const char *gp[] = {"<|im_start|>assistant\n", "<|im_start|>assistant\n<think>\n\n</think>\n\n"};
        const char *want = gp[!((flags >> 1) & 1)];
        size_t wl = strlen(want);
        if ((flags & 4) && (flags & 1))
            FUZZ_ASSERT(out_len >= wl && memcmp(out + out_len - wl, want, wl) == 0,
                        "rendered text does not end with the generation prompt");
        free(out);
    }
    free(copy);
    return 0;
}

FUZZ_ENTRY(fuzz_chat_template)
