/* The dispatcher (issue 3): list and generator modes, lazy producers and their ownership, the
 * pre_dispatch window, early close, per-task timeouts, auto batching, and a property test over
 * random configurations. */
#include <parjob.h>

#include "internal.h" /* pj_parallel.window: the evaluated pre_dispatch, for the bound checks */
#include "taskmem.h"

#include <check.h>

#include "helpers.h"
#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

/* Every case runs over all four (Check loop tests, _i the index); a case that cannot apply to
 * one says why where it is added to the suite. */
static const char *const backends[] = { "sequential", "threading", "fork", "spawn" };
#define N_BACKENDS 4

/* ---- helpers ------------------------------------------------------------------------------- */

static pj_parallel *new_par(const pj_config *cfg)
{
    pj_parallel *par = pj_parallel_new(cfg);
    ck_assert_msg(par != NULL, "pj_parallel_new: %s", pj_last_errmsg());
    return par;
}

/* What the tasks record and the tests read, in memory the test process and every worker
 * share: fork workers inherit the mapping made in main; spawned workers (a fresh image of this
 * program) map the same memfd through /proc/<pid>/fd/<fd> of the process that made it, named
 * in SHARED_ENV (they inherit the environment, not the descriptor). */
#define MAX_TASKS 4096
#define SHARED_ENV "PJ_TEST_DISPATCH_SHARED"
struct shared_state {
    _Atomic int ran[MAX_TASKS];  /* calls of job() per task index */
    _Atomic long finished;       /* job() calls that returned */
    _Atomic uint64_t sleeper_start_ns[64];
    _Atomic int running_now, running_max;
    _Atomic int others_done;
};
static struct shared_state *_Atomic shared_mem;

static struct shared_state *map_shared_fd(int fd)
{
    void *mem = mmap(NULL, sizeof(struct shared_state), PROT_READ | PROT_WRITE, MAP_SHARED, fd,
                     0);
    return mem == MAP_FAILED ? NULL : mem;
}

/* The shared state; in a spawned worker, mapped at its first use. */
static struct shared_state *shared(void)
{
    struct shared_state *s = atomic_load(&shared_mem);
    if (s)
        return s;
    const char *path = getenv(SHARED_ENV);
    int fd = path ? open(path, O_RDWR | O_CLOEXEC) : -1;
    s = fd >= 0 ? map_shared_fd(fd) : NULL;
    if (fd >= 0)
        close(fd);
    if (!s) {
        static const char msg[] = "test-dispatch: a worker cannot map the shared state\n";
        if (write(2, msg, sizeof msg - 1) < 0)
            _exit(4);
        abort();
    }
    struct shared_state *none = NULL;
    if (!atomic_compare_exchange_strong(&shared_mem, &none, s)) {
        munmap(s, sizeof *s);
        s = none;
    }
    return s;
}

/* In main, before any case: the memfd stays open for spawned workers to find. */
static int share_state(void)
{
    int fd = memfd_create("test-dispatch-shared", MFD_CLOEXEC);
    if (fd < 0 || ftruncate(fd, sizeof(struct shared_state)) != 0)
        return -1;
    struct shared_state *s = map_shared_fd(fd);
    if (!s)
        return -1;
    atomic_store(&shared_mem, s);
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/fd/%d", (int)getpid(), fd);
    return setenv(SHARED_ENV, path, 1);
}

/* The task most tests run: counts its calls, sleeps us, fails when asked, returns 3 i + 1. */
static int64_t job(int64_t i, int us, int fail)
{
    if (i >= 0 && i < MAX_TASKS)
        atomic_fetch_add(&shared()->ran[i], 1);
    if (us > 0)
        sleep_us(us);
    if (fail)
        pj_fail("task %lld fails", (long long)i);
    atomic_fetch_add(&shared()->finished, 1);
    return 3 * i + 1;
}

static pj_fn *job_fn(void)
{
    pj_fn *fn = PJ_FN(job, &ffi_type_sint64, &ffi_type_sint64, &ffi_type_sint, &ffi_type_sint);
    ck_assert_ptr_nonnull(fn);
    return fn;
}

static void reset_counters(void)
{
    for (int i = 0; i < MAX_TASKS; i++)
        atomic_store(&shared()->ran[i], 0);
    atomic_store(&shared()->finished, 0);
}

static pj_task **make_tasks(pj_fn *fn, size_t n, int us)
{
    pj_task **t = malloc(n * sizeof *t);
    for (size_t i = 0; i < n; i++) {
        t[i] = pj_delayed(fn, (int64_t)i, us, 0);
        ck_assert_ptr_nonnull(t[i]);
    }
    return t;
}

static void free_tasks(pj_task **tasks, size_t n)
{
    for (size_t i = 0; i < n; i++)
        pj_task_free(tasks[i]);
    free(tasks);
}

/* A producer of `limit` job tasks (or endless with limit < 0).  It records how far ahead of
 * the consumer it is asked to run: taken (this task included) minus results returned. */
struct producer {
    pj_fn *fn;
    long limit;
    long taken;               /* tasks handed over */
    int us;                   /* each task's sleep */
    int fail_after;           /* > 0: return -1 once this many tasks were handed over */
    bool null_task;           /* return 1 with no task instead of failing */
    long call_sleep_us;       /* the producer itself is slow */
    _Atomic long returned;    /* results the consumer has received (generators), or tasks
                                 finished (list) */
    bool count_finished;      /* list mode: returned reads `finished` */
    long max_ahead;
    _Atomic int calls, in_call;
};

static int produce(void *state, pj_task **task)
{
    struct producer *p = state;
    atomic_fetch_add(&p->in_call, 1);
    atomic_fetch_add(&p->calls, 1);
    if (p->call_sleep_us)
        sleep_us(p->call_sleep_us);
    int rc;
    if (p->fail_after && p->taken == p->fail_after) {
        rc = p->null_task ? 1 : -1;
        *task = NULL;
    } else if (p->limit >= 0 && p->taken >= p->limit) {
        rc = 0;
    } else {
        *task = pj_delayed(p->fn, (int64_t)p->taken, p->us, 0);
        p->taken++;
        long returned = p->count_finished ? atomic_load(&shared()->finished)
                                          : atomic_load(&p->returned);
        if (p->taken - returned > p->max_ahead)
            p->max_ahead = p->taken - returned;
        rc = 1;
    }
    atomic_fetch_sub(&p->in_call, 1);
    return rc;
}

static struct producer producer_of(long limit, int us)
{
    return (struct producer){ .fn = job_fn(), .limit = limit, .us = us };
}

/* Drains an iterator: checks order (ordered) or that each index comes once (unordered), every
 * value, and returns the count. */
static size_t drain(pj_iter *it, bool ordered, struct producer *p, long consumer_sleep_us)
{
    static unsigned char seen[MAX_TASKS];
    memset(seen, 0, sizeof seen);
    pj_result r;
    size_t k = 0;
    int rc;
    while ((rc = pj_next(it, &r)) == 0) {
        if (p)
            atomic_fetch_add(&p->returned, 1);
        if (ordered)
            ck_assert_uint_eq(r.index, k);
        ck_assert_uint_lt(r.index, MAX_TASKS);
        ck_assert_msg(!seen[r.index], "index %zu yielded twice", r.index);
        seen[r.index] = 1;
        ck_assert_int_eq(r.status, 0);
        ck_assert_int_eq(pj_result_i64(&r), 3 * (int64_t)r.index + 1);
        k++;
        if (consumer_sleep_us)
            sleep_us(consumer_sleep_us);
    }
    ck_assert_int_eq(rc, PJ_EEND);
    ck_assert_int_eq(pj_next(it, &r), PJ_EEND); /* and stays at the end */
    return k;
}

/* ---- modes --------------------------------------------------------------------------------- */

