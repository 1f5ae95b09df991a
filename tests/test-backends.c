/* One conformance suite over every backend (Check loop tests over backends[]): every ffi type
 * and buffer kind round trip, result order, generators in both orders, pj_fail messages,
 * timeouts, reuse.  A new backend joins by adding its name to backends[]. */
#include <parjob.h>

#include <check.h>

#include "helpers.h"
#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* A file that includes this one to run the same cases over backends of its own defines
 * CONFORMANCE_BACKENDS (the names, registered before the suite runs) and its own main. */
#ifndef CONFORMANCE_BACKENDS
#define CONFORMANCE_BACKENDS "sequential", "threading", "fork", "spawn"
#define CONFORMANCE_MAIN
#endif
static const char *const backends[] = { CONFORMANCE_BACKENDS };
#define N_BACKENDS ((int)(sizeof backends / sizeof backends[0]))

/* ---- helpers ------------------------------------------------------------------------------- */

static pj_parallel *par_for(int i, int n_jobs, double timeout, pj_return_as as)
{
    pj_parallel *par = pj_parallel_new(&(pj_config){
        .backend = backends[i], .n_jobs = strcmp(backends[i], "sequential") ? n_jobs : 1,
        .timeout = timeout, .return_as = as, .on_error = PJ_ON_ERROR_CONTINUE });
    ck_assert_msg(par != NULL, "pj_parallel_new(%s): %s", backends[i], pj_last_errmsg());
    return par;
}

/* Runs one task on backend i and returns its result (the results stay in *keep). */
static const pj_result *run1(int i, pj_task *t, pj_results **keep)
{
    ck_assert_msg(t != NULL, "task: %s", pj_last_errmsg());
    pj_parallel *par = par_for(i, 2, 0, PJ_LIST);
    int rc = pj_run(par, &t, 1, keep);
    ck_assert_msg(rc == 0, "%s: %s", backends[i], pj_parallel_errmsg(par));
    pj_parallel_free(par);
    pj_task_free(t);
    return pj_results_at(*keep, 0);
}

/* ---- functions the tests wrap --------------------------------------------------------------- */

static int8_t f_i8(int8_t x) { return (int8_t)(x + 1); }
static uint8_t f_u8(uint8_t x) { return (uint8_t)(x + 1); }
static int16_t f_i16(int16_t x) { return (int16_t)(x + 1); }
static uint16_t f_u16(uint16_t x) { return (uint16_t)(x + 1); }
static int32_t f_i32(int32_t x) { return x + 1; }
static uint32_t f_u32(uint32_t x) { return x + 1; }
static int64_t f_i64(int64_t x) { return x + 1; }
static uint64_t f_u64(uint64_t x) { return x + 1; }
static float f_flt(float x) { return x * 2; }
static double f_dbl(double x, double y) { return x * y; }
static long double f_ldbl(long double x) { return x / 3; }
static int add(int a, int b) { return a + b; }

static int sum_in(const int *v, size_t n)
{
    int s = 0;
    for (size_t k = 0; k < n; k++)
        s += v[k];
    return s;
}
static void fill_out(int *v, size_t n, int base)
{
    for (size_t k = 0; k < n; k++)
        v[k] = base + (int)k;
}
static void twice_inout(double *v, size_t n)
{
    for (size_t k = 0; k < n; k++)
        v[k] *= 2;
}
static size_t str_len(const char *s) { return s ? strlen(s) : 999; }

struct pt { int x; double y; };
struct inner { short a; char b; };
struct outer { struct inner in; long long c; float d; };
struct big { double v[6]; };

static double pt_sum(struct pt p) { return p.x + p.y; }
static struct pt pt_make(int x, double y) { return (struct pt){ x, y }; }
static long long outer_sum(struct outer o) { return o.in.a + o.in.b + o.c + (long long)o.d; }
static struct big big_make(double base)
{
    struct big b;
    for (int k = 0; k < 6; k++)
        b.v[k] = base + k;
    return b;
}

static int fails(int x)
{
    if (x % 3 == 0)
        pj_fail("input %d is a multiple of three", x);
    return x;
}

