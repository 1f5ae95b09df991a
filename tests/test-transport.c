/* The process pool over a transport (struct pj__transport_ops): a backend of this test's own
 * runs the pool's policy over a transport that counts every call and passes it on to the
 * local one.  The results are the fork backend's, and the transport is called per batch and
 * per event, never per task: what the hot path must keep.  A transport whose starts are
 * slow shows that the first results do not wait for every worker to start. */
#include "process.h" /* the pool, its transport interface and the fork launcher */

#include "helpers.h"

#include <stdatomic.h>
#include <unistd.h>

static _Atomic long n_start, n_send, n_receive, n_reap;

static int counted_open(struct pj__transport **out, int n, const struct pj__proc_ops *ops,
                        const struct pj__inner *inner, char *err, size_t errlen)
{
    return pj__transport_local.open(out, n, ops, inner, err, errlen);
}

static pid_t counted_start(struct pj__transport *t, int i, void *tag, char *err, size_t errlen)
{
    n_start++;
    return pj__transport_local.start(t, i, tag, err, errlen);
}

static void counted_send(struct pj__transport *t, int i, const void *msg, size_t len)
{
    n_send++;
    pj__transport_local.send(t, i, msg, len);
}

static ssize_t counted_receive(struct pj__transport *t, int i, void *buf, size_t cap)
{
    n_receive++;
    return pj__transport_local.receive(t, i, buf, cap);
}

static int counted_reap(struct pj__transport *t, int i)
{
    n_reap++;
    return pj__transport_local.reap(t, i);
}

static const struct pj__transport_ops counted = {
    .name = "counted",
    .open = counted_open,
    .start = counted_start,
    .send = counted_send,
    .receive = counted_receive,
    .reap = counted_reap,
    /* passed on as they are (register_once: not constant expressions in C) */
    .region = NULL,
    .wait = NULL,
    .wake = NULL,
    .kill = NULL,
    .close = NULL,
};

static struct pj__transport_ops counted_full;

static const struct pj__proc_ops counted_ops = {
    .transport = &counted_full,
    .launch = pj__fork_launch,
    .fnref = &pj__fnref_pointer,
    .startup = "its start-up in the forked child",
};

static int counted_backend_open(void **state, int n_workers, const pj_config *config,
                                char *err, size_t errlen)
{
    return pj__procpool_open(state, n_workers, config, &counted_ops, err, errlen);
}

static const struct pj_backend counted_backend = {
    .version = PJ_BACKEND_VERSION,
    .name = "counted-fork",
    .display_name = "CountedForkBackend",
    .features = PJ_BACKEND_PROCESS,
    .open = counted_backend_open,
    .submit = pj__procpool_submit,
    .stop_task = pj__procpool_stop_task,
    .close = pj__procpool_close,
};

static int add(int a, int b)
{
    return a + b;
}

static int crash_on(int x, int bad)
{
    if (x == bad)
        __builtin_trap();
    return x;
}

static void register_once(void)
{
    n_start = n_send = n_receive = n_reap = 0;
    counted_full = counted;
    counted_full.region = pj__transport_local.region;
    counted_full.wait = pj__transport_local.wait;
    counted_full.wake = pj__transport_local.wake;
    counted_full.kill = pj__transport_local.kill;
    counted_full.close = pj__transport_local.close;
    if (!pj_backend_find("counted-fork"))
        ck_assert_int_eq(pj_backend_register(&counted_backend), 0);
}

