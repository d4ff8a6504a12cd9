/* q3run_chat.c - q3run -i: a chat, one line of stdin (any length) a user turn.
 * The KV cache grows turn by turn: a later turn feeds the end of the previous
 * reply's turn, then its own rendered user turn. The conversation is kept as text
 * too, so that when the context is full the oldest turns can be dropped (the
 * system prompt stays) and what remains re-rendered and prefilled from position 0.
 * /reset starts over, /exit or EOF ends; Ctrl-C stops a reply, at the prompt it ends. */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <unistd.h>
#include "q3run.h"

/* [system], then user, assistant, user, ..., the last always a user turn while one is sent. */
typedef struct {
    q3_chat_message *msgs; /* contents malloc'd here */
    size_t n, cap, first;  /* first: 1 with a system prompt (never dropped), else 0 */
} history;

static int history_push(history *h, const char *role, const char *text, size_t len)
{
    if (h->n == h->cap) {
        size_t cap = h->cap ? 2 * h->cap : 16;
        q3_chat_message *m = realloc(h->msgs, cap * sizeof *m);
        if (!m) return -1;
        h->msgs = m;
        h->cap = cap;
    }
    char *c = malloc(len + 1);
    if (!c) return -1;
    memcpy(c, text, len);
    c[len] = 0;
    h->msgs[h->n++] = (q3_chat_message){role, c};
    return 0;
}

static void history_pop(history *h) { free((char *)h->msgs[--h->n].content); }

/* The oldest user turn and its reply. */
static void history_drop_oldest(history *h)
{
    free((char *)h->msgs[h->first].content);
    free((char *)h->msgs[h->first + 1].content);
    memmove(&h->msgs[h->first], &h->msgs[h->first + 2], (h->n - h->first - 2) * sizeof *h->msgs);
    h->n -= 2;
}

static void history_free(history *h)
{
    while (h->n) history_pop(h);
    free(h->msgs);
}

static void on_sigint(int sig)
{
    (void)sig;
    q3run_interrupted = 1;
}

static void sigint_mask(int how) /* SIG_BLOCK or SIG_UNBLOCK, for the calling thread */
{
    sigset_t s;
    sigemptyset(&s);
    sigaddset(&s, SIGINT);
    pthread_sigmask(how, &s, NULL);
}

/* SIGINT must reach the main thread: a process-directed signal goes to any thread
 * that does not block it, and one taken by a worker (the CPU pool's, an OpenCL
 * driver's) would set the flag without waking the prompt's ppoll (seen under load:
 * a Ctrl-C at the prompt ignored until the next line). So the chat blocks SIGINT
 * before the backend starts its threads, which inherit the block, and the main
 * thread unblocks it only while a reply is generated and inside ppoll. */
void q3run_chat_prepare_signals(void) { sigint_mask(SIG_BLOCK); }

/* While a reply is generated (restart 1) SIGINT is unblocked and interrupted
 * system calls restart (a write to the terminal must not fail); at the prompt it
 * stays blocked but for ppoll, and calls are not restarted, so Ctrl-C ends the read. */
static void catch_sigint(int restart)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_sigint;
    sa.sa_flags = restart ? SA_RESTART : 0;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigint_mask(restart ? SIG_UNBLOCK : SIG_BLOCK);
}

/* Wait until stdin has input or Ctrl-C comes. SIGINT stays blocked (catch_sigint(0))
 * until ppoll unblocks it atomically: a Ctrl-C just before a plain read() would be
 * noted and the read would still block until the next line. 1: interrupted. */
static int wait_for_input(void)
{
    sigset_t during;
    pthread_sigmask(SIG_SETMASK, NULL, &during);
    sigdelset(&during, SIGINT);
    struct pollfd pfd = {.fd = STDIN_FILENO, .events = POLLIN};
    while (!q3run_interrupted && ppoll(&pfd, 1, NULL, &during) < 0 && errno == EINTR) {
    }
    return q3run_interrupted;
}

/* 1: a line in *line (its newline removed); 0: EOF or Ctrl-C; -1: a read error.
 * stdin is unbuffered in the chat (q3run_chat), so "stdin has input" is the fd's. */
