/* Inner threads (config.inner_max_num_threads): tasks compiled with OpenMP report the limit
 * their worker gave them, on every backend: the share by default, an explicit count, nothing
 * when turned off; the variables process workers see; OpenMP in fork workers after the
 * program's own thread ran a region; OpenBLAS's threads where Debian's libopenblas-dev is
 * installed. */
#include <parjob.h>

#include <check.h>

#include "helpers.h"
#include <omp.h>
#ifdef PJ_TEST_OPENBLAS
#include <cblas.h>
#endif
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ThreadSanitizer cannot see libgomp's or OpenBLAS's synchronisation (they are not built with
 * it) and reports their teams' hand-offs as races: under it, no test starts a region or a
 * threaded dgemm (the limits themselves are still checked). */
#if defined(__SANITIZE_THREAD__)
#define RUNS_TEAMS 0
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define RUNS_TEAMS 0
#endif
#endif
#ifndef RUNS_TEAMS
#define RUNS_TEAMS 1
#endif

static const char *const backends[] = { "sequential", "threading", "fork", "spawn" };
#define N_BACKENDS ((int)(sizeof backends / sizeof backends[0]))
#define N_TASKS 6
#define N_JOBS 2

/* omp_get_max_threads() of the test's own thread before any run: what a task sees where no
 * limit applies (the usable CPUs, as OMP_NUM_THREADS is unset: see main). */
static int parent_max;

/* ---- the tasks ------------------------------------------------------------------------------ */

static int max_threads(void)
{
    return omp_get_max_threads();
}

static int team_size(void)
{
    int n = 0;
#pragma omp parallel reduction(+ : n)
    n++;
    return n;
}

/* The variable as an integer, -1 when unset. */
static int env_int(const char *name)
{
    const char *v = getenv(name);
    return v ? atoi(v) : -1;
}

#ifdef PJ_TEST_OPENBLAS
static int blas_threads(void)
{
    return openblas_get_num_threads();
}

/* A dgemm big enough for OpenBLAS to use its threads: 1 if every entry of ones * ones is n. */
static int dgemm_ok(void)
{
    enum { N = 384 };
    double *a = malloc(2 * sizeof *a * N * N), *c = a + N * N;
    if (!a)
        return 0;
    for (int i = 0; i < N * N; i++)
        a[i] = 1;
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, N, N, N, 1, a, N, a, N, 0, c, N);
    int ok = 1;
    for (int i = 0; i < N * N; i++)
        ok &= c[i] == N;
    free(a);
    return ok;
}
#endif

/* ---- helpers -------------------------------------------------------------------------------- */

static bool in_process(int b)
{
    return strcmp(backends[b], "sequential") == 0;
}

static bool is_process(int b)
{
    return strcmp(backends[b], "fork") == 0 || strcmp(backends[b], "spawn") == 0;
}

static pj_parallel *par_with(int b, int inner)
{
    pj_parallel *par = pj_parallel_new(&(pj_config){
        .backend = backends[b], .n_jobs = N_JOBS, .inner_max_num_threads = inner,
        .timeout = 20 });
    ck_assert_msg(par != NULL, "pj_parallel_new(%s): %s", backends[b], pj_last_errmsg());
    return par;
}

/* Runs N_TASKS calls of fn (no arguments) on par and checks each returns want. */
static void expect_each(pj_parallel *par, int (*fn)(void), const char *what, int want)
{
    pj_fn *f = pj_fn_new(what, (void (*)(void))fn, &ffi_type_sint, 0, NULL);
    pj_task *tasks[N_TASKS];
    for (int i = 0; i < N_TASKS; i++)
        tasks[i] = pj_delayed(f);
    pj_results *res;
    int rc = pj_run(par, tasks, N_TASKS, &res);
    ck_assert_msg(rc == 0, "%s on %s: %s", what, pj_parallel_backend(par),
                  pj_parallel_errmsg(par));
    for (int i = 0; i < N_TASKS; i++)
        ck_assert_msg(pj_result_int(pj_results_at(res, i)) == want, "%s on %s: task %d gave %d, "
                      "expected %d", what, pj_parallel_backend(par), i,
                      pj_result_int(pj_results_at(res, i)), want);
    pj_results_free(res);
    for (int i = 0; i < N_TASKS; i++)
        pj_task_free(tasks[i]);
    pj_fn_free(f);
}

/* Checks that a task sees $name == want (-1: unset) on par. */
static void expect_env(pj_parallel *par, const char *name, int want)
{
    pj_fn *f = PJ_FN(env_int, &ffi_type_sint, &ffi_type_pointer);
    pj_task *t = pj_delayed(f, pj_cstr(name));
    pj_results *res;
    ck_assert_msg(pj_run(par, &t, 1, &res) == 0, "%s", pj_parallel_errmsg(par));
    ck_assert_msg(pj_result_int(pj_results_at(res, 0)) == want, "%s on %s: %d, expected %d", name,
                  pj_parallel_backend(par), pj_result_int(pj_results_at(res, 0)), want);
    pj_results_free(res);
    pj_task_free(t);
    pj_fn_free(f);
}

