/* Futures: one conformance suite run over every backend (Check loop tests).  A backend not
 * registered in a build is skipped with a printed note.  (pj_process: test-process.c.) */
#include <parjob.h>

#include <check.h>

#include "helpers.h"
#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* A file that includes this one to run the cases over backends of its own (test-mpi-futures.c)
 * defines CONFORMANCE_BACKENDS and its own main. */
#ifndef CONFORMANCE_BACKENDS
#define CONFORMANCE_BACKENDS "threading", "fork", "spawn"
#define CONFORMANCE_MAIN
#endif
static const char *const backends[] = { CONFORMANCE_BACKENDS };
#define N_BACKENDS (int)(sizeof backends / sizeof backends[0])

/* ---- the functions the tasks call ------------------------------------------------------- */

static double nap(double seconds)
{
    struct timespec ts = { (time_t)seconds, (long)((seconds - (time_t)seconds) * 1e9) };
    while (nanosleep(&ts, &ts) != 0)
        ;
    return seconds;
}

static int square(int x)
{
    return x * x;
}

static int crash(int sig)
{
    raise(sig);
    return -1;
}

static int fail_if_negative(int x)
{
    if (x < 0)
        pj_fail("negative input %d", x);
    return x;
}

static pj_fn *nap_fn, *square_fn, *crash_fn, *fail_fn;

static void fns_setup(void)
{
    nap_fn = PJ_FN(nap, &ffi_type_double, &ffi_type_double);
    square_fn = PJ_FN(square, &ffi_type_sint, &ffi_type_sint);
    crash_fn = PJ_FN(crash, &ffi_type_sint, &ffi_type_sint);
    fail_fn = PJ_FN(fail_if_negative, &ffi_type_sint, &ffi_type_sint);
}

static void fns_teardown(void)
{
    pj_fn_free(nap_fn);
    pj_fn_free(square_fn);
    pj_fn_free(crash_fn);
    pj_fn_free(fail_fn);
}

/* The executor of the loop's backend, or NULL (and a note) when it is not in this build. */
static pj_executor *executor(int i, int n_jobs)
{
    if (!pj_backend_find(backends[i])) {
        printf("test-futures: backend \"%s\" is not registered in this build: skipped\n",
               backends[i]);
        return NULL;
    }
    pj_executor *ex = pj_executor_new(&(pj_config){ .n_jobs = n_jobs, .backend = backends[i] });
    ck_assert_msg(ex, "%s", pj_last_errmsg());
    return ex;
}

static bool is_process_backend(int i)
{
    const struct pj_backend *b = pj_backend_find(backends[i]);
    return b && (b->features & PJ_BACKEND_PROCESS);
}

/* Waits until f's task has started (a worker took it). */
static void wait_running(pj_future *f)
{
    double t0 = now_s();
    while (!pj_future_running(f) && !pj_future_done(f))
        ck_assert_msg(now_s() - t0 < 10, "the task never started"), nap(0.001);
}

/* ---- submit and result -------------------------------------------------------------------- */

START_TEST(submit_result)
{
    pj_executor *ex = executor(_i, 4);
    if (!ex)
        return;
    pj_task *t[100];
    pj_future *f[100];
    for (int k = 0; k < 100; k++) {
        t[k] = pj_delayed(square_fn, k);
        f[k] = pj_submit(ex, t[k]);
        ck_assert_msg(f[k], "%s", pj_last_errmsg());
    }
    for (int k = 0; k < 100; k++) {
        const pj_result *r;
        ck_assert_int_eq(pj_future_result(f[k], PJ_FOREVER, &r), 0);
        ck_assert_int_eq(pj_result_int(r), k * k);
        ck_assert_uint_eq(r->index, (size_t)k);
        ck_assert_uint_eq(pj_future_index(f[k]), (size_t)k);
        ck_assert_int_eq(pj_future_done(f[k]), 1);
        ck_assert_int_eq(pj_future_running(f[k]), 0);
        ck_assert_int_eq(pj_future_cancelled(f[k]), 0);
        ck_assert_int_eq(pj_future_cancel(f[k]), 0); /* finished: too late */
        pj_future_free(f[k]);
        pj_task_free(t[k]);
    }
    pj_executor_free(ex);
}
END_TEST

