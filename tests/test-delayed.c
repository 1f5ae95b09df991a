/* delayed(): every libffi type through pj_delayed and pj_task_new, on the sequential and the
 * threading backend (each START_TEST that takes _i runs once per backend); the conversion rules
 * of pj_delayed and their errors; the result accessors; pj_fail. */
#include <parjob.h>

#include <check.h>

#include "helpers.h"
#include <float.h>
#include <limits.h>
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const backends[] = { "sequential", "threading" };

/* valgrind emulates the x87 long double with a double's 53-bit mantissa: checks that need the
 * 64-bit mantissa are skipped there (the sanitizers and the plain build make them). */
static bool exact_long_double(void)
{
    return getenv("PARJOB_UNDER_VALGRIND") == NULL;
}
#define N_BACKENDS 2

/* ---- fixture: one parallel handle per backend, the last results, the functions made ------- */

static pj_parallel *pars[N_BACKENDS];
static pj_results *last_res;
static pj_fn *fns[64];
static int n_fns;

static pj_fn *track(pj_fn *fn)
{
    ck_assert_msg(fn != NULL, "pj_fn_new failed: %s", pj_last_errmsg());
    ck_assert_int_lt(n_fns, 64);
    fns[n_fns++] = fn;
    return fn;
}

static void teardown(void)
{
    /* Results read their function's return type when freed: results before functions. */
    pj_results_free(last_res);
    last_res = NULL;
    for (int i = 0; i < N_BACKENDS; i++) {
        pj_parallel_free(pars[i]);
        pars[i] = NULL;
    }
    while (n_fns)
        pj_fn_free(fns[--n_fns]);
}

static pj_parallel *par_for(int backend)
{
    if (!pars[backend]) {
        pars[backend] = pj_parallel_new(&(pj_config){ .n_jobs = 2,
                                                      .backend = backends[backend] });
        ck_assert_msg(pars[backend] != NULL, "%s", pj_last_errmsg());
    }
    return pars[backend];
}

/* Runs the one task t on the backend, frees t (a run leaves tasks to their owner) and returns
 * its result, valid until the next call.  *rc gets pj_run's code; when rc is NULL the run must
 * succeed. */
static const pj_result *run_rc(int backend, pj_task *t, int *rc)
{
    ck_assert_msg(t != NULL, "task not created: %s (%s)", pj_last_errmsg(),
                  pj_err_name(pj_last_error()));
    pj_results_free(last_res);
    last_res = NULL;
    pj_parallel *par = par_for(backend);
    int code = pj_run(par, &t, 1, &last_res);
    pj_task_free(t);
    if (rc)
        *rc = code;
    else
        ck_assert_msg(code == 0, "pj_run: %s: %s", pj_err_name(code), pj_parallel_errmsg(par));
    ck_assert_ptr_nonnull(last_res);
    ck_assert_uint_eq(pj_results_count(last_res), 1);
    const pj_result *r = pj_results_at(last_res, 0);
    ck_assert_ptr_nonnull(r);
    ck_assert_uint_eq(r->index, 0);
    return r;
}

static const pj_result *run(int backend, pj_task *t)
{
    return run_rc(backend, t, NULL);
}

/* pj_delayed must refuse: NULL task, the code in pj_last_error, and the message holds what
 * the caller needs to fix it. */
#define ck_refused(task, code, needle)                                                         \
    do {                                                                                       \
        pj_task *t_ = (task);                                                                  \
        ck_assert_msg(t_ == NULL, "accepted a call it must refuse");                           \
        ck_assert_str_eq(pj_err_name(pj_last_error()), pj_err_name(code));                     \
        ck_assert_msg(strstr(pj_last_errmsg(), (needle)) != NULL,                              \
                      "message \"%s\" does not mention \"%s\"", pj_last_errmsg(), (needle));   \
    } while (0)

/* ---- the functions called ----------------------------------------------------------------- */

#define SUB_FN(name, T) static T name(T a, T b) { return (T)(a - b); }
SUB_FN(sub_s8, int8_t)
SUB_FN(sub_u8, uint8_t)
SUB_FN(sub_s16, int16_t)
SUB_FN(sub_u16, uint16_t)
SUB_FN(sub_s32, int32_t)
SUB_FN(sub_u32, uint32_t)
SUB_FN(sub_s64, int64_t)
SUB_FN(sub_u64, uint64_t)

static float mul_f(float a, float b) { return a * b; }
static double mul_d(double a, double b) { return a * b; }
static long double mul_ld(long double a, long double b) { return a * b; }
static int ident_int(int x) { return x; }
static int64_t ident_i64(int64_t x) { return x; }
static uint64_t ident_u64(uint64_t x) { return x; }
static uint32_t ident_u32(uint32_t x) { return x; }
static uint8_t ident_u8(uint8_t x) { return x; }
static int8_t ident_s8(int8_t x) { return x; }
static double ident_d(double x) { return x; }
static float ident_f(float x) { return x; }
static char *ptr_add(char *p, int64_t off) { return p + off; }
static int is_null(void *p) { return p == NULL; }
static uint64_t c_strlen(const char *s) { return strlen(s); }
static void store_int(int *p, int v) { *p = v; }
static int void_calls;
static void no_args(void) { void_calls++; }

struct small { int32_t a, b; };
struct mixed { char c; double d; short s; };
struct fl3 { float x, y, z; };
struct big { int64_t v[5]; };   /* 40 bytes: returned through the heap slot */
struct huge { double d[16]; };  /* 128 bytes */

static ffi_type *small_el[] = { &ffi_type_sint32, &ffi_type_sint32, NULL };
static ffi_type small_t = { 0, 0, FFI_TYPE_STRUCT, small_el };
static ffi_type *mixed_el[] = { &ffi_type_schar, &ffi_type_double, &ffi_type_sshort, NULL };
static ffi_type mixed_t = { 0, 0, FFI_TYPE_STRUCT, mixed_el };
static ffi_type *fl3_el[] = { &ffi_type_float, &ffi_type_float, &ffi_type_float, NULL };
static ffi_type fl3_t = { 0, 0, FFI_TYPE_STRUCT, fl3_el };
static ffi_type *big_el[] = { &ffi_type_sint64, &ffi_type_sint64, &ffi_type_sint64,
                              &ffi_type_sint64, &ffi_type_sint64, NULL };
static ffi_type big_t = { 0, 0, FFI_TYPE_STRUCT, big_el };
static ffi_type *huge_el[17];
static ffi_type huge_t = { 0, 0, FFI_TYPE_STRUCT, huge_el };

static void init_huge_type(void)
{
    for (int i = 0; i < 16; i++)
        huge_el[i] = &ffi_type_double;
    huge_el[16] = NULL;
}

