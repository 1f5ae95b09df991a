/* Bulk calls (pj_run_bulk, pj_start_bulk): columns, constants, strides, structs and buffers;
 * values and statuses on every backend; failures under both error policies; generators in both
 * orders; batching, pre_dispatch, deadlines and progress; and every bad input of issue 14
 * refused before anything runs. */
#include <parjob.h>

#include <check.h>

#include "helpers.h"
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* test-mpi-bulk.c includes this file with BULK_BACKENDS "mpi" and a main of its own. */
#ifndef BULK_BACKENDS
#define BULK_BACKENDS "sequential", "threading", "fork", "spawn"
#define BULK_MAIN
#endif
static const char *const backends[] = { BULK_BACKENDS };
#define N_BACKENDS ((int)(sizeof backends / sizeof backends[0]))

/* Whether backend b runs calls in other processes. */
static bool in_processes(int b)
{
    return strcmp(backends[b], "sequential") != 0 && strcmp(backends[b], "threading") != 0;
}

static pj_parallel *par_with(int b, pj_config cfg)
{
    cfg.backend = backends[b];
    cfg.n_jobs = strcmp(backends[b], "sequential") ? 2 : 1;
    pj_parallel *par = pj_parallel_new(&cfg);
    ck_assert_msg(par != NULL, "pj_parallel_new(%s): %s", backends[b], pj_last_errmsg());
    return par;
}

/* Fewer calls where each is a task sent to a process. */
static size_t calls_for(int b, size_t in_process)
{
    return in_processes(b) ? in_process / 20 : in_process;
}

/* ---- functions the tests wrap --------------------------------------------------------------- */

static int add(int a, int b) { return a + b; }
static double axpy(double a, double x, double y) { return a * x + y; }
static int64_t widen(int16_t s, uint8_t u, char c) { return (int64_t)s * 1000 + u * 10 + c; }
static float halve(float x) { return x / 2; }
static long double third(long double x, int k) { return x / 3 + k; }
struct point { int x; double y; };
struct pair { double a, b; };
static struct pair swap_scale(struct point p, int k) { return (struct pair){ p.y * k, p.x * k }; }
static int sum_in(const int *v, size_t n)
{
    int s = 0;
    for (size_t k = 0; k < n; k++)
        s += v[k];
    return s;
}
static void square_out(int *v, int x) { *v = x * x; }
static int fails_on_7s(int x)
{
    if (x % 7 == 3)
        pj_fail("%d is unlucky", x);
    return x * 2;
}
static int nap_ms(int ms)
{
    sleep_us(ms * 1000L);
    return ms;
}

static atomic_int calls_made;
static int count_call(int x)
{
    atomic_fetch_add(&calls_made, 1);
    return x;
}

/* ---- values ----------------------------------------------------------------------------------- */

START_TEST(add_columns)
{
    size_t n = calls_for(_i, 200000);
    int *a = malloc(n * sizeof *a), *b = malloc(n * sizeof *b), *out = calloc(n, sizeof *out);
    for (size_t i = 0; i < n; i++)
        a[i] = (int)i, b[i] = 3 * (int)i;
    pj_fn *fn = PJ_FN(add, &ffi_type_sint, &ffi_type_sint, &ffi_type_sint);
    pj_parallel *par = par_with(_i, (pj_config){ 0 });
    for (int rerun = 0; rerun < 2; rerun++) { /* the handle and its workers are reused */
        int rc = pj_run_bulk(par, &(pj_bulk){ .fn = fn, .n = n, .out = out,
                                              .cols = (pj_col[]){ pj_col_array(a),
                                                                  pj_col_array(b) } });
        ck_assert_msg(rc == 0, "%s: %s", backends[_i], pj_last_errmsg());
        for (size_t i = 0; i < n; i++)
            ck_assert_int_eq(out[i], 4 * (int)i);
        memset(out, 0, n * sizeof *out);
    }
    ck_assert_int_eq(pj_run_bulk(par, &(pj_bulk){ .fn = fn, .n = 0, .out = out,
                                                  .cols = (pj_col[]){ pj_col_array(a),
                                                                      pj_col_array(b) } }), 0);
    pj_parallel_free(par);
    pj_fn_free(fn);
    free(a), free(b), free(out);
}
END_TEST

/* An int column and a constant for double parameters (converted as pj_delayed converts), a
 * strided member of an array of structs, narrow integer types, float. */
