/* libffi's own bugs, named.  Each case first probes the linked libffi with a plain ffi_call
 * against the same call made by the compiler.  While the probe shows the bug, parjob (which
 * calls through ffi_call for these signatures) cannot do better: the case prints an expected
 * failure naming the bug and passes.  Once the linked libffi is fixed, the case checks that
 * every backend returns the compiler's answer, and fails if one does not. */
#include <parjob.h>

#include <check.h>

#include "helpers.h"
#include <stdio.h>
#include <string.h>

static const char *const backends[] = { "sequential", "threading", "fork", "spawn" };
#define N_BACKENDS ((int)(sizeof backends / sizeof backends[0]))

/* ---- the signatures ------------------------------------------------------------------------- */

/* Six {unsigned long, float} structs by value: libffi 3.4.4 on x86-64 passes them wrong
 * (fixed upstream after 3.4.6). */
struct ul_f { unsigned long l; float f; };
static ffi_type *ul_f_el[] = { &ffi_type_ulong, &ffi_type_float, NULL };
static ffi_type ul_f_t = { 0, 0, FFI_TYPE_STRUCT, ul_f_el };

static double six_ul_f(struct ul_f a, struct ul_f b, struct ul_f c, struct ul_f d,
                       struct ul_f e, struct ul_f g)
{
    const struct ul_f v[6] = { a, b, c, d, e, g };
    double s = 0;
    for (int i = 0; i < 6; i++)
        s += (double)v[i].l * (i + 1) + (double)v[i].f * 100 * (i + 1);
    return s;
}

/* {char, double} after five chars and a float: libffi's issue 574. */
struct c_d { char c; double d; };
static ffi_type *c_d_el[] = { &ffi_type_schar, &ffi_type_double, NULL };
static ffi_type c_d_t = { 0, 0, FFI_TYPE_STRUCT, c_d_el };

static double c_d_after_chars(char a, char b, char c, char d, char e, float f, struct c_d s)
{
    return a + b + c + d + e + f + s.c * 1000.0 + s.d * 10000.0;
}

/* ---- one bug: its call three ways ------------------------------------------------------------ */

struct libffi_bug {
    const char *name;
    const char *what;
    void (*fn)(void);
    ffi_type *rtype;
    unsigned nargs;
    ffi_type **atypes;
    void **argv;
    double expected;       /* the compiler's call */
};

static struct ul_f ul_f_args[6] = { { 1, 0.5f }, { 2, 1.0f }, { 3, 1.5f }, { 4, 2.0f },
                                    { 5, 2.5f }, { 6, 3.0f } };
static ffi_type *six_types[6] = { &ul_f_t, &ul_f_t, &ul_f_t, &ul_f_t, &ul_f_t, &ul_f_t };
static void *six_argv[6] = { &ul_f_args[0], &ul_f_args[1], &ul_f_args[2], &ul_f_args[3],
                             &ul_f_args[4], &ul_f_args[5] };

static char chars[5] = { 1, 2, 3, 4, 5 };
static float a_float = 6.0f;
static struct c_d c_d_arg = { 7, 8.5 };
static ffi_type *after_types[7] = { &ffi_type_schar, &ffi_type_schar, &ffi_type_schar,
                                    &ffi_type_schar, &ffi_type_schar, &ffi_type_float, &c_d_t };
static void *after_argv[7] = { &chars[0], &chars[1], &chars[2], &chars[3], &chars[4],
                               &a_float, &c_d_arg };

static struct libffi_bug bugs[2];

static void describe_bugs(void)
{
    bugs[0] = (struct libffi_bug){
        "libffi-six-ulong-float-structs",
        "six {unsigned long, float} structs by value are passed wrong (libffi 3.4.4; fixed "
        "upstream after 3.4.6)",
        (void (*)(void))six_ul_f, &ffi_type_double, 6, six_types, six_argv,
        six_ul_f(ul_f_args[0], ul_f_args[1], ul_f_args[2], ul_f_args[3], ul_f_args[4],
                 ul_f_args[5]) };
    bugs[1] = (struct libffi_bug){
        "libffi-issue-574",
        "a {char, double} struct after five chars and a float is passed wrong "
        "(https://github.com/libffi/libffi/issues/574)",
        (void (*)(void))c_d_after_chars, &ffi_type_double, 7, after_types, after_argv,
        c_d_after_chars(1, 2, 3, 4, 5, 6.0f, c_d_arg) };
}

/* The plain ffi_call, no parjob in between: true when it disagrees with the compiler. */
static bool linked_libffi_has(const struct libffi_bug *bug)
{
    ffi_cif cif;
    ck_assert_int_eq(ffi_prep_cif(&cif, FFI_DEFAULT_ABI, bug->nargs, bug->rtype, bug->atypes),
                     FFI_OK);
    double got = 0;
    ffi_call(&cif, bug->fn, &got, bug->argv);
    return got != bug->expected;
}

/* The same call through parjob on backend i: its value (the run must succeed). */
static double through_parjob(const struct libffi_bug *bug, int i)
{
    pj_fn *fn = pj_fn_new(bug->name, bug->fn, bug->rtype, bug->nargs, bug->atypes);
    ck_assert_msg(fn != NULL, "%s", pj_last_errmsg());
    pj_task *t = pj_task_new(fn, bug->argv);
    pj_parallel *par = pj_parallel_new(&(pj_config){
        .backend = backends[i], .n_jobs = strcmp(backends[i], "sequential") ? 2 : 1 });
    pj_results *res;
    ck_assert_msg(pj_run(par, &t, 1, &res) == 0, "%s: %s", backends[i], pj_last_errmsg());
    double got = pj_result_double(pj_results_at(res, 0));
    pj_results_free(res);
    pj_parallel_free(par);
    pj_task_free(t);
    pj_fn_free(fn);
    return got;
}

static void check_bug(const struct libffi_bug *bug, int i)
{
    double got = through_parjob(bug, i);
    if (linked_libffi_has(bug)) {
        printf("expected failure: %s on %s: %s; plain ffi_call returns it wrong too "
               "(parjob %.17g, the compiler %.17g)\n", bug->name, backends[i], bug->what, got,
               bug->expected);
        return;
    }
    ck_assert_msg(got == bug->expected, "%s: the linked libffi passes the probe, but %s "
                  "returns %.17g, not %.17g", bug->name, backends[i], got, bug->expected);
}

START_TEST(six_ulong_float_structs)
{
    describe_bugs();
    check_bug(&bugs[0], _i);
}
END_TEST

START_TEST(issue_574_char_double_after_chars)
{
    describe_bugs();
    check_bug(&bugs[1], _i);
}
END_TEST

static Suite *libffi_suite(void)
{
    Suite *s = suite_create("libffi");
    const struct loop_case cases[] = {
        { "six_ulong_float_structs", six_ulong_float_structs },
        { "issue_574_char_double_after_chars", issue_574_char_double_after_chars },
    };
    add_loop_cases(s, cases, sizeof cases / sizeof cases[0], 120, N_BACKENDS);
    return s;
}

int main(void)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    return run_suite(libffi_suite());
}