START_TEST(failure_status)
{
    pj_executor *ex = executor(_i, 2);
    if (!ex)
        return;
    pj_task *t = pj_delayed(fail_fn, -4);
    pj_future *f = pj_submit(ex, t);
    const pj_result *r;
    ck_assert_int_eq(pj_future_result(f, PJ_FOREVER, &r), PJ_EFAILED);
    ck_assert_ptr_nonnull(r);
    ck_assert_str_eq(r->message, "negative input -4");
    pj_future_free(f);
    pj_task_free(t);
    pj_executor_free(ex);
}
END_TEST

START_TEST(result_timeout_leaves_task_running)
{
    pj_executor *ex = executor(_i, 1);
    if (!ex)
        return;
    pj_task *t = pj_delayed(nap_fn, 0.3);
    pj_future *f = pj_submit(ex, t);
    const pj_result *r = (const pj_result *)1;
    double t0 = now_s();
    ck_assert_int_eq(pj_future_result(f, 0.05, &r), PJ_ETIMEDOUT);
    ck_assert_ptr_null(r);
    ck_assert_double_ge(now_s() - t0, 0.045);
    ck_assert_int_eq(pj_future_done(f), 0);
    ck_assert_int_eq(pj_future_result(f, PJ_FOREVER, &r), 0);
    ck_assert_double_eq_tol(pj_result_double(r), 0.3, 1e-9);
    pj_future_free(f);
    pj_task_free(t);
    pj_executor_free(ex);
}
END_TEST

/* ---- cancel ------------------------------------------------------------------------------- */

START_TEST(cancel_before_and_after_start)
{
    pj_executor *ex = executor(_i, 1);
    if (!ex)
        return;
    pj_task *slow = pj_delayed(nap_fn, 0.3), *quick = pj_delayed(square_fn, 3);
    pj_future *a = pj_submit(ex, slow);
    wait_running(a);
    pj_future *b = pj_submit(ex, quick);
    ck_assert_int_eq(pj_future_running(a), 1);
    ck_assert_int_eq(pj_future_cancel(a), 0); /* started: never interrupted */
    int cancelled = pj_future_cancel(b);
    if (!is_process_backend(_i))
        ck_assert_int_eq(cancelled, 1); /* one thread, busy with a: b has not started */
    const pj_result *r;
    if (cancelled) {
        ck_assert_int_eq(pj_future_cancelled(b), 1);
        ck_assert_int_eq(pj_future_done(b), 1);
        ck_assert_int_eq(pj_future_cancel(b), 1); /* again: still cancelled */
        ck_assert_int_eq(pj_future_result(b, 0, &r), PJ_ECANCELLED);
        ck_assert_int_eq(r->status, PJ_ECANCELLED);
    } else {
        ck_assert_int_eq(pj_future_result(b, PJ_FOREVER, &r), 0);
    }
    ck_assert_int_eq(pj_future_result(a, PJ_FOREVER, &r), 0);
    ck_assert_int_eq(pj_future_cancelled(a), 0);
    pj_executor_free(ex); /* the cancelled batch comes back unrun meanwhile */
    pj_future_free(a);
    pj_future_free(b);
    pj_task_free(slow);
    pj_task_free(quick);
}
END_TEST

/* ---- callbacks ---------------------------------------------------------------------------- */

struct counter {
    _Atomic int calls;
    _Atomic int order_errors;
    pid_t pid;
    bool ordered;   /* both callbacks were added while the future was pending */
};

static void count_cb(pj_future *f, void *data)
{
    struct counter *c = data;
    ck_assert_int_eq(pj_future_done(f), 1);
    if (getpid() != c->pid)
        atomic_fetch_add(&c->order_errors, 1000); /* must run in the submitting process */
    atomic_fetch_add(&c->calls, 1);
}

static void second_cb(pj_future *f, void *data)
{
    (void)f;
    struct counter *c = data;
    if (c->ordered && atomic_load(&c->calls) % 2 == 0)
        atomic_fetch_add(&c->order_errors, 1); /* count_cb, added first, has not run */
    atomic_fetch_add(&c->calls, 1);
}

