/* A backend registered by a user runs batches its own way, with the batch accessors of
 * parjob.h only: "reverse" runs each batch's tasks last to first on threads of its own, and on
 * a batch's first pass runs every third task and then marks it pending (as if its result had
 * been lost), so the dispatcher hands the batch back to run those again.  It honours
 * cancellation (it starts no task once the batch says so) and deadlines (late returns are
 * PJ_ETIMEDOUT), and passes the conformance cases every built-in backend passes
 * (test-backends.c, included over it).  Beside them: the order it ran in, cancellation in
 * the middle of a batch, a future cancelled before its batch started, and each accessor's
 * answer to misuse. */
#define CONFORMANCE_BACKENDS "reverse"
#include "test-backends.c"

#include <pthread.h>

/* ---- the "reverse" backend: nothing but the public API --------------------------------------- */

struct reverse {
    pthread_mutex_t lock;
    pthread_cond_t wake;
    pj_batch **queue;            /* FIFO of batches submitted, not yet taken */
    size_t head, len, cap;
    bool closing;
    int n_threads;
    pthread_t threads[];
};

/* Set when a batch said it was cancelled (1 stop, 2 pj_parallel_cancel), and the number of
 * batches whose pj_batch_start refused them: what the tests below look at. */
static _Atomic int cancel_seen;
static _Atomic int starts_refused;

static bool lost_on_first_pass(const pj_batch *b, size_t i)
{
    return pj_batch_begin(b) == 0 && i % 3 == 1;
}

static void reverse_run(pj_batch *b)
{
    if (pj_batch_start(b) != 1) {
        starts_refused++;
        pj_batch_done(b);
        return;
    }
    for (size_t i = pj_batch_count(b); i-- > pj_batch_begin(b);) {
        if (!pj_batch_pending(b, i))
            continue; /* it has its status from an earlier pass */
        int level = pj_batch_cancelled(b);
        if (level) {
            cancel_seen = level;
            break; /* the rest stay pending: the dispatcher reports them cancelled */
        }
        /* Not ck_assert: this is the backend's thread, not the test's. */
        if (pj_batch_run_task(b, i) != 0 ||
            (lost_on_first_pass(b, i) && pj_batch_mark_pending(b, i) != 0)) {
            fprintf(stderr, "reverse: task %zu: %s\n", i, pj_last_errmsg());
            abort();
        }
    }
    pj_batch_done(b);
}

static void *reverse_thread(void *arg)
{
    struct reverse *r = arg;
    pthread_mutex_lock(&r->lock);
    for (;;) {
        while (!r->len && !r->closing)
            pthread_cond_wait(&r->wake, &r->lock);
        if (!r->len)
            break;
        pj_batch *b = r->queue[r->head];
        r->head = (r->head + 1) % r->cap;
        r->len--;
        pthread_mutex_unlock(&r->lock);
        reverse_run(b);
        pthread_mutex_lock(&r->lock);
    }
    pthread_mutex_unlock(&r->lock);
    return NULL;
}

static void reverse_close(void *state);

static int reverse_open(void **state, int n_workers, const pj_config *config, char *errbuf,
                        size_t errlen)
{
    (void)config;
    struct reverse *r = calloc(1, sizeof *r + (size_t)n_workers * sizeof(pthread_t));
    if (!r)
        return snprintf(errbuf, errlen, "out of memory"), PJ_ENOMEM;
    pthread_mutex_init(&r->lock, NULL);
    pthread_cond_init(&r->wake, NULL);
    for (; r->n_threads < n_workers; r->n_threads++)
        if (pthread_create(&r->threads[r->n_threads], NULL, reverse_thread, r))
            break;
    *state = r;
    if (r->n_threads == 0) {
        reverse_close(r);
        return snprintf(errbuf, errlen, "could not start a thread"), PJ_ESYS;
    }
    return 0;
}