static int nap(int ms, int x)
{
    struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };
    while (nanosleep(&ts, &ts) == -1 && errno == EINTR)
        ;
    return x;
}

/* ---- types --------------------------------------------------------------------------------- */

#define CK_INT1(fnname, ffitype, arg, want)                                                     \
    do {                                                                                        \
        pj_fn *fn = PJ_FN(fnname, ffitype, ffitype);                                            \
        pj_results *res;                                                                        \
        const pj_result *r = run1(_i, pj_delayed(fn, arg), &res);                              \
        ck_assert_int_eq(r->status, 0);                                                         \
        ck_assert_msg(pj_result_i64(r) == (int64_t)(want), #fnname ": %lld", (long long)pj_result_i64(r)); \
        pj_results_free(res);                                                                   \
        pj_fn_free(fn);                                                                         \
    } while (0)

START_TEST(integers)
{
    CK_INT1(f_i8, &ffi_type_sint8, -100, -99);
    CK_INT1(f_u8, &ffi_type_uint8, 254, 255);
    CK_INT1(f_i16, &ffi_type_sint16, -30000, -29999);
    CK_INT1(f_u16, &ffi_type_uint16, 65534, 65535);
    CK_INT1(f_i32, &ffi_type_sint32, -2000000000, -1999999999);
    CK_INT1(f_u32, &ffi_type_uint32, 4000000000u, 4000000001u);
    CK_INT1(f_i64, &ffi_type_sint64, -5000000000ll, -4999999999ll);
    pj_fn *fn = PJ_FN(f_u64, &ffi_type_uint64, &ffi_type_uint64);
    pj_results *res;
    const pj_result *r = run1(_i, pj_delayed(fn, (unsigned long long)UINT64_MAX - 1), &res);
    ck_assert(pj_result_u64(r) == UINT64_MAX);
    pj_results_free(res);
    pj_fn_free(fn);
}
END_TEST

START_TEST(floating)
{
    pj_results *res;
    pj_fn *ff = PJ_FN(f_flt, &ffi_type_float, &ffi_type_float);
    const pj_result *r = run1(_i, pj_delayed(ff, 1.25), &res);
    ck_assert(pj_result_double(r) == 2.5);
    pj_results_free(res);
    pj_fn *fd = PJ_FN(f_dbl, &ffi_type_double, &ffi_type_double, &ffi_type_double);
    r = run1(_i, pj_delayed(fd, 1.5, 3), &res);
    ck_assert(pj_result_double(r) == 4.5);
    pj_results_free(res);
    pj_fn *fl = PJ_FN(f_ldbl, &ffi_type_longdouble, &ffi_type_longdouble);
    r = run1(_i, pj_delayed(fl, 1.0L), &res);
    ck_assert(pj_result_ldouble(r) == 1.0L / 3);
    pj_results_free(res);
    pj_fn_free(ff);
    pj_fn_free(fd);
    pj_fn_free(fl);
}
END_TEST

START_TEST(buffers)
{
    int in[5] = { 1, 2, 3, 4, 5 }, out[7] = { 0 };
    double io[3] = { 1.5, -2, 4 };
    pj_results *res;
    pj_fn *fs = PJ_FN(sum_in, &ffi_type_sint, &ffi_type_pointer, &ffi_type_uint64);
    const pj_result *r = run1(_i, pj_delayed(fs, pj_in(in, sizeof in), (size_t)5), &res);
    ck_assert_int_eq(pj_result_int(r), 15);
    pj_results_free(res);
    pj_fn *fo = PJ_FN(fill_out, &ffi_type_void, &ffi_type_pointer, &ffi_type_uint64,
                      &ffi_type_sint);
    r = run1(_i, pj_delayed(fo, pj_out(out, sizeof out), (size_t)7, 10), &res);
    ck_assert_int_eq(r->status, 0);
    ck_assert_ptr_null(pj_result_value(r, NULL));
    for (int k = 0; k < 7; k++)
        ck_assert_int_eq(out[k], 10 + k);
    pj_results_free(res);
    pj_fn *fi = PJ_FN(twice_inout, &ffi_type_void, &ffi_type_pointer, &ffi_type_uint64);
    r = run1(_i, pj_delayed(fi, pj_inout(io, sizeof io), (size_t)3), &res);
    ck_assert(io[0] == 3 && io[1] == -4 && io[2] == 8);
    pj_results_free(res);
    pj_fn *fc = PJ_FN(str_len, &ffi_type_uint64, &ffi_type_pointer);
    r = run1(_i, pj_delayed(fc, pj_cstr("hello, worker")), &res);
    ck_assert_int_eq(pj_result_i64(r), 13);
    pj_results_free(res);
    r = run1(_i, pj_delayed(fc, pj_cstr(NULL)), &res);
    ck_assert_int_eq(pj_result_i64(r), 999);
    pj_results_free(res);
    pj_fn_free(fs);
    pj_fn_free(fo);
    pj_fn_free(fi);
    pj_fn_free(fc);
}
END_TEST

START_TEST(structs)
{
    ffi_type *pt_el[] = { &ffi_type_sint, &ffi_type_double, NULL };
    ffi_type pt_t = { .type = FFI_TYPE_STRUCT, .elements = pt_el };
    ffi_type *in_el[] = { &ffi_type_sint16, &ffi_type_sint8, NULL };
    ffi_type in_t = { .type = FFI_TYPE_STRUCT, .elements = in_el };
    ffi_type *out_el[] = { &in_t, &ffi_type_sint64, &ffi_type_float, NULL };
    ffi_type out_t = { .type = FFI_TYPE_STRUCT, .elements = out_el };
    ffi_type *big_el[] = { &ffi_type_double, &ffi_type_double, &ffi_type_double,
                           &ffi_type_double, &ffi_type_double, &ffi_type_double, NULL };
    ffi_type big_t = { .type = FFI_TYPE_STRUCT, .elements = big_el };
    pj_fn *fsum = PJ_FN(pt_sum, &ffi_type_double, &pt_t);
    pj_fn *fmake = PJ_FN(pt_make, &pt_t, &ffi_type_sint, &ffi_type_double);
    pj_fn *fouter = PJ_FN(outer_sum, &ffi_type_sint64, &out_t);
    pj_fn *fbig = PJ_FN(big_make, &big_t, &ffi_type_double);
    pj_results *res;
    struct pt p = { 3, 0.5 };
    const pj_result *r = run1(_i, pj_delayed(fsum, &p), &res);
    ck_assert(pj_result_double(r) == 3.5);
    pj_results_free(res);
    r = run1(_i, pj_delayed(fmake, 7, 2.25), &res);
    size_t size;
    const struct pt *q = pj_result_value(r, &size);
    ck_assert(size == sizeof *q && q->x == 7 && q->y == 2.25);
    pj_results_free(res);
    struct outer o = { { 100, 20 }, 3000000000ll, 4.0f };
    r = run1(_i, pj_delayed(fouter, &o), &res);
    ck_assert_int_eq(pj_result_i64(r), 3000000124ll);
    pj_results_free(res);
    r = run1(_i, pj_delayed(fbig, 10.0), &res);
    const struct big *b = pj_result_value(r, &size);
    ck_assert(size == sizeof *b && b->v[0] == 10 && b->v[5] == 15);
    pj_results_free(res);
    pj_fn_free(fsum);
    pj_fn_free(fmake);
    pj_fn_free(fouter);
    pj_fn_free(fbig);
}
END_TEST

/* ---- runs ---------------------------------------------------------------------------------- */

#define N_ORDER 3000

START_TEST(order_and_reuse)
{
    pj_fn *fn = PJ_FN(add, &ffi_type_sint, &ffi_type_sint, &ffi_type_sint);
    pj_task **tasks = malloc(N_ORDER * sizeof *tasks);
    for (int k = 0; k < N_ORDER; k++)
        tasks[k] = pj_delayed(fn, k, k);
    pj_parallel *par = par_for(_i, 2, 0, PJ_LIST);
    for (int run = 0; run < 5; run++) {
        pj_results *res;
        ck_assert_int_eq(pj_run(par, tasks, N_ORDER - run * 100, &res), 0);
        ck_assert_uint_eq(pj_results_count(res), N_ORDER - run * 100);
        for (int k = 0; k < N_ORDER - run * 100; k++)
            ck_assert_int_eq(pj_result_int(pj_results_at(res, k)), 2 * k);
        pj_results_free(res);
    }
    pj_parallel_free(par);
    for (int k = 0; k < N_ORDER; k++)
        pj_task_free(tasks[k]);
    free(tasks);
    pj_fn_free(fn);
}
END_TEST

static void check_generator(int i, pj_return_as as)
{
    enum { N = 400 };
    pj_fn *fn = PJ_FN(add, &ffi_type_sint, &ffi_type_sint, &ffi_type_sint);
    pj_task *tasks[N];
    for (int k = 0; k < N; k++)
        tasks[k] = pj_delayed(fn, k, 1);
    pj_parallel *par = par_for(i, 2, 0, as);
    pj_iter *it = pj_start(par, tasks, N);
    ck_assert_msg(it != NULL, "%s", pj_last_errmsg());
    bool seen[N] = { false };
    pj_result r;
    size_t n = 0;
    while (pj_next(it, &r) == 0) {
        ck_assert_uint_lt(r.index, N);
        if (as == PJ_GENERATOR)
            ck_assert_uint_eq(r.index, n);
        ck_assert(!seen[r.index]);
        seen[r.index] = true;
        ck_assert_int_eq(pj_result_int(&r), (int)r.index + 1);
        n++;
    }
    ck_assert_uint_eq(n, N);
    ck_assert_int_eq(pj_iter_close(it), 0);
    pj_parallel_free(par);
    for (int k = 0; k < N; k++)
        pj_task_free(tasks[k]);
    pj_fn_free(fn);
}

START_TEST(generator_ordered)
{
    check_generator(_i, PJ_GENERATOR);
}
END_TEST

START_TEST(generator_unordered)
{
    check_generator(_i, PJ_GENERATOR_UNORDERED);
}
END_TEST

START_TEST(fail_messages)
{
    enum { N = 30 };
    pj_fn *fn = PJ_FN(fails, &ffi_type_sint, &ffi_type_sint);
    pj_task *tasks[N];
    for (int k = 0; k < N; k++)
        tasks[k] = pj_delayed(fn, k + 1);
    pj_parallel *par = par_for(_i, 2, 0, PJ_LIST);
    pj_results *res;
    ck_assert_int_eq(pj_run(par, tasks, N, &res), PJ_EFAILED);
    for (int k = 0; k < N; k++) {
        const pj_result *r = pj_results_at(res, k);
        if ((k + 1) % 3 == 0) {
            char want[64];
            snprintf(want, sizeof want, "input %d is a multiple of three", k + 1);
            ck_assert_int_eq(r->status, PJ_EFAILED);
            ck_assert_str_eq(r->message, want);
        } else {
            ck_assert_int_eq(r->status, 0);
            ck_assert_int_eq(pj_result_int(r), k + 1);
        }
    }
    /* The first failure observed: with two workers, not necessarily task 2's. */
    ck_assert_ptr_nonnull(strstr(pj_parallel_errmsg(par), "is a multiple of three"));
    pj_results_free(res);
    pj_parallel_free(par);
    for (int k = 0; k < N; k++)
        pj_task_free(tasks[k]);
    pj_fn_free(fn);
}
END_TEST

static void nothing(int x) { (void)x; }
static long double third(int x) { return x / 3.0L; }

/* Runs tasks[0..n) in batches of batch_size on backend i; every result must succeed. */
static pj_results *run_batched(int i, pj_task **tasks, size_t n, int batch_size)
{
    pj_parallel *par = pj_parallel_new(&(pj_config){
        .backend = backends[i], .n_jobs = strcmp(backends[i], "sequential") ? 2 : 1,
        .batch_size = batch_size, .on_error = PJ_ON_ERROR_CONTINUE });
    ck_assert_ptr_nonnull(par);
    pj_results *res;
    int rc = pj_run(par, tasks, n, &res);
    ck_assert_msg(rc == 0 || rc == PJ_EFAILED, "%s: %s", backends[i], pj_parallel_errmsg(par));
    pj_parallel_free(par);
    return res;
}

/* Many calls of one scalar function cross to workers as bare argument blocks and come back as
 * runs of values (codec.c): long double values filling more than a worker's shared region in
 * one batch, void functions, failures breaking runs, and batches mixing two functions. */
START_TEST(uniform_batches)
{
    enum { N = 300000, M = 3000 };
    pj_task **tasks = malloc(N * sizeof *tasks);
    pj_fn *fl = PJ_FN(third, &ffi_type_longdouble, &ffi_type_sint);
    for (int k = 0; k < N; k++)
        tasks[k] = pj_delayed(fl, k);
    pj_results *res = run_batched(_i, tasks, N, N); /* one batch: 4.8 MB of values */
    for (int k = 0; k < N; k++) {
        const pj_result *r = pj_results_at(res, k);
        ck_assert_int_eq(r->status, 0);
        ck_assert_msg(pj_result_ldouble(r) == k / 3.0L, "task %d", k);
        pj_task_free(tasks[k]);
    }
    pj_results_free(res);

    pj_fn *fv = PJ_FN(nothing, &ffi_type_void, &ffi_type_sint);
    pj_fn *ff = PJ_FN(fails, &ffi_type_sint, &ffi_type_sint);
    pj_fn *fa = PJ_FN(add, &ffi_type_sint, &ffi_type_sint, &ffi_type_sint);
    pj_fn *fi = PJ_FN(f_i32, &ffi_type_sint32, &ffi_type_sint32);
    for (int k = 0; k < M; k++)
        tasks[k] = pj_delayed(fv, k);
    for (int k = 0; k < M; k++)
        tasks[M + k] = pj_delayed(ff, k);
    for (int k = 0; k < M; k++)
        tasks[2 * M + k] = k % 2 ? pj_delayed(fa, k, 1) : pj_delayed(fi, k);
    res = run_batched(_i, tasks, 3 * M, 500);
    for (int k = 0; k < 3 * M; k++) {
        const pj_result *r = pj_results_at(res, k);
        int x = k % M;
        if (k < M) {
            ck_assert_int_eq(r->status, 0);
        } else if (k < 2 * M && x % 3 == 0) {
            ck_assert_int_eq(r->status, PJ_EFAILED);
            ck_assert_ptr_nonnull(strstr(r->message, "multiple of three"));
        } else {
            ck_assert_msg(r->status == 0, "task %d: %s", k, r->message);
            ck_assert_int_eq(pj_result_int(r), k < 2 * M ? x : x + 1);
        }
        pj_task_free(tasks[k]);
    }
    pj_results_free(res);
    free(tasks);
    pj_fn_free(fl);
    pj_fn_free(fv);
    pj_fn_free(ff);
    pj_fn_free(fa);
    pj_fn_free(fi);
}
END_TEST

static int peek(const int *p) { return p ? *p : -1; }

struct peek_source {
    pj_fn *fn;
    int *raw;
    int i;
};

static int peek_next(void *state, pj_task **out)
{
    struct peek_source *src = state;
    if (src->i == 10)
        return 0;
    *out = src->i == 5 ? pj_delayed(src->fn, src->raw)
                       : pj_delayed(src->fn, pj_in(src->raw, sizeof *src->raw));
    src->i++;
    return 1;
}

/* A raw pointer cannot cross to a worker process: from an array, pj_run refuses the run before
 * any task runs, naming the task, its function, the argument and the fix; from a producer, the
 * task fails alone with the same message and the others run (on_error = continue).  In-process
 * backends take the pointer as it is. */
START_TEST(raw_pointers)
{
    bool process = (pj_backend_find(backends[_i])->features & PJ_BACKEND_PROCESS) != 0;
    int value = 42;
    pj_fn *fn = PJ_FN(peek, &ffi_type_sint, &ffi_type_pointer);
    pj_task *tasks[10];
    for (int k = 0; k < 10; k++)
        tasks[k] = k == 5 ? pj_delayed(fn, &value) : pj_delayed(fn, pj_in(&value, sizeof value));
    pj_parallel *par = pj_parallel_new(&(pj_config){
        .backend = backends[_i], .n_jobs = strcmp(backends[_i], "sequential") ? 2 : 1,
        .on_error = PJ_ON_ERROR_CONTINUE });
    pj_results *res;
    int rc = pj_run(par, tasks, 10, &res);
    if (process) {
        ck_assert_int_eq(rc, PJ_EPOINTER);
        ck_assert_ptr_null(res);
        const char *msg = pj_parallel_errmsg(par);
        ck_assert_msg(strstr(msg, "task 5") && strstr(msg, "peek") && strstr(msg, "argument 0") &&
                      strstr(msg, "pj_in"), "message: %s", msg);
    } else {
        ck_assert_int_eq(rc, 0);
        for (int k = 0; k < 10; k++)
            ck_assert_int_eq(pj_result_int(pj_results_at(res, k)), 42);
        pj_results_free(res);
    }
    struct peek_source src = { fn, &value, 0 };
    rc = pj_run_source(par, peek_next, &src, &res);
    ck_assert_int_eq(rc, process ? PJ_EPOINTER : 0);
    ck_assert_ptr_nonnull(res);
    const pj_result *r = pj_results_at(res, 5);
    ck_assert_int_eq(r->status, process ? PJ_EPOINTER : 0);
    if (process)
        ck_assert_ptr_nonnull(strstr(r->message, "pj_in"));
    for (int k = 0; k < 10; k++)
        if (k != 5 || !process)
            ck_assert_int_eq(pj_result_int(pj_results_at(res, k)), 42);
    pj_results_free(res);
    pj_parallel_free(par);
    for (int k = 0; k < 10; k++)
        pj_task_free(tasks[k]);
    pj_fn_free(fn);
}
END_TEST

/* A task sleeping past its deadline is timed out within 100 ms of it (where the backend can
 * interrupt: the sequential one reports it when it returns); the others complete. */
START_TEST(timeouts)
{
    /* A backend without stop_task cannot interrupt ("sequential"): it reports a late task
     * when it returns. */
    bool inline_backend = pj_backend_find(backends[_i])->stop_task == NULL;
    enum { N = 12 };
    const double timeout = 0.3;
    pj_fn *fn = PJ_FN(nap, &ffi_type_sint, &ffi_type_sint, &ffi_type_sint);
    pj_task *tasks[N];
    for (int k = 0; k < N; k++)
        tasks[k] = pj_delayed(fn, k == 2 ? (inline_backend ? 500 : 3000) : 5, k);
    pj_parallel *par = par_for(_i, 2, timeout, PJ_GENERATOR_UNORDERED);
    pj_results *warm; /* workers started: the deadline is measured from the task's start */
    ck_assert_int_eq(pj_run(par, tasks, 2, &warm), 0);
    pj_results_free(warm);
    double t0 = now_s();
    pj_iter *it = pj_start(par, tasks, N);
    ck_assert_ptr_nonnull(it);
    pj_result r;
    int ok = 0, late = 0;
    while (pj_next(it, &r) == 0) {
        if (r.index == 2) {
            ck_assert_int_eq(r.status, PJ_ETIMEDOUT);
            double at = now_s() - t0;
            /* 100 ms past the deadline, plus start-up; valgrind slows everything down. */
            double slack = getenv("PARJOB_UNDER_VALGRIND") ? 1.0 : 0.15;
            if (!inline_backend)
                ck_assert_msg(at < timeout + slack, "timed out after %.3f s", at);
            late++;
        } else {
            ck_assert_int_eq(r.status, 0);
            ck_assert_int_eq(pj_result_int(&r), (int)r.index);
            ok++;
        }
    }
    ck_assert_int_eq(ok, N - 1);
    ck_assert_int_eq(late, 1);
    ck_assert_int_eq(pj_iter_close(it), PJ_ETIMEDOUT);
    pj_parallel_free(par);
    for (int k = 0; k < N; k++)
        pj_task_free(tasks[k]);
    pj_fn_free(fn);
}
END_TEST

/* ---- C-string results (issue 16) ------------------------------------------------------------ */

/* Owned: malloc'd per call; NULL for negative input.  Borrowed: static storage the function
 * overwrites on its next call, so a result that kept the pointer would read the last one. */
static char *describe_owned(int seconds)
{
    if (seconds < 0)
        return NULL;
    char *s = malloc(32);
    snprintf(s, 32, "Done Sleeping...%d", seconds);
    return s;
}

static const char *describe_borrowed(int seconds)
{
    /* Thread-local: on "threading" two calls of a function returning one static buffer would
     * race each other, whatever parjob does with the result. */
    static _Thread_local char last[32];
    snprintf(last, sizeof last, "Sleeping %d second(s)...", seconds);
    return last;
}

static int fail_with_string(int k)
{
    return pj_fail("no string for %d", k);
}

/* Every backend: the string comes back with the result, owned or borrowed, through a list and
 * both generators; a NULL return reads as NULL; pj_result_str of another type is NULL. */
START_TEST(string_results)
{
    enum { N = 12 };
    pj_fn *owned = PJ_FN(describe_owned, &pj_type_str_owned, &ffi_type_sint);
    pj_fn *borrowed = PJ_FN(describe_borrowed, &pj_type_str_borrowed, &ffi_type_sint);
    pj_fn *failing = PJ_FN(fail_with_string, &pj_type_str_owned, &ffi_type_sint);
    pj_task *tasks[N];
    for (int k = 0; k < N; k++)
        tasks[k] = k % 4 == 3 ? pj_delayed(owned, -1) : k % 4 == 2 ? pj_delayed(failing, k)
                   : k % 2 ? pj_delayed(borrowed, k) : pj_delayed(owned, k);
    for (int as = PJ_LIST; as <= PJ_GENERATOR_UNORDERED; as++) {
        pj_parallel *par = par_for(_i, 2, 0, (pj_return_as)as);
        pj_results *res = NULL;
        pj_iter *it = NULL;
        if (as == PJ_LIST)
            ck_assert_int_eq(pj_run(par, tasks, N, &res), PJ_EFAILED);
        else
            it = pj_start(par, tasks, N);
        for (int n = 0; n < N; n++) {
            pj_result r;
            if (res)
                r = *pj_results_at(res, (size_t)n);
            else
                ck_assert_int_eq(pj_next(it, &r), 0);
            int k = (int)r.index;
            char want[32];
            if (k % 4 == 3) {
                ck_assert_int_eq(r.status, 0);
                ck_assert_ptr_null(pj_result_str(&r));
                continue;
            }
            if (k % 4 == 2) {
                ck_assert_int_eq(r.status, PJ_EFAILED);
                ck_assert_ptr_null(pj_result_str(&r));
                continue;
            }
            snprintf(want, sizeof want, k % 2 ? "Sleeping %d second(s)..." : "Done Sleeping...%d",
                     k);
            ck_assert_msg(pj_result_str(&r) && strcmp(pj_result_str(&r), want) == 0,
                          "%s, task %d: \"%s\", want \"%s\"", backends[_i], k,
                          pj_result_str(&r) ? pj_result_str(&r) : "(null)", want);
        }
        if (it)
            ck_assert_int_eq(pj_iter_close(it), PJ_EFAILED);
        pj_results_free(res);
        pj_parallel_free(par);
    }
    pj_fn *int_fn = PJ_FN(add, &ffi_type_sint, &ffi_type_sint, &ffi_type_sint);
    pj_results *keep;
    const pj_result *r = run1(_i, pj_delayed(int_fn, 1, 2), &keep);
    ck_assert_ptr_null(pj_result_str(r));
    pj_results_free(keep);
    for (int k = 0; k < N; k++)
        pj_task_free(tasks[k]);
    pj_fn_free(owned);
    pj_fn_free(borrowed);
    pj_fn_free(failing);
    pj_fn_free(int_fn);
}
END_TEST

/* Futures and map carry strings too, on every backend, and so does a process of its own. */
START_TEST(string_futures)
{
    pj_fn *owned = PJ_FN(describe_owned, &pj_type_str_owned, &ffi_type_sint);
    pj_executor *ex = pj_executor_new(&(pj_config){ .n_jobs = 2, .backend = backends[_i] });
    ck_assert_msg(ex, "%s", pj_last_errmsg());
    pj_task *t = pj_delayed(owned, 4);
    pj_future *f = pj_submit(ex, t);
    const pj_result *r;
    ck_assert_int_eq(pj_future_result(f, PJ_FOREVER, &r), 0);
    ck_assert_str_eq(pj_result_str(r), "Done Sleeping...4");
    const int secs[] = { 3, 1, 4 };
    pj_map *m = pj_map_start(ex, owned, (const void *[]){ secs }, 3, 1, PJ_FOREVER);
    ck_assert_msg(m, "%s", pj_last_errmsg());
    for (int k = 0; k < 3; k++) {
        ck_assert_int_eq(pj_map_next(m, &r), 0);
        char want[32];
        snprintf(want, sizeof want, "Done Sleeping...%d", secs[k]);
        ck_assert_str_eq(pj_result_str(r), want);
    }
    pj_map_free(m);
    if (!strcmp(backends[_i], "fork") || !strcmp(backends[_i], "spawn")) {
        pj_process *proc = pj_process_new(t, backends[_i]);
        ck_assert_msg(proc, "%s", pj_last_errmsg());
        ck_assert_int_eq(pj_process_start(proc), 0);
        ck_assert_int_eq(pj_process_join(proc, PJ_FOREVER), 0);
        ck_assert_int_eq(pj_process_result(proc, &r), 0);
        ck_assert_str_eq(pj_result_str(r), "Done Sleeping...4");
        pj_process_free(proc);
    }
    pj_future_free(f);
    pj_executor_free(ex);
    pj_task_free(t);
    pj_fn_free(owned);
}
END_TEST

/* ---- a short task queued behind a long one (issue 16) ----------------------------------------- */

static int nap_ms(int ms)
{
    sleep_us(ms * 1000L);
    return ms;
}

/* Unordered, two workers: task 0 runs 1 s, tasks 1..20 run 10 ms.  A task queued for the
 * worker busy with task 0 (on fork and spawn: encoded ahead for it) is taken by the other
 * worker soon, not after every later task: task 2 comes among the first results. */
START_TEST(unordered_short_task_behind_long)
{
    enum { N = 21 };
    pj_fn *fn = PJ_FN(nap_ms, &ffi_type_sint, &ffi_type_sint);
    pj_task *tasks[N];
    for (int k = 0; k < N; k++)
        tasks[k] = pj_delayed(fn, k ? 10 : 1000);
    pj_parallel *par = pj_parallel_new(&(pj_config){
        .n_jobs = strcmp(backends[_i], "sequential") ? 2 : 1, .backend = backends[_i],
        .batch_size = 1, .return_as = PJ_GENERATOR_UNORDERED });
    pj_results *warm; /* workers up before the clock matters */
    ck_assert_int_eq(pj_run(par, tasks + 1, 2, &warm), 0);
    pj_results_free(warm);
    pj_iter *it = pj_start(par, tasks, N);
    pj_result r;
    int position = -1;
    for (int n = 0; pj_next(it, &r) == 0; n++)
        if (r.index == 2)
            position = n;
    ck_assert_int_eq(pj_iter_close(it), 0);
    ck_assert_msg(position >= 0 && position < 6, "%s: task 2 came %dth of %d", backends[_i],
                  position + 1, N);
    pj_parallel_free(par);
    for (int k = 0; k < N; k++)
        pj_task_free(tasks[k]);
    pj_fn_free(fn);
}
END_TEST

static Suite *backends_suite(void)
{
    Suite *s = suite_create("backends");
    const struct loop_case cases[] = {
        { "integers", integers }, { "floating", floating }, { "buffers", buffers },
        { "structs", structs }, { "order_and_reuse", order_and_reuse },
        { "generator_ordered", generator_ordered },
        { "generator_unordered", generator_unordered },
        { "fail_messages", fail_messages }, { "uniform_batches", uniform_batches },
        { "raw_pointers", raw_pointers },
        { "timeouts", timeouts }, { "string_results", string_results },
        { "string_futures", string_futures },
        { "unordered_short_task_behind_long", unordered_short_task_behind_long },
    };
    add_loop_cases(s, cases, sizeof cases / sizeof cases[0], 120, N_BACKENDS);
    return s;
}

#ifdef CONFORMANCE_MAIN
int main(void)
{
    return run_suite(backends_suite());
}
#endif
