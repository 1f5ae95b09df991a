/* What a task captures when it is built, and what it may carry to a worker process, on every
 * backend: C strings and copied inputs are read at pj_delayed, not when the task runs; a struct
 * passed by value that holds a pointer is refused where it would cross to a process, naming
 * the argument and the member; a struct with a complex member is refused at pj_fn_new. */
#include <parjob.h>

#include <check.h>

#include "helpers.h"
#include <complex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const backends[] = { "sequential", "threading", "fork", "spawn" };
#define N_BACKENDS ((int)(sizeof backends / sizeof backends[0]))

static bool is_process(int i)
{
    return strcmp(backends[i], "fork") == 0 || strcmp(backends[i], "spawn") == 0;
}

static pj_parallel *par_for(int i)
{
    pj_parallel *par = pj_parallel_new(&(pj_config){
        .backend = backends[i], .n_jobs = strcmp(backends[i], "sequential") ? 2 : 1,
        .on_error = PJ_ON_ERROR_CONTINUE });
    ck_assert_msg(par != NULL, "pj_parallel_new(%s): %s", backends[i], pj_last_errmsg());
    return par;
}

static int number_in(const char *s)
{
    const char *digits = strpbrk(s, "0123456789");
    return digits ? atoi(digits) : -1;
}

static int sum4(const int *v)
{
    return v[0] + v[1] + v[2] + v[3];
}

/* ---- capture at pj_delayed ------------------------------------------------------------------ */

/* Four tasks built from one buffer rewritten before each pj_delayed, then scribbled over
 * before the run: each task still sees its own string. */
START_TEST(cstr_read_at_delayed)
{
    pj_fn *fn = PJ_FN(number_in, &ffi_type_sint, &ffi_type_pointer);
    char buf[32];
    pj_task *tasks[4];
    for (int k = 0; k < 4; k++) {
        snprintf(buf, sizeof buf, "task %d", 10 * k + 1);
        tasks[k] = pj_delayed(fn, pj_cstr(buf));
        ck_assert_msg(tasks[k] != NULL, "%s", pj_last_errmsg());
    }
    memset(buf, 'x', sizeof buf - 1);
    pj_parallel *par = par_for(_i);
    pj_results *res;
    ck_assert_int_eq(pj_run(par, tasks, 4, &res), 0);
    for (int k = 0; k < 4; k++)
        ck_assert_int_eq(pj_result_int(pj_results_at(res, k)), 10 * k + 1);
    pj_results_free(res);
    /* The same through pj_task_set_buf on a task made by pj_task_new. */
    const char *null_str = NULL;
    pj_task *t = pj_task_new(fn, (void *[]){ &null_str });
    snprintf(buf, sizeof buf, "set %d", 77);
    ck_assert_int_eq(pj_task_set_buf(t, 0, pj_cstr(buf)), 0);
    buf[4] = '9';
    ck_assert_int_eq(pj_run(par, &t, 1, &res), 0);
    ck_assert_int_eq(pj_result_int(pj_results_at(res, 0)), 77);
    pj_results_free(res);
    pj_task_free(t);
    pj_parallel_free(par);
    for (int k = 0; k < 4; k++)
        pj_task_free(tasks[k]);
    pj_fn_free(fn);
}
END_TEST

/* pj_in_copy: an input array reused for every task, freed before the run. */
START_TEST(in_copy_read_at_delayed)
{
    pj_fn *fn = PJ_FN(sum4, &ffi_type_sint, &ffi_type_pointer);
    pj_task *tasks[8];
    int *v = malloc(4 * sizeof *v);
    for (int k = 0; k < 8; k++) {
        for (int j = 0; j < 4; j++)
            v[j] = k * 100 + j;
        tasks[k] = pj_delayed(fn, pj_in_copy(v, 4 * sizeof *v));
        ck_assert_msg(tasks[k] != NULL, "%s", pj_last_errmsg());
    }
    free(v);
    pj_parallel *par = par_for(_i);
    pj_results *res;
    ck_assert_int_eq(pj_run(par, tasks, 8, &res), 0);
    for (int k = 0; k < 8; k++)
        ck_assert_int_eq(pj_result_int(pj_results_at(res, k)), 400 * k + 6);
    pj_results_free(res);
    pj_parallel_free(par);
    for (int k = 0; k < 8; k++)
        pj_task_free(tasks[k]);
    pj_fn_free(fn);
}
END_TEST