START_TEST(conversions_and_strides)
{
    enum { N = 1000 };
    static struct { double pad; int x; short s; } rows[N];
    static unsigned char us[N];
    static double out[N];
    static int64_t wide[N];
    static float halves[N], fl[N];
    for (int i = 0; i < N; i++)
        rows[i].x = i, rows[i].s = (short)(i - 500), us[i] = (unsigned char)i, fl[i] = (float)i;
    pj_fn *fa = PJ_FN(axpy, &ffi_type_double, &ffi_type_double, &ffi_type_double,
                      &ffi_type_double);
    pj_fn *fw = PJ_FN(widen, &ffi_type_sint64, &ffi_type_sint16, &ffi_type_uint8,
                      &ffi_type_schar);
    pj_fn *fh = PJ_FN(halve, &ffi_type_float, &ffi_type_float);
    pj_parallel *par = par_with(_i, (pj_config){ .batch_size = 7 });
    int rc = pj_run_bulk(par, &(pj_bulk){ .fn = fa, .n = N, .out = out,
        .cols = (pj_col[]){ pj_col_const(2), pj_col_strided(&rows[0].x, sizeof rows[0]),
                            pj_col_const(0.5) } });
    ck_assert_msg(rc == 0, "%s: %s", backends[_i], pj_last_errmsg());
    /* out_stride: every other double of a wider array is not written */
    static double strided_out[2 * N];
    rc = pj_run_bulk(par, &(pj_bulk){ .fn = fa, .n = N, .out = strided_out,
        .out_stride = 2 * sizeof(double),
        .cols = (pj_col[]){ pj_col_const(1.0f), pj_col_array(fl), pj_col_const(-1L) } });
    ck_assert_msg(rc == 0, "%s: %s", backends[_i], pj_last_errmsg());
    rc = pj_run_bulk(par, &(pj_bulk){ .fn = fw, .n = N, .out = wide,
        .cols = (pj_col[]){ pj_col_strided(&rows[0].s, sizeof rows[0]), pj_col_array(us),
                            pj_col_const('a') } });
    ck_assert_msg(rc == 0, "%s: %s", backends[_i], pj_last_errmsg());
    rc = pj_run_bulk(par, &(pj_bulk){ .fn = fh, .n = N, .out = halves,
                                      .cols = (pj_col[]){ pj_col_array(fl) } });
    ck_assert_msg(rc == 0, "%s: %s", backends[_i], pj_last_errmsg());
    /* a long double constant keeps its precision */
    static long double thirds[N];
    pj_fn *ft = PJ_FN(third, &ffi_type_longdouble, &ffi_type_longdouble, &ffi_type_sint);
    rc = pj_run_bulk(par, &(pj_bulk){ .fn = ft, .n = N, .out = thirds,
        .cols = (pj_col[]){ pj_col_const(1.0L), pj_col_strided(&rows[0].x, sizeof rows[0]) } });
    ck_assert_msg(rc == 0, "%s: %s", backends[_i], pj_last_errmsg());
    pj_fn_free(ft);
    for (int i = 0; i < N; i++) {
        ck_assert(thirds[i] == 1.0L / 3 + i);
        ck_assert(out[i] == 2.0 * i + 0.5);
        ck_assert(strided_out[2 * i] == i - 1.0 && strided_out[2 * i + 1] == 0);
        ck_assert_int_eq(wide[i], (int64_t)(i - 500) * 1000 + (unsigned char)i * 10 + 'a');
        ck_assert(halves[i] == i / 2.0f);
    }
    pj_parallel_free(par);
    pj_fn_free(fa), pj_fn_free(fw), pj_fn_free(fh);
}
END_TEST

START_TEST(structs_by_value)
{
    enum { N = 500 };
    static ffi_type *point_el[] = { &ffi_type_sint, &ffi_type_double, NULL };
    static ffi_type point_t = { 0, 0, FFI_TYPE_STRUCT, point_el };
    static ffi_type *pair_el[] = { &ffi_type_double, &ffi_type_double, NULL };
    static ffi_type pair_t = { 0, 0, FFI_TYPE_STRUCT, pair_el };
    static struct point pts[N];
    static struct pair out[N];
    for (int i = 0; i < N; i++)
        pts[i] = (struct point){ i, i + 0.25 };
    pj_fn *fn = PJ_FN(swap_scale, &pair_t, &point_t, &ffi_type_sint);
    ck_assert_ptr_nonnull(fn);
    pj_parallel *par = par_with(_i, (pj_config){ 0 });
    int rc = pj_run_bulk(par, &(pj_bulk){ .fn = fn, .n = N, .out = out,
        .cols = (pj_col[]){ pj_col_struct(pts, 0), pj_col_const(3) } });
    ck_assert_msg(rc == 0, "%s: %s", backends[_i], pj_last_errmsg());
    for (int i = 0; i < N; i++)
        ck_assert(out[i].a == (i + 0.25) * 3 && out[i].b == i * 3.0);
    /* a struct broadcast, given as a pointer to it as pj_delayed takes it */
    struct point one = { 2, 5.5 };
    rc = pj_run_bulk(par, &(pj_bulk){ .fn = fn, .n = N, .out = out,
        .cols = (pj_col[]){ pj_col_const(&one), pj_col_strided(&pts[0].x, sizeof pts[0]) } });
    ck_assert_msg(rc == 0, "%s: %s", backends[_i], pj_last_errmsg());
    for (int i = 0; i < N; i++)
        ck_assert(out[i].a == 5.5 * i && out[i].b == 2.0 * i);
    pj_parallel_free(par);
    pj_fn_free(fn);
}
END_TEST