static int read_line(char **line, size_t *cap, size_t *len)
{
    catch_sigint(0);
    fputs("> ", stderr);
    if (wait_for_input()) {
        catch_sigint(1);
        fputc('\n', stderr);
        return 0;
    }
    errno = 0;
    ssize_t n = getline(line, cap, stdin);
    int read_errno = errno;
    catch_sigint(1);
    if (n < 0) {
        if (q3run_interrupted || read_errno == EINTR) {
            fputc('\n', stderr);
            return 0;
        }
        errno = read_errno;
        if (ferror(stdin)) return -1;
        fputc('\n', stderr); /* EOF: the next line starts clean */
        return 0;
    }
    while (n > 0 && ((*line)[n - 1] == '\n' || (*line)[n - 1] == '\r')) n--;
    (*line)[n] = 0;
    *len = (size_t)n;
    return 1;
}

/* Positions kept free for a reply when the oldest turns are dropped. */
static size_t reply_room(const q3run_session *s)
{
    size_t quarter = (size_t)q3_context_size(s->ctx) / 4 + 1;
    int n = s->o->n_predict;
    return n > 0 && (size_t)n < quarter ? (size_t)n : quarter;
}

static int render_range(q3run_session *s, const history *h, size_t from, int32_t **ids, size_t *n, q3_err *err)
{
    return q3run_render(s, h->msgs + from, h->n - from, ids, n, err);
}

/* A later turn: the previous turn's end, then the new user turn alone. The end is
 * the library's (q3_chat_end_turn: the text the chat template closes a turn with,
 * tokenized as the template's output is, so a vocabulary without the special token
 * gets its byte pieces). */
static int continuation_ids(q3run_session *s, const history *h, int32_t **ids, size_t *n, q3_err *err)
{
    int32_t *end = NULL, *turn = NULL;
    size_t n_end = 0, n_turn = 0;
    if (q3_chat_end_turn(s->model, &end, &n_end, err)) return q3_err_name_file(err, s->o->model);
    if (render_range(s, h, h->n - 1, &turn, &n_turn, err)) {
        free(end);
        return -1;
    }
    int32_t *all = realloc(end, (n_end + n_turn) * sizeof *all);
    if (!all) {
        free(end);
        free(turn);
        q3_set_err(err, "q3run: out of memory");
        return -1;
    }
    memcpy(all + n_end, turn, n_turn * sizeof *all);
    free(turn);
    *ids = all;
    *n = n_end + n_turn;
    return 0;
}

/* The cache emptied (truncating to 0 positions cannot fail) and the penalty's tokens
 * forgotten: the next turn is prefilled from position 0. */
static void forget_conversation(q3run_session *s)
{
    q3_kv_truncate(s->ctx, 0, NULL);
    q3_sampler_forget(s->sampler);
}

/* The system prompt and the new user turn alone need this many positions. */
static int minimal_size(q3run_session *s, const history *h, size_t *n, q3_err *err)
{
    q3_chat_message m[2];
    size_t k = 0;
    if (h->first) m[k++] = h->msgs[0];
    m[k++] = h->msgs[h->n - 1];
    int32_t *ids;
    if (q3run_render(s, m, k, &ids, n, err)) return -1;
    free(ids);
    return 0;
}

/* The conversation does not fit after what the cache holds: drop the oldest turns
 * until it fits with room for a reply, and prefill it from position 0.
 * 1: the new turn cannot fit even alone (not sent, said so); 0: ready; -1: error. */
static int start_over_within_context(q3run_session *s, history *h, int32_t **ids, size_t *n, q3_err *err)
{
    size_t n_min, n_ctx = (size_t)q3_context_size(s->ctx);
    if (minimal_size(s, h, &n_min, err)) return -1;
    if (n_min + 1 > n_ctx) {
        fprintf(stderr, "q3run: this message needs %zu positions and the context holds %zu (--ctx): not sent\n", n_min,
                n_ctx);
        return 1;
    }
    int dropped = 0;
    for (;;) {
        if (render_range(s, h, 0, ids, n, err)) return -1;
        if (*n + reply_room(s) <= n_ctx || h->n - h->first < 3) break;
        free(*ids);
        history_drop_oldest(h);
        dropped++;
    }
    if (dropped)
        fprintf(stderr, "q3run: the context (%zu positions) is full: dropped the %d oldest turn%s%s and continuing\n",
                n_ctx, dropped, dropped == 1 ? "" : "s", h->first ? ", kept the system prompt," : "");
    forget_conversation(s);
    return 0;
}