static struct small swap_small(struct small s) { return (struct small){ s.b, s.a }; }
static struct mixed twice_mixed(struct mixed m)
{
    m.c = (char)(m.c + 1);
    m.d *= 2;
    m.s = (short)(m.s * 2);
    return m;
}
static struct fl3 scale_fl3(struct fl3 v, float k) { return (struct fl3){ v.x * k, v.y * k, v.z * k }; }
static struct big big_from(int64_t seed)
{
    struct big b;
    for (int i = 0; i < 5; i++)
        b.v[i] = seed * (i + 1);
    return b;
}
static struct big big_reverse(struct big b, int32_t add)
{
    struct big r;
    for (int i = 0; i < 5; i++)
        r.v[i] = b.v[4 - i] + add;
    return r;
}
static double huge_sum(struct huge h)
{
    double s = 0;
    for (int i = 0; i < 16; i++)
        s += h.d[i];
    return s;
}
static struct huge huge_scale(struct huge h, double k)
{
    for (int i = 0; i < 16; i++)
        h.d[i] *= k;
    return h;
}
static struct big big_or_fail(int64_t seed)
{
    if (seed < 0)
        pj_fail("seed %lld is negative", (long long)seed);
    return big_from(seed);
}

static int64_t sum16(int a1, int a2, int a3, int a4, int a5, int a6, int a7, int a8, int a9,
                     int a10, int a11, int a12, int a13, int a14, int a15, int a16)
{
    return a1 + 2 * a2 + 3 * a3 + 4 * a4 + 5 * a5 + 6 * a6 + 7 * a7 + 8 * a8 + 9 * a9 +
           10 * a10 + 11 * a11 + 12 * a12 + 13 * a13 + 14 * a14 + 15 * a15 + 16 * (int64_t)a16;
}
static int64_t sum20(int64_t a1, int64_t a2, int64_t a3, int64_t a4, int64_t a5, int64_t a6,
                     int64_t a7, int64_t a8, int64_t a9, int64_t a10, int64_t a11, int64_t a12,
                     int64_t a13, int64_t a14, int64_t a15, int64_t a16, int64_t a17,
                     int64_t a18, int64_t a19, int64_t a20)
{
    int64_t a[] = { a1, a2, a3, a4, a5, a6, a7, a8, a9, a10, a11, a12, a13, a14, a15, a16, a17,
                    a18, a19, a20 };
    int64_t s = 0;
    for (int i = 0; i < 20; i++)
        s += a[i] * (i + 1);
    return s;
}
/* Every kind of argument at once: registers, SSE, x87 and stack all in use. */
static double mix(int8_t a, uint16_t b, int32_t c, uint64_t d, float e, double f, long double g,
                  char *p, struct small s, struct mixed m)
{
    return a + b + c + (double)d + e + f + (double)g + (p ? p[0] : 0) + s.a - s.b + m.c + m.d +
           m.s;
}
static int checked_sqrt(int x)
{
    if (x < 0) {
        pj_fail("negative input %d", x);
        return -1;
    }
    int r = 0;
    while ((r + 1) * (r + 1) <= x)
        r++;
    return r;
}
static int fail_twice(int x)
{
    pj_fail("first %d", x);
    pj_fail("second %d", x);
    return x;
}

/* ---- integers ------------------------------------------------------------------------------ */

/* Each integer width: the extremes survive the trip both ways, a narrow negative return is
 * sign-extended for pj_result_i64 (and converted as C does for pj_result_u64), an unsigned one
 * is not. */
START_TEST(int8_round_trip)
{
    pj_fn *fn = track(PJ_FN(sub_s8, &ffi_type_sint8, &ffi_type_sint8, &ffi_type_sint8));
    ck_assert_int_eq(pj_result_i64(run(_i, pj_delayed(fn, INT8_MIN, 0))), INT8_MIN);
    ck_assert_int_eq(pj_result_i64(run(_i, pj_delayed(fn, INT8_MAX, 0))), INT8_MAX);
    const pj_result *r = run(_i, pj_delayed(fn, 0, 1));
    ck_assert_int_eq(pj_result_i64(r), -1);
    ck_assert_uint_eq(pj_result_u64(r), UINT64_MAX);
    size_t size = 0;
    const int8_t *v = pj_result_value(r, &size);
    ck_assert_uint_eq(size, 1);
    ck_assert_int_eq(*v, -1);
    int8_t a = -100, b = 27;
    ck_assert_int_eq(pj_result_i64(run(_i, pj_task_new(fn, (void *[]){ &a, &b }))), -127);
}
END_TEST

START_TEST(uint8_round_trip)
{
    pj_fn *fn = track(PJ_FN(sub_u8, &ffi_type_uint8, &ffi_type_uint8, &ffi_type_uint8));
    ck_assert_uint_eq(pj_result_u64(run(_i, pj_delayed(fn, UINT8_MAX, 0))), 255);
    const pj_result *r = run(_i, pj_delayed(fn, 0, 1)); /* 0 - 1 wraps to 255 */
    ck_assert_int_eq(pj_result_i64(r), 255);
    ck_assert_uint_eq(pj_result_u64(r), 255);
    ck_assert_int_eq(pj_result_int(r), 255);
    uint8_t a = 200, b = 1;
    ck_assert_uint_eq(pj_result_u64(run(_i, pj_task_new(fn, (void *[]){ &a, &b }))), 199);
}
END_TEST

START_TEST(int16_round_trip)
{
    pj_fn *fn = track(PJ_FN(sub_s16, &ffi_type_sint16, &ffi_type_sint16, &ffi_type_sint16));
    ck_assert_int_eq(pj_result_i64(run(_i, pj_delayed(fn, INT16_MIN, 0))), INT16_MIN);
    ck_assert_int_eq(pj_result_i64(run(_i, pj_delayed(fn, INT16_MAX, 0))), INT16_MAX);
    ck_assert_int_eq(pj_result_i64(run(_i, pj_delayed(fn, 0, 2))), -2);
    int16_t a = -30000, b = 2767;
    ck_assert_int_eq(pj_result_i64(run(_i, pj_task_new(fn, (void *[]){ &a, &b }))), -32767);
}
END_TEST

START_TEST(uint16_round_trip)
{
    pj_fn *fn = track(PJ_FN(sub_u16, &ffi_type_uint16, &ffi_type_uint16, &ffi_type_uint16));
    ck_assert_uint_eq(pj_result_u64(run(_i, pj_delayed(fn, UINT16_MAX, 0))), UINT16_MAX);
    ck_assert_int_eq(pj_result_i64(run(_i, pj_delayed(fn, 0, 1))), UINT16_MAX);
    uint16_t a = 60000, b = 1;
    ck_assert_uint_eq(pj_result_u64(run(_i, pj_task_new(fn, (void *[]){ &a, &b }))), 59999);
}
END_TEST