START_TEST(the_pool_calls_its_transport_per_batch_not_per_task)
{
    register_once();
    enum { N = 20000, BATCH = 500 };
    pj_fn *fn = PJ_FN(add, &ffi_type_sint, &ffi_type_sint, &ffi_type_sint);
    pj_task **tasks = malloc(N * sizeof *tasks);
    for (int i = 0; i < N; i++)
        tasks[i] = pj_delayed(fn, i, 1);
    pj_parallel *par = pj_parallel_new(&(pj_config){ .n_jobs = 2, .backend = "counted-fork",
                                                     .batch_size = BATCH });
    pj_results *res;
    int rc = pj_run(par, tasks, N, &res);
    ck_assert_msg(rc == 0, "%s", pj_parallel_errmsg(par));
    for (int i = 0; i < N; i++)
        ck_assert_int_eq(pj_result_int(pj_results_at(res, (size_t)i)), i + 1);
    long batches = N / BATCH;
    ck_assert_int_eq(n_start, 2);
    /* One message per batch (its body, or where it lies in the region). */
    ck_assert_msg(n_send == batches, "%ld sends for %ld batches", (long)n_send, batches);
    /* Each batch's DONE (and READY, and the end of each channel) is read with a receive or
     * two; never one per task. */
    ck_assert_msg(n_receive <= 4 * batches + 8, "%ld receives for %ld batches",
                  (long)n_receive, batches);
    pj_results_free(res);
    pj_parallel_free(par);
    ck_assert_int_eq(n_reap, 0); /* close ends the workers left, in parallel */
    for (int i = 0; i < N; i++)
        pj_task_free(tasks[i]);
    free(tasks);
    pj_fn_free(fn);
}
END_TEST

/* Crash attribution, the re-run of the batch's other tasks and the replacement of the worker
 * are the pool's policy, over whatever transport: the worker's end reaches it as the end of
 * its channel and a reap. */
START_TEST(a_crash_over_the_transport_is_one_tasks_status)
{
    register_once();
    enum { N = 40, BAD = 17 };
    pj_fn *fn = PJ_FN(crash_on, &ffi_type_sint, &ffi_type_sint, &ffi_type_sint);
    pj_task *tasks[N];
    for (int i = 0; i < N; i++)
        tasks[i] = pj_delayed(fn, i, BAD);
    pj_parallel *par = pj_parallel_new(&(pj_config){ .n_jobs = 2, .backend = "counted-fork",
                                                     .batch_size = 8,
                                                     .on_error = PJ_ON_ERROR_CONTINUE });
    pj_results *res;
    pj_run(par, tasks, N, &res);
    ck_assert_ptr_nonnull(res);
    for (int i = 0; i < N; i++) {
        const pj_result *r = pj_results_at(res, (size_t)i);
        if (i == BAD) {
            ck_assert_int_eq(r->status, PJ_ECRASHED);
        } else {
            ck_assert_msg(r->status == 0, "task %d: %s", i, pj_strerror(r->status));
            ck_assert_int_eq(pj_result_int(r), i);
        }
    }
    ck_assert_int_ge(n_reap, 1);
    pj_results_free(res);
    pj_parallel_free(par);
    for (int i = 0; i < N; i++)
        pj_task_free(tasks[i]);
    pj_fn_free(fn);
}
END_TEST

/* ---- a transport whose starts are slow -------------------------------------------------- */

/* Every start after the first takes SLOW_START_MS more (the first worker starts at once): the
 * pool of slow_ops takes about n * SLOW_START_MS to start n workers, far longer than one of
 * them takes to run a tiny task.  n_started counts the starts begun. */
#define SLOW_START_MS 20
static _Atomic long n_started, n_retired;
static struct pj__transport_ops slow_full;

static pid_t slow_start(struct pj__transport *t, int i, void *tag, char *err, size_t errlen)
{
    if (n_started++ > 0)
        usleep(SLOW_START_MS * 1000);
    return pj__transport_local.start(t, i, tag, err, errlen);
}

static int slow_reap(struct pj__transport *t, int i)
{
    n_retired++;
    return pj__transport_local.reap(t, i);
}

/* spawn's workers: they start by exec, so the pool starts them while the run goes on even
 * where a sanitizer's allocator keeps fork workers from starting during a run. */