START_TEST(list_mode_in_order)
{
    enum { N = 200 };
    unsigned seed = 7;
    pj_fn *fn = job_fn();
    pj_task **tasks = malloc(N * sizeof *tasks);
    for (int i = 0; i < N; i++)
        tasks[i] = pj_delayed(fn, i, rand_r(&seed) % 1000, 0);
    pj_parallel *par = new_par(&(pj_config){ .n_jobs = 3, .backend = backends[_i],
                                             .return_as = PJ_LIST });
    pj_results *res;
    ck_assert_int_eq(pj_run(par, tasks, N, &res), 0);
    for (int i = 0; i < N; i++) {
        ck_assert_uint_eq(pj_results_at(res, (size_t)i)->index, (size_t)i);
        ck_assert_int_eq(pj_result_i64(pj_results_at(res, (size_t)i)), 3 * i + 1);
    }
    pj_results_free(res);
    pj_parallel_free(par);
    free_tasks(tasks, N);
    pj_fn_free(fn);
}
END_TEST

START_TEST(generator_ordered)
{
    enum { N = 200 };
    unsigned seed = 11;
    pj_fn *fn = job_fn();
    pj_task **tasks = malloc(N * sizeof *tasks);
    for (int i = 0; i < N; i++)
        tasks[i] = pj_delayed(fn, i, rand_r(&seed) % 1000, 0);
    pj_parallel *par = new_par(&(pj_config){ .n_jobs = 3, .backend = backends[_i],
                                             .return_as = PJ_GENERATOR, .batch_size = 2 });
    pj_iter *it = pj_start(par, tasks, N);
    ck_assert_ptr_nonnull(it);
    ck_assert_uint_eq(drain(it, true, NULL, 0), N);
    ck_assert_int_eq(pj_iter_close(it), 0);
    pj_parallel_free(par);
    free_tasks(tasks, N);
    pj_fn_free(fn);
}
END_TEST

START_TEST(generator_unordered)
{
    enum { N = 200 };
    unsigned seed = 13;
    pj_fn *fn = job_fn();
    pj_task **tasks = malloc(N * sizeof *tasks);
    for (int i = 0; i < N; i++)
        tasks[i] = pj_delayed(fn, i, rand_r(&seed) % 1000, 0);
    pj_parallel *par = new_par(&(pj_config){ .n_jobs = 3, .backend = backends[_i],
                                             .return_as = PJ_GENERATOR_UNORDERED });
    pj_iter *it = pj_start(par, tasks, N);
    ck_assert_ptr_nonnull(it);
    ck_assert_uint_eq(drain(it, false, NULL, 0), N);
    ck_assert_int_eq(pj_iter_close(it), 0);
    pj_parallel_free(par);
    free_tasks(tasks, N);
    pj_fn_free(fn);
}
END_TEST

/* Unordered yields in completion order: a slow first task does not hold back the others. */
START_TEST(generator_unordered_completion_order)
{
    enum { N = 10 };
    pj_fn *fn = job_fn();
    pj_task *tasks[N];
    for (int i = 0; i < N; i++)
        tasks[i] = pj_delayed(fn, i, i == 0 ? 300000 : 0, 0);
    pj_parallel *par = new_par(&(pj_config){ .n_jobs = 2, .backend = backends[_i],
                                             .batch_size = 1,
                                             .return_as = PJ_GENERATOR_UNORDERED });
    pj_iter *it = pj_start(par, tasks, N);
    pj_result r;
    ck_assert_int_eq(pj_next(it, &r), 0);
    ck_assert_uint_ne(r.index, 0);
    size_t last = r.index;
    int k = 1;
    while (pj_next(it, &r) == 0) {
        last = r.index;
        k++;
    }
    ck_assert_int_eq(k, N);
    ck_assert_uint_eq(last, 0); /* the slow one comes last */
    ck_assert_int_eq(pj_iter_close(it), 0);
    pj_parallel_free(par);
    for (int i = 0; i < N; i++)
        pj_task_free(tasks[i]);
    pj_fn_free(fn);
}
END_TEST

/* A failed result's message lives until the next pj_next; the iterator reports the failure
 * when closed, as pj_run would. */
START_TEST(generator_failure_message)
{
    pj_fn *fn = job_fn();
    pj_task *tasks[3] = { pj_delayed(fn, 0, 0, 0), pj_delayed(fn, 1, 0, 1),
                          pj_delayed(fn, 2, 0, 0) };
    pj_parallel *par = new_par(&(pj_config){ .n_jobs = 2, .backend = backends[_i],
                                             .return_as = PJ_GENERATOR,
                                             .on_error = PJ_ON_ERROR_CONTINUE });
    pj_iter *it = pj_start(par, tasks, 3);
    pj_result r;
    ck_assert_int_eq(pj_next(it, &r), 0);
    ck_assert_int_eq(r.status, 0);
    ck_assert_int_eq(pj_next(it, &r), 0);
    ck_assert_int_eq(r.status, PJ_EFAILED);
    ck_assert_uint_eq(r.index, 1);
    ck_assert_str_eq(r.message, "task 1 fails");
    ck_assert_int_eq(pj_next(it, &r), 0);
    ck_assert_int_eq(r.status, 0);
    ck_assert_int_eq(pj_next(it, &r), PJ_EEND);
    ck_assert_int_eq(pj_iter_close(it), PJ_EFAILED);
    ck_assert_str_eq(pj_parallel_errmsg(par), "task 1 (job): task 1 fails");
    pj_parallel_free(par);
    for (int i = 0; i < 3; i++)
        pj_task_free(tasks[i]);
    pj_fn_free(fn);
}
END_TEST

/* ---- producers ---------------------------------------------------------------------------- */

START_TEST(producer_list)
{
    struct producer p = producer_of(1000, 0);
    pj_parallel *par = new_par(&(pj_config){ .n_jobs = 2, .backend = backends[_i] });
    pj_results *res;
    ck_assert_int_eq(pj_run_source(par, produce, &p, &res), 0);
    ck_assert_uint_eq(pj_results_count(res), 1000);
    for (size_t i = 0; i < 1000; i++) {
        const pj_result *r = pj_results_at(res, i);
        ck_assert_uint_eq(r->index, i);
        ck_assert_int_eq(pj_result_i64(r), 3 * (int64_t)i + 1);
    }
    ck_assert_int_eq(atomic_load(&p.calls), 1001); /* 1000 tasks and the end */
    pj_results_free(res);
    pj_parallel_free(par);
    pj_fn_free(p.fn);
}
END_TEST

START_TEST(producer_generators)
{
    for (int mode = 0; mode < 2; mode++) {
        struct producer p = producer_of(500, 0);
        pj_parallel *par = new_par(&(pj_config){
            .n_jobs = 2, .backend = backends[_i],
            .return_as = mode ? PJ_GENERATOR_UNORDERED : PJ_GENERATOR });
        pj_iter *it = pj_start_source(par, produce, &p);
        ck_assert_ptr_nonnull(it);
        ck_assert_uint_eq(drain(it, mode == 0, &p, 0), 500);
        ck_assert_int_eq(pj_iter_close(it), 0);
        pj_parallel_free(par);
        pj_fn_free(p.fn);
    }
}
END_TEST

