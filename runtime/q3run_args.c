/* q3run_args.c - q3run's command line: parsing (strict: a value that is not
 * exactly a number of the option's range is a usage error), --help, and what the
 * options mean together (the mode, the thread cap, warnings for options that do
 * nothing in the mode given). The backends, their devices and the environment
 * variables they read are the library's lists (q3_backend_names and its kin), so
 * a new backend appears here without a change. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>
#include "q3run.h"

/* The backend names joined by sep ("cpu|opencl"), with their devices: only those
 * that number devices ("opencl"). */
static void backend_list(char *buf, size_t cap, const char *sep, int with_devices_only)
{
    size_t used = 0;
    buf[0] = 0;
    for (const char *const *n = q3_backend_names(); *n && used < cap; n++)
        if (!with_devices_only || q3_backend_has_devices(*n))
            used += (size_t)snprintf(buf + used, cap - used, "%s%s", used ? sep : "", *n);
}

static void usage(FILE *f)
{
    char backends[256];
    backend_list(backends, sizeof backends, "|", 0);
    fprintf(f,
            "usage: q3run [options] MODEL.q3 [\"PROMPT\" | -]\n"
            "  Generates a continuation of PROMPT (raw text; - reads it from stdin). Without a\n"
            "  prompt: an interactive chat when stdin is a terminal (as -i), else stdin is read.\n"
            "  -n N                 tokens to generate (default 256; -1 = until EOS or --ctx)\n"
            "  --temp T             temperature (0 = greedy; default from the model's generation config)\n"
            "  --top-k K, --top-p P, --min-p P, --repeat-penalty R   sampling filters (at least the\n"
            "                       most likely token always survives them)\n"
            "  --seed S             random seed, 0 to 2^64-1 (same seed, same output; default: a random\n"
            "                       seed, printed in the last line and with -v)\n"
            "  -t N                 CPU threads (default: all online CPUs; more is capped, with a note)\n"
            "  --ctx N              KV cache positions (default min(max_position_embeddings, 4096))\n"
            "  --cache-type T       KV cache elements: f16 (default) or q8_0 (8 bits and a scale per 32\n"
            "                       values: about half the memory; cpu backend)\n"
            "  --chat               apply the model's chat template to PROMPT (a user turn)\n"
            "  --no-think           with --chat or -i: thinking off (empty <think></think>)\n"
            "  --system TEXT        with --chat or -i: a system turn\n"
            "  -i, --interactive    chat turn by turn on the terminal (implies --chat); a line is a\n"
            "                       turn; /reset starts over, /exit or Ctrl-D ends; Ctrl-C stops a\n"
            "                       reply (at the prompt: ends); a full context drops the oldest turns\n"
            "  --ids                print generated token ids instead of text\n"
            "  --tokenize           print the ids of PROMPT (no template) and exit\n"
            "  --pieces             with --tokenize: one token a line: id, piece, its text quoted\n"
            "  --backend %s compute backend (default %s)\n"
            "  --device N           OpenCL device (default: the first GPU, else device 0)\n"
            "  --list-devices       print the OpenCL devices and exit\n"
            "  --verify             hash every tensor before running (q3check does the same)\n"
            "  --no-mmap            read the weights into memory (huge pages) instead of mapping the\n"
            "                       file: slower to load, faster to decode on few cores\n"
            "  -v                   print backend details and the sampling settings\n"
            "  --                   end of options (a prompt may then start with -)\n"
            "  -h, --help           this text\n"
            "A prompt is text: a NUL byte in it (from stdin) is refused, naming its offset.\n"
            "environment:\n",
            backends, q3_backend_names()[0]);
    for (const char *const *n = q3_backend_names(); *n; n++) fputs(q3_backend_env_help(*n), f);
    fprintf(f, "exit status: 0 ok, 1 error (bad model, prompt too long, non-finite logits, ...), 2 usage\n");
}

/* A whole decimal int in [lo, 1 << 30]. */
static int parse_int(const char *s, int lo, int *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || *end || end == s || v < lo || v > 1 << 30) return -1;
    *out = (int)v;
    return 0;
}