static const struct pj__proc_ops slow_ops = {
    .transport = &slow_full,
    .launch = pj__spawn_launch,
    .fnref = &pj__fnref_module,
    .startup = "the program's start-up",
};

static int slow_backend_open(void **state, int n_workers, const pj_config *config, char *err,
                             size_t errlen)
{
    return pj__procpool_open(state, n_workers, config, &slow_ops, err, errlen);
}

static const struct pj_backend slow_backend = {
    .version = PJ_BACKEND_VERSION,
    .name = "slow-start-spawn",
    .display_name = "SlowStartSpawnBackend",
    .features = PJ_BACKEND_PROCESS,
    .open = slow_backend_open,
    .submit = pj__procpool_submit,
    .stop_task = pj__procpool_stop_task,
    .close = pj__procpool_close,
};

static void register_slow_once(void)
{
    n_started = n_retired = 0;
    slow_full = pj__transport_local;
    slow_full.name = "slow-start";
    slow_full.start = slow_start;
    slow_full.reap = slow_reap;
    if (!pj_backend_find("slow-start-spawn"))
        ck_assert_int_eq(pj_backend_register(&slow_backend), 0);
}

/* One run of n tiny tasks on par: the first result comes while fewer than n workers have
 * begun to start (n_started since the caller zeroed it); every result is right. */
static void first_result_before_the_last_start(pj_parallel *par, pj_task **tasks, int n,
                                               const char *which)
{
    pj_iter *it = pj_start(par, tasks, (size_t)n);
    ck_assert_msg(it != NULL, "%s", pj_parallel_errmsg(par));
    pj_result r;
    ck_assert_int_eq(pj_next(it, &r), 0);
    long started = n_started;
    ck_assert_msg(started < n, "%s: the first result came after all %d workers had started",
                  which, n);
    int sum = pj_result_int(&r), got = 1;
    while (pj_next(it, &r) == 0) {
        ck_assert_int_eq(r.status, 0);
        sum += pj_result_int(&r);
        got++;
    }
    ck_assert_int_eq(got, n);
    ck_assert_int_eq(sum, n * (n - 1) / 2 + n);
    pj_iter_close(it);
}

/* The first results do not wait for the last worker to start (issue 18): the pool hands
 * batches to the workers that have started while it starts the others.  Starting all N
 * workers takes over a second here; the first result must come while some have not begun.
 * The same when a later run starts them again, after idle_worker_timeout retired them all. */
START_TEST(the_first_result_does_not_wait_for_every_worker_to_start)
{
    register_slow_once();
    enum { N = 64 };
    pj_fn *fn = PJ_FN(add, &ffi_type_sint, &ffi_type_sint, &ffi_type_sint);
    pj_task *tasks[N];
    for (int i = 0; i < N; i++)
        tasks[i] = pj_delayed(fn, i, 1);
    pj_parallel *par = pj_parallel_new(&(pj_config){ .n_jobs = N,
                                                     .backend = "slow-start-spawn",
                                                     .return_as = PJ_GENERATOR_UNORDERED,
                                                     .idle_worker_timeout = 0.5 });
    first_result_before_the_last_start(par, tasks, N, "the first run");
    for (int waited = 0; n_retired < N && waited < 600; waited++)
        usleep(50 * 1000);
    ck_assert_int_eq(n_retired, N);
    n_started = 0;
    first_result_before_the_last_start(par, tasks, N, "a run after idle_worker_timeout");
    pj_parallel_free(par);
    for (int i = 0; i < N; i++)
        pj_task_free(tasks[i]);
    pj_fn_free(fn);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("transport");
    TCase *tc = tcase_create("transport");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, the_pool_calls_its_transport_per_batch_not_per_task);
    tcase_add_test(tc, a_crash_over_the_transport_is_one_tasks_status);
    tcase_add_test(tc, the_first_result_does_not_wait_for_every_worker_to_start);
    suite_add_tcase(s, tc);
    return run_suite(s);
}