static void say_why_it_stopped(const q3run_session *s, q3run_stop why)
{
    if (why == Q3RUN_STOP_CONTEXT)
        fprintf(stderr, "q3run: the context (%d positions) is full: the reply was cut; the next message drops the "
                        "oldest turns\n",
                q3_context_size(s->ctx));
    else if (why == Q3RUN_STOP_INTERRUPT)
        fprintf(stderr, "q3run: reply stopped (Ctrl-C at the prompt ends the chat)\n");
}

/* One user turn: feed it, generate the reply, keep both in the history. */
static int send_turn(q3run_session *s, history *h, const char *line, size_t len, q3_err *err)
{
    if (history_push(h, "user", line, len)) {
        q3_set_err(err, "q3run: out of memory");
        return -1;
    }
    int32_t *ids = NULL;
    size_t n = 0;
    size_t used = (size_t)q3_context_used(s->ctx);
    int rc = used > 0 ? continuation_ids(s, h, &ids, &n, err) : render_range(s, h, 0, &ids, &n, err);
    if (rc) return -1;
    if (used + n + reply_room(s) > (size_t)q3_context_size(s->ctx)) {
        free(ids);
        rc = start_over_within_context(s, h, &ids, &n, err);
        if (rc) {
            history_pop(h);
            return rc < 0 ? -1 : 0;
        }
    }
    rc = q3run_feed(s, ids, n, err);
    free(ids);
    q3run_text reply = {0};
    q3run_stop why;
    if (rc || q3run_generate(s, &reply, &why, err)) {
        free(reply.text);
        return -1;
    }
    q3run_interrupted = 0;
    say_why_it_stopped(s, why);
    rc = history_push(h, "assistant", reply.text ? reply.text : "", reply.len);
    free(reply.text);
    if (rc) q3_set_err(err, "q3run: out of memory");
    return rc;
}

static void reset(q3run_session *s, history *h)
{
    while (h->n > h->first) history_pop(h);
    forget_conversation(s);
    fprintf(stderr, "q3run: conversation cleared\n");
}

int q3run_chat(q3run_session *s, q3_err *err)
{
    history h = {0};
    const char *sys = s->o->system;
    if (sys && history_push(&h, "system", sys, strlen(sys))) {
        q3_set_err(err, "q3run: out of memory");
        return -1;
    }
    h.first = h.n;
    s->feed_last_token = 1;
    setvbuf(stdin, NULL, _IONBF, 0); /* what ppoll sees waiting is all there is */
    fprintf(stderr, "q3run: chat with %s (%d positions); /reset starts over, /exit or Ctrl-D ends, Ctrl-C stops a reply\n",
            s->o->model, q3_context_size(s->ctx));
    char *line = NULL;
    size_t cap = 0, len = 0;
    int rc = 0, got;
    while ((got = read_line(&line, &cap, &len)) > 0) {
        const char *nul = memchr(line, 0, len);
        if (nul) {
            fprintf(stderr, "q3run: this line has a NUL byte at offset %zu: not sent (a message is text)\n",
                    (size_t)(nul - line));
            continue;
        }
        if (len == 0) continue;
        if (!strcmp(line, "/exit")) break;
        if (!strcmp(line, "/reset")) {
            reset(s, &h);
            continue;
        }
        if ((rc = send_turn(s, &h, line, len, err))) break;
    }
    if (got < 0) {
        q3_set_err(err, "q3run: cannot read standard input: %s", strerror(errno));
        rc = -1;
    }
    signal(SIGINT, SIG_DFL);
    sigint_mask(SIG_UNBLOCK); /* the chat is over */
    free(line);
    history_free(&h);
    return rc;
}
