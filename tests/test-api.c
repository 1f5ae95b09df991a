/* The API as a newcomer meets it: an empty task array is joblib's [] on every backend; one
 * place for error text (pj_last_errmsg after every failing call); the resolved n_jobs, the
 * list of backends, pre_dispatch's limit and whole messages, a struct result copied out. */
#include <parjob.h>

#include <check.h>

#include "helpers.h"
#include <stdio.h>
#include <string.h>

static const char *const backends[] = { "sequential", "threading", "fork", "spawn" };
#define N_BACKENDS ((int)(sizeof backends / sizeof backends[0]))

static pj_parallel *par_for(int i, pj_return_as as)
{
    pj_parallel *par = pj_parallel_new(&(pj_config){
        .backend = backends[i], .n_jobs = strcmp(backends[i], "sequential") ? 2 : 1,
        .return_as = as });
    ck_assert_msg(par != NULL, "pj_parallel_new(%s): %s", backends[i], pj_last_errmsg());
    return par;
}

static int add(int a, int b) { return a + b; }

static int fail_on_three(int x)
{
    if (x == 3)
        pj_fail("three is refused");
    return x;
}

static int nap_ms(int ms)
{
    sleep_us(ms * 1000L);
    return ms;
}

/* Sets the thread's last error to something no later call says, so that a check of
 * pj_last_errmsg sees what that call left. */
static void poison_last_error(void)
{
    ck_assert_ptr_null(pj_fn_new("poison", NULL, &ffi_type_void, 0, NULL));
    ck_assert_ptr_nonnull(strstr(pj_last_errmsg(), "poison"));
}

#define ck_last_error(code, needle)                                                            \
    do {                                                                                       \
        ck_assert_str_eq(pj_err_name(pj_last_error()), pj_err_name(code));                     \
        ck_assert_msg(strstr(pj_last_errmsg(), (needle)) != NULL,                              \
                      "pj_last_errmsg \"%s\" lacks \"%s\"", pj_last_errmsg(), (needle));       \
    } while (0)

/* ---- item: an empty task array -------------------------------------------------------------- */

/* pj_run over no tasks returns 0 and an empty container; pj_start over none gives an
 * iterator that ends at once, in either order; the handle runs normally afterwards. */
START_TEST(empty_task_array)
{
    pj_fn *fn = PJ_FN(add, &ffi_type_sint, &ffi_type_sint, &ffi_type_sint);
    pj_task *t = pj_delayed(fn, 2, 3);
    pj_parallel *par = par_for(_i, PJ_GENERATOR);
    pj_results *res = NULL;
    ck_assert_int_eq(pj_run(par, &t, 0, &res), 0);
    ck_assert_ptr_nonnull(res);
    ck_assert_uint_eq(pj_results_count(res), 0);
    ck_assert_ptr_null(pj_results_at(res, 0));
    pj_results_free(res);
    res = NULL;
    ck_assert_int_eq(pj_run(par, NULL, 0, &res), 0);
    ck_assert_ptr_nonnull(res);
    ck_assert_uint_eq(pj_results_count(res), 0);
    pj_results_free(res);

    pj_iter *it = pj_start(par, NULL, 0);
    ck_assert_msg(it != NULL, "pj_start over nothing: %s", pj_last_errmsg());
    pj_result r;
    ck_assert_int_eq(pj_next(it, &r), PJ_EEND);
    ck_assert_int_eq(pj_next(it, &r), PJ_EEND);
    ck_assert_int_eq(pj_iter_close(it), 0);

    ck_assert_int_eq(pj_run(par, &t, 1, &res), 0);
    ck_assert_int_eq(pj_result_int(pj_results_at(res, 0)), 5);
    pj_results_free(res);
    pj_parallel_free(par);

    par = par_for(_i, PJ_GENERATOR_UNORDERED);
    it = pj_start(par, &t, 0);
    ck_assert_ptr_nonnull(it);
    ck_assert_int_eq(pj_next(it, &r), PJ_EEND);
    ck_assert_int_eq(pj_iter_close(it), 0);
    pj_parallel_free(par);
    pj_task_free(t);
    pj_fn_free(fn);
}
END_TEST