static int default_share(void)
{
    int share = pj_cpu_count() / N_JOBS;
    return share > 1 ? share : 1;
}

/* ---- tests ---------------------------------------------------------------------------------- */

/* joblib's default: usable CPUs / n_jobs, for omp_get_max_threads and for the team a region
 * inside the task starts; "sequential" runs on the caller's thread and changes nothing. */
START_TEST(default_limit)
{
    int want = in_process(_i) ? parent_max : default_share();
    pj_parallel *par = par_with(_i, 0);
    expect_each(par, max_threads, "omp_get_max_threads", want);
    if (RUNS_TEAMS)
        expect_each(par, team_size, "team size", want);
    pj_parallel_free(par);
    /* The caller's own OpenMP and environment are as they were. */
    ck_assert_int_eq(omp_get_max_threads(), parent_max);
    ck_assert_ptr_null(getenv("OMP_NUM_THREADS"));
}
END_TEST

START_TEST(explicit_limit)
{
    pj_parallel *par = par_with(_i, 3);
    expect_each(par, max_threads, "omp_get_max_threads", in_process(_i) ? parent_max : 3);
    pj_parallel_free(par);
}
END_TEST

/* Turned off, a task's OpenMP sees the CPUs, and no variable is set. */
START_TEST(limit_off)
{
    pj_parallel *par = par_with(_i, -1);
    expect_each(par, max_threads, "omp_get_max_threads", parent_max);
    expect_env(par, "OMP_NUM_THREADS", -1);
    expect_env(par, "ENABLE_IPC", -1);
    pj_parallel_free(par);
}
END_TEST

/* Process workers get every variable joblib sets; threads leave the process's alone. */
START_TEST(worker_variables)
{
    static const char *const vars[] = {
        "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS",
        "VECLIB_MAXIMUM_THREADS", "NUMBA_NUM_THREADS", "NUMEXPR_NUM_THREADS" };
    pj_parallel *par = par_with(_i, 3);
    for (size_t v = 0; v < sizeof vars / sizeof vars[0]; v++)
        expect_env(par, vars[v], is_process(_i) ? 3 : -1);
    expect_env(par, "ENABLE_IPC", is_process(_i) ? 1 : -1);
    pj_parallel_free(par);
}
END_TEST

/* By default a variable the parent sets keeps its value (joblib's rule); an explicit limit
 * replaces it.  TBB's ENABLE_IPC is the parent's whenever the parent sets it. */
START_TEST(parent_variables)
{
    setenv("MKL_NUM_THREADS", "7", 1);
    setenv("ENABLE_IPC", "0", 1);
    pj_parallel *par = par_with(_i, 0);
    expect_env(par, "MKL_NUM_THREADS", 7);
    expect_env(par, "OPENBLAS_NUM_THREADS", is_process(_i) ? default_share() : -1);
    pj_parallel_free(par);
    par = par_with(_i, 3);
    expect_env(par, "MKL_NUM_THREADS", is_process(_i) ? 3 : 7);
    expect_env(par, "ENABLE_IPC", 0);
    pj_parallel_free(par);
    unsetenv("MKL_NUM_THREADS");
    unsetenv("ENABLE_IPC");
}
END_TEST

START_TEST(from_environment)
{
    setenv("PARJOB_INNER_MAX_NUM_THREADS", "3", 1);
    pj_parallel *par = par_with(_i, 0);
    expect_each(par, max_threads, "omp_get_max_threads", in_process(_i) ? parent_max : 3);
    pj_parallel_free(par);
    /* The field wins over the variable. */
    par = par_with(_i, -1);
    expect_each(par, max_threads, "omp_get_max_threads", parent_max);
    pj_parallel_free(par);
    unsetenv("PARJOB_INNER_MAX_NUM_THREADS");
}
END_TEST

/* A region on the program's own thread first: libgomp then keeps a team for that thread,
 * which a child forked from it could not use.  Workers are forked from parjob's I/O thread,
 * so their regions start teams of their own (a hang would be a timeout here). */
START_TEST(region_before_workers)
{
    ck_assert_int_eq(team_size(), parent_max);
    pj_parallel *par = par_with(_i, 2);
    expect_each(par, team_size, "team size", in_process(_i) ? parent_max : 2);
    ck_assert_int_eq(team_size(), parent_max);
    expect_each(par, team_size, "team size", in_process(_i) ? parent_max : 2);
    pj_parallel_free(par);
}
END_TEST