/* In buffers per call (rows of a matrix), out buffers per call, an array of pj_buf. */
START_TEST(buffers)
{
    enum { N = 300, W = 5 };
    static int m[N][W], sums[N], squares[N];
    static pj_buf rows[N];
    for (int i = 0; i < N; i++)
        for (int k = 0; k < W; k++)
            m[i][k] = i + k;
    for (int i = 0; i < N; i++)
        rows[i] = pj_in(m[N - 1 - i], sizeof m[0]);
    pj_fn *fs = PJ_FN(sum_in, &ffi_type_sint, &ffi_type_pointer, &ffi_type_uint64);
    pj_fn *fq = PJ_FN(square_out, &ffi_type_void, &ffi_type_pointer, &ffi_type_sint);
    pj_parallel *par = par_with(_i, (pj_config){ 0 });
    int rc = pj_run_bulk(par, &(pj_bulk){ .fn = fs, .n = N, .out = sums,
        .cols = (pj_col[]){ pj_col_buf(PJ_BUF_IN, m, sizeof m[0], sizeof m[0]),
                            pj_col_const((size_t)W) } });
    ck_assert_msg(rc == 0, "%s: %s", backends[_i], pj_last_errmsg());
    for (int i = 0; i < N; i++)
        ck_assert_int_eq(sums[i], W * i + W * (W - 1) / 2);
    rc = pj_run_bulk(par, &(pj_bulk){ .fn = fs, .n = N, .out = sums,
        .cols = (pj_col[]){ pj_col_array(rows), pj_col_const((size_t)W) } });
    ck_assert_msg(rc == 0, "%s: %s", backends[_i], pj_last_errmsg());
    for (int i = 0; i < N; i++)
        ck_assert_int_eq(sums[i], W * (N - 1 - i) + W * (W - 1) / 2);
    static int xs[N];
    for (int i = 0; i < N; i++)
        xs[i] = i;
    rc = pj_run_bulk(par, &(pj_bulk){ .fn = fq, .n = N,
        .cols = (pj_col[]){ pj_col_buf(PJ_BUF_OUT, squares, sizeof(int), sizeof(int)),
                            pj_col_array(xs) } });
    ck_assert_msg(rc == 0, "%s: %s", backends[_i], pj_last_errmsg());
    for (int i = 0; i < N; i++)
        ck_assert_int_eq(squares[i], i * i);
    pj_parallel_free(par);
    pj_fn_free(fs), pj_fn_free(fq);
}
END_TEST

/* ---- failures ------------------------------------------------------------------------------- */

/* Both in-process loops: the direct one and, with PARJOB_NO_DIRECT_CALL, the generic one. */
static void check_failures_continue(int b, bool generic)
{
    size_t n = calls_for(b, 20000);
    int *x = malloc(n * sizeof *x), *out = calloc(n, sizeof *out), *st = malloc(n * sizeof *st);
    for (size_t i = 0; i < n; i++)
        x[i] = (int)i, st[i] = 12345;
    if (generic)
        setenv("PARJOB_NO_DIRECT_CALL", "1", 1);
    pj_fn *fn = PJ_FN(fails_on_7s, &ffi_type_sint, &ffi_type_sint);
    unsetenv("PARJOB_NO_DIRECT_CALL");
    pj_parallel *par = par_with(b, (pj_config){ .on_error = PJ_ON_ERROR_CONTINUE });
    int rc = pj_run_bulk(par, &(pj_bulk){ .fn = fn, .n = n, .out = out, .statuses = st,
                                          .cols = (pj_col[]){ pj_col_array(x) } });
    ck_assert_int_eq(rc, PJ_EFAILED);
    ck_assert_msg(strstr(pj_last_errmsg(), "(fails_on_7s): ") &&
                  strstr(pj_last_errmsg(), "is unlucky"), "%s", pj_last_errmsg());
    ck_assert_str_eq(pj_last_errmsg(), pj_parallel_errmsg(par));
    for (size_t i = 0; i < n; i++) {
        bool bad = i % 7 == 3;
        ck_assert_int_eq(st[i], bad ? PJ_EFAILED : 0);
        ck_assert_int_eq(out[i], bad ? 0 : 2 * (int)i);
    }
    pj_parallel_free(par);
    pj_fn_free(fn);
    free(x), free(out), free(st);
}

START_TEST(failures_continue)
{
    check_failures_continue(_i, false);
    check_failures_continue(_i, true);
}
END_TEST

/* joblib's default: the first failure stops the run; every call still ends with one status. */
START_TEST(failures_stop)
{
    size_t n = calls_for(_i, 100000);
    int *x = malloc(n * sizeof *x), *out = calloc(n, sizeof *out), *st = malloc(n * sizeof *st);
    for (size_t i = 0; i < n; i++)
        x[i] = 2 * (int)i, st[i] = 12345; /* 2i % 7 == 3 first at i = 5 */
    pj_fn *fn = PJ_FN(fails_on_7s, &ffi_type_sint, &ffi_type_sint);
    pj_parallel *par = par_with(_i, (pj_config){ .batch_size = 4 });
    int rc = pj_run_bulk(par, &(pj_bulk){ .fn = fn, .n = n, .out = out, .statuses = st,
                                          .cols = (pj_col[]){ pj_col_array(x) } });
    ck_assert_int_eq(rc, PJ_EFAILED);
    size_t ok = 0, cancelled = 0, failed = 0;
    for (size_t i = 0; i < n; i++) {
        ck_assert_msg(st[i] == 0 || st[i] == PJ_EFAILED || st[i] == PJ_ECANCELLED,
                      "call %zu has status %d", i, st[i]);
        ok += st[i] == 0, cancelled += st[i] == PJ_ECANCELLED, failed += st[i] == PJ_EFAILED;
        if (st[i] == 0)
            ck_assert_int_eq(out[i], 4 * (int)i);
    }
    ck_assert_int_eq(st[5], PJ_EFAILED);
    ck_assert_msg(cancelled > n / 2, "%s: only %zu of %zu cancelled", backends[_i], cancelled, n);
    ck_assert_uint_eq(ok + cancelled + failed, n);
    pj_parallel_free(par);
    pj_fn_free(fn);
    free(x), free(out), free(st);
}
END_TEST