/* A finite float >= 0 (inf and nan are refused: no sampling setting means them). */
static int parse_float(const char *s, float *out)
{
    char *end;
    errno = 0;
    float v = strtof(s, &end);
    if (errno || *end || end == s || !isfinite(v) || !(v >= 0)) return -1;
    *out = v;
    return 0;
}

/* 0 .. 2^64-1, digits only: strtoull alone takes "-1" (as 2^64-1), " 5" and
 * overflows to ULLONG_MAX silently. */
static int parse_seed(const char *s, uint64_t *out)
{
    if (s[0] < '0' || s[0] > '9') return -1;
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || *end) return -1;
    *out = v;
    return 0;
}

/* --list-devices: one line per device of each backend that numbers its devices
 * (OpenCL), numbered as --device takes them; none is an error that says how to get one. */
static int list_devices(void)
{
    for (const char *const *b = q3_backend_names(); *b; b++) {
        int n;
        q3_err err;
        if (!q3_backend_has_devices(*b)) continue;
        if (q3_backend_device_count(*b, &n, &err)) {
            fprintf(stderr, "q3run: %s\n", err.msg);
            return 1;
        }
        for (int i = 0; i < n; i++) {
            char line[512];
            if (q3_backend_device_describe(*b, i, line, sizeof line, &err) == Q3_OK) printf("%d: %s\n", i, line);
        }
    }
    return 0;
}

static int known_backend(const char *name)
{
    for (const char *const *n = q3_backend_names(); *n; n++)
        if (!strcmp(name, *n)) return 1;
    return 0;
}

/* An option with a value; 0 when a is not one of them. *bad: the value is missing or invalid. */
static int value_option(const char *a, const char *v, q3run_options *o, int *bad)
{
    int ok = v != NULL;
    if (!strcmp(a, "-n")) ok = ok && !parse_int(v, -1, &o->n_predict);
    else if (!strcmp(a, "-t")) ok = ok && !parse_int(v, 0, &o->n_threads);
    else if (!strcmp(a, "--ctx")) ok = ok && !parse_int(v, 1, &o->n_ctx);
    else if (!strcmp(a, "--device")) ok = ok && !parse_int(v, 0, &o->device);
    else if (!strcmp(a, "--cache-type")) ok = ok && q3_cache_type_parse(v, &o->cache_type, NULL) == Q3_OK;
    else if (!strcmp(a, "--temp")) ok = ok && !parse_float(v, &o->sp.temperature), o->have_temp = 1;
    else if (!strcmp(a, "--top-k")) {
        int k = 0;
        ok = ok && !parse_int(v, 0, &k);
        o->sp.top_k = (uint32_t)k;
        o->have_top_k = 1;
    } else if (!strcmp(a, "--top-p")) ok = ok && !parse_float(v, &o->sp.top_p) && o->sp.top_p <= 1, o->have_top_p = 1;
    else if (!strcmp(a, "--min-p")) ok = ok && !parse_float(v, &o->sp.min_p) && o->sp.min_p <= 1, o->have_min_p = 1;
    else if (!strcmp(a, "--repeat-penalty"))
        ok = ok && !parse_float(v, &o->sp.repetition_penalty) && o->sp.repetition_penalty > 0, o->have_penalty = 1;
    else if (!strcmp(a, "--seed")) ok = ok && !parse_seed(v, &o->sp.seed), o->have_seed = 1;
    else if (!strcmp(a, "--system")) o->system = v;
    else if (!strcmp(a, "--backend")) o->backend = v;
    else return 0;
    *bad = !ok;
    return 1;
}