/* ---- pointers inside structs passed by value ----------------------------------------------- */

struct span { int n; const int *p; };
struct outer { double scale; struct span s; };

static ffi_type *span_el[] = { &ffi_type_sint, &ffi_type_pointer, NULL };
static ffi_type span_t = { 0, 0, FFI_TYPE_STRUCT, span_el };
static ffi_type *outer_el[] = { &ffi_type_double, &span_t, NULL };
static ffi_type outer_t = { 0, 0, FFI_TYPE_STRUCT, outer_el };

static int span_sum(int base, struct span s)
{
    int t = base;
    for (int k = 0; s.p && k < s.n; k++)
        t += s.p[k];
    return t;
}

static double outer_sum(struct outer o)
{
    return o.scale * span_sum(0, o.s);
}

/* Hands out span_sum tasks, the one at refuse_at with a pointer member. */
struct span_source { pj_fn *fn; const struct span *with, *without; int next, n, refuse_at; };

static int next_span_task(void *state, pj_task **out)
{
    struct span_source *src = state;
    if (src->next == src->n)
        return 0;
    int k = src->next++;
    *out = pj_delayed(src->fn, k, k == src->refuse_at ? src->with : src->without);
    return *out ? 1 : -1;
}

/* Process backends refuse the run before anything runs, naming the task, the argument and
 * the member (nested ones by their path); a NULL member crosses, as a NULL pointer does.
 * From a producer, the task fails alone with the same words and the others run.
 * In-process backends read through the pointer. */
START_TEST(struct_pointer_member)
{
    static const int data[3] = { 1, 2, 3 };
    pj_fn *span_fn = PJ_FN(span_sum, &ffi_type_sint, &ffi_type_sint, &span_t);
    pj_fn *outer_fn = PJ_FN(outer_sum, &ffi_type_double, &outer_t);
    struct span with = { 3, data }, without = { 3, NULL };
    struct outer nested = { 2.0, { 3, data } };
    pj_task *tasks[3] = { pj_delayed(span_fn, 10, &without), pj_delayed(span_fn, 10, &with),
                          pj_delayed(outer_fn, &nested) };
    pj_parallel *par = par_for(_i);
    pj_results *res;
    int rc = pj_run(par, tasks, 1, &res);
    ck_assert_int_eq(rc, 0);
    ck_assert_int_eq(pj_result_int(pj_results_at(res, 0)), 10);
    pj_results_free(res);

    rc = pj_run(par, tasks, 2, &res);
    const char *msg = pj_parallel_errmsg(par);
    if (is_process(_i)) {
        ck_assert_int_eq(rc, PJ_EPOINTER);
        ck_assert_ptr_null(res);
        ck_assert_msg(strstr(msg, "task 1") && strstr(msg, "span_sum") &&
                      strstr(msg, "argument 1") && strstr(msg, "member 1 "), "message: %s", msg);
    } else {
        ck_assert_int_eq(rc, 0);
        ck_assert_int_eq(pj_result_int(pj_results_at(res, 1)), 16);
        pj_results_free(res);
    }

    rc = pj_run(par, tasks + 2, 1, &res);
    msg = pj_parallel_errmsg(par);
    if (is_process(_i)) {
        ck_assert_int_eq(rc, PJ_EPOINTER);
        ck_assert_msg(strstr(msg, "outer_sum") && strstr(msg, "argument 0") &&
                      strstr(msg, "member 1.1 "), "message: %s", msg);
    } else {
        ck_assert_int_eq(rc, 0);
        ck_assert_double_eq(pj_result_double(pj_results_at(res, 0)), 12.0);
        pj_results_free(res);
    }

    struct span_source src = { span_fn, &with, &without, 0, 6, 4 };
    rc = pj_run_source(par, next_span_task, &src, &res);
    ck_assert_int_eq(rc, is_process(_i) ? PJ_EPOINTER : 0);
    ck_assert_uint_eq(pj_results_count(res), 6);
    for (int k = 0; k < 6; k++) {
        const pj_result *r = pj_results_at(res, (size_t)k);
        if (k == 4 && is_process(_i)) {
            ck_assert_int_eq(r->status, PJ_EPOINTER);
            ck_assert_msg(strstr(r->message, "member 1 "), "message: %s", r->message);
        } else {
            ck_assert_int_eq(r->status, 0);
            ck_assert_int_eq(pj_result_int(r), k == 4 ? 10 : k);
        }
    }
    pj_results_free(res);
    pj_parallel_free(par);
    for (int k = 0; k < 3; k++)
        pj_task_free(tasks[k]);
    pj_fn_free(span_fn);
    pj_fn_free(outer_fn);
}
END_TEST