START_TEST(callbacks_exactly_once)
{
    pj_executor *ex = executor(_i, 4);
    if (!ex)
        return;
    enum { N = 200 };
    struct counter c[N];
    pj_task *t[N];
    pj_future *f[N];
    /* The first task holds the workers a moment: callbacks are added while most are pending
     * (those added after a future is done run at once instead: no order to check then). */
    pj_task *hold = pj_delayed(nap_fn, 0.1);
    pj_future *held[4];
    for (int k = 0; k < 4; k++)
        held[k] = pj_submit(ex, hold);
    for (int k = 0; k < N; k++) {
        c[k] = (struct counter){ .pid = getpid() };
        t[k] = pj_delayed(square_fn, k);
        f[k] = pj_submit(ex, t[k]);
        c[k].ordered = !pj_future_done(f[k]) && !pj_future_running(f[k]);
        ck_assert_int_eq(pj_future_add_done_callback(f[k], count_cb, &c[k]), 0);
        ck_assert_int_eq(pj_future_add_done_callback(f[k], second_cb, &c[k]), 0);
    }
    pj_executor_shutdown(ex, 1, 0);
    for (int k = 0; k < N; k++) {
        ck_assert_int_eq(atomic_load(&c[k].calls), 2);
        ck_assert_int_eq(atomic_load(&c[k].order_errors), 0);
        /* Added after completion: runs at once, in this thread, once. */
        ck_assert_int_eq(pj_future_add_done_callback(f[k], count_cb, &c[k]), 0);
        ck_assert_int_eq(atomic_load(&c[k].calls), 3);
        pj_future_free(f[k]);
        pj_task_free(t[k]);
    }
    ck_assert_int_eq(pj_future_add_done_callback(NULL, count_cb, NULL), PJ_EINVAL);
    pj_executor_free(ex);
    for (int k = 0; k < 4; k++)
        pj_future_free(held[k]);
    pj_task_free(hold);
}
END_TEST

START_TEST(callback_of_cancelled_future)
{
    pj_executor *ex = executor(_i, 1);
    if (!ex)
        return;
    struct counter c = { .pid = getpid() };
    pj_task *slow = pj_delayed(nap_fn, 0.2), *quick = pj_delayed(square_fn, 2);
    pj_future *a = pj_submit(ex, slow);
    wait_running(a);
    pj_future *b = pj_submit(ex, quick);
    pj_future_add_done_callback(b, count_cb, &c);
    int cancelled = pj_future_cancel(b);
    if (cancelled)
        ck_assert_int_eq(atomic_load(&c.calls), 1); /* ran in cancel, in this thread */
    pj_executor_free(ex);
    ck_assert_int_eq(atomic_load(&c.calls), 1);   /* not again when the batch came back */
    pj_future_free(a);
    pj_future_free(b);
    pj_task_free(slow);
    pj_task_free(quick);
}
END_TEST

/* ---- as_completed and wait ----------------------------------------------------------------- */

START_TEST(as_completed_order_and_deadline)
{
    pj_executor *ex = executor(_i, 3);
    if (!ex)
        return;
    double secs[3] = { 0.4, 0.05, 0.2 };
    pj_task *t[3];
    pj_future *f[4];
    for (int k = 0; k < 3; k++)
        f[k] = pj_submit(ex, t[k] = pj_delayed(nap_fn, secs[k]));
    f[3] = f[0]; /* given twice, yielded once */
    pj_completed *it = pj_as_completed(f, 4, PJ_FOREVER);
    ck_assert_ptr_nonnull(it);
    pj_future *got;
    double expect[3] = { 0.05, 0.2, 0.4 };
    for (int k = 0; k < 3; k++) {
        ck_assert_int_eq(pj_completed_next(it, &got), 0);
        const pj_result *r;
        ck_assert_int_eq(pj_future_result(got, 0, &r), 0);
        ck_assert_double_eq_tol(pj_result_double(r), expect[k], 1e-9);
    }
    ck_assert_int_eq(pj_completed_next(it, &got), PJ_EEND);
    pj_completed_free(it);

    /* One deadline for the whole iteration. */
    pj_task *quick = pj_delayed(nap_fn, 0.02), *slow = pj_delayed(nap_fn, 0.8);
    pj_future *g[2] = { pj_submit(ex, slow), pj_submit(ex, quick) };
    double t0 = now_s();
    it = pj_as_completed(g, 2, 0.25);
    ck_assert_int_eq(pj_completed_next(it, &got), 0);
    ck_assert_ptr_eq(got, g[1]);
    ck_assert_int_eq(pj_completed_next(it, &got), PJ_ETIMEDOUT);
    ck_assert_ptr_null(got);
    double took = now_s() - t0;
    ck_assert_msg(took > 0.22 && took < 0.6, "deadline after %.3f s", took);
    pj_completed_free(it);
    pj_executor_free(ex);
    for (int k = 0; k < 3; k++) {
        pj_future_free(f[k]);
        pj_task_free(t[k]);
    }
    pj_future_free(g[0]);
    pj_future_free(g[1]);
    pj_task_free(quick);
    pj_task_free(slow);
}
END_TEST