/* Executors open the same backends with the same config: the same limit. */
START_TEST(executor_limit)
{
    pj_executor *ex = pj_executor_new(&(pj_config){ .backend = backends[_i], .n_jobs = N_JOBS });
    ck_assert_msg(ex != NULL, "%s", pj_last_errmsg());
    pj_fn *f = PJ_FN(max_threads, &ffi_type_sint);
    pj_task *t = pj_delayed(f);
    pj_future *fut = pj_submit(ex, t);
    ck_assert_msg(fut != NULL, "%s", pj_last_errmsg());
    const pj_result *r;
    ck_assert_int_eq(pj_future_result(fut, PJ_FOREVER, &r), 0);
    ck_assert_int_eq(pj_result_int(r), in_process(_i) ? parent_max : default_share());
    pj_future_free(fut);
    pj_executor_free(ex);
    pj_task_free(t);
    pj_fn_free(f);
}
END_TEST

#ifdef PJ_TEST_OPENBLAS
/* OpenBLAS (pthreads) already loaded: spawn workers read OPENBLAS_NUM_THREADS, fork workers
 * get openblas_set_num_threads; its threads are process-wide, so threading leaves them. */
START_TEST(openblas_limit)
{
    int parent_blas = openblas_get_num_threads();
    if (RUNS_TEAMS)
        ck_assert_int_eq(dgemm_ok(), 1); /* the parent's BLAS threads run first */
    pj_parallel *par = par_with(_i, 0);
    expect_each(par, blas_threads, "openblas_get_num_threads",
                is_process(_i) ? default_share() : parent_blas);
    pj_parallel_free(par);
    par = par_with(_i, 2);
    if (RUNS_TEAMS)
        expect_each(par, dgemm_ok, "dgemm", 1);
    expect_each(par, blas_threads, "openblas_get_num_threads", is_process(_i) ? 2 : parent_blas);
    pj_parallel_free(par);
    ck_assert_int_eq(openblas_get_num_threads(), parent_blas);
}
END_TEST
#endif

START_TEST(bad_values)
{
    setenv("PARJOB_INNER_MAX_NUM_THREADS", "two", 1);
    ck_assert_ptr_null(pj_parallel_new(&(pj_config){ .n_jobs = 2 }));
    ck_assert_int_eq(pj_last_error(), PJ_EINVAL);
    ck_assert_msg(strstr(pj_last_errmsg(), "PARJOB_INNER_MAX_NUM_THREADS") != NULL, "%s",
                  pj_last_errmsg());
    unsetenv("PARJOB_INNER_MAX_NUM_THREADS");
    ck_assert_ptr_null(pj_parallel_new(&(pj_config){ .n_jobs = 2,
                                                     .inner_max_num_threads = 100000 }));
    ck_assert_int_eq(pj_last_error(), PJ_EINVAL);
    ck_assert_msg(strstr(pj_last_errmsg(), "inner_max_num_threads") != NULL, "%s",
                  pj_last_errmsg());
}
END_TEST

static Suite *inner_suite(void)
{
    Suite *s = suite_create("inner");
    const struct loop_case cases[] = {
        { "default_limit", default_limit }, { "explicit_limit", explicit_limit },
        { "limit_off", limit_off }, { "worker_variables", worker_variables },
        { "parent_variables", parent_variables }, { "from_environment", from_environment },
        { "executor_limit", executor_limit },
#ifdef PJ_TEST_OPENBLAS
        { "openblas_limit", openblas_limit },
#endif
    };
    add_loop_cases(s, cases, sizeof cases / sizeof cases[0], 120, N_BACKENDS);
    const struct loop_case teams[] = { { "region_before_workers", region_before_workers } };
    if (RUNS_TEAMS)
        add_loop_cases(s, teams, 1, 120, N_BACKENDS);
    TCase *tc = tcase_create("bad_values");
    tcase_add_test(tc, bad_values);
    suite_add_tcase(s, tc);
    return s;
}

int main(int argc, char **argv)
{
    (void)argc;
    /* The runtime reads OMP_NUM_THREADS when it loads: a test started with it (or with a
     * default limit of its own) starts again without, so every expectation holds. */
    if (getenv("OMP_NUM_THREADS") || getenv("OPENBLAS_NUM_THREADS") ||
        getenv("PARJOB_INNER_MAX_NUM_THREADS")) {
        unsetenv("OMP_NUM_THREADS");
        unsetenv("OPENBLAS_NUM_THREADS");
        unsetenv("PARJOB_INNER_MAX_NUM_THREADS");
        execv("/proc/self/exe", argv);
        return EXIT_FAILURE;
    }
    parent_max = omp_get_max_threads();
    return run_suite(inner_suite());
}