START_TEST(producer_fails)
{
    struct producer p = producer_of(-1, 0);
    p.fail_after = 20;
    pj_parallel *par = new_par(&(pj_config){ .n_jobs = 2, .backend = backends[_i],
                                             .batch_size = 3 });
    pj_results *res;
    ck_assert_int_eq(pj_run_source(par, produce, &p, &res), PJ_ESOURCE);
    ck_assert_ptr_nonnull(res);
    ck_assert_uint_eq(pj_results_count(res), 20);
    ck_assert_uint_eq(pj_results_count_status(res, 0), 20);
    ck_assert_msg(strstr(pj_parallel_errmsg(par), "source failed after 20 tasks"), "errmsg: %s",
                  pj_parallel_errmsg(par));
    int calls = atomic_load(&p.calls);
    ck_assert_int_eq(calls, 21); /* never asked again after it failed */
    pj_results_free(res);

    /* Returning 1 without a task is the producer's error too. */
    p.taken = 0;
    p.null_task = true;
    ck_assert_int_eq(pj_run_source(par, produce, &p, &res), PJ_ESOURCE);
    ck_assert_uint_eq(pj_results_count(res), 20);
    pj_results_free(res);

    /* In a generator: the 20 results, the end, and the failure at close. */
    p.taken = 0;
    p.null_task = false;
    pj_parallel_free(par);
    par = new_par(&(pj_config){ .n_jobs = 2, .backend = backends[_i],
                                .return_as = PJ_GENERATOR });
    pj_iter *it = pj_start_source(par, produce, &p);
    ck_assert_ptr_nonnull(it);
    ck_assert_uint_eq(drain(it, true, NULL, 0), 20);
    ck_assert_int_eq(pj_iter_close(it), PJ_ESOURCE);
    pj_parallel_free(par);
    pj_fn_free(p.fn);
}
END_TEST

/* A task fails under the stop policy while the producer still has tasks: the run ends (the
 * producer is not asked again) with the failure, in list and generator modes. */
static int64_t fail_at_3(int64_t i, int us, int fail)
{
    (void)fail;
    return job(i, us, i == 3);
}

START_TEST(producer_stop_on_failure)
{
    for (int mode = 0; mode < 3; mode++) {
        reset_counters();
        struct producer p = producer_of(1000, 200);
        pj_fn_free(p.fn);
        p.fn = PJ_FN(fail_at_3, &ffi_type_sint64, &ffi_type_sint64, &ffi_type_sint,
                     &ffi_type_sint);
        pj_parallel *par = new_par(&(pj_config){
            .n_jobs = 2, .backend = backends[_i], .batch_size = 1,
            .return_as = mode == 2 ? PJ_GENERATOR_UNORDERED : PJ_GENERATOR });
        int rc;
        size_t count = 0;
        if (mode == 0) {
            pj_results *res;
            rc = pj_run_source(par, produce, &p, &res);
            count = pj_results_count(res);
            ck_assert_int_eq(pj_results_at(res, 3)->status, PJ_EFAILED);
            pj_results_free(res);
        } else {
            pj_iter *it = pj_start_source(par, produce, &p);
            pj_result r;
            while (pj_next(it, &r) == 0)
                count++;
            rc = pj_iter_close(it);
        }
        ck_assert_int_eq(rc, PJ_EFAILED);
        ck_assert_uint_eq(count, (size_t)p.taken);
        ck_assert_msg(p.taken < 1000, "mode %d: the producer was drained after the failure",
                      mode);
        ck_assert_str_eq(pj_parallel_errmsg(par), "task 3 (fail_at_3): task 3 fails");
        pj_parallel_free(par);
        pj_fn_free(p.fn);
    }
}
END_TEST

/* A producer that fails at once: no task, PJ_ESOURCE, an empty result set. */
START_TEST(producer_fails_first)
{
    struct producer p = producer_of(-1, 0);
    p.fail_after = -1;
    p.taken = -1; /* fail on the first call */
    pj_parallel *par = new_par(&(pj_config){ .n_jobs = 2, .backend = backends[_i] });
    pj_results *res = NULL;
    ck_assert_int_eq(pj_run_source(par, produce, &p, &res), PJ_ESOURCE);
    ck_assert_uint_eq(pj_results_count(res), 0);
    pj_results_free(res);
    pj_parallel_free(par);
    pj_fn_free(p.fn);
}
END_TEST

/* parjob owns the tasks a producer hands over: after the run, the heap is back where it was.
 * (The sequential backend keeps every allocation in the main arena that mallinfo2 reports;
 * under ASan and valgrind the leak checkers make the same check on every backend.) */
static size_t heap_in_use(void)
{
    pj__taskmem_trim(); /* the memory of freed tasks kept for the next ones (taskmem.c) */
    return mallinfo2().uordblks;
}

START_TEST(producer_tasks_are_freed)
{
    if (UNDER_SANITIZER || under_valgrind())
        return; /* their allocator is not glibc's; their leak check covers this */
    struct producer warm = producer_of(100, 0);
    pj_parallel *par = new_par(&(pj_config){ .n_jobs = 1, .backend = "sequential" });
    pj_results *res;
    ck_assert_int_eq(pj_run_source(par, produce, &warm, &res), 0);
    pj_results_free(res);

    size_t before = heap_in_use();
    struct producer p = producer_of(20000, 0);
    ck_assert_int_eq(pj_run_source(par, produce, &p, &res), 0);
    ck_assert_uint_eq(pj_results_count(res), 20000);
    pj_results_free(res);
    size_t after = heap_in_use();
    ck_assert_msg(after < before + 256 * 1024, "heap grew by %zu bytes over 20000 tasks",
                  after - before);

    /* And when the consumer closes early, taken tasks not yet run are freed too. */
    pj_parallel *gen = new_par(&(pj_config){ .n_jobs = 1, .backend = "sequential",
                                             .return_as = PJ_GENERATOR, .pre_dispatch = "all",
                                             .batch_size = 64 });
    struct producer q = producer_of(20000, 0);
    before = heap_in_use();
    pj_iter *it = pj_start_source(gen, produce, &q);
    pj_result r;
    ck_assert_int_eq(pj_next(it, &r), 0);
    ck_assert_int_eq(pj_iter_close(it), 0);
    after = heap_in_use();
    ck_assert_msg(after < before + 256 * 1024, "heap grew by %zu bytes after early close",
                  after - before);
    pj_parallel_free(gen);
    pj_parallel_free(par);
    pj_fn_free(warm.fn);
    pj_fn_free(p.fn);
    pj_fn_free(q.fn);
}
END_TEST

/* ---- pre_dispatch bounds tasks taken ahead ------------------------------------------------- */

/* With a fixed batch size, tasks taken from the producer and not yet returned never exceed
 * the window of running batches plus the finished ones held for the consumer,
 * (1 + PJ__HELD_WINDOWS) * window * batch_size; with a slow consumer the window is used to the
 * full. */
START_TEST(pre_dispatch_bounds_producer)
{
    static const char *const exprs[] = { "1", "2", "n_jobs+1", "2*n_jobs" };
    static const long sizes[] = { 1, 3, 4, 2 };
    for (int mode = 0; mode < 2; mode++) {
        for (int e = 0; e < 4; e++) {
            struct producer p = producer_of(60, 300);
            pj_parallel *par = new_par(&(pj_config){
                .n_jobs = 2, .backend = backends[_i], .batch_size = sizes[e],
                .pre_dispatch = exprs[e],
                .return_as = mode ? PJ_GENERATOR_UNORDERED : PJ_GENERATOR });
            long window = (long)par->window * sizes[e];
            long bound = (1 + PJ__HELD_WINDOWS) * window;
            pj_iter *it = pj_start_source(par, produce, &p);
            ck_assert_uint_eq(drain(it, mode == 0, &p, 500), 60);
            ck_assert_int_eq(pj_iter_close(it), 0);
            ck_assert_msg(p.max_ahead <= bound, "%s, batch %ld: %ld tasks ahead, bound %ld",
                          exprs[e], sizes[e], p.max_ahead, bound);
            ck_assert_msg(p.max_ahead >= window, "%s, batch %ld: window not filled (%ld of %ld)",
                          exprs[e], sizes[e], p.max_ahead, window);
            pj_parallel_free(par);
            pj_fn_free(p.fn);
        }
    }
}
END_TEST