START_TEST(wait_modes)
{
    pj_executor *ex = executor(_i, 3);
    if (!ex)
        return;
    pj_task *slow = pj_delayed(nap_fn, 0.6), *quick = pj_delayed(nap_fn, 0.03);
    pj_task *bad = pj_delayed(fail_fn, -1), *good = pj_delayed(fail_fn, 1);
    pj_future *s = pj_submit(ex, slow), *q = pj_submit(ex, quick);
    pj_future *fs[2] = { s, q };
    size_t n_done;
    double t0 = now_s();
    ck_assert_int_eq(pj_wait(fs, 2, PJ_FOREVER, PJ_FIRST_COMPLETED, &n_done), 0);
    ck_assert_double_lt(now_s() - t0, 0.4);
    ck_assert_uint_eq(n_done, 1);
    ck_assert_ptr_eq(fs[0], q); /* done first, then not done */
    ck_assert_ptr_eq(fs[1], s);

    fs[0] = s, fs[1] = q;
    ck_assert_int_eq(pj_wait(fs, 2, 0.1, PJ_ALL_COMPLETED, &n_done), PJ_ETIMEDOUT);
    ck_assert_uint_eq(n_done, 1);
    ck_assert_ptr_eq(fs[0], q);

    /* FIRST_EXCEPTION returns on a failure; without one, it waits for all. */
    pj_future *e = pj_submit(ex, bad), *ok = pj_submit(ex, good);
    pj_future *es[3] = { s, ok, e };
    ck_assert_int_eq(pj_wait(es, 3, PJ_FOREVER, PJ_FIRST_EXCEPTION, &n_done), 0);
    ck_assert_int_eq(pj_future_done(s), 0);
    ck_assert_uint_ge(n_done, 1);
    pj_future *oks[2] = { ok, q };
    ck_assert_int_eq(pj_wait(oks, 2, PJ_FOREVER, PJ_FIRST_EXCEPTION, &n_done), 0);
    ck_assert_uint_eq(n_done, 2);
    ck_assert_int_eq(pj_wait(oks, 2, PJ_FOREVER, 99, &n_done), PJ_EINVAL);
    ck_assert_int_eq(pj_wait(oks, 2, NAN, PJ_ALL_COMPLETED, &n_done), PJ_EINVAL);
    ck_assert_int_eq(pj_wait(NULL, 0, 0, PJ_ALL_COMPLETED, &n_done), 0);

    ck_assert_int_eq(pj_wait(fs, 2, PJ_FOREVER, PJ_ALL_COMPLETED, &n_done), 0);
    ck_assert_uint_eq(n_done, 2);
    pj_executor_free(ex);
    pj_future *all[4] = { s, q, e, ok };
    for (int k = 0; k < 4; k++)
        pj_future_free(all[k]);
    pj_task_free(slow);
    pj_task_free(quick);
    pj_task_free(bad);
    pj_task_free(good);
}
END_TEST

/* ---- map ---------------------------------------------------------------------------------- */

