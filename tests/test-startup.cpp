// A task runs in a fully initialised program on every backend: C++ globals with dynamic
// initialisation, a C constructor of the program and one of a shared library it links give
// the same answers as in the program itself, "spawn" included, whose workers re-execute the
// program without running main.  A start-up that cannot finish in a worker (a constructor that
// exits, or waits for what main would provide) is an error at the first run, not a hang.
// Built twice (meson): against the shared and against the static libparjob.
#include <parjob.h>

#include "helpers.h"
#include "startup-lib.h"

#include <cstring>
#include <pthread.h>
#include <string>
#include <unistd.h>
#include <unordered_map>

static const char *const backends[] = { "sequential", "threading", "fork", "spawn" };
#define N_BACKENDS (sizeof backends / sizeof *backends)

// Dynamic initialisation: run by the C++ start-up, before main, never by the loader alone.
static const std::string greeting = std::string(40, 'x');
static const std::unordered_map<int, int> squares = [] {
    std::unordered_map<int, int> m;
    for (int i = 0; i < 100; i++)
        m[i] = i * i;
    return m;
}();

#define MAIN_CTOR_VALUE 1234
static int main_ctor_value;

__attribute__((constructor)) static void set_main_value(void)
{
    main_ctor_value = MAIN_CTOR_VALUE;
}

// What the start-up failure tests ask a worker's start-up to do through the environment they
// pass on (the test process itself started before they set it): end the process, or wait
// forever, as a constructor that waits for something main provides would in a worker.
__attribute__((constructor)) static void troubled_start_up(void)
{
    const char *what = getenv("PJ_TEST_START_UP");
    if (what && !strcmp(what, "exit"))
        exit(3);
    if (what && !strcmp(what, "wait"))
        for (;;)
            pause();
    if (what && !strcmp(what, "slow"))
        usleep(400 * 1000);
}

static int greeting_size(void)
{
    return (int)greeting.size();
}

static int square_of(int k)
{
    auto it = squares.find(k);
    return it == squares.end() ? -1 : it->second;
}

static int main_value(void)
{
    return main_ctor_value;
}

static pj_fn *fn0(const char *name, int (*f)(void))
{
    return pj_fn_new(name, reinterpret_cast<void (*)(void)>(f), &ffi_type_sint, 0, nullptr);
}

static pj_fn *fn1(const char *name, int (*f)(int))
{
    ffi_type *args[] = { &ffi_type_sint };
    return pj_fn_new(name, reinterpret_cast<void (*)(void)>(f), &ffi_type_sint, 1, args);
}

static pj_parallel *new_par(const char *backend, double start_timeout)
{
    pj_config cfg = {};
    cfg.n_jobs = 2;
    cfg.backend = backend;
    cfg.batch_size = 1;
    cfg.on_error = PJ_ON_ERROR_CONTINUE;
    cfg.worker_start_timeout = start_timeout;
    pj_parallel *par = pj_parallel_new(&cfg);
    ck_assert_msg(par, "%s: %s", backend, pj_last_errmsg());
    return par;
}

