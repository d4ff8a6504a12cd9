/* test_bench.c - q3bench's pure helpers (tools/bench_fmt.c): list parsing, the top-2 scan
 * behind every greedy id, llama-bench's test names, and the message that tells a near-tie of
 * two backends' logits from a bug. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <string.h>
#include "../tools/bench_fmt.h"

static void test_parse_list(void **state)
{
    (void)state;
    int v[4];
    assert_int_equal(bench_parse_list("512", 1, 1 << 20, v, 4), 1);
    assert_int_equal(v[0], 512);
    assert_int_equal(bench_parse_list("8,16,4096", 1, 1 << 20, v, 4), 3);
    assert_int_equal(v[0], 8);
    assert_int_equal(v[1], 16);
    assert_int_equal(v[2], 4096);
    assert_int_equal(bench_parse_list("0", 0, 10, v, 4), 1);
    static const char *bad[] = {"", "8,,16", ",8", "8,", "x", "8x", "-1", "+8", " 8", "0", "8,8", "1,2,3,4,5",
                                "99999999999999999999"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) assert_int_equal(bench_parse_list(bad[i], 1, 100, v, 4), -1);
    assert_int_equal(bench_parse_list(NULL, 1, 100, v, 4), -1);
}

static void test_top2(void **state)
{
    (void)state;
    bench_top2 t;
    const float a[] = {1.0f, 3.0f, 2.0f, 3.0f, -5.0f};
    assert_int_equal(bench_top2_scan(a, 5, &t), -1);
    assert_int_equal(t.id[0], 1); /* ties go to the lower id */
    assert_int_equal(t.id[1], 3);
    assert_true(t.logit[0] == 3.0f && t.logit[1] == 3.0f);
    const float b[] = {9.0f, 1.0f, 4.0f};
    assert_int_equal(bench_top2_scan(b, 3, &t), -1);
    assert_int_equal(t.id[0], 0);
    assert_int_equal(t.id[1], 2);
    const float c[] = {7.0f};
    assert_int_equal(bench_top2_scan(c, 1, &t), -1);
    assert_int_equal(t.id[0], 0);
    assert_int_equal(t.id[1], -1);
    const float d[] = {1.0f, NAN, 2.0f};
    assert_int_equal(bench_top2_scan(d, 3, &t), 1);
    const float e[] = {INFINITY, 1.0f};
    assert_int_equal(bench_top2_scan(e, 2, &t), 0);
}

static void test_names(void **state)
{
    (void)state;
    char s[48];
    bench_test_name(s, sizeof s, 0, 512, 0);
    assert_string_equal(s, "pp512");
    bench_test_name(s, sizeof s, 1, 0, 128);
    assert_string_equal(s, "tg128");
    bench_test_name(s, sizeof s, 1, 512, 128);
    assert_string_equal(s, "tg128 @ d512");
}

static void test_diff_message(void **state)
{
    (void)state;
    char s[512];
    bench_top2 cpu = {{1234, 777}, {12.50f, 12.49f}}, ocl = {{777, 1234}, {12.51f, 12.50f}};
    bench_fmt_diff(s, sizeof s, "tg128 @ d512", 5, "cpu", &cpu, "opencl", &ocl);
    assert_string_equal(s, "tg128 @ d512: cpu and opencl differ at token 5: "
                           "cpu 1234 (12.5000) over 777 (12.4900), margin 0.0100; "
                           "opencl 777 (12.5100) over 1234 (12.5000), margin 0.0100");
    bench_top2 one = {{3, -1}, {2.0f, NAN}}, two = {{4, 3}, {-1.5f, -3.0f}};
    bench_fmt_diff(s, sizeof s, "pp8", 0, "repetition 1", &one, "repetition 2", &two);
    assert_string_equal(s, "pp8: repetition 1 and repetition 2 differ at token 0: repetition 1 3 (2.0000), "
                           "no second id; repetition 2 4 (-1.5000) over 3 (-3.0000), margin 1.5000");
    char small[16];
    bench_fmt_diff(small, sizeof small, "pp8", 0, "cpu", &cpu, "opencl", &ocl);
    assert_string_equal(small, "pp8: cpu and op"); /* truncated, still terminated */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_list),
        cmocka_unit_test(test_top2),
        cmocka_unit_test(test_names),
        cmocka_unit_test(test_diff_message),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