static int reverse_submit(void *state, pj_batch *b)
{
    struct reverse *r = state;
    pthread_mutex_lock(&r->lock);
    if (r->len == r->cap) { /* grow, keeping the FIFO order */
        size_t cap = r->cap ? 2 * r->cap : 16;
        pj_batch **q = malloc(cap * sizeof *q);
        if (!q) {
            pthread_mutex_unlock(&r->lock);
            return PJ_ENOMEM;
        }
        for (size_t k = 0; k < r->len; k++)
            q[k] = r->queue[(r->head + k) % r->cap];
        free(r->queue);
        r->queue = q, r->cap = cap, r->head = 0;
    }
    r->queue[(r->head + r->len++) % r->cap] = b;
    pthread_cond_signal(&r->wake);
    pthread_mutex_unlock(&r->lock);
    return 0;
}

static void reverse_close(void *state)
{
    struct reverse *r = state;
    pthread_mutex_lock(&r->lock);
    r->closing = true;
    pthread_cond_broadcast(&r->wake);
    pthread_mutex_unlock(&r->lock);
    for (int k = 0; k < r->n_threads; k++)
        pthread_join(r->threads[k], NULL);
    pthread_cond_destroy(&r->wake);
    pthread_mutex_destroy(&r->lock);
    free(r->queue);
    free(r);
}

static const struct pj_backend reverse_backend = {
    .version = PJ_BACKEND_VERSION, .name = "reverse", .display_name = "ReverseBackend",
    .open = reverse_open, .submit = reverse_submit, .close = reverse_close,
};

/* ---- what "reverse" did --------------------------------------------------------------------- */

static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;
static int ran[64];
static _Atomic int n_ran;

static int logged(int x)
{
    pthread_mutex_lock(&log_lock);
    if (n_ran < 64)
        ran[n_ran++] = x;
    pthread_mutex_unlock(&log_lock);
    return x * 10;
}

/* One batch of eight on one thread: run 7..0, then the three marked pending again (7, 4, 1,
 * the re-submitted batch run last to first from its begin); every result exactly once. */
START_TEST(reverse_order_and_rerun)
{
    pj_fn *fn = PJ_FN(logged, &ffi_type_sint, &ffi_type_sint);
    pj_task *tasks[8];
    for (int k = 0; k < 8; k++)
        tasks[k] = pj_delayed(fn, k);
    pj_parallel *par = pj_parallel_new(&(pj_config){ .backend = "reverse", .n_jobs = 1,
                                                     .batch_size = 8 });
    ck_assert_ptr_nonnull(par);
    n_ran = 0;
    pj_results *res;
    ck_assert_int_eq(pj_run(par, tasks, 8, &res), 0);
    const int want[] = { 7, 6, 5, 4, 3, 2, 1, 0, 7, 4, 1 };
    ck_assert_int_eq(n_ran, 11);
    for (int k = 0; k < 11; k++)
        ck_assert_msg(ran[k] == want[k], "run %d was task %d, want %d", k, ran[k], want[k]);
    ck_assert_uint_eq(pj_results_count(res), 8);
    for (int k = 0; k < 8; k++) {
        const pj_result *r = pj_results_at(res, k);
        ck_assert_int_eq(r->status, 0);
        ck_assert_uint_eq(r->index, (size_t)k);
        ck_assert_int_eq(pj_result_int(r), 10 * k);
    }
    pj_results_free(res);
    pj_parallel_free(par);
    for (int k = 0; k < 8; k++)
        pj_task_free(tasks[k]);
    pj_fn_free(fn);
}
END_TEST

static pj_parallel *cancelled_par;

static int cancels_run(int x)
{
    if (x == 9)
        pj_parallel_cancel(cancelled_par);
    return x;
}

/* The last task of a batch of ten runs first and cancels the run: "reverse" sees the batch
 * cancelled (2: pj_parallel_cancel) and starts none of the other nine, which the run reports
 * PJ_ECANCELLED; the one that ran keeps its result. */