/* A floating value no int holds fails its own call with PJ_ETYPE; the others run. */
START_TEST(value_that_cannot_convert)
{
    enum { N = 50 };
    static double x[N];
    static int out[N], st[N];
    for (int i = 0; i < N; i++)
        x[i] = i == 17 ? NAN : i;
    pj_fn *fn = PJ_FN(add, &ffi_type_sint, &ffi_type_sint, &ffi_type_sint);
    pj_parallel *par = par_with(_i, (pj_config){ .on_error = PJ_ON_ERROR_CONTINUE });
    int rc = pj_run_bulk(par, &(pj_bulk){ .fn = fn, .n = N, .out = out, .statuses = st,
        .cols = (pj_col[]){ pj_col_array(x), pj_col_const(1) } });
    ck_assert_int_eq(rc, PJ_ETYPE);
    ck_assert_msg(strstr(pj_last_errmsg(), "call 17 (add)") &&
                  strstr(pj_last_errmsg(), "does not fit"), "%s", pj_last_errmsg());
    for (int i = 0; i < N; i++) {
        ck_assert_int_eq(st[i], i == 17 ? PJ_ETYPE : 0);
        if (i != 17)
            ck_assert_int_eq(out[i], i + 1);
    }
    pj_parallel_free(par);
    pj_fn_free(fn);
}
END_TEST

START_TEST(deadlines)
{
    enum { N = 6 };
    static int ms[N] = { 1, 1, 600, 1, 1, 1 }, out[N], st[N];
    pj_fn *fn = PJ_FN(nap_ms, &ffi_type_sint, &ffi_type_sint);
    pj_parallel *par = par_with(_i, (pj_config){ .timeout = 0.2, .batch_size = 1,
                                                 .on_error = PJ_ON_ERROR_CONTINUE });
    int rc = pj_run_bulk(par, &(pj_bulk){ .fn = fn, .n = N, .out = out, .statuses = st,
                                          .cols = (pj_col[]){ pj_col_array(ms) } });
    ck_assert_int_eq(rc, PJ_ETIMEDOUT);
    for (int i = 0; i < N; i++) {
        ck_assert_int_eq(st[i], i == 2 ? PJ_ETIMEDOUT : 0);
        ck_assert_int_eq(out[i], i == 2 ? 0 : 1);
    }
    pj_parallel_free(par);
    pj_fn_free(fn);
}
END_TEST

static int crash_on_77(int x)
{
    if (x == 77)
        raise(SIGSEGV);
    return x + 1;
}

/* A call that kills its worker is that call's PJ_ECRASHED; the rest of its batch runs again
 * elsewhere and every other call succeeds, once (process backends). */
START_TEST(crash_isolated)
{
    if (!in_processes(_i))
        return; /* a crash in a thread is the test's own death */
    enum { N = 300 };
    static int x[N], out[N], st[N];
    for (int i = 0; i < N; i++)
        x[i] = i, st[i] = 12345;
    pj_fn *fn = PJ_FN(crash_on_77, &ffi_type_sint, &ffi_type_sint);
    for (long batch = 0; batch <= 10; batch += 10) {
        pj_parallel *par = par_with(_i, (pj_config){ .batch_size = batch,
                                                     .on_error = PJ_ON_ERROR_CONTINUE });
        memset(out, 0, sizeof out);
        int rc = pj_run_bulk(par, &(pj_bulk){ .fn = fn, .n = N, .out = out, .statuses = st,
                                              .cols = (pj_col[]){ pj_col_array(x) } });
        ck_assert_int_eq(rc, PJ_ECRASHED);
        ck_assert_msg(strstr(pj_last_errmsg(), "call 77 (crash_on_77)"), "%s", pj_last_errmsg());
        for (int i = 0; i < N; i++) {
            ck_assert_int_eq(st[i], i == 77 ? PJ_ECRASHED : 0);
            ck_assert_int_eq(out[i], i == 77 ? 0 : i + 1);
        }
        pj_parallel_free(par);
    }
    pj_fn_free(fn);
}
END_TEST

/* ---- generators ---------------------------------------------------------------------------- */

static void check_ranges(int b, pj_return_as as, long batch, const char *pre)
{
    size_t n = calls_for(b, 100000);
    int *a = malloc(n * sizeof *a), *out = calloc(n, sizeof *out);
    unsigned char *seen = calloc(n, 1);
    for (size_t i = 0; i < n; i++)
        a[i] = (int)i;
    pj_fn *fn = PJ_FN(add, &ffi_type_sint, &ffi_type_sint, &ffi_type_sint);
    pj_parallel *par = par_with(b, (pj_config){ .return_as = as, .batch_size = batch,
                                                .pre_dispatch = pre });
    pj_bulk_iter *it = pj_start_bulk(par, &(pj_bulk){ .fn = fn, .n = n, .out = out,
        .cols = (pj_col[]){ pj_col_array(a), pj_col_const(1) } });
    ck_assert_msg(it != NULL, "%s", pj_last_errmsg());
    ck_assert_int_eq(pj_run_bulk(par, &(pj_bulk){ .fn = fn }), PJ_EBUSY);
    pj_range r;
    size_t expect = 0, total = 0, ranges = 0;
    while (pj_bulk_next(it, &r) == 0) {
        ck_assert_int_eq(r.status, 0);
        ck_assert(r.begin < r.end && r.end <= n);
        if (as != PJ_GENERATOR_UNORDERED)
            ck_assert_uint_eq(r.begin, expect);
        expect = r.end;
        for (size_t i = r.begin; i < r.end; i++) {
            ck_assert_int_eq(seen[i], 0);
            ck_assert_int_eq(out[i], (int)i + 1); /* written before its range is yielded */
            seen[i] = 1;
        }
        total += r.end - r.begin;
        ranges++;
    }
    ck_assert_int_eq(pj_last_error(), PJ_EEND);
    ck_assert_int_eq(pj_bulk_next(it, &r), PJ_EEND);
    ck_assert_uint_eq(total, n);
    ck_assert_int_eq(pj_bulk_close(it), 0);
    pj_parallel_free(par);
    pj_fn_free(fn);
    free(a), free(out), free(seen);
}