START_TEST(int32_round_trip)
{
    pj_fn *fn = track(PJ_FN(sub_s32, &ffi_type_sint32, &ffi_type_sint32, &ffi_type_sint32));
    ck_assert_int_eq(pj_result_i64(run(_i, pj_delayed(fn, INT32_MIN, 0))), INT32_MIN);
    ck_assert_int_eq(pj_result_int(run(_i, pj_delayed(fn, INT32_MAX, 0))), INT32_MAX);
    const pj_result *r = run(_i, pj_delayed(fn, 5, 12));
    ck_assert_int_eq(pj_result_i64(r), -7);
    ck_assert_uint_eq(pj_result_u64(r), (uint64_t)(int64_t)-7);
    int32_t a = -2000000000, b = 147483648;
    ck_assert_int_eq(pj_result_i64(run(_i, pj_task_new(fn, (void *[]){ &a, &b }))),
                     INT32_MIN);
}
END_TEST

START_TEST(uint32_round_trip)
{
    pj_fn *fn = track(PJ_FN(sub_u32, &ffi_type_uint32, &ffi_type_uint32, &ffi_type_uint32));
    const pj_result *r = run(_i, pj_delayed(fn, UINT32_MAX, 0u));
    ck_assert_uint_eq(pj_result_u64(r), UINT32_MAX);
    ck_assert_int_eq(pj_result_i64(r), UINT32_MAX); /* not sign-extended */
    ck_assert_double_eq(pj_result_double(r), 4294967295.0);
    uint32_t a = 4000000000u, b = 1;
    ck_assert_uint_eq(pj_result_u64(run(_i, pj_task_new(fn, (void *[]){ &a, &b }))),
                      3999999999u);
}
END_TEST

START_TEST(int64_round_trip)
{
    pj_fn *fn = track(PJ_FN(sub_s64, &ffi_type_sint64, &ffi_type_sint64, &ffi_type_sint64));
    ck_assert_int_eq(pj_result_i64(run(_i, pj_delayed(fn, INT64_MIN, 0))), INT64_MIN);
    ck_assert_int_eq(pj_result_i64(run(_i, pj_delayed(fn, INT64_MAX, 0))), INT64_MAX);
    /* A long long argument and an int argument for int64_t parameters. */
    ck_assert_int_eq(pj_result_i64(run(_i, pj_delayed(fn, -1LL, 1))), -2);
    int64_t a = INT64_MAX, b = INT64_MAX - 5;
    ck_assert_int_eq(pj_result_i64(run(_i, pj_task_new(fn, (void *[]){ &a, &b }))), 5);
}
END_TEST

START_TEST(uint64_round_trip)
{
    pj_fn *fn = track(PJ_FN(sub_u64, &ffi_type_uint64, &ffi_type_uint64, &ffi_type_uint64));
    const pj_result *r = run(_i, pj_delayed(fn, UINT64_MAX, 0));
    ck_assert_uint_eq(pj_result_u64(r), UINT64_MAX);
    ck_assert_int_eq(pj_result_i64(r), -1);
    if (exact_long_double())
        ck_assert_ldouble_eq(pj_result_ldouble(r), 18446744073709551615.0L);
    ck_assert_double_eq(pj_result_double(r), 18446744073709551616.0);
    uint64_t a = 1ULL << 63, b = 1;
    ck_assert_uint_eq(pj_result_u64(run(_i, pj_task_new(fn, (void *[]){ &a, &b }))),
                      (1ULL << 63) - 1);
}
END_TEST

/* ---- floating ------------------------------------------------------------------------------ */

START_TEST(float_round_trip)
{
    pj_fn *fn = track(PJ_FN(mul_f, &ffi_type_float, &ffi_type_float, &ffi_type_float));
    const pj_result *r = run(_i, pj_delayed(fn, 1.5f, 2.5f));
    ck_assert_double_eq(pj_result_double(r), 3.75);
    ck_assert_int_eq(pj_result_i64(r), 3);
    size_t size;
    const float *v = pj_result_value(r, &size);
    ck_assert_uint_eq(size, sizeof(float));
    ck_assert_float_eq(*v, 3.75f);
    ck_assert_float_eq((float)pj_result_double(run(_i, pj_delayed(fn, FLT_MAX, 1))), FLT_MAX);
    float a = -0.5f, b = 3;
    ck_assert_double_eq(pj_result_double(run(_i, pj_task_new(fn, (void *[]){ &a, &b }))),
                        -1.5);
}
END_TEST

START_TEST(double_round_trip)
{
    pj_fn *fn = track(PJ_FN(mul_d, &ffi_type_double, &ffi_type_double, &ffi_type_double));
    ck_assert_double_eq(pj_result_double(run(_i, pj_delayed(fn, 0.1, 3.0))), 0.1 * 3.0);
    ck_assert_double_eq(pj_result_double(run(_i, pj_delayed(fn, DBL_MAX, 1.0))), DBL_MAX);
    ck_assert_double_eq(pj_result_double(run(_i, pj_delayed(fn, DBL_MIN, 1.0))), DBL_MIN);
    ck_assert_double_nan(pj_result_double(run(_i, pj_delayed(fn, NAN, 1.0))));
    const pj_result *r = run(_i, pj_delayed(fn, -2.75, 1.0));
    ck_assert_int_eq(pj_result_i64(r), -2);   /* truncation, as C converts */
    ck_assert_int_eq(pj_result_int(r), -2);
    ck_assert_ldouble_eq(pj_result_ldouble(r), -2.75L);
    double a = 1e300, b = 1e-300;
    ck_assert_double_eq_tol(pj_result_double(run(_i, pj_task_new(fn, (void *[]){ &a, &b }))),
                            1.0, 1e-12);
}
END_TEST

/* The x87 type keeps its 64-bit mantissa through the call: (1 + LDBL_EPSILON) * 2 is not a
 * double. */
START_TEST(long_double_round_trip)
{
    pj_fn *fn = track(PJ_FN(mul_ld, &ffi_type_longdouble, &ffi_type_longdouble,
                            &ffi_type_longdouble));
    long double x = 1.0L + LDBL_EPSILON;
    const pj_result *r = run(_i, pj_delayed(fn, x, 2));
    if (exact_long_double()) {
        ck_assert_ldouble_eq(pj_result_ldouble(r), 2.0L + 2 * LDBL_EPSILON);
        ck_assert_ldouble_ne(pj_result_ldouble(r), (long double)pj_result_double(r));
    }
    size_t size;
    ck_assert_ptr_nonnull(pj_result_value(r, &size));
    ck_assert_uint_eq(size, sizeof(long double));
    long double a = LDBL_MAX, b = 0.5L;
    ck_assert_ldouble_eq(pj_result_ldouble(run(_i, pj_task_new(fn, (void *[]){ &a, &b }))),
                         LDBL_MAX / 2);
}
END_TEST

/* ---- pointers and void --------------------------------------------------------------------- */

