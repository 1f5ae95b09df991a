/* Bulk calls' values as they come back from each backend (issue 14: on fork and spawn a range
 * batch's run of values is copied straight into the output array): every scalar return type
 * — narrower than the ffi_arg it travels as, float, double, long double, void — into a packed
 * and into a strided output whose gaps must stay untouched, across many ranges and with a
 * call that crashes its worker in the middle of one. */
#include <parjob.h>

#include <check.h>

#include "helpers.h"
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static const char *const backends[] = { "sequential", "threading", "fork", "spawn" };
#define N_BACKENDS ((int)(sizeof backends / sizeof backends[0]))

enum { N = 3000, GAP = 0xA5 };

static int8_t neg8(int8_t x) { return (int8_t)-x; }
static uint16_t twice16(uint16_t x) { return (uint16_t)(x * 2u + 1); }
static int plus3(int x) { return x + 3; }
static int64_t big(int64_t x) { return x * 1000000007LL; }
static float halve(float x) { return x / 2; }
static double cube(double x) { return x * x * x; }
static long double third(long double x) { return x / 3; }
static atomic_int touched;
static void touch(int x) { atomic_fetch_add(&touched, x); }
static int crash_on_1234(int x)
{
    if (x == 1234)
        raise(SIGSEGV);
    return x - 1;
}

static pj_parallel *par_with(int b, long batch, pj_on_error on_error)
{
    pj_config cfg = { .backend = backends[b], .n_jobs = b ? 2 : 1, .batch_size = batch,
                      .on_error = on_error };
    pj_parallel *par = pj_parallel_new(&cfg);
    ck_assert_msg(par != NULL, "pj_parallel_new(%s): %s", backends[b], pj_last_errmsg());
    return par;
}

/* fn over col (n values of the parameter's type) into out with stride (0: packed, else twice
 * the return type with GAP bytes between), compared with expect (n packed values of size
 * bytes; only the value bytes of a long double). */
static void check_values(pj_parallel *par, const pj_fn *fn, pj_col col, size_t size,
                         size_t value_bytes, const void *expect, bool strided)
{
    size_t stride = strided ? 2 * size : size;
    unsigned char *out = malloc(N * stride);
    memset(out, GAP, N * stride);
    int rc = pj_run_bulk(par, &(pj_bulk){ .fn = fn, .n = N, .out = out,
                                          .out_stride = strided ? stride : 0,
                                          .cols = (pj_col[]){ col } });
    ck_assert_msg(rc == 0, "%s: %s", pj_fn_name(fn), pj_last_errmsg());
    for (size_t i = 0; i < N; i++) {
        const unsigned char *got = out + i * stride;
        ck_assert_msg(!memcmp(got, (const unsigned char *)expect + i * size, value_bytes),
                      "%s: call %zu's value", pj_fn_name(fn), i);
        for (size_t k = size; k < stride; k++)
            ck_assert_msg(got[k] == GAP, "%s: byte %zu after call %zu's value was written",
                          pj_fn_name(fn), k - size, i);
    }
    free(out);
}