START_TEST(generator_ordered)
{
    check_ranges(_i, PJ_GENERATOR, 0, NULL);
    check_ranges(_i, PJ_GENERATOR, 3, "1");
}
END_TEST

START_TEST(generator_unordered)
{
    check_ranges(_i, PJ_GENERATOR_UNORDERED, 0, NULL);
    check_ranges(_i, PJ_GENERATOR_UNORDERED, 5, "all");
}
END_TEST

/* Closing early cancels what has not started; the handle is free again. */
START_TEST(generator_closed_early)
{
    size_t n = 400; /* 1 ms calls: 200 ms of work on two workers, closed after the first range */
    int *out = calloc(n, sizeof *out), *st = malloc(n * sizeof *st);
    for (size_t i = 0; i < n; i++)
        st[i] = 12345;
    pj_fn *fn = PJ_FN(nap_ms, &ffi_type_sint, &ffi_type_sint);
    pj_parallel *par = par_with(_i, (pj_config){ .batch_size = 10 });
    pj_bulk_iter *it = pj_start_bulk(par, &(pj_bulk){ .fn = fn, .n = n, .out = out,
        .statuses = st, .cols = (pj_col[]){ pj_col_const(1) } });
    ck_assert_ptr_nonnull(it);
    pj_range r;
    ck_assert_int_eq(pj_bulk_next(it, &r), 0);
    int rc = pj_bulk_close(it);
    ck_assert_msg(rc == 0, "%s: %s", pj_err_name(rc), pj_last_errmsg());
    size_t cancelled = 0;
    for (size_t i = 0; i < n; i++) {
        ck_assert(st[i] == 0 || st[i] == PJ_ECANCELLED);
        ck_assert_int_eq(out[i], st[i] == 0 ? 1 : 0);
        cancelled += st[i] == PJ_ECANCELLED;
    }
    ck_assert_msg(cancelled > n / 2, "%s: %zu cancelled", backends[_i], cancelled);
    ck_assert_int_eq(pj_run_bulk(par, &(pj_bulk){ .fn = fn, .n = 3, .out = out,
        .cols = (pj_col[]){ pj_col_const(0) } }), 0);
    pj_parallel_free(par);
    pj_fn_free(fn);
    free(out), free(st);
}
END_TEST

struct canceller {
    pj_parallel *par;
    long after_us;
    atomic_bool running; /* set by the run's first progress call */
    double cancelled_at;
};

static void note_running(void *data, size_t done, size_t total, double elapsed)
{
    (void)done, (void)total, (void)elapsed;
    atomic_store(&((struct canceller *)data)->running, true);
}

/* Cancels once the run is under way: a cancel with no run in progress is dropped, and under
 * a sanitizer a pool may take longer than after_us to start. */
static void *cancel_later(void *arg)
{
    struct canceller *c = arg;
    for (int waited = 0; !atomic_load(&c->running) && waited < 20000; waited++)
        sleep_us(1000);
    sleep_us(c->after_us);
    c->cancelled_at = now_s();
    pj_parallel_cancel(c->par);
    return NULL;
}

/* pj_parallel_cancel from another thread: the run ends PJ_ECANCELLED well before its calls
 * would have, every call with a status, and the handle runs again afterwards. */
START_TEST(cancelled_by_another_thread)
{
    size_t n = 2000; /* 2 ms calls: 2-4 s of work */
    int *out = calloc(n, sizeof *out), *st = malloc(n * sizeof *st);
    for (size_t i = 0; i < n; i++)
        st[i] = 12345;
    pj_fn *fn = PJ_FN(nap_ms, &ffi_type_sint, &ffi_type_sint);
    struct canceller c = { .after_us = 100 * 1000 };
    pj_parallel *par = par_with(_i, (pj_config){ .batch_size = 4, .progress = note_running,
                                                 .progress_data = &c });
    c.par = par;
    pthread_t th;
    ck_assert_int_eq(pthread_create(&th, NULL, cancel_later, &c), 0);
    int rc = pj_run_bulk(par, &(pj_bulk){ .fn = fn, .n = n, .out = out, .statuses = st,
                                          .cols = (pj_col[]){ pj_col_const(2) } });
    double ended = now_s();
    pthread_join(th, NULL);
    ck_assert_int_eq(rc, PJ_ECANCELLED);
    ck_assert_msg(strstr(pj_last_errmsg(), "cancelled"), "%s", pj_last_errmsg());
    ck_assert_msg(ended - c.cancelled_at < 1.4, "%s: the run ended %.2f s after the cancel",
                  backends[_i], ended - c.cancelled_at);
    size_t cancelled = 0;
    for (size_t i = 0; i < n; i++) {
        ck_assert_msg(st[i] == 0 || st[i] == PJ_ECANCELLED, "call %zu: %d", i, st[i]);
        cancelled += st[i] == PJ_ECANCELLED;
    }
    ck_assert_uint_gt(cancelled, n / 2);
    ck_assert_int_eq(pj_run_bulk(par, &(pj_bulk){ .fn = fn, .n = 2, .out = out,
        .cols = (pj_col[]){ pj_col_const(0) } }), 0);
    pj_parallel_free(par);
    pj_fn_free(fn);
    free(out), free(st);
}
END_TEST