/* List mode: tasks taken minus tasks finished stays within the window too. */
START_TEST(pre_dispatch_bounds_list)
{
    reset_counters();
    struct producer p = producer_of(300, 200);
    p.count_finished = true;
    pj_parallel *par = new_par(&(pj_config){ .n_jobs = 2, .backend = backends[_i],
                                             .batch_size = 2, .pre_dispatch = "3" });
    pj_results *res;
    ck_assert_int_eq(pj_run_source(par, produce, &p, &res), 0);
    ck_assert_uint_eq(pj_results_count(res), 300);
    ck_assert_msg(p.max_ahead <= 6, "%ld tasks ahead, bound 6", p.max_ahead);
    pj_results_free(res);
    pj_parallel_free(par);
    pj_fn_free(p.fn);
}
END_TEST

/* An array source is bounded the same way in generator mode: with a consumer that stops
 * reading, no more than (1 + PJ__HELD_WINDOWS) * window * batch_size tasks run. */
START_TEST(pre_dispatch_bounds_array_generator)
{
    enum { N = 100 };
    reset_counters();
    pj_fn *fn = job_fn();
    pj_task **tasks = make_tasks(fn, N, 0);
    pj_parallel *par = new_par(&(pj_config){ .n_jobs = 2, .backend = backends[_i],
                                             .batch_size = 2, .pre_dispatch = "3",
                                             .return_as = PJ_GENERATOR });
    pj_iter *it = pj_start(par, tasks, N);
    pj_result r;
    ck_assert_int_eq(pj_next(it, &r), 0);
    sleep_us(50000); /* every worker idles: only the window limits them */
    long ran_tasks = atomic_load(&shared()->finished);
    ck_assert_msg(ran_tasks <= 6 * (1 + PJ__HELD_WINDOWS), "%ld tasks ran while the consumer "
                  "held 1 result", ran_tasks);
    ck_assert_int_eq(pj_iter_close(it), 0);
    pj_parallel_free(par);
    free_tasks(tasks, N);
    pj_fn_free(fn);
}
END_TEST

/* ---- early close ---------------------------------------------------------------------------- */

/* Closing after a few results cancels what has not started and never calls the producer again:
 * no producer call is in progress once pj_iter_close returns, and none starts later.  One
 * worker and a window of 4: whenever a result is returned, one task runs and two or three wait,
 * however slowly the consumer (or a sanitizer) goes, so something is always left to cancel. */
START_TEST(early_close_producer)
{
    for (int mode = 0; mode < 2; mode++) {
        reset_counters();
        struct producer p = producer_of(-1, 100000); /* endless, 100 ms tasks */
        p.call_sleep_us = 2000;
        pj_parallel *par = new_par(&(pj_config){
            .n_jobs = 1, .backend = backends[_i], .batch_size = 1, .pre_dispatch = "4",
            .return_as = mode ? PJ_GENERATOR_UNORDERED : PJ_GENERATOR });
        pj_iter *it = pj_start_source(par, produce, &p);
        pj_result r;
        for (int k = 0; k < 5; k++) {
            ck_assert_int_eq(pj_next(it, &r), 0);
            ck_assert_int_eq(r.status, 0);
            atomic_fetch_add(&p.returned, 1);
        }
        ck_assert_int_eq(pj_iter_close(it), 0);
        ck_assert_int_eq(atomic_load(&p.in_call), 0);
        int calls = atomic_load(&p.calls);
        long taken = p.taken;
        sleep_us(100000);
        ck_assert_int_eq(atomic_load(&p.calls), calls);
        ck_assert_int_le(taken, 5 + (long)par->window);
        /* Tasks taken but not started were cancelled: fewer ran than were taken. */
        int ran_total = 0;
        for (long i = 0; i < taken; i++) {
            ck_assert_int_le(atomic_load(&shared()->ran[i]), 1);
            ran_total += atomic_load(&shared()->ran[i]);
        }
        ck_assert_msg(ran_total < taken, "all %ld tasks taken ran: nothing was cancelled", taken);
        pj_parallel_free(par);
        pj_fn_free(p.fn);
    }
}
END_TEST

START_TEST(early_close_array)
{
    enum { N = 400 };
    reset_counters();
    pj_fn *fn = job_fn();
    pj_task **tasks = make_tasks(fn, N, 2000);
    pj_parallel *par = new_par(&(pj_config){ .n_jobs = 2, .backend = backends[_i],
                                             .return_as = PJ_GENERATOR, .batch_size = 1 });
    pj_iter *it = pj_start(par, tasks, N);
    pj_result r;
    for (int k = 0; k < 3; k++)
        ck_assert_int_eq(pj_next(it, &r), 0);
    ck_assert_int_eq(pj_iter_close(it), 0);
    long ran_total = 0;
    for (int i = 0; i < N; i++)
        ran_total += atomic_load(&shared()->ran[i]);
    /* Closed holding result 2: the window (4 batches of 1) and the finished batches held for
     * the consumer bound what ran. */
    ck_assert_msg(ran_total <= 3 + 4 * (1 + PJ__HELD_WINDOWS), "%ld tasks ran after closing at 3",
                  ran_total);
    /* The handle is free and works again. */
    pj_results *res;
    ck_assert_int_eq(pj_run(par, tasks, 10, &res), 0);
    pj_results_free(res);
    pj_parallel_free(par);
    free_tasks(tasks, N);
    pj_fn_free(fn);
}
END_TEST

/* ---- timeouts -------------------------------------------------------------------------------- */

/* Tasks for timeouts keep to their own fields of the shared state: an abandoned call may
 * still be sleeping when the next test runs (CK_FORK=no). */

static uint64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static int64_t sleeper(int64_t i, int ms)
{
    if (i >= 0 && i < 64)
        atomic_store(&shared()->sleeper_start_ns[i], mono_ns());
    sleep_us(ms * 1000L);
    return i;
}

static int64_t capacity_job(int64_t i, int ms)
{
    int now = atomic_fetch_add(&shared()->running_now, 1) + 1;
    int max = atomic_load(&shared()->running_max);
    while (now > max && !atomic_compare_exchange_weak(&shared()->running_max, &max, now))
        ;
    sleep_us(ms * 1000L);
    atomic_fetch_sub(&shared()->running_now, 1);
    return i;
}

/* The bound: PJ_ETIMEDOUT within 50 ms of the deadline (valgrind serialises threads
 * and slows everything ~10x: the bound is scaled there). */
static double timeout_slack_s(void)
{
    return under_valgrind() ? 0.5 : 0.05;
}

/* The loop index of a timeout case that runs on the backends that interrupt (threading, fork,
 * spawn; timeout_sequential is the sequential backend's) under both error policies. */
#define TIMEOUT_LOOPS 6
static const char *timeout_backend(int i)
{
    return backends[1 + i / 2];
}

static pj_on_error timeout_policy(int i)
{
    return i % 2 ? PJ_ON_ERROR_CONTINUE : PJ_ON_ERROR_STOP;
}

/* A task sleeping 2 s with a 0.2 s timeout: reported on time, measured from its own start;
 * the other tasks complete. */
