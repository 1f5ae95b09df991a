/* One child start-up (child.c) for every worker process: a fork pool's, a spawn pool's and
 * pj_process's of either method, whatever the parent's signal state; and pj_process's forked
 * worker, now a one-batch worker of the fork backend, still runs what multiprocessing's does. */
#include <parjob.h>

#include "helpers.h"

#include <signal.h>
#include <string.h>
#include <unistd.h>

/* What the worker's signal state differs in from a fresh process's, as bits. */
enum { HANDLED = 1, IGNORED = 2, BLOCKED = 4 };

static int inherited_signal_state(void)
{
    struct sigaction sa;
    int seen = 0;
    if (sigaction(SIGUSR1, NULL, &sa) == 0 && sa.sa_handler != SIG_DFL)
        seen |= HANDLED;
    if (sigaction(SIGINT, NULL, &sa) == 0 && sa.sa_handler != SIG_DFL)
        seen |= IGNORED;
    sigset_t mask;
    if (sigprocmask(SIG_SETMASK, NULL, &mask) == 0 && sigismember(&mask, SIGUSR2))
        seen |= BLOCKED;
    return seen;
}

static void on_usr1(int sig)
{
    (void)sig;
}

/* The parent's state the workers must not keep: a handler, an ignored signal, a blocked one. */
struct parent_signals {
    struct sigaction usr1, intr;
    sigset_t mask;
};

static void parent_signals_set(struct parent_signals *old)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_usr1;
    ck_assert_int_eq(sigaction(SIGUSR1, &sa, &old->usr1), 0);
    sa.sa_handler = SIG_IGN;
    ck_assert_int_eq(sigaction(SIGINT, &sa, &old->intr), 0);
    sigset_t block;
    sigemptyset(&block);
    sigaddset(&block, SIGUSR2);
    ck_assert_int_eq(sigprocmask(SIG_BLOCK, &block, &old->mask), 0);
}

static void parent_signals_restore(const struct parent_signals *old)
{
    sigaction(SIGUSR1, &old->usr1, NULL);
    sigaction(SIGINT, &old->intr, NULL);
    sigprocmask(SIG_SETMASK, &old->mask, NULL);
}

static const char *const pools[] = { "fork", "spawn" };

/* A pool worker's crash must reach the pool as its signal, whatever handler the program has;
 * the program's other handlers stay in a forked one (multiprocessing's do too: a Ctrl-C
 * handler, test-worker-faults' sigint cases). */
static int crash_signal_state(void)
{
    struct sigaction sa;
    int seen = 0;
    if (sigaction(SIGSEGV, NULL, &sa) == 0 && sa.sa_handler != SIG_DFL)
        seen |= HANDLED;
    sigset_t mask;
    if (sigprocmask(SIG_SETMASK, NULL, &mask) == 0 && sigismember(&mask, SIGUSR2))
        seen |= BLOCKED;
    return seen;
}

START_TEST(a_pool_worker_starts_with_default_crash_signals)
{
    struct parent_signals old;
    parent_signals_set(&old);
    struct sigaction segv, was;
    memset(&segv, 0, sizeof segv);
    segv.sa_handler = on_usr1;
    ck_assert_int_eq(sigaction(SIGSEGV, &segv, &was), 0);
    pj_fn *fn = PJ_FN(crash_signal_state, &ffi_type_sint);
    pj_task *t = pj_task_new(fn, NULL);
    pj_parallel *par = pj_parallel_new(&(pj_config){ .n_jobs = 1, .backend = pools[_i] });
    pj_results *res;
    int rc = pj_run(par, &t, 1, &res);
    ck_assert_msg(rc == 0, "%s: %s", pools[_i], pj_parallel_errmsg(par));
    int seen = pj_result_int(pj_results_at(res, 0));
    ck_assert_msg(seen == 0, "%s worker: inherited %s%s", pools[_i],
                  seen & HANDLED ? "a SIGSEGV handler " : "", seen & BLOCKED ? "SIGUSR2 blocked" : "");
    pj_results_free(res);
    pj_parallel_free(par);
    pj_task_free(t);
    pj_fn_free(fn);
    sigaction(SIGSEGV, &was, NULL);
    parent_signals_restore(&old);
}
END_TEST

START_TEST(a_process_starts_with_default_signals)
{
    struct parent_signals old;
    parent_signals_set(&old);
    pj_fn *fn = PJ_FN(inherited_signal_state, &ffi_type_sint);
    pj_task *t = pj_task_new(fn, NULL);
    pj_process *p = pj_process_new(t, pools[_i]);
    ck_assert_ptr_nonnull(p);
    ck_assert_msg(pj_process_start(p) == 0, "%s", pj_last_errmsg());
    ck_assert_int_eq(pj_process_join(p, 60), 0);
    const pj_result *r;
    ck_assert_msg(pj_process_result(p, &r) == 0, "%s", pj_last_errmsg());
    int seen = pj_result_int(r);
    ck_assert_msg(seen == 0, "%s process: inherited %s%s%s", pools[_i],
                  seen & HANDLED ? "a SIGUSR1 handler " : "",
                  seen & IGNORED ? "SIGINT ignored " : "", seen & BLOCKED ? "SIGUSR2 blocked" : "");
    int code = -99;
    ck_assert_int_eq(pj_process_exitcode(p, &code), 1);
    ck_assert_int_eq(code, 0);
    pj_process_free(p);
    pj_task_free(t);
    pj_fn_free(fn);
    parent_signals_restore(&old);
}
END_TEST

/* A process's task that closes stdin, stdout and stderr still gets its result back: the
 * channel lies above them. */
static int close_standard_streams(void)
{
    close(0);
    close(1);
    close(2);
    return 42;
}

START_TEST(a_process_whose_task_closes_the_standard_streams_returns_its_result)
{
    pj_fn *fn = PJ_FN(close_standard_streams, &ffi_type_sint);
    pj_task *t = pj_task_new(fn, NULL);
    pj_process *p = pj_process_new(t, pools[_i]);
    ck_assert_ptr_nonnull(p);
    ck_assert_msg(pj_process_start(p) == 0, "%s", pj_last_errmsg());
    ck_assert_int_eq(pj_process_join(p, 60), 0);
    const pj_result *r;
    ck_assert_msg(pj_process_result(p, &r) == 0, "%s", pj_last_errmsg());
    ck_assert_int_eq(pj_result_int(r), 42);
    pj_process_free(p);
    pj_task_free(t);
    pj_fn_free(fn);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("child");
    const struct loop_case cases[] = {
        { "pool_signals", a_pool_worker_starts_with_default_crash_signals },
        { "process_signals", a_process_starts_with_default_signals },
        { "process_streams", a_process_whose_task_closes_the_standard_streams_returns_its_result },
    };
    add_loop_cases(s, cases, sizeof cases / sizeof *cases, 120, 2);
    return run_suite(s);
}