/* ---- progress ------------------------------------------------------------------------------ */

struct seen_progress {
    size_t calls, last_done, total;
};

static void on_progress(void *data, size_t done, size_t total, double elapsed)
{
    struct seen_progress *p = data;
    (void)elapsed;
    p->calls++;
    ck_assert(done >= p->last_done);
    p->last_done = done;
    p->total = total;
}

START_TEST(progress_and_verbose)
{
    size_t n = calls_for(_i, 40000);
    int *a = calloc(n, sizeof *a), *out = calloc(n, sizeof *out);
    struct seen_progress seen = { 0 };
    FILE *saved = stderr;
    char *text = NULL;
    size_t len = 0;
    stderr = open_memstream(&text, &len);
    pj_fn *fn = PJ_FN(add, &ffi_type_sint, &ffi_type_sint, &ffi_type_sint);
    pj_parallel *par = par_with(_i, (pj_config){ .verbose = 10, .progress = on_progress,
                                                 .progress_data = &seen, .batch_size = 100 });
    int rc = pj_run_bulk(par, &(pj_bulk){ .fn = fn, .n = n, .out = out,
        .cols = (pj_col[]){ pj_col_array(a), pj_col_const(2) } });
    fclose(stderr);
    stderr = saved;
    ck_assert_int_eq(rc, 0);
    ck_assert_uint_eq(seen.last_done, n);
    ck_assert_uint_ge(seen.calls, n / 100);
    /* joblib's lines for a known length: every "Done" line counts out of n (which lines
     * appear depends on when batches finish, as in joblib) */
    char total[32];
    snprintf(total, sizeof total, " out of %zu ", n);
    ck_assert_msg(strstr(text, "[Parallel(n_jobs="), "%s", text);
    for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n"))
        ck_assert_msg(!strstr(line, "Done") || strstr(line, total), "%s", line);
    ck_assert_msg(seen.total == n, "total %zu", seen.total);
    free(text);
    pj_parallel_free(par);
    pj_fn_free(fn);
    free(a), free(out);
}
END_TEST

/* ---- the executor's map ---------------------------------------------------------------------- */

static const char *parity(int x) { return x % 2 ? "odd" : "even"; }

/* pj_map_start calls from the arrays (no task per item on in-process backends): values, a
 * pj_fail, structs, C strings, and a map freed early. */
START_TEST(executor_map)
{
    enum { N = 300 };
    static int xs[N];
    static struct point pts[N];
    static int ks[N];
    for (int i = 0; i < N; i++)
        xs[i] = i, pts[i] = (struct point){ i, 0.5 }, ks[i] = 2;
    static ffi_type *point_el[] = { &ffi_type_sint, &ffi_type_double, NULL };
    static ffi_type point_t = { 0, 0, FFI_TYPE_STRUCT, point_el };
    static ffi_type *pair_el[] = { &ffi_type_double, &ffi_type_double, NULL };
    static ffi_type pair_t = { 0, 0, FFI_TYPE_STRUCT, pair_el };
    pj_fn *ff = PJ_FN(fails_on_7s, &ffi_type_sint, &ffi_type_sint);
    pj_fn *fs = PJ_FN(swap_scale, &pair_t, &point_t, &ffi_type_sint);
    pj_fn *fp = PJ_FN(parity, &pj_type_str_borrowed, &ffi_type_sint);
    pj_executor *ex = pj_executor_new(&(pj_config){
        .backend = backends[_i], .n_jobs = strcmp(backends[_i], "sequential") ? 2 : 1 });
    ck_assert_msg(ex != NULL, "%s", pj_last_errmsg());
    pj_map *m = pj_map_start(ex, ff, (const void *[]){ xs }, N, 16, PJ_FOREVER);
    ck_assert_msg(m != NULL, "%s", pj_last_errmsg());
    const pj_result *r;
    for (int i = 0; i < N; i++) {
        int rc = pj_map_next(m, &r);
        ck_assert_uint_eq(r->index, (size_t)i);
        if (i % 7 == 3) {
            ck_assert_int_eq(rc, PJ_EFAILED);
            ck_assert_msg(r->message && strstr(r->message, "is unlucky"), "%s", r->message);
        } else {
            ck_assert_int_eq(rc, 0);
            ck_assert_int_eq(pj_result_int(r), 2 * i);
        }
    }
    ck_assert_int_eq(pj_map_next(m, &r), PJ_EEND);
    pj_map_free(m);
    m = pj_map_start(ex, fs, (const void *[]){ pts, ks }, N, 50, PJ_FOREVER);
    ck_assert_ptr_nonnull(m);
    for (int i = 0; i < N; i++) {
        struct pair p;
        ck_assert_int_eq(pj_map_next(m, &r), 0);
        ck_assert_int_eq(pj_result_struct(r, &p, sizeof p), 0);
        ck_assert(p.a == 1.0 && p.b == 2.0 * i);
    }
    pj_map_free(m);
    m = pj_map_start(ex, fp, (const void *[]){ xs }, N, 7, PJ_FOREVER);
    ck_assert_ptr_nonnull(m);
    for (int i = 0; i < N; i++) {
        ck_assert_int_eq(pj_map_next(m, &r), 0);
        ck_assert_str_eq(pj_result_str(r), i % 2 ? "odd" : "even");
    }
    pj_map_free(m);
    m = pj_map_start(ex, ff, (const void *[]){ xs }, N, 1, PJ_FOREVER); /* freed unread */
    ck_assert_ptr_nonnull(m);
    pj_map_free(m);
    pj_executor_free(ex);
    pj_fn_free(ff), pj_fn_free(fs), pj_fn_free(fp);
}
END_TEST