START_TEST(timeout_reported_on_time)
{
    enum { N = 8 };
    pj_fn *fn = PJ_FN(sleeper, &ffi_type_sint64, &ffi_type_sint64, &ffi_type_sint);
    pj_task *tasks[N];
    for (int i = 0; i < N; i++)
        tasks[i] = pj_delayed(fn, i, i == 0 ? 2000 : 10);
    atomic_store(&shared()->sleeper_start_ns[0], 0);
    pj_parallel *par = new_par(&(pj_config){
        .n_jobs = 2, .backend = timeout_backend(_i), .batch_size = 1, .timeout = 0.2,
        .on_error = timeout_policy(_i), .return_as = PJ_GENERATOR_UNORDERED });
    pj_iter *it = pj_start(par, tasks, N);
    pj_result r;
    int seen = 0, ok = 0, cancelled = 0;
    bool got_timeout = false;
    while (pj_next(it, &r) == 0) {
        seen++;
        if (r.index == 0) {
            uint64_t started = atomic_load(&shared()->sleeper_start_ns[0]);
            double late = (double)(mono_ns() - started) / 1e9 - 0.2;
            ck_assert_int_eq(r.status, PJ_ETIMEDOUT);
            ck_assert_ptr_nonnull(r.message);
            ck_assert_msg(late > -0.005, "reported %.1f ms before its deadline", -late * 1e3);
            ck_assert_msg(late < timeout_slack_s(), "reported %.1f ms after its deadline",
                          late * 1e3);
            got_timeout = true;
        } else if (r.status == 0) {
            ck_assert_int_eq(pj_result_i64(&r), (int64_t)r.index);
            ok++;
        } else {
            ck_assert_int_eq(r.status, PJ_ECANCELLED);
            ck_assert_int_eq(timeout_policy(_i), PJ_ON_ERROR_STOP); /* only stop cancels */
            cancelled++;
        }
    }
    ck_assert(got_timeout);
    ck_assert_int_eq(seen, N);
    ck_assert_int_eq(ok + cancelled, N - 1);
    if (timeout_policy(_i) == PJ_ON_ERROR_CONTINUE)
        ck_assert_int_eq(ok, N - 1);
    ck_assert_int_eq(pj_iter_close(it), PJ_ETIMEDOUT);
    ck_assert_ptr_nonnull(strstr(pj_parallel_errmsg(par), "task 0 (sleeper)"));
    pj_parallel_free(par);
    for (int i = 0; i < N; i++)
        pj_task_free(tasks[i]);
    pj_fn_free(fn);
}
END_TEST

/* In list mode pj_run returns soon after the deadline, not after the 2 s call. */
START_TEST(timeout_list_mode)
{
    enum { N = 6 };
    pj_fn *fn = PJ_FN(sleeper, &ffi_type_sint64, &ffi_type_sint64, &ffi_type_sint);
    pj_task *tasks[N];
    for (int i = 0; i < N; i++)
        tasks[i] = pj_delayed(fn, 10 + i, i == 2 ? 2000 : 5);
    pj_parallel *par = new_par(&(pj_config){
        .n_jobs = 2, .backend = timeout_backend(_i), .batch_size = 1, .timeout = 0.2,
        .on_error = timeout_policy(_i) });
    pj_results *res;
    ck_assert_int_eq(pj_run(par, tasks, N, &res), PJ_ETIMEDOUT);
    double late = (double)(mono_ns() - atomic_load(&shared()->sleeper_start_ns[12])) / 1e9 - 0.2;
    ck_assert_msg(late < timeout_slack_s(), "pj_run returned %.1f ms after the deadline",
                  late * 1e3);
    ck_assert_int_eq(pj_results_at(res, 2)->status, PJ_ETIMEDOUT);
    ck_assert_msg(strstr(pj_parallel_errmsg(par), "task 2 (sleeper)"), "errmsg: %s",
                  pj_parallel_errmsg(par));
    for (int i = 0; i < N; i++) {
        int st = pj_results_at(res, (size_t)i)->status;
        if (i != 2)
            ck_assert_msg(st == 0 || (timeout_policy(_i) == PJ_ON_ERROR_STOP &&
                                      st == PJ_ECANCELLED), "task %d: %s", i, pj_err_name(st));
    }
    if (timeout_policy(_i) == PJ_ON_ERROR_CONTINUE)
        ck_assert_uint_eq(pj_results_count_status(res, 0), N - 1);
    pj_results_free(res);
    pj_parallel_free(par);
    for (int i = 0; i < N; i++)
        pj_task_free(tasks[i]);
    pj_fn_free(fn);
}
END_TEST

/* Every worker abandoned on a timeout is replaced: the next run gets n_jobs tasks running at
 * once and finishes in about one task's time. */
START_TEST(timeout_keeps_capacity)
{
    enum { JOBS = 2 };
    pj_fn *slow = PJ_FN(sleeper, &ffi_type_sint64, &ffi_type_sint64, &ffi_type_sint);
    pj_fn *cap = PJ_FN(capacity_job, &ffi_type_sint64, &ffi_type_sint64, &ffi_type_sint);
    pj_task *hang[JOBS], *work[JOBS];
    for (int i = 0; i < JOBS; i++) {
        hang[i] = pj_delayed(slow, 20 + i, 2000);
        work[i] = pj_delayed(cap, i, 100);
    }
    pj_parallel *par = new_par(&(pj_config){ .n_jobs = JOBS, .backend = backends[_i],
                                             .batch_size = 1, .timeout = 0.5,
                                             .on_error = PJ_ON_ERROR_CONTINUE });
    pj_results *res;
    ck_assert_int_eq(pj_run(par, hang, JOBS, &res), PJ_ETIMEDOUT);
    ck_assert_uint_eq(pj_results_count_status(res, PJ_ETIMEDOUT), JOBS);
    pj_results_free(res);

    atomic_store(&shared()->running_now, 0);
    atomic_store(&shared()->running_max, 0);
    double t0 = now_s();
    ck_assert_int_eq(pj_run(par, work, JOBS, &res), 0);
    double took = now_s() - t0;
    ck_assert_int_eq(atomic_load(&shared()->running_max), JOBS);
    ck_assert_msg(took < 1.0, "n_jobs tasks of 100 ms took %.3f s", took);
    pj_results_free(res);
    pj_parallel_free(par);
    for (int i = 0; i < JOBS; i++) {
        pj_task_free(hang[i]);
        pj_task_free(work[i]);
    }
    pj_fn_free(slow);
    pj_fn_free(cap);
}
END_TEST

/* A batch whose tasks all overrun: each is timed out in turn, none is reported otherwise. */
START_TEST(timeout_whole_batch)
{
    enum { N = 8 };
    pj_fn *fn = PJ_FN(sleeper, &ffi_type_sint64, &ffi_type_sint64, &ffi_type_sint);
    pj_task *tasks[N];
    for (int i = 0; i < N; i++)
        tasks[i] = pj_delayed(fn, 30 + i, 600);
    pj_parallel *par = new_par(&(pj_config){ .n_jobs = 1, .backend = backends[_i],
                                             .batch_size = N, .timeout = 0.05,
                                             .on_error = PJ_ON_ERROR_CONTINUE });
    pj_results *res;
    ck_assert_int_eq(pj_run(par, tasks, N, &res), PJ_ETIMEDOUT);
    for (int i = 0; i < N; i++) {
        const pj_result *r = pj_results_at(res, (size_t)i);
        ck_assert_msg(r->status == PJ_ETIMEDOUT, "task %d: %s (%s)", i, pj_err_name(r->status),
                      r->message ? r->message : "");
    }
    pj_results_free(res);
    pj_parallel_free(par);
    for (int i = 0; i < N; i++)
        pj_task_free(tasks[i]);
    pj_fn_free(fn);
}
END_TEST

/* A task that runs a pj_parallel of its own, both with deadlines: each nesting level keeps its
 * own record of the running task.  (Sharing one made the outer task look claimed by the
 * watchdog: the threading run hung, the sequential one returned zeroed results.) */
static int plus_hundred(int x)
{
    return x + 100;
}