/* A flag; 0 when a is not one of them. */
static int flag_option(const char *a, q3run_options *o)
{
    if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
        usage(stdout);
        exit(q3_finish_stdout("q3run", 0));
    }
    if (!strcmp(a, "--list-devices")) exit(q3_finish_stdout("q3run", list_devices()));
    if (!strcmp(a, "--chat")) o->chat = 1;
    else if (!strcmp(a, "--no-think")) o->think = 0, o->have_no_think = 1;
    else if (!strcmp(a, "-i") || !strcmp(a, "--interactive")) o->interactive = o->chat = 1;
    else if (!strcmp(a, "--ids")) o->print_ids = 1;
    else if (!strcmp(a, "--tokenize")) o->tokenize = 1;
    else if (!strcmp(a, "--pieces")) o->pieces = o->tokenize = 1;
    else if (!strcmp(a, "--verify")) o->verify = 1;
    else if (!strcmp(a, "--no-mmap")) o->no_mmap = 1;
    else if (!strcmp(a, "-v")) o->verbose = 1;
    else return 0;
    return 1;
}

int q3run_parse_args(int argc, char **argv, q3run_options *o)
{
    memset(o, 0, sizeof *o);
    o->n_predict = 256;
    o->think = 1;
    o->device = -1;
    o->backend = q3_backend_names()[0];
    const char *positional[2] = {NULL, NULL};
    int n_pos = 0, options_end = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        int bad = 0;
        if (!options_end && !strcmp(a, "--")) {
            options_end = 1;
        } else if (!options_end && a[0] == '-' && a[1] != 0) {
            if (value_option(a, i + 1 < argc ? argv[i + 1] : NULL, o, &bad)) {
                if (bad) {
                    fprintf(stderr, "q3run: option %s needs a valid value (see --help)\n", a);
                    return -1;
                }
                i++;
            } else if (!flag_option(a, o)) {
                fprintf(stderr, "q3run: unknown option '%s' (see --help; -- ends the options)\n", a);
                return -1;
            }
        } else if (n_pos < 2) {
            positional[n_pos++] = a;
        } else {
            fprintf(stderr, "q3run: too many arguments (quote the prompt)\n");
            return -1;
        }
    }
    if (!positional[0]) {
        fprintf(stderr, "q3run: no model given (usage: q3run [options] MODEL.q3 [\"PROMPT\" | -])\n");
        return -1;
    }
    if (!known_backend(o->backend)) {
        char backends[256];
        backend_list(backends, sizeof backends, ", ", 0);
        fprintf(stderr, "q3run: unknown backend '%s' (available: %s)\n", o->backend, backends);
        return -1;
    }
    o->model = positional[0];
    o->prompt = positional[1];
    return 0;
}

static void warn(const char *what) { fprintf(stderr, "q3run: warning: %s\n", what); }

void q3run_settle_options(q3run_options *o, int stdin_is_terminal)
{
    /* As llama-cli: nothing to continue and a person at the keyboard means a chat. */
    if (!o->prompt && !o->tokenize && !o->interactive && stdin_is_terminal) o->interactive = o->chat = 1;
    long online = sysconf(_SC_NPROCESSORS_ONLN);
    if (online > 0 && o->n_threads > online) {
        fprintf(stderr, "q3run: -t %d is more than the %ld online CPUs; using %ld\n", o->n_threads, online, online);
        o->n_threads = (int)online;
    }
    if (o->interactive && o->prompt) warn("-i reads the conversation from the terminal; the prompt argument is ignored");
    if (o->tokenize) {
        if (o->chat) warn("--tokenize prints the prompt's ids without the chat template; --chat and -i are ignored");
        o->chat = o->interactive = 0;
    } else if (!o->chat) {
        if (o->system) warn("--system has no effect without --chat or -i");
        if (o->have_no_think) warn("--no-think has no effect without --chat or -i");
    }
    if (o->device >= 0 && !q3_backend_has_devices(o->backend)) {
        char with[256], what[320];
        backend_list(with, sizeof with, " or ", 1);
        snprintf(what, sizeof what, "--device has no effect without --backend %s", with);
        warn(what);
    }
}

uint64_t q3run_random_seed(void)
{
    uint64_t seed;
    if (getrandom(&seed, sizeof seed, GRND_NONBLOCK) == (ssize_t)sizeof seed) return seed;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_nsec * 0x9e3779b97f4a7c15ull ^ (uint64_t)ts.tv_sec ^ (uint64_t)getpid() << 32;
}