START_TEST(map_in_order_under_random_durations)
{
    pj_executor *ex = executor(_i, 4);
    if (!ex)
        return;
    enum { N = 60 };
    double secs[N];
    srand(7 + _i);
    for (int k = 0; k < N; k++)
        secs[k] = (rand() % 20) / 1000.0;
    size_t chunks[] = { 1, 3, 7, 100 };
    for (size_t c = 0; c < sizeof chunks / sizeof chunks[0]; c++) {
        pj_map *m = pj_map_start(ex, nap_fn, (const void *[]){ secs }, N, chunks[c],
                                 PJ_FOREVER);
        ck_assert_msg(m, "%s", pj_last_errmsg());
        const pj_result *r;
        for (int k = 0; k < N; k++) {
            ck_assert_int_eq(pj_map_next(m, &r), 0);
            ck_assert_uint_eq(r->index, (size_t)k);
            ck_assert_double_eq(pj_result_double(r), secs[k]);
        }
        ck_assert_int_eq(pj_map_next(m, &r), PJ_EEND);
        ck_assert_ptr_null(r);
        pj_map_free(m);
    }
    /* Empty, and a map freed early (its running chunks are waited for). */
    pj_map *m = pj_map_start(ex, nap_fn, (const void *[]){ secs }, 0, 1, PJ_FOREVER);
    const pj_result *r;
    ck_assert_int_eq(pj_map_next(m, &r), PJ_EEND);
    pj_map_free(m);
    m = pj_map_start(ex, nap_fn, (const void *[]){ secs }, N, 2, PJ_FOREVER);
    ck_assert_int_eq(pj_map_next(m, &r), 0);
    pj_map_free(m);
    /* The deadline. */
    double longer[2] = { 0.01, 0.6 };
    m = pj_map_start(ex, nap_fn, (const void *[]){ longer }, 2, 1, 0.2);
    ck_assert_int_eq(pj_map_next(m, &r), 0);
    ck_assert_int_eq(pj_map_next(m, &r), PJ_ETIMEDOUT);
    ck_assert_ptr_null(r);
    pj_map_free(m);
    /* Bad input. */
    ck_assert_ptr_null(pj_map_start(ex, nap_fn, NULL, 3, 1, PJ_FOREVER));
    ck_assert_int_eq(pj_last_error(), PJ_EINVAL);
    ck_assert_ptr_null(pj_map_start(ex, nap_fn, (const void *[]){ NULL }, 3, 1, PJ_FOREVER));
    ck_assert_int_eq(pj_last_error(), PJ_EINVAL);
    pj_executor_free(ex);
}
END_TEST

/* ---- shutdown ----------------------------------------------------------------------------- */

static void shutdown_case(int i, bool cancel_futures)
{
    pj_executor *ex = executor(i, 1);
    if (!ex)
        return;
    enum { N = 20 };
    pj_task *slow = pj_delayed(nap_fn, 0.2), *t[N];
    pj_future *a = pj_submit(ex, slow), *f[N];
    wait_running(a);
    for (int k = 0; k < N; k++)
        f[k] = pj_submit(ex, t[k] = pj_delayed(square_fn, k));
    ck_assert_int_eq(pj_executor_shutdown(ex, 1, cancel_futures), 0);
    const pj_result *r;
    ck_assert_int_eq(pj_future_result(a, 0, &r), 0); /* running: never cancelled */
    int n_cancelled = 0;
    for (int k = 0; k < N; k++) {
        ck_assert_int_eq(pj_future_done(f[k]), 1);
        int rc = pj_future_result(f[k], 0, &r);
        if (rc == PJ_ECANCELLED) {
            n_cancelled++;
        } else {
            ck_assert_int_eq(rc, 0);
            ck_assert_int_eq(pj_result_int(r), k * k);
        }
    }
    if (!cancel_futures)
        ck_assert_int_eq(n_cancelled, 0);
    else if (!is_process_backend(i))
        ck_assert_int_eq(n_cancelled, N);
    else
        ck_assert_int_gt(n_cancelled, 0);
    pj_task *late = pj_delayed(square_fn, 1);
    ck_assert_ptr_null(pj_submit(ex, late));
    ck_assert_int_eq(pj_last_error(), PJ_ESHUTDOWN);
    ck_assert_ptr_null(pj_map_start(ex, square_fn, (const void *[]){ (int[]){ 1 } }, 1, 1, 0));
    ck_assert_int_eq(pj_last_error(), PJ_ESHUTDOWN);
    ck_assert_int_eq(pj_executor_shutdown(ex, 1, 1), 0); /* again: harmless */
    pj_executor_free(ex);
    for (int k = 0; k < N; k++) {
        pj_future_free(f[k]);
        pj_task_free(t[k]);
    }
    pj_future_free(a);
    pj_task_free(slow);
    pj_task_free(late);
}