START_TEST(cancel_inside_a_batch)
{
    pj_fn *fn = PJ_FN(cancels_run, &ffi_type_sint, &ffi_type_sint);
    pj_task *tasks[10];
    for (int k = 0; k < 10; k++)
        tasks[k] = pj_delayed(fn, k);
    cancelled_par = pj_parallel_new(&(pj_config){ .backend = "reverse", .n_jobs = 1,
                                                  .batch_size = 10 });
    ck_assert_ptr_nonnull(cancelled_par);
    cancel_seen = 0;
    pj_results *res;
    ck_assert_int_eq(pj_run(cancelled_par, tasks, 10, &res), PJ_ECANCELLED);
    ck_assert_int_eq(cancel_seen, 2);
    ck_assert_int_eq(pj_results_at(res, 9)->status, 0);
    ck_assert_int_eq(pj_result_int(pj_results_at(res, 9)), 9);
    ck_assert_uint_eq(pj_results_count_status(res, PJ_ECANCELLED), 9);
    pj_results_free(res);
    pj_parallel_free(cancelled_par);
    for (int k = 0; k < 10; k++)
        pj_task_free(tasks[k]);
    pj_fn_free(fn);
}
END_TEST

static _Atomic int go;

/* Holds the backend's one thread until the test has cancelled the future queued behind. */
static int wait_for_go(int x)
{
    for (int k = 0; k < 10000 && !go; k++)
        sleep_us(1000);
    return x;
}

/* A future cancelled while its batch waits behind another: pj_batch_start refuses the batch
 * when the backend comes to it, and the future stays cancelled. */
START_TEST(future_cancelled_before_start)
{
    pj_fn *fn = PJ_FN(wait_for_go, &ffi_type_sint, &ffi_type_sint);
    go = 0;
    pj_task *slow = pj_delayed(fn, 1), *queued = pj_delayed(fn, 2);
    pj_executor *ex = pj_executor_new(&(pj_config){ .backend = "reverse", .n_jobs = 1 });
    ck_assert_ptr_nonnull(ex);
    starts_refused = 0;
    pj_future *first = pj_submit(ex, slow), *second = pj_submit(ex, queued);
    ck_assert_int_eq(pj_future_cancel(second), 1);
    go = 1;
    const pj_result *r;
    ck_assert_int_eq(pj_future_result(first, PJ_FOREVER, &r), 0);
    ck_assert_int_eq(pj_result_int(r), 1);
    ck_assert_int_eq(pj_future_result(second, PJ_FOREVER, &r), PJ_ECANCELLED);
    pj_executor_free(ex); /* joins the thread: it has met the cancelled batch */
    ck_assert_int_eq(starts_refused, 1);
    pj_future_free(first);
    pj_future_free(second);
    pj_task_free(slow);
    pj_task_free(queued);
    pj_fn_free(fn);
}
END_TEST

/* ---- each accessor's answers, from a backend that checks them in submit -------------------- */