/* ---- item: where error text lives ----------------------------------------------------------- */

/* A run's failure, its refusal of a task, and an iterator's end: each in pj_last_errmsg of the
 * calling thread, and the handle's own message as before. */
START_TEST(run_errors_in_last_errmsg)
{
    pj_fn *fn = PJ_FN(fail_on_three, &ffi_type_sint, &ffi_type_sint);
    pj_task *tasks[5];
    for (int k = 0; k < 5; k++)
        tasks[k] = pj_delayed(fn, k);
    pj_parallel *par = pj_parallel_new(&(pj_config){ .backend = "threading", .n_jobs = 2 });
    pj_results *res;
    poison_last_error();
    ck_assert_int_eq(pj_run(par, tasks, 5, &res), PJ_EFAILED);
    ck_last_error(PJ_EFAILED, "three is refused");
    ck_assert_ptr_nonnull(strstr(pj_last_errmsg(), "task 3"));
    ck_assert_str_eq(pj_parallel_errmsg(par), pj_last_errmsg());
    pj_results_free(res);

    poison_last_error();
    ck_assert_int_eq(pj_run(par, tasks, 5, NULL), PJ_EINVAL);
    ck_last_error(PJ_EINVAL, "results");

    pj_iter *it = pj_start(par, tasks, 5);
    ck_assert_ptr_nonnull(it);
    pj_result r;
    poison_last_error();
    ck_assert_int_eq(pj_next(NULL, &r), PJ_EINVAL);
    ck_last_error(PJ_EINVAL, "pj_next");
    while (pj_next(it, &r) == 0)
        ;
    ck_last_error(PJ_EEND, "pj_next");
    poison_last_error();
    ck_assert_int_eq(pj_iter_close(it), PJ_EFAILED);
    ck_last_error(PJ_EFAILED, "three is refused");
    pj_parallel_free(par);

    /* A refusal before anything runs (a raw pointer on a process backend). */
    pj_fn *peek = PJ_FN(strlen, &ffi_type_uint64, &ffi_type_pointer);
    pj_task *raw = pj_delayed(peek, (const char *)"abc");
    par = pj_parallel_new(&(pj_config){ .backend = "fork", .n_jobs = 1 });
    poison_last_error();
    ck_assert_int_eq(pj_run(par, &raw, 1, &res), PJ_EPOINTER);
    ck_last_error(PJ_EPOINTER, "argument 0");
    pj_parallel_free(par);
    pj_task_free(raw);
    pj_fn_free(peek);
    for (int k = 0; k < 5; k++)
        pj_task_free(tasks[k]);
    pj_fn_free(fn);
}
END_TEST

static int accept_open(void **state, int n, const pj_config *c, char *err, size_t len)
{
    (void)n, (void)c, (void)err, (void)len;
    *state = NULL;
    return 0;
}

static int inline_submit(void *state, pj_batch *b)
{
    (void)state;
    pj_batch_run(b);
    pj_batch_done(b);
    return 0;
}

static void nothing_to_close(void *state) { (void)state; }

static const struct pj_backend inline_backend = {
    .version = PJ_BACKEND_VERSION, .name = "api-test-inline", .display_name = "InlineBackend",
    .features = PJ_BACKEND_INLINE, .open = accept_open, .submit = inline_submit,
    .close = nothing_to_close,
};