START_TEST(shutdown_without_cancel)
{
    shutdown_case(_i, false);
}
END_TEST

START_TEST(shutdown_with_cancel)
{
    shutdown_case(_i, true);
}
END_TEST

/* ---- scale, crashes, lifetimes -------------------------------------------------------------- */

START_TEST(ten_thousand_in_flight)
{
    pj_executor *ex = executor(_i, 4);
    if (!ex)
        return;
    enum { N = 10000 };
    pj_task **t = calloc(N, sizeof *t);
    pj_future **f = calloc(N, sizeof *f);
    for (int k = 0; k < N; k++) {
        f[k] = pj_submit(ex, t[k] = pj_delayed(square_fn, k % 1000));
        ck_assert_ptr_nonnull(f[k]);
    }
    pj_completed *it = pj_as_completed(f, N, 60);
    pj_future *got;
    long sum = 0, expect = 0;
    int n = 0;
    while (pj_completed_next(it, &got) == 0) {
        const pj_result *r;
        ck_assert_int_eq(pj_future_result(got, 0, &r), 0);
        sum += pj_result_int(r);
        n++;
    }
    for (int k = 0; k < N; k++)
        expect += (long)(k % 1000) * (k % 1000);
    ck_assert_int_eq(n, N);
    ck_assert_int_eq(sum, expect);
    pj_completed_free(it);
    for (int k = 0; k < N; k++) {
        pj_future_free(f[k]);
        pj_task_free(t[k]);
    }
    free(f);
    free(t);
    pj_executor_free(ex);
}
END_TEST

START_TEST(crash_fails_only_its_future)
{
    if (pj_backend_find(backends[_i]) && !is_process_backend(_i)) {
        printf("test-futures: a crash would take the test down with backend \"%s\": skipped\n",
               backends[_i]);
        return;
    }
    pj_executor *ex = executor(_i, 2);
    if (!ex)
        return;
    enum { N = 20 };
    pj_task *t[N], *bomb = pj_delayed(crash_fn, SIGSEGV);
    pj_future *f[N], *b = NULL;
    for (int k = 0; k < N; k++) {
        f[k] = pj_submit(ex, t[k] = pj_delayed(square_fn, k));
        if (k == N / 2)
            b = pj_submit(ex, bomb);
    }
    const pj_result *r;
    ck_assert_int_eq(pj_future_result(b, PJ_FOREVER, &r), PJ_ECRASHED);
    ck_assert_int_eq(r->code, SIGSEGV);
    for (int k = 0; k < N; k++) {
        ck_assert_int_eq(pj_future_result(f[k], PJ_FOREVER, &r), 0);
        ck_assert_int_eq(pj_result_int(r), k * k);
    }
    /* The pool is not broken (unlike BrokenProcessPool). */
    pj_future *after = pj_submit(ex, t[3]);
    ck_assert_int_eq(pj_future_result(after, PJ_FOREVER, &r), 0);
    ck_assert_int_eq(pj_result_int(r), 9);
    pj_executor_free(ex);
    for (int k = 0; k < N; k++) {
        pj_future_free(f[k]);
        pj_task_free(t[k]);
    }
    pj_future_free(b);
    pj_future_free(after);
    pj_task_free(bomb);
}
END_TEST

START_TEST(future_freed_before_done)
{
    pj_executor *ex = executor(_i, 2);
    if (!ex)
        return;
    pj_task *t = pj_delayed(nap_fn, 0.05);
    for (int k = 0; k < 4; k++)
        pj_future_free(pj_submit(ex, t));
    pj_executor_free(ex); /* waits for them: t may be freed after */
    pj_task_free(t);
}
END_TEST

START_TEST(raw_pointer_on_process_backend)
{
    if (!pj_backend_find(backends[_i]) || !is_process_backend(_i))
        return;
    pj_fn *strlen_fn = PJ_FN(strlen, &ffi_type_uint64, &ffi_type_pointer);
    pj_executor *ex = executor(_i, 1);
    pj_task *t = pj_delayed(strlen_fn, (const char *)"hello");
    ck_assert_ptr_null(pj_submit(ex, t));
    ck_assert_int_eq(pj_last_error(), PJ_EPOINTER);
    ck_assert_ptr_nonnull(strstr(pj_last_errmsg(), "pj_cstr"));
    pj_task_free(t);
    pj_executor_free(ex);
    pj_fn_free(strlen_fn);
}
END_TEST