static int nested_run(int x)
{
    if (x != 0)
        return plus_hundred(x);
    pj_fn *fn = PJ_FN(plus_hundred, &ffi_type_sint, &ffi_type_sint);
    pj_task *inner[3] = { pj_delayed(fn, 1), pj_delayed(fn, 2), pj_delayed(fn, 3) };
    pj_parallel *par = pj_parallel_new(&(pj_config){ .timeout = 5 }); /* nested: 1 job */
    pj_results *res;
    int sum = -1;
    if (par && pj_run(par, inner, 3, &res) == 0) {
        sum = 0;
        for (int i = 0; i < 3; i++)
            sum += pj_result_int(pj_results_at(res, (size_t)i));
        pj_results_free(res);
    }
    pj_parallel_free(par);
    for (int i = 0; i < 3; i++)
        pj_task_free(inner[i]);
    pj_fn_free(fn);
    return sum;
}

START_TEST(timeout_nested_runs)
{
    pj_fn *fn = PJ_FN(nested_run, &ffi_type_sint, &ffi_type_sint);
    pj_task *tasks[4] = { pj_delayed(fn, 0), pj_delayed(fn, 1), pj_delayed(fn, 2),
                          pj_delayed(fn, 3) };
    pj_parallel *par = new_par(&(pj_config){ .n_jobs = 2, .backend = backends[_i],
                                             .batch_size = 4, .timeout = 5 });
    pj_results *res;
    ck_assert_int_eq(pj_run(par, tasks, 4, &res), 0);
    ck_assert_int_eq(pj_result_int(pj_results_at(res, 0)), 306);
    for (int i = 1; i < 4; i++)
        ck_assert_int_eq(pj_result_int(pj_results_at(res, (size_t)i)), 100 + i);
    pj_results_free(res);
    pj_parallel_free(par);
    for (int i = 0; i < 4; i++)
        pj_task_free(tasks[i]);
    pj_fn_free(fn);
}
END_TEST

/* The sequential backend cannot interrupt: a late task is reported when it returns. */
START_TEST(timeout_sequential)
{
    pj_fn *fn = PJ_FN(sleeper, &ffi_type_sint64, &ffi_type_sint64, &ffi_type_sint);
    pj_task *tasks[3] = { pj_delayed(fn, 40, 1), pj_delayed(fn, 41, 300),
                          pj_delayed(fn, 42, 1) };
    pj_parallel *par = new_par(&(pj_config){ .n_jobs = 1, .backend = "sequential",
                                             .timeout = 0.1,
                                             .on_error = PJ_ON_ERROR_CONTINUE });
    pj_results *res;
    ck_assert_int_eq(pj_run(par, tasks, 3, &res), PJ_ETIMEDOUT);
    ck_assert_int_eq(pj_results_at(res, 0)->status, 0);
    ck_assert_int_eq(pj_results_at(res, 1)->status, PJ_ETIMEDOUT);
    ck_assert_ptr_nonnull(strstr(pj_results_at(res, 1)->message, "timeout"));
    ck_assert_int_eq(pj_results_at(res, 2)->status, 0);
    ck_assert_int_eq(pj_result_i64(pj_results_at(res, 2)), 42);
    pj_results_free(res);
    pj_parallel_free(par);
    for (int i = 0; i < 3; i++)
        pj_task_free(tasks[i]);
    pj_fn_free(fn);
}
END_TEST

/* ---- auto batching ---------------------------------------------------------------------------- */

static int add(int a, int b)
{
    return a + b;
}

START_TEST(auto_batch_tiny_tasks)
{
    enum { N = 100000 };
    pj_fn *fn = PJ_FN(add, &ffi_type_sint, &ffi_type_sint, &ffi_type_sint);
    pj_task **tasks = malloc(N * sizeof *tasks);
    for (int i = 0; i < N; i++)
        tasks[i] = pj_delayed(fn, i, 7);
    pj_parallel *par = new_par(&(pj_config){ .n_jobs = 2, .backend = backends[_i],
                                             .batch_size = PJ_AUTO,
                                             .return_as = PJ_GENERATOR });
    pj_results *res;
    ck_assert_int_eq(pj_run(par, tasks, N, &res), 0);
    for (int i = 0; i < N; i++)
        ck_assert_int_eq(pj_result_int(pj_results_at(res, (size_t)i)), i + 7);
    pj_results_free(res);
    pj_iter *it = pj_start(par, tasks, N);
    pj_result r;
    for (int i = 0; i < N; i++) {
        ck_assert_int_eq(pj_next(it, &r), 0);
        ck_assert_uint_eq(r.index, (size_t)i);
        ck_assert_int_eq(pj_result_int(&r), i + 7);
    }
    ck_assert_int_eq(pj_next(it, &r), PJ_EEND);
    ck_assert_int_eq(pj_iter_close(it), 0);
    pj_parallel_free(par);
    free_tasks(tasks, N);
    pj_fn_free(fn);
}
END_TEST

START_TEST(auto_batch_slow_tasks)
{
    reset_counters();
    pj_fn *fn = job_fn();
    pj_task **tasks = make_tasks(fn, 30, 20000);
    pj_parallel *par = new_par(&(pj_config){ .n_jobs = 3, .backend = backends[_i] });
    pj_results *res;
    ck_assert_int_eq(pj_run(par, tasks, 30, &res), 0);
    for (int i = 0; i < 30; i++) {
        ck_assert_int_eq(pj_result_i64(pj_results_at(res, (size_t)i)), 3 * i + 1);
        ck_assert_int_eq(atomic_load(&shared()->ran[i]), 1);
    }
    pj_results_free(res);
    pj_parallel_free(par);
    free_tasks(tasks, 30);
    pj_fn_free(fn);
}
END_TEST

/* Auto batching does not hold the first result of a slow stream back behind a big batch. */
START_TEST(auto_batch_first_result_soon)
{
    struct producer p = producer_of(40, 100000); /* 100 ms tasks */
    pj_parallel *par = new_par(&(pj_config){ .n_jobs = 2, .backend = backends[_i],
                                             .return_as = PJ_GENERATOR });
    double t0 = now_s();
    pj_iter *it = pj_start_source(par, produce, &p);
    pj_result r;
    ck_assert_int_eq(pj_next(it, &r), 0);
    double first = now_s() - t0;
    ck_assert_uint_eq(r.index, 0);
    ck_assert_msg(first >= 0.09, "first result after %.3f s: faster than the task", first);
    ck_assert_msg(first < 1.0, "first result after %.3f s", first);
    ck_assert_int_eq(pj_next(it, &r), 0);
    ck_assert_msg(now_s() - t0 < 1.0, "second result after %.3f s", now_s() - t0);
    ck_assert_int_eq(pj_iter_close(it), 0);
    pj_parallel_free(par);
    pj_fn_free(p.fn);
}
END_TEST

/* ---- progress in every mode ------------------------------------------------------------------- */

struct progress_log {
    size_t calls, last_done, last_total;
    bool monotonic;
};

static void on_progress(void *data, size_t done, size_t total, double elapsed)
{
    (void)elapsed;
    struct progress_log *log = data;
    if (log->calls && done < log->last_done)
        log->monotonic = false;
    log->calls++;
    log->last_done = done;
    log->last_total = total;
}