START_TEST(pointer_round_trip)
{
    static char buf[16] = "abcdefghijklmno";
    pj_fn *fn = track(PJ_FN(ptr_add, &ffi_type_pointer, &ffi_type_pointer, &ffi_type_sint64));
    const pj_result *r = run(_i, pj_delayed(fn, buf, 3));
    ck_assert_ptr_eq(pj_result_ptr(r), buf + 3);
    ck_assert_uint_eq(pj_result_u64(r), (uint64_t)(uintptr_t)(buf + 3));
    char *p = buf;
    int64_t off = 15;
    ck_assert_ptr_eq(pj_result_ptr(run(_i, pj_task_new(fn, (void *[]){ &p, &off }))),
                     buf + 15);

    pj_fn *len = track(PJ_FN(c_strlen, &ffi_type_uint64, &ffi_type_pointer));
    ck_assert_uint_eq(pj_result_u64(run(_i, pj_delayed(len, "hello"))), 5);
    ck_assert_uint_eq(pj_result_u64(run(_i, pj_delayed(len, pj_cstr("hello, world")))), 12);
    ck_assert_uint_eq(pj_result_u64(run(_i, pj_delayed(len, pj_in(buf, sizeof buf)))), 15);
}
END_TEST

START_TEST(void_return)
{
    int target = 0;
    pj_fn *fn = track(PJ_FN(store_int, &ffi_type_void, &ffi_type_pointer, &ffi_type_sint));
    const pj_result *r = run(_i, pj_delayed(fn, &target, 42));
    ck_assert_int_eq(target, 42);
    ck_assert_int_eq(r->status, 0);
    ck_assert_ptr_null(r->message);
    size_t size = 99;
    ck_assert_ptr_null(pj_result_value(r, &size));
    ck_assert_uint_eq(size, 0);
    ck_assert_int_eq(pj_result_i64(r), 0);
    ck_assert_double_eq(pj_result_double(r), 0);
    ck_assert_ptr_null(pj_result_ptr(r));
}
END_TEST

START_TEST(no_arguments)
{
    pj_fn *fn = track(PJ_FN(no_args, &ffi_type_void));
    ck_assert_uint_eq(pj_fn_nargs(fn), 0);
    void_calls = 0;
    run(_i, pj_delayed(fn));
    run(_i, pj_task_new(fn, NULL));
    ck_assert_int_eq(void_calls, 2);
}
END_TEST

/* ---- structs by value ---------------------------------------------------------------------- */

START_TEST(small_struct_by_value)
{
    pj_fn *fn = track(PJ_FN(swap_small, &small_t, &small_t));
    struct small s = { -7, 9 };
    pj_task *t = pj_delayed(fn, &s);
    s.a = 1000; /* captured by value at pj_delayed time */
    const pj_result *r = run(_i, t);
    size_t size;
    const struct small *v = pj_result_value(r, &size);
    ck_assert_uint_eq(size, sizeof(struct small));
    ck_assert_int_eq(v->a, 9);
    ck_assert_int_eq(v->b, -7);
    /* The scalar accessors read a struct as 0. */
    ck_assert_int_eq(pj_result_i64(r), 0);
    ck_assert_ptr_null(pj_result_ptr(r));
    ck_assert_double_eq(pj_result_double(r), 0);
    v = pj_result_value(run(_i, pj_task_new(fn, (void *[]){ &s })), NULL);
    ck_assert_int_eq(v->a, 9);
    ck_assert_int_eq(v->b, 1000);
}
END_TEST

START_TEST(padded_struct_by_value)
{
    pj_fn *fn = track(PJ_FN(twice_mixed, &mixed_t, &mixed_t));
    ck_assert_uint_eq(mixed_t.size, sizeof(struct mixed));
    struct mixed m = { 'a', 1.25, -300 };
    const struct mixed *v = pj_result_value(run(_i, pj_delayed(fn, &m)), NULL);
    ck_assert_int_eq(v->c, 'b');
    ck_assert_double_eq(v->d, 2.5);
    ck_assert_int_eq(v->s, -600);
    v = pj_result_value(run(_i, pj_task_new(fn, (void *[]){ &m })), NULL);
    ck_assert_int_eq(v->c, 'b');
}
END_TEST

START_TEST(float_struct_by_value)
{
    pj_fn *fn = track(PJ_FN(scale_fl3, &fl3_t, &fl3_t, &ffi_type_float));
    struct fl3 v3 = { 1.5f, -2.0f, 0.25f };
    const struct fl3 *v = pj_result_value(run(_i, pj_delayed(fn, &v3, 4)), NULL);
    ck_assert_float_eq(v->x, 6.0f);
    ck_assert_float_eq(v->y, -8.0f);
    ck_assert_float_eq(v->z, 1.0f);
}
END_TEST

/* A struct return of 40 bytes does not fit the result's 32 inline bytes: it lives on the heap
 * and is freed with the results (ASan/valgrind check that). */
START_TEST(large_struct_return)
{
    pj_fn *fn = track(PJ_FN(big_from, &big_t, &ffi_type_sint64));
    ck_assert_uint_gt(sizeof(struct big), 32);
    size_t size;
    const struct big *v = pj_result_value(run(_i, pj_delayed(fn, 7)), &size);
    ck_assert_uint_eq(size, sizeof(struct big));
    for (int k = 0; k < 5; k++)
        ck_assert_int_eq(v->v[k], 7 * (k + 1));

    pj_fn *rev = track(PJ_FN(big_reverse, &big_t, &big_t, &ffi_type_sint32));
    struct big b = { { 1, 2, 3, 4, 5 } };
    v = pj_result_value(run(_i, pj_delayed(rev, &b, 100)), NULL);
    for (int k = 0; k < 5; k++)
        ck_assert_int_eq(v->v[k], 105 - k);
    int32_t add = -1;
    v = pj_result_value(run(_i, pj_task_new(rev, (void *[]){ &b, &add })), NULL);
    ck_assert_int_eq(v->v[0], 4);
    ck_assert_int_eq(v->v[4], 0);
}
END_TEST

START_TEST(huge_struct_by_value)
{
    init_huge_type();
    pj_fn *sum = track(PJ_FN(huge_sum, &ffi_type_double, &huge_t));
    pj_fn *scale = track(PJ_FN(huge_scale, &huge_t, &huge_t, &ffi_type_double));
    struct huge h;
    for (int k = 0; k < 16; k++)
        h.d[k] = k;
    ck_assert_double_eq(pj_result_double(run(_i, pj_delayed(sum, &h))), 120.0);
    size_t size;
    const struct huge *v = pj_result_value(run(_i, pj_delayed(scale, &h, 0.5)), &size);
    ck_assert_uint_eq(size, sizeof(struct huge));
    for (int k = 0; k < 16; k++)
        ck_assert_double_eq(v->d[k], k * 0.5);
}
END_TEST

/* ---- many arguments ------------------------------------------------------------------------ */