START_TEST(tasks_see_the_initialised_program)
{
    const char *backend = backends[_i];
    pj_fn *size_fn = fn0("greeting_size", greeting_size);
    pj_fn *square_fn = fn1("square_of", square_of);
    pj_fn *main_fn = fn0("main_value", main_value);
    pj_fn *lib_fn = fn0("startup_lib_value", startup_lib_value);
    int seven = 7, last = 99;
    void *seven_arg[] = { &seven }, *last_arg[] = { &last };
    pj_task *tasks[] = { pj_task_new(size_fn, nullptr), pj_task_new(square_fn, seven_arg),
                         pj_task_new(square_fn, last_arg), pj_task_new(main_fn, nullptr),
                         pj_task_new(lib_fn, nullptr) };
    const int n = sizeof tasks / sizeof *tasks;
    // What the program itself sees, and what it must be.
    const int expected[] = { 40, 49, 99 * 99, MAIN_CTOR_VALUE, STARTUP_LIB_VALUE };
    ck_assert_int_eq(greeting_size(), expected[0]);
    ck_assert_int_eq(square_of(99), expected[2]);
    ck_assert_int_eq(main_value(), expected[3]);
    ck_assert_int_eq(startup_lib_value(), expected[4]);
    pj_parallel *par = new_par(backend, 0);
    pj_results *res = nullptr;
    int rc = pj_run(par, tasks, n, &res);
    ck_assert_msg(rc == 0, "%s: %s: %s", backend, pj_strerror(rc), pj_parallel_errmsg(par));
    for (int i = 0; i < n; i++)
        ck_assert_msg(pj_result_int(pj_results_at(res, i)) == expected[i],
                      "%s: task %d (%s) gave %d, the program itself %d", backend, i,
                      pj_fn_name(pj_results_at(res, i)->fn),
                      pj_result_int(pj_results_at(res, i)), expected[i]);
    pj_results_free(res);
    pj_parallel_free(par);
    for (pj_task *t : tasks)
        pj_task_free(t);
    pj_fn_free(size_fn);
    pj_fn_free(square_fn);
    pj_fn_free(main_fn);
    pj_fn_free(lib_fn);
}
END_TEST

// Four tasks that read the value the main program's constructor set, for the start-up cases.
struct main_value_tasks {
    pj_fn *fn;
    pj_task *t[4];
};

static main_value_tasks main_value_tasks_new()
{
    main_value_tasks m;
    m.fn = fn0("main_value", main_value);
    for (pj_task *&t : m.t)
        t = pj_task_new(m.fn, nullptr);
    return m;
}

static void main_value_tasks_free(main_value_tasks &m)
{
    for (pj_task *t : m.t)
        pj_task_free(t);
    pj_fn_free(m.fn);
}

// Every one of the four tasks gave the value main's constructor set: a fully initialised worker.
static void assert_main_values(const pj_results *res)
{
    for (int i = 0; i < 4; i++)
        ck_assert_int_eq(pj_result_int(pj_results_at(res, i)), MAIN_CTOR_VALUE);
}

// Runs 4 tasks on "spawn" twice with the worker's start-up told to do `what`; both runs must
// end with every task failed with `code`, a message saying the start-up failed, well before
// the test's own timeout.  Returns the first run's seconds.
static double run_troubled(const char *what, double start_timeout, int code, const char *says)
{
    setenv("PJ_TEST_START_UP", what, 1);
    main_value_tasks m = main_value_tasks_new();
    pj_parallel *par = new_par("spawn", start_timeout);
    double first = 0;
    for (int run = 0; run < 2; run++) {
        double t0 = now_s();
        pj_results *res = nullptr;
        int rc = pj_run(par, m.t, 4, &res);
        if (run == 0)
            first = now_s() - t0;
        ck_assert_msg(rc == code, "run %d: %s (%s), not %s", run, pj_strerror(rc),
                      pj_parallel_errmsg(par), pj_strerror(code));
        ck_assert_msg(strstr(pj_parallel_errmsg(par), says) &&
                          strstr(pj_parallel_errmsg(par), "start-up"),
                      "run %d: %s", run, pj_parallel_errmsg(par));
        ck_assert_uint_eq(pj_results_count_status(res, code), 4);
        pj_results_free(res);
    }
    pj_parallel_free(par);
    main_value_tasks_free(m);
    unsetenv("PJ_TEST_START_UP");
    return first;
}

START_TEST(start_up_that_exits_is_an_error_at_the_first_run)
{
    double took = run_troubled("exit", 0, PJ_EEXITED, "exited with status 3 before it was ready");
    ck_assert_msg(took < 30, "the first run took %.1f s", took);
}
END_TEST