START_TEST(every_return_type)
{
    static int8_t c8[N], e8[N];
    static uint16_t c16[N], e16[N];
    static int ci[N], ei[N];
    static int64_t c64[N], e64[N];
    static float cf[N], ef[N];
    static double cd[N], ed[N];
    static long double cld[N], eld[N];
    for (int i = 0; i < N; i++) {
        c8[i] = (int8_t)(i % 200 - 100), e8[i] = neg8(c8[i]);
        c16[i] = (uint16_t)(i * 17), e16[i] = twice16(c16[i]);
        ci[i] = i - 1500, ei[i] = plus3(ci[i]);
        c64[i] = (int64_t)i << 20, e64[i] = big(c64[i]);
        cf[i] = (float)i / 7, ef[i] = halve(cf[i]);
        cd[i] = i * 0.25, ed[i] = cube(cd[i]);
        cld[i] = (long double)i / 11, eld[i] = third(cld[i]);
    }
    pj_fn *fns[] = {
        PJ_FN(neg8, &ffi_type_sint8, &ffi_type_sint8),
        PJ_FN(twice16, &ffi_type_uint16, &ffi_type_uint16),
        PJ_FN(plus3, &ffi_type_sint, &ffi_type_sint),
        PJ_FN(big, &ffi_type_sint64, &ffi_type_sint64),
        PJ_FN(halve, &ffi_type_float, &ffi_type_float),
        PJ_FN(cube, &ffi_type_double, &ffi_type_double),
        PJ_FN(third, &ffi_type_longdouble, &ffi_type_longdouble),
    };
    const pj_col cols[] = { pj_col_array(c8), pj_col_array(c16), pj_col_array(ci),
                            pj_col_array(c64), pj_col_array(cf), pj_col_array(cd),
                            pj_col_array(cld) };
    const void *expect[] = { e8, e16, ei, e64, ef, ed, eld };
    const size_t sizes[] = { 1, 2, sizeof(int), 8, sizeof(float), sizeof(double),
                             sizeof(long double) };
    for (long batch = 0; batch <= 37; batch += 37) { /* auto ranges, and many small ones */
        pj_parallel *par = par_with(_i, batch, PJ_ON_ERROR_STOP);
        for (size_t f = 0; f < sizeof fns / sizeof fns[0]; f++)
            for (int strided = 0; strided < 2; strided++) /* x87: 10 bytes of the value */
                check_values(par, fns[f], cols[f], sizes[f], f == 6 ? 10 : sizes[f],
                             expect[f], strided);
        pj_parallel_free(par);
    }
    for (size_t f = 0; f < sizeof fns / sizeof fns[0]; f++)
        pj_fn_free(fns[f]);
}
END_TEST

/* A void function: no output array, every call succeeds, once (counted where the calls run
 * in this process). */
START_TEST(void_return)
{
    static int x[N], st[N];
    for (int i = 0; i < N; i++)
        x[i] = 1, st[i] = 12345;
    pj_fn *fn = PJ_FN(touch, &ffi_type_void, &ffi_type_sint);
    pj_parallel *par = par_with(_i, 0, PJ_ON_ERROR_STOP);
    atomic_store(&touched, 0);
    ck_assert_int_eq(pj_run_bulk(par, &(pj_bulk){ .fn = fn, .n = N, .statuses = st,
                                                  .cols = (pj_col[]){ pj_col_array(x) } }), 0);
    for (int i = 0; i < N; i++)
        ck_assert_int_eq(st[i], 0);
    ck_assert_int_eq(atomic_load(&touched), _i < 2 ? N : 0);
    pj_parallel_free(par);
    pj_fn_free(fn);
}
END_TEST

/* A crash in the middle of a range: the values before and after it in that range land in
 * the strided output once, the crashed call's slot keeps its gap bytes (process backends). */
START_TEST(crash_mid_range_strided)
{
    if (_i < 2)
        return; /* a crash in a thread is the test's own death */
    static int x[N], out[2 * N], st[N];
    for (int i = 0; i < N; i++)
        x[i] = i;
    pj_fn *fn = PJ_FN(crash_on_1234, &ffi_type_sint, &ffi_type_sint);
    for (long batch = 0; batch <= 500; batch += 500) {
        memset(out, GAP, sizeof out);
        pj_parallel *par = par_with(_i, batch, PJ_ON_ERROR_CONTINUE);
        int rc = pj_run_bulk(par, &(pj_bulk){ .fn = fn, .n = N, .out = out,
                                              .out_stride = 2 * sizeof(int), .statuses = st,
                                              .cols = (pj_col[]){ pj_col_array(x) } });
        ck_assert_int_eq(rc, PJ_ECRASHED);
        int gap;
        memset(&gap, GAP, sizeof gap);
        for (int i = 0; i < N; i++) {
            ck_assert_int_eq(st[i], i == 1234 ? PJ_ECRASHED : 0);
            ck_assert_int_eq(out[2 * i], i == 1234 ? gap : i - 1);
            ck_assert_int_eq(out[2 * i + 1], gap);
        }
        pj_parallel_free(par);
    }
    pj_fn_free(fn);
}
END_TEST

static Suite *bulk_values_suite(void)
{
    Suite *s = suite_create("bulk_values");
    const struct loop_case cases[] = {
        { "every_return_type", every_return_type }, { "void_return", void_return },
        { "crash_mid_range_strided", crash_mid_range_strided },
    };
    add_loop_cases(s, cases, sizeof cases / sizeof cases[0], 120, N_BACKENDS);
    return s;
}

int main(void)
{
    return run_suite(bulk_values_suite());
}