START_TEST(sixteen_arguments)
{
    ffi_type *t = &ffi_type_sint;
    pj_fn *fn = track(PJ_FN(sum16, &ffi_type_sint64, t, t, t, t, t, t, t, t, t, t, t, t, t, t, t,
                            t));
    ck_assert_uint_eq(pj_fn_nargs(fn), 16);
    const pj_result *r = run(_i, pj_delayed(fn, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
                                            INT_MAX));
    ck_assert_int_eq(pj_result_i64(r), 120 + 16 * (int64_t)INT_MAX);
}
END_TEST

START_TEST(twenty_arguments_task_new)
{
    ffi_type *types[20];
    int64_t vals[20];
    void *argv[20];
    int64_t expect = 0;
    for (int k = 0; k < 20; k++) {
        types[k] = &ffi_type_sint64;
        vals[k] = (k % 2 ? -1 : 1) * (int64_t)(k + 1) * 1000003;
        argv[k] = &vals[k];
        expect += vals[k] * (k + 1);
    }
    pj_fn *fn = track(pj_fn_new("sum20", (void (*)(void))sum20, &ffi_type_sint64, 20, types));
    ck_assert_int_eq(pj_result_i64(run(_i, pj_task_new(fn, argv))), expect);
}
END_TEST

START_TEST(mixed_arguments)
{
    pj_fn *fn = track(PJ_FN(mix, &ffi_type_double, &ffi_type_sint8, &ffi_type_uint16,
                            &ffi_type_sint32, &ffi_type_uint64, &ffi_type_float,
                            &ffi_type_double, &ffi_type_longdouble, &ffi_type_pointer, &small_t,
                            &mixed_t));
    char c = 10;
    struct small s = { 100, 1 };
    struct mixed m = { 2, 0.5, 1000 };
    double expect = -3 + 65535 + -70000 + 5e9 + 0.25f + 0.125 + 7.0 + 10 + 99 + 2 + 0.5 + 1000;
    ck_assert_double_eq(pj_result_double(run(_i, pj_delayed(fn, -3, 65535, -70000, 5000000000ULL,
                                                              0.25f, 0.125, 7.0L, &c, &s, &m))),
                        expect);
    int8_t a = -3;
    uint16_t b = 65535;
    int32_t i32 = -70000;
    uint64_t u64 = 5000000000ULL;
    float f = 0.25f;
    double d = 0.125;
    long double ld = 7.0L;
    char *p = &c;
    ck_assert_double_eq(pj_result_double(run(_i, pj_task_new(fn, (void *[]){
                                                    &a, &b, &i32, &u64, &f, &d, &ld, &p, &s,
                                                    &m }))),
                        expect);
}
END_TEST

/* Tasks of different signatures share batches of one run. */
START_TEST(mixed_signatures_in_one_run)
{
    pj_fn *fi = track(PJ_FN(sub_s32, &ffi_type_sint32, &ffi_type_sint32, &ffi_type_sint32));
    pj_fn *fd = track(PJ_FN(mul_d, &ffi_type_double, &ffi_type_double, &ffi_type_double));
    pj_fn *fb = track(PJ_FN(big_from, &big_t, &ffi_type_sint64));
    pj_fn *fs = track(PJ_FN(swap_small, &small_t, &small_t));
    enum { N = 40 };
    pj_task *tasks[N];
    for (int k = 0; k < N; k++) {
        struct small s = { k, -k };
        tasks[k] = k % 4 == 0 ? pj_delayed(fi, k, 1) : k % 4 == 1 ? pj_delayed(fd, k, 0.5)
                 : k % 4 == 2 ? pj_delayed(fb, k) : pj_delayed(fs, &s);
        ck_assert_ptr_nonnull(tasks[k]);
    }
    pj_parallel *par = pj_parallel_new(&(pj_config){ .n_jobs = 2, .backend = backends[_i],
                                                     .batch_size = 3 });
    ck_assert_ptr_nonnull(par);
    pj_results *res;
    ck_assert_int_eq(pj_run(par, tasks, N, &res), 0);
    for (int k = 0; k < N; k++) {
        const pj_result *r = pj_results_at(res, (size_t)k);
        ck_assert_uint_eq(r->index, (size_t)k);
        ck_assert_ptr_eq(r->fn, pj_task_fn(tasks[k]));
        if (k % 4 == 0) {
            ck_assert_int_eq(pj_result_i64(r), k - 1);
        } else if (k % 4 == 1) {
            ck_assert_double_eq(pj_result_double(r), k * 0.5);
        } else if (k % 4 == 2) {
            const struct big *v = pj_result_value(r, NULL);
            ck_assert_int_eq(v->v[4], 5 * k);
        } else {
            const struct small *v = pj_result_value(r, NULL);
            ck_assert_int_eq(v->a, -k);
            ck_assert_int_eq(v->b, k);
        }
    }
    pj_results_free(res);
    pj_parallel_free(par);
    for (int k = 0; k < N; k++)
        pj_task_free(tasks[k]);
}
END_TEST

/* ---- conversions ---------------------------------------------------------------------------- */

START_TEST(int_to_double)
{
    pj_fn *pow_fn = track(PJ_FN(pow, &ffi_type_double, &ffi_type_double, &ffi_type_double));
    ck_assert_str_eq(pj_fn_name(pow_fn), "pow");
    ck_assert_double_eq(pj_result_double(run(_i, pj_delayed(pow_fn, 2, 10))), 1024.0);
    ck_assert_double_eq(pj_result_double(run(_i, pj_delayed(pow_fn, 2.0f, -1L))), 0.5);
    pj_fn *fd = track(PJ_FN(ident_d, &ffi_type_double, &ffi_type_double));
    ck_assert_double_eq(pj_result_double(run(_i, pj_delayed(fd, UINT64_MAX))),
                        18446744073709551616.0);
    ck_assert_double_eq(pj_result_double(run(_i, pj_delayed(fd, INT64_MIN))),
                        -9223372036854775808.0);
    ck_assert_double_eq(pj_result_double(run(_i, pj_delayed(fd, 1.0L / 3))), 1.0 / 3);
    pj_fn *ff = track(PJ_FN(ident_f, &ffi_type_float, &ffi_type_float));
    ck_assert_float_eq((float)pj_result_double(run(_i, pj_delayed(ff, 0.1))), 0.1f);
    ck_assert_float_eq((float)pj_result_double(run(_i, pj_delayed(ff, 16777217))), 16777216.0f);
}
END_TEST

START_TEST(double_to_int)
{
    pj_fn *fn = track(PJ_FN(ident_int, &ffi_type_sint, &ffi_type_sint));
    ck_assert_int_eq(pj_result_int(run(_i, pj_delayed(fn, 2.9))), 2);
    ck_assert_int_eq(pj_result_int(run(_i, pj_delayed(fn, -2.9))), -2);
    ck_assert_int_eq(pj_result_int(run(_i, pj_delayed(fn, 7.5f))), 7);
    ck_assert_int_eq(pj_result_int(run(_i, pj_delayed(fn, -1e9L))), -1000000000);
    pj_fn *f64 = track(PJ_FN(ident_i64, &ffi_type_sint64, &ffi_type_sint64));
    if (exact_long_double())
        ck_assert_int_eq(pj_result_i64(run(_i, pj_delayed(f64, 9007199254740993.0L))),
                         9007199254740993LL);
    pj_fn *fu64 = track(PJ_FN(ident_u64, &ffi_type_uint64, &ffi_type_uint64));
    ck_assert_uint_eq(pj_result_u64(run(_i, pj_delayed(fu64, 1.8e19))), 18000000000000000000ULL);
}
END_TEST