/* ---- bad input and the sequential backend -------------------------------------------------- */

START_TEST(bad_input)
{
    ck_assert_ptr_null(pj_executor_new(&(pj_config){ .backend = "nonesuch" }));
    ck_assert_int_eq(pj_last_error(), PJ_EBACKEND);
    ck_assert_ptr_null(pj_executor_new(&(pj_config){ .n_jobs = 2, .timeout = 1 }));
    ck_assert_int_eq(pj_last_error(), PJ_EINVAL);
    ck_assert_ptr_null(pj_submit(NULL, NULL));
    ck_assert_int_eq(pj_last_error(), PJ_EINVAL);
    const pj_result *r;
    ck_assert_int_eq(pj_future_result(NULL, 0, &r), PJ_EINVAL);
    ck_assert_int_eq(pj_future_done(NULL), PJ_EINVAL);
    ck_assert_int_eq(pj_future_cancel(NULL), PJ_EINVAL);
    ck_assert_int_eq(pj_executor_shutdown(NULL, 1, 1), PJ_EINVAL);
    pj_future *nulls[1] = { NULL };
    ck_assert_ptr_null(pj_as_completed(nulls, 1, 1));
    ck_assert_int_eq(pj_last_error(), PJ_EINVAL);
    pj_future_free(NULL);
    pj_executor_free(NULL);
    pj_completed_free(NULL);
    pj_map_free(NULL);

    pj_executor *ex = pj_executor_new(&(pj_config){ .n_jobs = 1, .backend = "sequential" });
    ck_assert_ptr_null(pj_submit(ex, NULL));
    pj_task *t = pj_delayed(square_fn, 5);
    pj_future *f = pj_submit(ex, t);
    ck_assert_int_eq(pj_future_done(f), 1); /* ran inside pj_submit */
    ck_assert_int_eq(pj_future_result(f, NAN, &r), PJ_EINVAL);
    ck_assert_int_eq(pj_future_result(f, 0, &r), 0);
    ck_assert_int_eq(pj_result_int(r), 25);
    pj_future_free(f);
    pj_task_free(t);
    pj_executor_free(ex);
}
END_TEST

static Suite *futures_suite(void)
{
    Suite *s = suite_create("futures");
    TCase *tc = tcase_create("executor");
    tcase_add_checked_fixture(tc, fns_setup, fns_teardown);
    tcase_set_timeout(tc, 60);
    tcase_add_loop_test(tc, submit_result, 0, N_BACKENDS);
    tcase_add_loop_test(tc, failure_status, 0, N_BACKENDS);
    tcase_add_loop_test(tc, result_timeout_leaves_task_running, 0, N_BACKENDS);
    tcase_add_loop_test(tc, cancel_before_and_after_start, 0, N_BACKENDS);
    tcase_add_loop_test(tc, callbacks_exactly_once, 0, N_BACKENDS);
    tcase_add_loop_test(tc, callback_of_cancelled_future, 0, N_BACKENDS);
    tcase_add_loop_test(tc, as_completed_order_and_deadline, 0, N_BACKENDS);
    tcase_add_loop_test(tc, wait_modes, 0, N_BACKENDS);
    tcase_add_loop_test(tc, map_in_order_under_random_durations, 0, N_BACKENDS);
    tcase_add_loop_test(tc, shutdown_without_cancel, 0, N_BACKENDS);
    tcase_add_loop_test(tc, shutdown_with_cancel, 0, N_BACKENDS);
    tcase_add_loop_test(tc, ten_thousand_in_flight, 0, N_BACKENDS);
    tcase_add_loop_test(tc, crash_fails_only_its_future, 0, N_BACKENDS);
    tcase_add_loop_test(tc, future_freed_before_done, 0, N_BACKENDS);
    tcase_add_loop_test(tc, raw_pointer_on_process_backend, 0, N_BACKENDS);
    tcase_add_test(tc, bad_input);
    suite_add_tcase(s, tc);
    return s;
}

#ifdef CONFORMANCE_MAIN
int main(void)
{
    return run_suite(futures_suite());
}
#endif