/* Calls that returned a bare code before: their reasons in pj_last_errmsg now. */
START_TEST(bare_codes_in_last_errmsg)
{
    pj_fn *fn = PJ_FN(fail_on_three, &ffi_type_sint, &ffi_type_sint);
    pj_task *t = pj_delayed(fn, 3);
    poison_last_error();
    ck_assert_int_eq(pj_task_set_buf(t, 4, pj_in("x", 1)), PJ_EINVAL);
    ck_last_error(PJ_EINVAL, "pj_task_set_buf");
    poison_last_error();
    ck_assert_int_eq(pj_fail("outside"), PJ_EINVAL);
    ck_last_error(PJ_EINVAL, "pj_fail");
    poison_last_error();
    ck_assert_int_eq(pj_parallel_n_jobs(NULL), PJ_EINVAL);
    ck_last_error(PJ_EINVAL, "pj_parallel_n_jobs");
    poison_last_error();
    ck_assert_int_eq(pj_backend_register(NULL), PJ_EINVAL);
    ck_last_error(PJ_EINVAL, "pj_backend_register");
    poison_last_error();
    ck_assert_int_eq(pj_backend_register(&pj_backend_find("threading")[0]), PJ_EBUSY);
    ck_last_error(PJ_EBUSY, "known already");

    /* Futures: a failed task's status, a wait that times out. */
    pj_executor *ex = pj_executor_new(&(pj_config){ .backend = "threading", .n_jobs = 2 });
    pj_future *f = pj_submit(ex, t);
    const pj_result *out;
    poison_last_error();
    ck_assert_int_eq(pj_future_result(f, PJ_FOREVER, &out), PJ_EFAILED);
    ck_last_error(PJ_EFAILED, "three is refused");
    pj_fn *nap = PJ_FN(nap_ms, &ffi_type_sint, &ffi_type_sint);
    pj_task *slow = pj_delayed(nap, 300);
    pj_future *g = pj_submit(ex, slow);
    poison_last_error();
    ck_assert_int_eq(pj_future_result(g, 0, &out), PJ_ETIMEDOUT);
    ck_last_error(PJ_ETIMEDOUT, "not done");
    poison_last_error();
    ck_assert_int_eq(pj_future_done(NULL), PJ_EINVAL);
    ck_last_error(PJ_EINVAL, "pj_future_done");
    pj_executor_free(ex);
    pj_future_free(f);
    pj_future_free(g);

    /* A process not started yet. */
    pj_process *p = pj_process_new(t, "fork");
    poison_last_error();
    ck_assert_int_eq(pj_process_result(p, &out), PJ_EBUSY);
    ck_last_error(PJ_EBUSY, "not started");
    poison_last_error();
    ck_assert_int_eq(pj_process_join(p, 1.0), PJ_EINVAL);
    ck_last_error(PJ_EINVAL, "not started");
    pj_process_free(p);
    pj_task_free(slow);
    pj_task_free(t);
    pj_fn_free(nap);
    pj_fn_free(fn);
}
END_TEST

/* ---- item: small gaps of the API ------------------------------------------------------------ */

START_TEST(n_jobs_is_resolved)
{
    pj_parallel *par = pj_parallel_new(&(pj_config){ .n_jobs = -1, .backend = "threading" });
    ck_assert_int_eq(pj_parallel_n_jobs(par), pj_cpu_count());
    pj_parallel_free(par);
    par = pj_parallel_new(&(pj_config){ .n_jobs = 3, .backend = "threading" });
    ck_assert_int_eq(pj_parallel_n_jobs(par), 3);
    pj_parallel_free(par);
}
END_TEST

/* The built-in backends first, then the registered ones in order, then NULL. */
START_TEST(backends_listed)
{
    const char *const builtin[] = { "sequential", "threading", "fork", "spawn" };
    size_t n = 0;
    while (pj_backend_at(n))
        n++;
    ck_assert_uint_ge(n, 4);
    for (size_t i = 0; i < 4; i++)
        ck_assert_str_eq(pj_backend_at(i)->name, builtin[i]);
    ck_assert_int_eq(pj_backend_register(&inline_backend), 0);
    ck_assert_ptr_eq(pj_backend_at(n), &inline_backend);
    ck_assert_ptr_null(pj_backend_at(n + 1));
    ck_assert_ptr_null(pj_backend_at((size_t)-1));
}
END_TEST