/* A floating value no integer can hold is refused, not left to undefined behaviour. */
START_TEST(double_to_int_out_of_range)
{
    pj_fn *fn = track(PJ_FN(ident_int, &ffi_type_sint, &ffi_type_sint));
    ck_refused(pj_delayed(fn, 1e30), PJ_ETYPE, "argument 0");
    ck_refused(pj_delayed(fn, NAN), PJ_ETYPE, "integer");
    ck_refused(pj_delayed(fn, -INFINITY), PJ_ETYPE, "integer");
    pj_fn *fu64 = track(PJ_FN(ident_u64, &ffi_type_uint64, &ffi_type_uint64));
    ck_refused(pj_delayed(fu64, 1.9e19), PJ_ETYPE, "ident_u64");
}
END_TEST

START_TEST(unsigned_conversions)
{
    pj_fn *fu32 = track(PJ_FN(ident_u32, &ffi_type_uint32, &ffi_type_uint32));
    ck_assert_uint_eq(pj_result_u64(run(_i, pj_delayed(fu32, -1))), UINT32_MAX);
    ck_assert_uint_eq(pj_result_u64(run(_i, pj_delayed(fu32, 4294967296ULL + 5))), 5);
    pj_fn *fu64 = track(PJ_FN(ident_u64, &ffi_type_uint64, &ffi_type_uint64));
    ck_assert_uint_eq(pj_result_u64(run(_i, pj_delayed(fu64, -1))), UINT64_MAX);
    ck_assert_uint_eq(pj_result_u64(run(_i, pj_delayed(fu64, 3u))), 3);
    pj_fn *fu8 = track(PJ_FN(ident_u8, &ffi_type_uint8, &ffi_type_uint8));
    ck_assert_uint_eq(pj_result_u64(run(_i, pj_delayed(fu8, 300))), 44);
    ck_assert_uint_eq(pj_result_u64(run(_i, pj_delayed(fu8, -1))), 255);
    pj_fn *fs8 = track(PJ_FN(ident_s8, &ffi_type_sint8, &ffi_type_sint8));
    ck_assert_int_eq(pj_result_i64(run(_i, pj_delayed(fs8, 200u))), -56);
    pj_fn *fint = track(PJ_FN(ident_int, &ffi_type_sint, &ffi_type_sint));
    ck_assert_int_eq(pj_result_int(run(_i, pj_delayed(fint, UINT32_MAX))), -1);
}
END_TEST

/* Every narrow C type pj_delayed can receive, promoted as C varargs promote them. */
START_TEST(char_short_bool_arguments)
{
    pj_fn *fint = track(PJ_FN(ident_int, &ffi_type_sint, &ffi_type_sint));
    ck_assert_int_eq(pj_result_int(run(_i, pj_delayed(fint, (char)'A'))), 65);
    ck_assert_int_eq(pj_result_int(run(_i, pj_delayed(fint, (signed char)-5))), -5);
    ck_assert_int_eq(pj_result_int(run(_i, pj_delayed(fint, (unsigned char)250))), 250);
    ck_assert_int_eq(pj_result_int(run(_i, pj_delayed(fint, (short)-300))), -300);
    ck_assert_int_eq(pj_result_int(run(_i, pj_delayed(fint, (unsigned short)65535))), 65535);
    ck_assert_int_eq(pj_result_int(run(_i, pj_delayed(fint, (_Bool)1))), 1);
    ck_assert_int_eq(pj_result_int(run(_i, pj_delayed(fint, (_Bool)0))), 0);
    ck_assert_int_eq(pj_result_int(run(_i, pj_delayed(fint, true))), 1);
    pj_fn *fd = track(PJ_FN(ident_d, &ffi_type_double, &ffi_type_double));
    ck_assert_double_eq(pj_result_double(run(_i, pj_delayed(fd, (_Bool)1))), 1.0);
    ck_assert_double_eq(pj_result_double(run(_i, pj_delayed(fd, (char)'a'))), 97.0);
    pj_fn *fs8 = track(PJ_FN(ident_s8, &ffi_type_schar, &ffi_type_schar));
    ck_assert_int_eq(pj_result_i64(run(_i, pj_delayed(fs8, (char)'z'))), 'z');
}
END_TEST

/* C accepts a null pointer constant for a pointer: any integer 0 becomes NULL. */
START_TEST(zero_is_null_pointer)
{
    pj_fn *fn = track(PJ_FN(is_null, &ffi_type_sint, &ffi_type_pointer));
    ck_assert_int_eq(pj_result_int(run(_i, pj_delayed(fn, 0))), 1);
    ck_assert_int_eq(pj_result_int(run(_i, pj_delayed(fn, 0L))), 1);
    ck_assert_int_eq(pj_result_int(run(_i, pj_delayed(fn, 0u))), 1);
    ck_assert_int_eq(pj_result_int(run(_i, pj_delayed(fn, 0ULL))), 1);
    ck_assert_int_eq(pj_result_int(run(_i, pj_delayed(fn, NULL))), 1);
    int x;
    ck_assert_int_eq(pj_result_int(run(_i, pj_delayed(fn, &x))), 0);
}
END_TEST

/* ---- conversion errors ---------------------------------------------------------------------- */

START_TEST(pointer_for_double)
{
    pj_fn *fn = track(PJ_FN(mul_d, &ffi_type_double, &ffi_type_double, &ffi_type_double));
    double x = 2;
    ck_refused(pj_delayed(fn, &x, 1.0), PJ_ETYPE, "argument 0 is a pointer");
    ck_assert_ptr_nonnull(strstr(pj_last_errmsg(), "double"));
    ck_assert_ptr_nonnull(strstr(pj_last_errmsg(), "mul_d"));
    ck_refused(pj_delayed(fn, 1.0, "text"), PJ_ETYPE, "argument 1 is a pointer");
    ck_refused(pj_delayed(fn, 1.0, pj_in(&x, sizeof x)), PJ_ETYPE, "argument 1");
    ck_refused(pj_delayed(fn, 1.0, NULL), PJ_ETYPE, "argument 1");
    pj_fn *fi = track(PJ_FN(ident_int, &ffi_type_sint, &ffi_type_sint));
    ck_refused(pj_delayed(fi, &x), PJ_ETYPE, "integer");
}
END_TEST