static int probe_failures;
#define PROBE(cond)                                                                            \
    do {                                                                                        \
        if (!(cond)) {                                                                          \
            fprintf(stderr, "probe: %s (line %d)\n", #cond, __LINE__);                        \
            probe_failures++;                                                                   \
        }                                                                                       \
    } while (0)

/* One batch of two tasks: task 0 is marked stopped as a crash by signal 11, task 1 runs. */
static int probe_submit(void *state, pj_batch *b)
{
    (void)state;
    size_t n = pj_batch_count(b);
    PROBE(n == 2 && pj_batch_begin(b) == 0);
    PROBE(pj_batch_task(b, 0) != NULL && pj_batch_task(b, n) == NULL);
    PROBE(pj_batch_result(b, 0) != NULL && pj_batch_result(b, n) == NULL);
    PROBE(pj_batch_timeout(b) == 2.5 && pj_batch_cancelled(b) == 0);
    /* Before pj_batch_start no slot may be read as pending or written. */
    PROBE(pj_batch_pending(b, 0) == 0);
    PROBE(pj_batch_run_task(b, 0) == PJ_EINVAL);
    PROBE(pj_batch_mark_pending(b, 0) == PJ_EINVAL);
    PROBE(pj_batch_mark_stopped(b, 0, PJ_ECRASHED, 11, "x") == PJ_EINVAL);
    PROBE(pj_batch_start(b) == 1);
    PROBE(pj_batch_pending(b, 0) == 1 && pj_batch_pending(b, 1) == 1 &&
          pj_batch_pending(b, n) == 0);
    PROBE(pj_batch_mark_stopped(b, 0, 0, 0, "not a failure") == PJ_EINVAL);
    PROBE(pj_batch_mark_stopped(b, n, PJ_ECRASHED, 11, "past the end") == PJ_EINVAL);
    PROBE(pj_batch_mark_stopped(b, 0, PJ_ECRASHED, 11, "simulated crash") == 0);
    PROBE(pj_batch_pending(b, 0) == 0);
    PROBE(pj_batch_run_task(b, 0) == PJ_EINVAL); /* it has its status */
    PROBE(pj_batch_run_task(b, 1) == 0 && pj_batch_pending(b, 1) == 0);
    PROBE(pj_batch_run_task(b, n) == PJ_EINVAL);
    pj_batch_done(b);
    return 0;
}

static int probe_open(void **state, int n_workers, const pj_config *config, char *errbuf,
                      size_t errlen)
{
    (void)n_workers, (void)config, (void)errbuf, (void)errlen;
    *state = NULL;
    return 0;
}

static void probe_close(void *state)
{
    (void)state;
}

static const struct pj_backend probe_backend = {
    .version = PJ_BACKEND_VERSION, .name = "probe", .display_name = "ProbeBackend",
    .open = probe_open, .submit = probe_submit, .close = probe_close,
};

START_TEST(accessors_refuse_misuse)
{
    ck_assert_uint_eq(pj_batch_count(NULL), 0);
    ck_assert_ptr_null(pj_batch_task(NULL, 0));
    ck_assert_int_eq(pj_batch_start(NULL), PJ_EINVAL);
    ck_assert_int_eq(pj_batch_run_task(NULL, 0), PJ_EINVAL);
    pj_fn *fn = PJ_FN(add, &ffi_type_sint, &ffi_type_sint, &ffi_type_sint);
    pj_task *tasks[2] = { pj_delayed(fn, 1, 2), pj_delayed(fn, 3, 4) };
    pj_parallel *par = pj_parallel_new(&(pj_config){ .backend = "probe", .n_jobs = 1,
                                                     .batch_size = 2, .timeout = 2.5,
                                                     .on_error = PJ_ON_ERROR_CONTINUE });
    ck_assert_ptr_nonnull(par);
    probe_failures = 0;
    pj_results *res;
    ck_assert_int_eq(pj_run(par, tasks, 2, &res), PJ_ECRASHED);
    ck_assert_int_eq(probe_failures, 0);
    const pj_result *r = pj_results_at(res, 0);
    ck_assert_int_eq(r->status, PJ_ECRASHED);
    ck_assert_int_eq(r->code, 11);
    ck_assert_str_eq(r->message, "simulated crash");
    ck_assert_int_eq(pj_results_at(res, 1)->status, 0);
    ck_assert_int_eq(pj_result_int(pj_results_at(res, 1)), 7);
    pj_results_free(res);
    pj_parallel_free(par);
    pj_task_free(tasks[0]);
    pj_task_free(tasks[1]);
    pj_fn_free(fn);
}
END_TEST

static Suite *backend_api_suite(void)
{
    Suite *s = suite_create("backend-api");
    TCase *tc = tcase_create("reverse");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, reverse_order_and_rerun);
    tcase_add_test(tc, cancel_inside_a_batch);
    tcase_add_test(tc, future_cancelled_before_start);
    tcase_add_test(tc, accessors_refuse_misuse);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    if (pj_backend_register(&reverse_backend) || pj_backend_register(&probe_backend)) {
        fprintf(stderr, "pj_backend_register: %s\n", pj_last_errmsg());
        return EXIT_FAILURE;
    }
    SRunner *sr = srunner_create(backend_api_suite());
    srunner_add_suite(sr, backends_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