/* ---- bad input: refused before anything runs ------------------------------------------------ */

static void refused(pj_parallel *par, const pj_bulk *bulk, int code, const char *words)
{
    atomic_store(&calls_made, 0);
    int rc = pj_run_bulk(par, bulk);
    ck_assert_msg(rc == code, "expected %s, got %s: %s", pj_err_name(code), pj_err_name(rc),
                  pj_last_errmsg());
    ck_assert_msg(strstr(pj_last_errmsg(), words), "'%s' not in '%s'", words, pj_last_errmsg());
    ck_assert_int_eq(atomic_load(&calls_made), 0);
    pj_bulk_iter *it = pj_start_bulk(par, bulk);
    ck_assert_ptr_null(it);
    ck_assert_int_eq(pj_last_error(), code);
}

static const char *greet(int x) { return x ? "yes" : "no"; }

/* The bad inputs issue 14 lists, each refused on every backend before anything runs. */
struct bad_fns {
    pj_fn *count, *write, *str;
};

static struct bad_fns bad_fns_new(void)
{
    return (struct bad_fns){
        PJ_FN(count_call, &ffi_type_sint, &ffi_type_sint),
        PJ_FN(square_out, &ffi_type_void, &ffi_type_pointer, &ffi_type_sint),
        PJ_FN(greet, &pj_type_str_borrowed, &ffi_type_sint) };
}

static void bad_fns_free(struct bad_fns f)
{
    pj_fn_free(f.count), pj_fn_free(f.write), pj_fn_free(f.str);
}

static int bad_a[10], bad_out[10];
#ifdef BULK_MAIN
static void *bad_ptrs[10]; /* refuses_other_input's */
#endif

START_TEST(refuses_null_array)
{
    struct bad_fns f = bad_fns_new();
    pj_parallel *par = par_with(_i, (pj_config){ 0 });
    refused(par, &(pj_bulk){ .fn = f.count, .n = 10, .out = bad_out,
                             .cols = (pj_col[]){ pj_col_array((int *)NULL) } },
            PJ_EINVAL, "column 0: the array is NULL");
    refused(par, &(pj_bulk){ .fn = f.write, .n = 10, .cols = (pj_col[]){
                                 pj_col_buf(PJ_BUF_OUT, NULL, 4, 4), pj_col_array(bad_a) } },
            PJ_EINVAL, "column 0: the array is NULL");
    refused(par, &(pj_bulk){ .fn = f.count, .n = 10, .out = bad_out }, PJ_EINVAL,
            "cols is NULL");
    pj_parallel_free(par);
    bad_fns_free(f);
}
END_TEST

START_TEST(refuses_short_stride)
{
    struct bad_fns f = bad_fns_new();
    pj_parallel *par = par_with(_i, (pj_config){ 0 });
    refused(par, &(pj_bulk){ .fn = f.count, .n = 10, .out = bad_out,
                             .cols = (pj_col[]){ pj_col_strided(bad_a, 2) } },
            PJ_EINVAL, "stride 2 is smaller than the element (4 bytes)");
    refused(par, &(pj_bulk){ .fn = f.count, .n = 10, .out = bad_out, .out_stride = 2,
                             .cols = (pj_col[]){ pj_col_array(bad_a) } },
            PJ_EINVAL, "out_stride 2 is smaller");
    refused(par, &(pj_bulk){ .fn = f.write, .n = 10, .cols = (pj_col[]){
                                 pj_col_buf(PJ_BUF_OUT, bad_out, 2, 4), pj_col_array(bad_a) } },
            PJ_EINVAL, "stride 2 is smaller than the buffer");
    refused(par, &(pj_bulk){ .fn = f.write, .n = 10, .cols = (pj_col[]){
                                 pj_col_buf(PJ_BUF_OUT, bad_out, 0, 4), pj_col_array(bad_a) } },
            PJ_EINVAL, "stride 0 would be written by every call");
    pj_parallel_free(par);
    bad_fns_free(f);
}
END_TEST

START_TEST(refuses_missing_output)
{
    struct bad_fns f = bad_fns_new();
    pj_parallel *par = par_with(_i, (pj_config){ 0 });
    refused(par, &(pj_bulk){ .fn = f.count, .n = 10, .cols = (pj_col[]){ pj_col_array(bad_a) } },
            PJ_EINVAL, "count_call returns a value: out is NULL");
    refused(par, &(pj_bulk){ .fn = f.write, .n = 10, .out = bad_out, .cols = (pj_col[]){
                                 pj_col_buf(PJ_BUF_OUT, bad_out, 4, 4), pj_col_array(bad_a) } },
            PJ_EINVAL, "returns void: out must be NULL");
    refused(par, &(pj_bulk){ .fn = f.str, .n = 10, .out = bad_out,
                             .cols = (pj_col[]){ pj_col_array(bad_a) } },
            PJ_EINVAL, "returns a C string");
    pj_parallel_free(par);
    bad_fns_free(f);
}
END_TEST