/* The limit is in the header, and a refused expression is shown whole. */
START_TEST(pre_dispatch_limit)
{
    ck_assert_int_eq(PJ_PRE_DISPATCH_MAX, 30);
    const char *fits = "2*n_jobs + 1000 + 1000 + 10000"; /* 30 characters */
    ck_assert_uint_eq(strlen(fits), PJ_PRE_DISPATCH_MAX);
    pj_parallel *par = pj_parallel_new(&(pj_config){ .pre_dispatch = fits });
    ck_assert_msg(par != NULL, "%s", pj_last_errmsg());
    pj_parallel_free(par);
    const char *longer = "2*n_jobs + 1000 + 1000 + 1000 + 1000";
    ck_assert_ptr_null(pj_parallel_new(&(pj_config){ .pre_dispatch = longer }));
    ck_assert_int_eq(pj_last_error(), PJ_EINVAL);
    char whole[64];
    snprintf(whole, sizeof whole, "\"%s\"", longer);
    ck_assert_msg(strstr(pj_last_errmsg(), whole) && strstr(pj_last_errmsg(), "36 characters"),
                  "message: %s", pj_last_errmsg());
}
END_TEST

struct rect { double w, h; int id; };
static ffi_type *rect_el[] = { &ffi_type_double, &ffi_type_double, &ffi_type_sint, NULL };
static ffi_type rect_t = { 0, 0, FFI_TYPE_STRUCT, rect_el };

static struct rect make_rect(int id)
{
    if (id < 0)
        pj_fail("negative id %d", id);
    return (struct rect){ id * 1.5, id * 2.5, id };
}

/* A struct result copied into a struct of its type; a wrong size, a non-struct result and a
 * failed task are refused and nothing is written. */
START_TEST(struct_result_copied_out)
{
    pj_fn *fn = PJ_FN(make_rect, &rect_t, &ffi_type_sint);
    pj_fn *int_fn = PJ_FN(add, &ffi_type_sint, &ffi_type_sint, &ffi_type_sint);
    pj_task *tasks[3] = { pj_delayed(fn, 4), pj_delayed(fn, -1), pj_delayed(int_fn, 1, 2) };
    pj_parallel *par = pj_parallel_new(&(pj_config){ .backend = "fork", .n_jobs = 2,
                                                      .on_error = PJ_ON_ERROR_CONTINUE });
    pj_results *res;
    ck_assert_int_eq(pj_run(par, tasks, 3, &res), PJ_EFAILED);
    struct rect r = { 0, 0, 0 };
    ck_assert_int_eq(pj_result_struct(pj_results_at(res, 0), &r, sizeof r), 0);
    ck_assert_double_eq(r.w, 6.0);
    ck_assert_double_eq(r.h, 10.0);
    ck_assert_int_eq(r.id, 4);

    char small[8] = { 0 };
    ck_assert_int_eq(pj_result_struct(pj_results_at(res, 0), small, sizeof small), PJ_ETYPE);
    ck_assert_ptr_nonnull(strstr(pj_last_errmsg(), "24 bytes"));
    ck_assert_int_eq(small[0], 0);
    struct rect untouched = { -1, -1, -1 };
    ck_assert_int_eq(pj_result_struct(pj_results_at(res, 1), &untouched, sizeof untouched),
                     PJ_EFAILED);
    ck_assert_ptr_nonnull(strstr(pj_last_errmsg(), "negative id -1"));
    ck_assert_int_eq(untouched.id, -1);
    int v = 0;
    ck_assert_int_eq(pj_result_struct(pj_results_at(res, 2), &v, sizeof v), PJ_ETYPE);
    ck_assert_ptr_nonnull(strstr(pj_last_errmsg(), "does not return a struct"));
    ck_assert_int_eq(pj_result_struct(NULL, &r, sizeof r), PJ_EINVAL);
    pj_results_free(res);
    pj_parallel_free(par);
    for (int k = 0; k < 3; k++)
        pj_task_free(tasks[k]);
    pj_fn_free(fn);
    pj_fn_free(int_fn);
}
END_TEST

static Suite *api_suite(void)
{
    Suite *s = suite_create("api");
    const struct loop_case cases[] = { { "empty_task_array", empty_task_array } };
    add_loop_cases(s, cases, 1, 120, N_BACKENDS);
    TCase *tc = tcase_create("once");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, run_errors_in_last_errmsg);
    tcase_add_test(tc, bare_codes_in_last_errmsg);
    tcase_add_test(tc, n_jobs_is_resolved);
    tcase_add_test(tc, backends_listed);
    tcase_add_test(tc, pre_dispatch_limit);
    tcase_add_test(tc, struct_result_copied_out);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return run_suite(api_suite());
}