START_TEST(progress_all_modes)
{
    static const pj_return_as modes[] = { PJ_LIST, PJ_GENERATOR, PJ_GENERATOR_UNORDERED };
    enum { N = 40 };
    pj_fn *fn = job_fn();
    pj_task **tasks = make_tasks(fn, N, 100);
    for (int m = 0; m < 3; m++) {
        struct progress_log log = { .monotonic = true };
        pj_parallel *par = new_par(&(pj_config){
            .n_jobs = 2, .backend = backends[_i], .batch_size = 1, .return_as = modes[m],
            .verbose = 1, .progress = on_progress, .progress_data = &log });
        FILE *tmp = tmpfile();
        fflush(stderr);
        int saved = dup(2);
        dup2(fileno(tmp), 2);
        if (m == 0) {
            pj_results *res;
            ck_assert_int_eq(pj_run(par, tasks, N, &res), 0);
            pj_results_free(res);
        } else {
            pj_iter *it = pj_start(par, tasks, N);
            ck_assert_uint_eq(drain(it, m == 1, NULL, 0), N);
            ck_assert_int_eq(pj_iter_close(it), 0);
        }
        fflush(stderr);
        dup2(saved, 2);
        close(saved);
        char text[8192] = "";
        rewind(tmp);
        text[fread(text, 1, sizeof text - 1, tmp)] = 0;
        fclose(tmp);
        ck_assert_uint_eq(log.calls, N);
        ck_assert(log.monotonic);
        ck_assert_uint_eq(log.last_done, N);
        ck_assert_uint_eq(log.last_total, N);
        /* joblib's sequential path (n_jobs 1) announces no backend. */
        ck_assert_msg(!strstr(text, "]: Using backend ") == !strcmp(backends[_i], "sequential"),
                      "mode %d: %s", m, text);
        ck_assert_msg(strstr(text, "]: Done 40 out of 40 | elapsed: ") &&
                      strstr(text, " finished\n"), "mode %d: %s", m, text);
        pj_parallel_free(par);
    }
    free_tasks(tasks, N);
    pj_fn_free(fn);
}
END_TEST

/* ---- property test ---------------------------------------------------------------------------- */

struct prop_case {
    int backend, n_jobs, mode, on_error, n;
    bool producer;
    long batch;
    const char *pre_dispatch;
    int us[64];
    int fail[64];
};

static const char *describe(const struct prop_case *c, char *buf, size_t len)
{
    static const char *const mode_names[] = { "list", "generator", "unordered" };
    snprintf(buf, len, "%s n_jobs=%d %s %s batch=%ld pre_dispatch=%s %s n=%d",
             backends[c->backend], c->n_jobs, mode_names[c->mode],
             c->producer ? "producer" : "array", c->batch, c->pre_dispatch,
             c->on_error ? "continue" : "stop", c->n);
    return buf;
}

struct prop_source {
    const struct prop_case *c;
    pj_fn *fn;
    int next;
    _Atomic long returned;
    long max_ahead;
};

static int prop_produce(void *state, pj_task **task)
{
    struct prop_source *s = state;
    if (s->next == s->c->n)
        return 0;
    int i = s->next++;
    *task = pj_delayed(s->fn, i, s->c->us[i], s->c->fail[i]);
    long ahead = s->next - atomic_load(&s->returned);
    if (ahead > s->max_ahead)
        s->max_ahead = ahead;
    return 1;
}

static void check_one(const struct prop_case *c, const pj_result *r, int *status_of,
                      const char *what)
{
    ck_assert_msg(r->index < (size_t)c->n, "%s: index %zu", what, r->index);
    int i = (int)r->index;
    ck_assert_msg(status_of[i] == 1, "%s: task %d reported twice", what, i);
    status_of[i] = r->status;
    int calls = atomic_load(&shared()->ran[i]);
    switch (r->status) {
    case 0:
        ck_assert_msg(!c->fail[i] && calls == 1, "%s: task %d ok, fail=%d, ran %d", what, i,
                      c->fail[i], calls);
        ck_assert_msg(pj_result_i64(r) == 3 * i + 1, "%s: task %d wrong value", what, i);
        break;
    case PJ_EFAILED:
        ck_assert_msg(c->fail[i] && calls == 1, "%s: task %d failed, fail=%d, ran %d", what, i,
                      c->fail[i], calls);
        break;
    case PJ_ECANCELLED:
        ck_assert_msg(c->on_error == PJ_ON_ERROR_STOP && calls == 0,
                      "%s: task %d cancelled, ran %d", what, i, calls);
        break;
    default:
        ck_abort_msg("%s: task %d: status %s", what, i, pj_err_name(r->status));
    }
}

/* A run that hangs fails at once with its configuration, not after the tcase's timeout. */
static char hung_case[256];

static void on_alarm(int sig)
{
    (void)sig;
    static const char head[] = "property run hung (20 s): ";
    if (write(2, head, sizeof head - 1) < 0 || write(2, hung_case, strlen(hung_case)) < 0 ||
        write(2, "\n", 1) < 0)
        _exit(3);
    abort();
}

static void prop_run(const struct prop_case *c)
{
    char what[256];
    describe(c, what, sizeof what);
    memcpy(hung_case, what, sizeof hung_case);
    signal(SIGALRM, on_alarm);
    alarm(under_valgrind() ? 200 : 20);
    reset_counters();
    pj_fn *fn = job_fn();
    pj_task *tasks[64];
    if (!c->producer)
        for (int i = 0; i < c->n; i++)
            tasks[i] = pj_delayed(fn, i, c->us[i], c->fail[i]);
    struct prop_source src = { .c = c, .fn = fn };
    pj_parallel *par = new_par(&(pj_config){
        .n_jobs = c->n_jobs, .backend = backends[c->backend], .batch_size = c->batch,
        .pre_dispatch = c->pre_dispatch, .on_error = (pj_on_error)c->on_error,
        .return_as = c->mode == 2 ? PJ_GENERATOR_UNORDERED : PJ_GENERATOR });
    int status_of[64];
    for (int i = 0; i < 64; i++)
        status_of[i] = 1; /* no status yet */
    int rc;
    size_t count = 0;
    if (c->mode == 0) {
        pj_results *res;
        rc = c->producer ? pj_run_source(par, prop_produce, &src, &res)
                         : pj_run(par, tasks, (size_t)c->n, &res);
        count = pj_results_count(res);
        for (size_t k = 0; k < count; k++) {
            const pj_result *r = pj_results_at(res, k);
            ck_assert_msg(r->index == k, "%s: list slot %zu holds index %zu", what, k, r->index);
            check_one(c, r, status_of, what);
        }
        pj_results_free(res);
    } else {
        pj_iter *it = c->producer ? pj_start_source(par, prop_produce, &src)
                                  : pj_start(par, tasks, (size_t)c->n);
        ck_assert_msg(it != NULL, "%s: %s", what, pj_last_errmsg());
        pj_result r;
        while ((rc = pj_next(it, &r)) == 0) {
            atomic_fetch_add(&src.returned, 1);
            if (c->mode == 1)
                ck_assert_msg(r.index == count, "%s: yielded %zu at %zu", what, r.index, count);
            check_one(c, &r, status_of, what);
            count++;
        }
        ck_assert_int_eq(rc, PJ_EEND);
        rc = pj_iter_close(it);
    }
    /* Every task taken has exactly one status; an array's tasks are all taken. */
    size_t taken = c->producer ? (size_t)src.next : (size_t)c->n;
    ck_assert_msg(count == taken, "%s: %zu results for %zu tasks", what, count, taken);
    bool any_failed = false;
    for (int i = 0; i < c->n; i++) {
        if ((size_t)i >= taken) {
            ck_assert_int_eq(atomic_load(&shared()->ran[i]), 0);
            continue;
        }
        ck_assert_msg(status_of[i] != 1, "%s: task %d has no status", what, i);
        any_failed |= status_of[i] == PJ_EFAILED;
        if (c->on_error == PJ_ON_ERROR_CONTINUE)
            ck_assert_msg(status_of[i] == (c->fail[i] ? PJ_EFAILED : 0), "%s: task %d: %s",
                          what, i, pj_err_name(status_of[i]));
    }
    if (c->on_error == PJ_ON_ERROR_CONTINUE)
        ck_assert_msg(taken == (size_t)c->n, "%s: continue took %zu of %d", what, taken, c->n);
    ck_assert_msg(rc == (any_failed ? PJ_EFAILED : 0), "%s: returned %s", what, pj_err_name(rc));
    /* Generators over a producer with a fixed batch size: the window holds. */
    if (c->mode && c->producer && c->batch && par->window != SIZE_MAX)
        ck_assert_msg(src.max_ahead <= (1 + PJ__HELD_WINDOWS) * (long)par->window * c->batch,
                      "%s: %ld tasks ahead, bound %zu", what, src.max_ahead,
                      (1 + PJ__HELD_WINDOWS) * par->window * (size_t)c->batch);
    pj_parallel_free(par);
    if (!c->producer)
        for (int i = 0; i < c->n; i++)
            pj_task_free(tasks[i]);
    pj_fn_free(fn);
    alarm(0);
}