START_TEST(refuses_n_past_maximum)
{
    struct bad_fns f = bad_fns_new();
    pj_parallel *par = par_with(_i, (pj_config){ 0 });
    refused(par, &(pj_bulk){ .fn = f.count, .n = PJ_BULK_MAX + 1, .out = bad_out,
                             .cols = (pj_col[]){ pj_col_array(bad_a) } },
            PJ_EINVAL, "past PJ_BULK_MAX");
    refused(par, &(pj_bulk){ .fn = f.count, .n = PJ_BULK_MAX, .out = bad_out, .out_stride = 1u << 20,
                             .cols = (pj_col[]){ pj_col_array(bad_a) } },
            PJ_EINVAL, "n * out_stride overflows");
    pj_parallel_free(par);
    bad_fns_free(f);
}
END_TEST

/* Raw pointers cannot cross to a process; threads take them as they are. */
START_TEST(pointer_columns)
{
    struct bad_fns f = bad_fns_new();
    pj_parallel *par = par_with(_i, (pj_config){ 0 });
    static int *dst[10];
    for (int i = 0; i < 10; i++)
        dst[i] = &bad_out[i], bad_a[i] = i;
    pj_bulk by_pointer = { .fn = f.write, .n = 10,
                           .cols = (pj_col[]){ pj_col_array(dst), pj_col_array(bad_a) } };
    if (in_processes(_i)) {
        refused(par, &by_pointer, PJ_EPOINTER, "column 0: a column of raw pointers cannot cross");
        refused(par, &(pj_bulk){ .fn = f.write, .n = 10, .cols = (pj_col[]){
                                     pj_col_const((void *)bad_out), pj_col_array(bad_a) } },
                PJ_EPOINTER, "a raw pointer cannot cross");
    } else {
        ck_assert_int_eq(pj_run_bulk(par, &by_pointer), 0);
        for (int i = 0; i < 10; i++)
            ck_assert_int_eq(bad_out[i], i * i);
    }
    pj_parallel_free(par);
    bad_fns_free(f);
}
END_TEST

#ifdef BULK_MAIN
/* The rest of what is refused, once. */
START_TEST(refuses_other_input)
{
    struct bad_fns f = bad_fns_new();
    pj_parallel *par = par_with(1, (pj_config){ 0 });
    ck_assert_int_eq(pj_run_bulk(NULL, &(pj_bulk){ .fn = f.count }), PJ_EINVAL);
    ck_assert_ptr_null(pj_start_bulk(NULL, &(pj_bulk){ .fn = f.count }));
    ck_assert_int_eq(pj_bulk_next(NULL, &(pj_range){ 0 }), PJ_EINVAL);
    ck_assert_int_eq(pj_bulk_close(NULL), PJ_EINVAL);
    refused(par, NULL, PJ_EINVAL, "bulk is NULL");
    refused(par, &(pj_bulk){ .n = 10, .out = bad_out, .cols = (pj_col[]){ pj_col_array(bad_a) } },
            PJ_EINVAL, "bulk->fn is NULL");
    refused(par, &(pj_bulk){ .fn = f.count, .n = 10, .out = bad_out,
                             .cols = (pj_col[]){ pj_col_array(bad_ptrs) } },
            PJ_ETYPE, "column 0: the column is a pointer, the parameter is integer");
    refused(par, &(pj_bulk){ .fn = f.write, .n = 10,
                             .cols = (pj_col[]){ pj_col_array(bad_a), pj_col_array(bad_a) } },
            PJ_ETYPE, "the parameter is pointer");
    refused(par, &(pj_bulk){ .fn = f.count, .n = 10, .out = bad_out,
                             .cols = (pj_col[]){ pj_col_const(1e30) } },
            PJ_ETYPE, "does not fit the integer parameter");
    refused(par, &(pj_bulk){ .fn = f.count, .n = 10, .out = bad_out,
                             .cols = (pj_col[]){ { .kind = (pj_col_kind)99 } } },
            PJ_EINVAL, "unknown column kind");
    pj_parallel_free(par);
    bad_fns_free(f);
}
END_TEST
#endif

static Suite *bulk_suite(void)
{
    Suite *s = suite_create("bulk");
    const struct loop_case cases[] = {
        { "add_columns", add_columns }, { "conversions_and_strides", conversions_and_strides },
        { "structs_by_value", structs_by_value }, { "buffers", buffers },
        { "failures_continue", failures_continue }, { "failures_stop", failures_stop },
        { "value_that_cannot_convert", value_that_cannot_convert }, { "deadlines", deadlines },
        { "generator_ordered", generator_ordered },
        { "generator_unordered", generator_unordered },
        { "generator_closed_early", generator_closed_early },
        { "progress_and_verbose", progress_and_verbose },
        { "cancelled_by_another_thread", cancelled_by_another_thread },
        { "executor_map", executor_map }, { "crash_isolated", crash_isolated },
    };
    add_loop_cases(s, cases, sizeof cases / sizeof cases[0], 120, N_BACKENDS);
    const struct loop_case refusals[] = {
        { "refuses_null_array", refuses_null_array },
        { "refuses_short_stride", refuses_short_stride },
        { "refuses_missing_output", refuses_missing_output },
        { "refuses_n_past_maximum", refuses_n_past_maximum },
        { "pointer_columns", pointer_columns },
    };
    add_loop_cases(s, refusals, sizeof refusals / sizeof refusals[0], 60, N_BACKENDS);
#ifdef BULK_MAIN
    TCase *tc = tcase_create("refuses_other_input"); /* threading's: once, in this program */
    tcase_add_test(tc, refuses_other_input);
    suite_add_tcase(s, tc);
#endif
    return s;
}

#ifdef BULK_MAIN
int main(void)
{
    return run_suite(bulk_suite());
}
#endif