START_TEST(start_up_that_never_ends_is_an_error_at_the_first_run)
{
    double took = run_troubled("wait", 1.0, PJ_ETIMEDOUT, "was not ready to run tasks 1 s");
    ck_assert_msg(took >= 0.9 && took < 30, "the first run took %.1f s", took);
}
END_TEST

// A task deadline shorter than the workers' start-up: the batches they hold before they are
// ready are not "stalled" (no task could start yet), so every task runs and none times out.
START_TEST(start_up_longer_than_the_task_timeout_is_no_stall)
{
    setenv("PJ_TEST_START_UP", "slow", 1);
    main_value_tasks m = main_value_tasks_new();
    pj_config cfg = {};
    cfg.n_jobs = 2;
    cfg.backend = "spawn";
    cfg.batch_size = 1;
    cfg.timeout = 0.1;
    pj_parallel *par = pj_parallel_new(&cfg);
    ck_assert_ptr_nonnull(par);
    pj_results *res = nullptr;
    int rc = pj_run(par, m.t, 4, &res);
    unsetenv("PJ_TEST_START_UP");
    ck_assert_msg(rc == 0, "%s: %s", pj_strerror(rc), pj_parallel_errmsg(par));
    assert_main_values(res);
    pj_results_free(res);
    pj_parallel_free(par);
    main_value_tasks_free(m);
}
END_TEST

// pj_parallel_cancel while the workers are still in their start-up: the workers the cancel
// kills did not fail their start-up, so the next run on the handle works.
static void *cancel_after_100_ms(void *par)
{
    usleep(100 * 1000);
    pj_parallel_cancel(static_cast<pj_parallel *>(par));
    return nullptr;
}

START_TEST(cancel_during_start_up_leaves_the_pool_usable)
{
    setenv("PJ_TEST_START_UP", "slow", 1);
    main_value_tasks m = main_value_tasks_new();
    pj_parallel *par = new_par("spawn", 0);
    pthread_t canceller;
    ck_assert_int_eq(pthread_create(&canceller, nullptr, cancel_after_100_ms, par), 0);
    pj_results *res = nullptr;
    int rc = pj_run(par, m.t, 4, &res);
    pthread_join(canceller, nullptr);
    ck_assert_msg(rc == PJ_ECANCELLED, "cancelled run: %s (%s)", pj_strerror(rc),
                  pj_parallel_errmsg(par));
    pj_results_free(res);
    rc = pj_run(par, m.t, 4, &res);
    unsetenv("PJ_TEST_START_UP");
    ck_assert_msg(rc == 0, "the run after it: %s (%s)", pj_strerror(rc), pj_parallel_errmsg(par));
    assert_main_values(res);
    pj_results_free(res);
    pj_parallel_free(par);
    main_value_tasks_free(m);
}
END_TEST

START_TEST(worker_start_timeout_is_checked)
{
    pj_config cfg = {};
    cfg.worker_start_timeout = -1;
    ck_assert_ptr_null(pj_parallel_new(&cfg));
    ck_assert_int_eq(pj_last_error(), PJ_EINVAL);
    ck_assert_ptr_nonnull(strstr(pj_last_errmsg(), "worker_start_timeout"));
}
END_TEST

int main()
{
    Suite *s = suite_create("startup");
    const struct loop_case cases[] = {
        { "initialised_program", tasks_see_the_initialised_program },
    };
    add_loop_cases(s, cases, 1, 120, (int)N_BACKENDS);
    TCase *tc = tcase_create("start_up_failures");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, start_up_that_exits_is_an_error_at_the_first_run);
    tcase_add_test(tc, start_up_that_never_ends_is_an_error_at_the_first_run);
    tcase_add_test(tc, start_up_longer_than_the_task_timeout_is_no_stall);
    tcase_add_test(tc, cancel_during_start_up_leaves_the_pool_usable);
    tcase_add_test(tc, worker_start_timeout_is_checked);
    suite_add_tcase(s, tc);
    return run_suite(s);
}