static int prop_runs(void)
{
    const char *env = getenv("PJ_PROPERTY_RUNS");
    if (env)
        return atoi(env);
    return under_valgrind() ? 50 : 500; /* per loop iteration; 4 iterations */
}

START_TEST(property_random_runs)
{
    static const long batches[] = { 0, 1, 2, 3, 5, 8 };
    static const char *const pds[] = { "all", "1", "2", "2*n_jobs", "n_jobs+1", "3*n_jobs" };
    unsigned seed = 0x5eed0000u + (unsigned)_i;
    const char *env_seed = getenv("PJ_PROPERTY_SEED");
    if (env_seed)
        seed = (unsigned)strtoul(env_seed, NULL, 0) + (unsigned)_i;
    int runs = prop_runs();
    for (int run = 0; run < runs; run++) {
        struct prop_case c = {
            .backend = rand_r(&seed) % N_BACKENDS,
            .n_jobs = 1 + rand_r(&seed) % 4,
            .mode = rand_r(&seed) % 3,
            .on_error = rand_r(&seed) % 2,
            .n = 1 + rand_r(&seed) % 40,
            .producer = rand_r(&seed) % 2,
            .batch = batches[rand_r(&seed) % 6],
            .pre_dispatch = pds[rand_r(&seed) % 6],
        };
        for (int i = 0; i < c.n; i++) {
            c.us[i] = rand_r(&seed) % 10 < 6 ? 0 : rand_r(&seed) % 2000;
            c.fail[i] = rand_r(&seed) % 100 < 3;
        }
        prop_run(&c);
    }
}
END_TEST

/* ---- a slow early result does not stall the workers (issue 16) ------------------------------ */

/* Waits up to 10 s for `n` other tasks to have run: 1 if they all did meanwhile. */
static int wait_for_others(int n)
{
    for (int waited_ms = 0; waited_ms < 10000; waited_ms++) {
        if (atomic_load(&shared()->others_done) >= n)
            return 1;
        sleep_us(1000);
    }
    return 0;
}

static int count_other(int i)
{
    atomic_fetch_add(&shared()->others_done, 1);
    return i;
}

/* In order, task 0 holds the first result while it runs; the workers must still run the 20
 * tasks behind it (held finished, within the bound) instead of idling at the window of 4. */
START_TEST(ordered_generator_runs_past_slow_first)
{
    enum { N = 20 };
    atomic_store(&shared()->others_done, 0);
    pj_fn *slow = PJ_FN(wait_for_others, &ffi_type_sint, &ffi_type_sint);
    pj_fn *other = PJ_FN(count_other, &ffi_type_sint, &ffi_type_sint);
    pj_task *tasks[N + 1];
    tasks[0] = pj_delayed(slow, N);
    for (int i = 1; i <= N; i++)
        tasks[i] = pj_delayed(other, i);
    pj_parallel *par = new_par(&(pj_config){ .n_jobs = 2, .backend = backends[_i],
                                             .batch_size = 1, .return_as = PJ_GENERATOR });
    pj_iter *it = pj_start(par, tasks, N + 1);
    pj_result r;
    ck_assert_int_eq(pj_next(it, &r), 0);
    ck_assert_uint_eq(r.index, 0);
    ck_assert_msg(pj_result_int(&r) == 1, "task 0 held the order and only %d of %d tasks "
                  "behind it ran", atomic_load(&shared()->others_done), N);
    for (int i = 1; i <= N; i++) {
        ck_assert_int_eq(pj_next(it, &r), 0);
        ck_assert_int_eq(pj_result_int(&r), i);
    }
    ck_assert_int_eq(pj_next(it, &r), PJ_EEND);
    ck_assert_int_eq(pj_iter_close(it), 0);
    pj_parallel_free(par);
    for (int i = 0; i <= N; i++)
        pj_task_free(tasks[i]);
    pj_fn_free(slow);
    pj_fn_free(other);
}
END_TEST

/* ---- suite ------------------------------------------------------------------------------------- */

static void add_loops(Suite *s, const char *name, const TTest *test, int first, int loops,
                      double secs)
{
    TCase *tc = tcase_create(name);
    tcase_set_timeout(tc, secs);
    tcase_add_loop_test(tc, test, first, loops);
    suite_add_tcase(s, tc);
}

/* On every backend; from threading on (the backends that run tasks side by side); on one. */
#define ADD_BACKENDS(s, t) add_loops(s, #t, t, 0, N_BACKENDS, 120)
#define ADD_PARALLEL(s, t) add_loops(s, #t, t, 1, N_BACKENDS, 120)
#define ADD_ON(s, t, backend) add_loops(s, #t, t, backend, backend + 1, 120)
enum { SEQUENTIAL = 0 };

int main(void)
{
    if (share_state() != 0) {
        perror("test-dispatch: shared state");
        return EXIT_FAILURE;
    }
    Suite *s = suite_create("dispatch");
    ADD_BACKENDS(s, list_mode_in_order);
    ADD_BACKENDS(s, generator_ordered);
    ADD_BACKENDS(s, generator_unordered);
    /* Sequential runs one task at a time in submission order: completion order is that. */
    ADD_PARALLEL(s, generator_unordered_completion_order);
    ADD_BACKENDS(s, generator_failure_message);
    ADD_BACKENDS(s, producer_list);
    ADD_BACKENDS(s, producer_generators);
    ADD_BACKENDS(s, producer_fails);
    ADD_BACKENDS(s, producer_fails_first);
    add_loops(s, "producer_stop_on_failure", producer_stop_on_failure, 0, N_BACKENDS, 20);
    /* mallinfo2 sees this process's main arena alone: threads allocate in arenas of their
     * own, workers in heaps of their own (the leak checkers cover every backend). */
    ADD_ON(s, producer_tasks_are_freed, SEQUENTIAL);
    ADD_BACKENDS(s, pre_dispatch_bounds_producer);
    ADD_BACKENDS(s, pre_dispatch_bounds_list);
    ADD_BACKENDS(s, pre_dispatch_bounds_array_generator);
    /* Sequential runs each task as it takes it: no task waits unstarted, none to cancel. */
    ADD_PARALLEL(s, early_close_producer);
    ADD_BACKENDS(s, early_close_array);
    /* Task 0 waits for others to run while it runs: sequential would run them after it. */
    ADD_PARALLEL(s, ordered_generator_runs_past_slow_first);
    /* The timeout cases: sequential cannot interrupt a call (timeout_sequential is its case). */
    add_loops(s, "timeout_reported_on_time", timeout_reported_on_time, 0, TIMEOUT_LOOPS, 120);
    add_loops(s, "timeout_list_mode", timeout_list_mode, 0, TIMEOUT_LOOPS, 120);
    ADD_PARALLEL(s, timeout_keeps_capacity);
    ADD_PARALLEL(s, timeout_whole_batch);
    ADD_ON(s, timeout_sequential, SEQUENTIAL);
    add_loops(s, "timeout_nested_runs", timeout_nested_runs, 0, N_BACKENDS, 20);
    ADD_BACKENDS(s, auto_batch_tiny_tasks);
    ADD_BACKENDS(s, auto_batch_slow_tasks);
    ADD_BACKENDS(s, auto_batch_first_result_soon);
    ADD_BACKENDS(s, progress_all_modes);
    add_loops(s, "property_random_runs", property_random_runs, 0, 4, 90);

    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_ENV);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