START_TEST(double_for_pointer)
{
    pj_fn *fn = track(PJ_FN(is_null, &ffi_type_sint, &ffi_type_pointer));
    ck_refused(pj_delayed(fn, 1.5), PJ_ETYPE, "argument 0 is a floating value");
    ck_assert_ptr_nonnull(strstr(pj_last_errmsg(), "pointer"));
    ck_refused(pj_delayed(fn, 0.0), PJ_ETYPE, "floating");   /* only an integer 0 is NULL */
    ck_refused(pj_delayed(fn, 7), PJ_ETYPE, "argument 0 is an integer");
    ck_refused(pj_delayed(fn, -1L), PJ_ETYPE, "pointer");
    ck_refused(pj_delayed(fn, 1u), PJ_ETYPE, "pointer");
}
END_TEST

START_TEST(wrong_argument_count)
{
    pj_fn *fn = track(PJ_FN(mul_d, &ffi_type_double, &ffi_type_double, &ffi_type_double));
    ck_refused(pj_delayed(fn, 1.0), PJ_EARGC, "mul_d takes 2 arguments, 1 given");
    ck_refused(pj_delayed(fn, 1.0, 2.0, 3.0), PJ_EARGC, "3 given");
    ck_refused(pj_delayed(fn), PJ_EARGC, "0 given");
    pj_fn *one = track(PJ_FN(ident_int, &ffi_type_sint, &ffi_type_sint));
    ck_refused(pj_delayed(one, 1, 2), PJ_EARGC, "takes 1 argument,");
    pj_fn *none = track(PJ_FN(no_args, &ffi_type_void));
    ck_refused(pj_delayed(none, 1), PJ_EARGC, "takes 0 arguments");
}
END_TEST

START_TEST(null_function)
{
    ck_refused(pj_delayed(NULL, 1, 2), PJ_EINVAL, "NULL");
    ck_refused(pj_task_new(NULL, NULL), PJ_EINVAL, "NULL");
    ck_assert_ptr_null(pj_fn_new("f", NULL, &ffi_type_sint, 0, NULL));
    ck_assert_int_eq(pj_last_error(), PJ_EINVAL);
    ck_assert_ptr_nonnull(strstr(pj_last_errmsg(), "f: function pointer is NULL"));
}
END_TEST

START_TEST(struct_argument_errors)
{
    pj_fn *fn = track(PJ_FN(swap_small, &small_t, &small_t));
    ck_refused(pj_delayed(fn, NULL), PJ_ETYPE, "NULL pointer");
    ck_assert_ptr_nonnull(strstr(pj_last_errmsg(), "argument 0"));
    ck_refused(pj_delayed(fn, 5), PJ_ETYPE, "pass a pointer to the struct");
    ck_refused(pj_delayed(fn, 1.0), PJ_ETYPE, "struct");
    struct small s = { 1, 2 };
    ck_refused(pj_delayed(fn, pj_in(&s, sizeof s)), PJ_ETYPE, "struct");
}
END_TEST

START_TEST(task_new_errors)
{
    pj_fn *fn = track(PJ_FN(mul_d, &ffi_type_double, &ffi_type_double, &ffi_type_double));
    double a = 1;
    ck_refused(pj_task_new(fn, NULL), PJ_EINVAL, "argv is NULL");
    ck_refused(pj_task_new(fn, (void *[]){ &a, NULL }), PJ_EINVAL, "argv[1] is NULL");
}
END_TEST

START_TEST(fn_new_errors)
{
    ffi_type *args[] = { &ffi_type_sint, NULL };
    ck_assert_ptr_null(pj_fn_new("g", (void (*)(void))ident_int, &ffi_type_sint, 2, args));
    ck_assert_int_eq(pj_last_error(), PJ_EINVAL);
    ck_assert_ptr_nonnull(strstr(pj_last_errmsg(), "argument 1 is NULL"));

    ck_assert_ptr_null(pj_fn_new("g", (void (*)(void))ident_int, NULL, 0, NULL));
    ck_assert_int_eq(pj_last_error(), PJ_EINVAL);

    ffi_type *void_arg[] = { &ffi_type_void };
    ck_assert_ptr_null(pj_fn_new("g", (void (*)(void))ident_int, &ffi_type_sint, 1, void_arg));
    ck_assert_int_eq(pj_last_error(), PJ_ETYPE);
    ck_assert_ptr_nonnull(strstr(pj_last_errmsg(), "void"));

    ffi_type complex_t = { 16, 8, FFI_TYPE_COMPLEX, NULL };
    ffi_type *cplx[] = { &complex_t };
    ck_assert_ptr_null(pj_fn_new("g", (void (*)(void))ident_int, &ffi_type_sint, 1, cplx));
    ck_assert_int_eq(pj_last_error(), PJ_ETYPE);
    ck_assert_ptr_nonnull(strstr(pj_last_errmsg(), "complex"));

    ffi_type empty_struct = { 0, 0, FFI_TYPE_STRUCT, NULL }; /* no elements: libffi refuses */
    ffi_type *bad[] = { &empty_struct };
    ck_assert_ptr_null(pj_fn_new("g", (void (*)(void))ident_int, &ffi_type_sint, 1, bad));
    ck_assert_int_eq(pj_last_error(), PJ_ETYPE);

    ck_assert_ptr_null(pj_fn_new_list("h", (void (*)(void))ident_int, 0, NULL));
    ck_assert_int_eq(pj_last_error(), PJ_EINVAL);

    pj_fn *anon = track(pj_fn_new(NULL, (void (*)(void))ident_int, &ffi_type_sint, 1, args));
    ck_assert_str_eq(pj_fn_name(anon), "");
    ck_refused(pj_delayed(anon, 1, 2), PJ_EARGC, "takes 1 argument");
}
END_TEST

/* ---- result accessors ---------------------------------------------------------------------- */

START_TEST(accessors_convert)
{
    pj_fn *fi = track(PJ_FN(ident_int, &ffi_type_sint, &ffi_type_sint));
    const pj_result *r = run(_i, pj_delayed(fi, -7));
    ck_assert_int_eq(pj_result_int(r), -7);
    ck_assert_int_eq(pj_result_i64(r), -7);
    ck_assert_uint_eq(pj_result_u64(r), (uint64_t)-7LL);
    ck_assert_double_eq(pj_result_double(r), -7.0);
    ck_assert_ldouble_eq(pj_result_ldouble(r), -7.0L);
    ck_assert_ptr_null(pj_result_ptr(r)); /* not a pointer return */
    size_t size;
    const int *v = pj_result_value(r, &size);
    ck_assert_uint_eq(size, sizeof(int));
    ck_assert_int_eq(*v, -7);

    pj_fn *ff = track(PJ_FN(ident_f, &ffi_type_float, &ffi_type_float));
    r = run(_i, pj_delayed(ff, 2.5f));
    ck_assert_ldouble_eq(pj_result_ldouble(r), 2.5L);
    ck_assert_int_eq(pj_result_int(r), 2);
    ck_assert_uint_eq(pj_result_u64(r), 2);

    pj_fn *fu = track(PJ_FN(ident_u64, &ffi_type_uint64, &ffi_type_uint64));
    r = run(_i, pj_delayed(fu, (1ULL << 63) + 1));
    if (exact_long_double())
        ck_assert_ldouble_eq(pj_result_ldouble(r), 9223372036854775809.0L);
    ck_assert_int_eq(pj_result_i64(r), INT64_MIN + 1);
}
END_TEST