/* The other entry points that check what crosses refuse it too: a future and a spawned
 * process. */
START_TEST(struct_pointer_member_other_entry_points)
{
    static const int data[2] = { 5, 6 };
    pj_fn *fn = PJ_FN(span_sum, &ffi_type_sint, &ffi_type_sint, &span_t);
    struct span with = { 2, data };
    pj_task *t = pj_delayed(fn, 0, &with);
    pj_executor *ex = pj_executor_new(&(pj_config){ .backend = "fork", .n_jobs = 1 });
    ck_assert_ptr_nonnull(ex);
    ck_assert_ptr_null(pj_submit(ex, t));
    ck_assert_int_eq(pj_last_error(), PJ_EPOINTER);
    ck_assert_msg(strstr(pj_last_errmsg(), "member 1 "), "%s", pj_last_errmsg());
    pj_executor_free(ex);
    ck_assert_ptr_null(pj_process_new(t, "spawn"));
    ck_assert_int_eq(pj_last_error(), PJ_EPOINTER);
    ck_assert_msg(strstr(pj_last_errmsg(), "member 1 "), "%s", pj_last_errmsg());
    pj_task_free(t);
    pj_fn_free(fn);
}
END_TEST

/* ---- complex members ------------------------------------------------------------------------ */

struct with_complex { double re; double _Complex z; };

static double complex_re(struct with_complex w) { return w.re + creal(w.z); }

/* A complex type inside a struct (nested too, argument or return) is refused when the function
 * is described, as a complex argument is: no backend would have carried it. */
START_TEST(complex_member_refused)
{
    ffi_type *wc_el[] = { &ffi_type_double, &ffi_type_complex_double, NULL };
    ffi_type wc_t = { 0, 0, FFI_TYPE_STRUCT, wc_el };
    ffi_type *deep_el[] = { &ffi_type_sint, &ffi_type_double, &wc_t, NULL };
    ffi_type deep_t = { 0, 0, FFI_TYPE_STRUCT, deep_el };

    ck_assert_ptr_null(PJ_FN(complex_re, &ffi_type_double, &wc_t));
    ck_assert_int_eq(pj_last_error(), PJ_ETYPE);
    ck_assert_msg(strstr(pj_last_errmsg(), "complex") && strstr(pj_last_errmsg(), "argument 0")
                  && strstr(pj_last_errmsg(), "member 1"), "%s", pj_last_errmsg());

    ck_assert_ptr_null(PJ_FN(complex_re, &ffi_type_double, &ffi_type_sint, &deep_t));
    ck_assert_int_eq(pj_last_error(), PJ_ETYPE);
    ck_assert_msg(strstr(pj_last_errmsg(), "argument 1") && strstr(pj_last_errmsg(), "member 2.1"),
                  "%s", pj_last_errmsg());

    ck_assert_ptr_null(PJ_FN(complex_re, &deep_t, &ffi_type_double));
    ck_assert_int_eq(pj_last_error(), PJ_ETYPE);
    ck_assert_msg(strstr(pj_last_errmsg(), "returned struct"), "%s", pj_last_errmsg());
}
END_TEST

static Suite *capture_suite(void)
{
    Suite *s = suite_create("capture");
    const struct loop_case cases[] = {
        { "cstr_read_at_delayed", cstr_read_at_delayed },
        { "in_copy_read_at_delayed", in_copy_read_at_delayed },
        { "struct_pointer_member", struct_pointer_member },
    };
    add_loop_cases(s, cases, sizeof cases / sizeof cases[0], 120, N_BACKENDS);
    TCase *tc = tcase_create("once");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, struct_pointer_member_other_entry_points);
    tcase_add_test(tc, complex_member_refused);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return run_suite(capture_suite());
}
