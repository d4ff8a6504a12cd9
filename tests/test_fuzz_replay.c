/* test_fuzz_replay.c - replay every seed (fuzz/corpus/<target>/) and every kept
 * crash (fuzz/regressions/<target>/) through the fuzz targets' own entry functions,
 * without libFuzzer, so `make test` and `make test SAN=1` check them on every run.
 * A target aborts on a broken invariant. Each file runs in a child process, so that
 * a crash or a sanitizer report names the file and the other files still run. */
#define Q3_FUZZ_NO_MAIN
#include <dirent.h>
#include <sys/wait.h>
#include <unistd.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include "../fuzz/fuzz_q3.c"
#include "../fuzz/fuzz_safetensors.c"
#include "../fuzz/fuzz_hf_config.c"
#include "../fuzz/fuzz_hf_tokenizer.c"
#include "../fuzz/fuzz_tokenizer.c"
#include "../fuzz/fuzz_chat_template.c"
#include "../fuzz/fuzz_tokdata.c"
#include "../fuzz/fuzz_model.c"
#include "../fuzz/fuzz_output_path.c"
#include "../fuzz/fuzz_sampler.c"
#include "../fuzz/fuzz_serve_request.c"

typedef int (*fuzz_fn)(const uint8_t *, size_t);

static int name_cmp(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* Replay every regular file of dir (sorted), each in a child; returns how many, and
 * counts in *failed those whose child did not exit 0. */
static int replay_dir(const char *dir, fuzz_fn fn, int *failed)
{
    DIR *d = opendir(dir);
    if (!d) return 0;
    char *names[4096];
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) && n < 4096)
        if (e->d_name[0] != '.') names[n++] = strdup(e->d_name);
    closedir(d);
    qsort(names, (size_t)n, sizeof names[0], name_cmp);
    for (int i = 0; i < n; i++) {
        char path[1024];
        snprintf(path, sizeof path, "%s/%s", dir, names[i]);
        free(names[i]);
        FILE *f = fopen(path, "rb");
        assert_non_null(f);
        assert_int_equal(fseek(f, 0, SEEK_END), 0);
        long size = ftell(f);
        assert_true(size >= 0);
        rewind(f);
        /* Exactly the input's size, so that ASan sees one byte past it. */
        uint8_t *buf = malloc(size ? (size_t)size : 1);
        assert_non_null(buf);
        assert_int_equal(fread(buf, 1, (size_t)size, f), (size_t)size);
        fclose(f);
        fflush(NULL);
        pid_t pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) _exit(fn(buf, (size_t)size) == 0 ? 0 : 1);
        int status;
        assert_int_equal(waitpid(pid, &status, 0), pid);
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
            fprintf(stderr, "test_fuzz_replay: %s (%ld bytes): %s %d\n", path, size,
                    WIFSIGNALED(status) ? "killed by signal" : "exit", WIFSIGNALED(status) ? WTERMSIG(status) : WEXITSTATUS(status));
            (*failed)++;
        }
        free(buf);
    }
    return n;
}

static void replay(const char *target, fuzz_fn fn)
{
    /* One empty input first, in this process: targets that build something once
     * (the demo tokenizer) do it here, not in every child. */
    static const uint8_t none[1];
    assert_int_equal(fn(none, 0), 0);
    char dir[256];
    int failed = 0;
    snprintf(dir, sizeof dir, "fuzz/corpus/%s", target);
    int seeds = replay_dir(dir, fn, &failed);
    snprintf(dir, sizeof dir, "fuzz/regressions/%s", target);
    int regressions = replay_dir(dir, fn, &failed);
    print_message("fuzz_%s: %d seeds, %d regressions replayed, %d failed\n", target, seeds, regressions, failed);
    if (seeds == 0) fail_msg("fuzz/corpus/%s has no seeds (run from the repo root)", target);
    if (failed) fail_msg("%d inputs of fuzz_%s failed (named above)", failed, target);
}

static void test_q3(void **state) { (void)state; replay("q3", fuzz_q3); }
static void test_safetensors(void **state) { (void)state; replay("safetensors", fuzz_safetensors); }
static void test_hf_config(void **state) { (void)state; replay("hf_config", fuzz_hf_config); }
static void test_hf_tokenizer(void **state) { (void)state; replay("hf_tokenizer", fuzz_hf_tokenizer); }
static void test_tokenizer(void **state) { (void)state; replay("tokenizer", fuzz_tokenizer); }
static void test_chat_template(void **state) { (void)state; replay("chat_template", fuzz_chat_template); }
static void test_tokdata(void **state) { (void)state; replay("tokdata", fuzz_tokdata); }
static void test_model(void **state) { (void)state; replay("model", fuzz_model); }
static void test_output_path(void **state) { (void)state; replay("output_path", fuzz_output_path); }
static void test_sampler(void **state) { (void)state; replay("sampler", fuzz_sampler); }
static void test_serve_request(void **state) { (void)state; replay("serve_request", fuzz_serve_request); }

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_q3),           cmocka_unit_test(test_safetensors), cmocka_unit_test(test_hf_config),
        cmocka_unit_test(test_hf_tokenizer), cmocka_unit_test(test_tokenizer),   cmocka_unit_test(test_chat_template),
        cmocka_unit_test(test_tokdata),      cmocka_unit_test(test_model),       cmocka_unit_test(test_output_path),
        cmocka_unit_test(test_sampler),      cmocka_unit_test(test_serve_request),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