/* ---- pj_fail -------------------------------------------------------------------------------- */

START_TEST(fail_reports_message)
{
    pj_fn *fn = track(PJ_FN(checked_sqrt, &ffi_type_sint, &ffi_type_sint));
    ck_assert_int_eq(pj_result_int(run(_i, pj_delayed(fn, 49))), 7);
    int rc;
    const pj_result *r = run_rc(_i, pj_delayed(fn, -4), &rc);
    ck_assert_int_eq(rc, PJ_EFAILED);
    ck_assert_int_eq(r->status, PJ_EFAILED);
    ck_assert_str_eq(r->message, "negative input -4");
    ck_assert_str_eq(pj_parallel_errmsg(pars[_i]), "task 0 (checked_sqrt): negative input -4");
    /* The value the function returned (-1) is ignored: a failed task reads as 0. */
    ck_assert_int_eq(pj_result_int(r), 0);
    size_t size = 1;
    ck_assert_ptr_null(pj_result_value(r, &size));
    ck_assert_uint_eq(size, 0);
    ck_assert_str_eq(pj_strerror(PJ_EFAILED), "task failed (pj_fail)");
    /* The next successful run clears the handle's message. */
    run(_i, pj_delayed(fn, 4));
    ck_assert_str_eq(pj_parallel_errmsg(pars[_i]), "");
}
END_TEST

START_TEST(fail_last_message_wins)
{
    pj_fn *fn = track(PJ_FN(fail_twice, &ffi_type_sint, &ffi_type_sint));
    int rc;
    const pj_result *r = run_rc(_i, pj_delayed(fn, 3), &rc);
    ck_assert_int_eq(rc, PJ_EFAILED);
    ck_assert_str_eq(r->message, "second 3");
}
END_TEST

/* A failed task whose return value lives on the heap frees it (ASan/valgrind). */
START_TEST(fail_with_large_return)
{
    pj_fn *fn = track(PJ_FN(big_or_fail, &big_t, &ffi_type_sint64));
    int rc;
    const pj_result *r = run_rc(_i, pj_delayed(fn, -3), &rc);
    ck_assert_int_eq(rc, PJ_EFAILED);
    ck_assert_str_eq(r->message, "seed -3 is negative");
    ck_assert_ptr_null(pj_result_value(r, NULL));
    const struct big *v = pj_result_value(run(_i, pj_delayed(fn, 2)), NULL);
    ck_assert_int_eq(v->v[4], 10);
}
END_TEST

START_TEST(fail_outside_task)
{
    ck_assert_int_eq(pj_fail("not in a task"), PJ_EINVAL);
}
END_TEST

START_TEST(error_names)
{
    ck_assert_str_eq(pj_strerror(0), "success");
    ck_assert_str_eq(pj_strerror(PJ_ETIMEDOUT), "task timed out");
    ck_assert_str_eq(pj_err_name(PJ_ETIMEDOUT), "PJ_ETIMEDOUT");
    ck_assert_str_eq(pj_err_name(PJ_EARGC), "PJ_EARGC");
    ck_assert_str_eq(pj_err_name(0), "PJ_OK");
    ck_assert_str_eq(pj_strerror(12345), "unknown error");
    ck_assert_str_eq(pj_err_name(-12345), "PJ_UNKNOWN");
    ck_assert_uint_eq(pj_version(), PJ_VERSION_HEX);
}
END_TEST

/* pj_version_string is the run-time twin of PJ_VERSION_*: "MAJOR.MINOR.PATCH", the same static
 * string on every call. */
START_TEST(version_string)
{
    char expected[32];
    snprintf(expected, sizeof expected, "%d.%d.%d", PJ_VERSION_MAJOR, PJ_VERSION_MINOR,
             PJ_VERSION_PATCH);
    ck_assert_str_eq(pj_version_string(), expected);
    ck_assert_ptr_eq(pj_version_string(), pj_version_string());
    unsigned v = pj_version();
    snprintf(expected, sizeof expected, "%u.%u.%u", v >> 16, (v >> 8) & 0xff, v & 0xff);
    ck_assert_str_eq(pj_version_string(), expected);
}
END_TEST

/* ---- suite ---------------------------------------------------------------------------------- */

static void add(Suite *s, const char *name, const TTest *test, bool per_backend)
{
    TCase *tc = tcase_create(name);
    tcase_add_checked_fixture(tc, NULL, teardown);
    if (per_backend)
        tcase_add_loop_test(tc, test, 0, N_BACKENDS);
    else
        tcase_add_test(tc, test);
    suite_add_tcase(s, tc);
}

#define ADD(s, t) add(s, #t, t, true)
#define ADD1(s, t) add(s, #t, t, false)

int main(void)
{
    Suite *s = suite_create("delayed");
    ADD(s, int8_round_trip);
    ADD(s, uint8_round_trip);
    ADD(s, int16_round_trip);
    ADD(s, uint16_round_trip);
    ADD(s, int32_round_trip);
    ADD(s, uint32_round_trip);
    ADD(s, int64_round_trip);
    ADD(s, uint64_round_trip);
    ADD(s, float_round_trip);
    ADD(s, double_round_trip);
    ADD(s, long_double_round_trip);
    ADD(s, pointer_round_trip);
    ADD(s, void_return);
    ADD(s, no_arguments);
    ADD(s, small_struct_by_value);
    ADD(s, padded_struct_by_value);
    ADD(s, float_struct_by_value);
    ADD(s, large_struct_return);
    ADD(s, huge_struct_by_value);
    ADD(s, sixteen_arguments);
    ADD(s, twenty_arguments_task_new);
    ADD(s, mixed_arguments);
    ADD(s, mixed_signatures_in_one_run);
    ADD(s, int_to_double);
    ADD(s, double_to_int);
    ADD1(s, double_to_int_out_of_range);
    ADD(s, unsigned_conversions);
    ADD(s, char_short_bool_arguments);
    ADD(s, zero_is_null_pointer);
    ADD1(s, pointer_for_double);
    ADD1(s, double_for_pointer);
    ADD1(s, wrong_argument_count);
    ADD1(s, null_function);
    ADD1(s, struct_argument_errors);
    ADD1(s, task_new_errors);
    ADD1(s, fn_new_errors);
    ADD(s, accessors_convert);
    ADD(s, fail_reports_message);
    ADD(s, fail_last_message_wins);
    ADD(s, fail_with_large_return);
    ADD1(s, fail_outside_task);
    ADD1(s, error_names);
    ADD1(s, version_string);

    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_ENV);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
