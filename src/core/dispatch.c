/* The dispatcher: takes tasks from a source in batches (fixed or auto-sized), keeps at most
 * pre_dispatch batches taken and not yet returned, hands batches to the backend, re-runs what a
 * crash or timeout left pending, watches deadlines, applies the error policy, and returns
 * results as a list or in (un)ordered generator order.
 *
 * This file is the run's lifecycle and its list form: a run opened (checked, set up, its first
 * batches dispatched), a list run collected, a run freed, and the result arrays of list runs.
 * The rest of the dispatcher, with the lock rule, is named in dispatch.h: taking batches
 * (dispatch_take.c), the dispatch loop and completions (dispatch_loop.c), the generators'
 * yield (dispatch_yield.c) and the deadlines (dispatch_watchdog.c). */
#include "dispatch.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/mman.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ---- result arrays -------------------------------------------------------------------------
 * A million tiny tasks write 64 MB of results once.  On 4 KiB pages the first touch of each
 * page costs as much as a few dozen calls; mapped with huge pages where the kernel allows it,
 * the faults all but vanish. */
#define HUGE_PAGE ((size_t)2 << 20)

/* The last big result array freed, kept for the next run: a program that runs again and again
 * would otherwise have the kernel zero 64 bytes per task each time (for tiny tasks that was a
 * quarter of a run's CPU time).  It is handed back with MADV_FREE, so the kernel may still
 * take its pages under memory pressure; until then they count in the resident size.  Swapped
 * atomically, not under a lock: a worker may be forked at any moment, and must not inherit a
 * lock held by another thread. */
struct spare_array {
    void *p;
    size_t len;
};
static _Atomic(struct spare_array *) spare;

static void drop_spare(struct spare_array *s)
{
    if (s) {
        munmap(s->p, s->len);
        free(s);
    }
}

static void *take_spare(size_t len, size_t *got)
{
    struct spare_array *s = atomic_exchange(&spare, NULL);
    if (!s)
        return NULL;
    if (s->len >= len && s->len / 2 <= len) { /* not twice what is needed */
        void *p = s->p;
        *got = s->len;
        free(s);
        return p;
    }
    drop_spare(atomic_exchange(&spare, s)); /* kept for another run; one kept meanwhile goes */
    return NULL;
}

pj_result *pj__results_alloc(size_t n, size_t *mapped, bool recycled_ok)
{
    size_t bytes = n * sizeof(pj_result);
    *mapped = 0;
    if (n > SIZE_MAX / sizeof(pj_result))
        return NULL;
    if (bytes < 2 * HUGE_PAGE)
        return calloc(n ? n : 1, sizeof(pj_result));
    size_t len = (bytes + HUGE_PAGE - 1) / HUGE_PAGE * HUGE_PAGE;
    void *p = recycled_ok ? take_spare(len, mapped) : NULL;
    if (p)
        return p;
    p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        return NULL;
#ifdef MADV_HUGEPAGE
    madvise(p, len, MADV_HUGEPAGE);
#endif
    *mapped = len;
    return p;
}

void pj__results_release(pj_result *r, size_t mapped)
{
    if (!mapped) {
        free(r);
        return;
    }
    struct spare_array *keep = malloc(sizeof *keep);
    if (!keep) {
        munmap(r, mapped);
        return;
    }
#ifdef MADV_FREE
    madvise(r, mapped, MADV_FREE);
#endif
    *keep = (struct spare_array){ r, mapped };
    drop_spare(atomic_exchange(&spare, keep));
}

/* ---- runs ----------------------------------------------------------------------------------- */

static int run_validate(pj_parallel *par, const struct pj__source *src)
{
    if (src->array) {
        bool process = par->backend->features & PJ_BACKEND_PROCESS;
        const pj_fn *checked = NULL, *clean = NULL; /* clean: needs no look at its tasks */
        char msg[512];
        for (size_t i = 0; i < src->n; i++) {
            if (!src->array[i])
                return pj__parallel_set_error(par, PJ_EINVAL, "task %zu is NULL (did "
                                              "pj_delayed fail? see pj_last_errmsg)", i);
            char why[448];
            if (!process && pj__shared_check_task(src->array[i], why, sizeof why))
                return pj__parallel_set_error(par, PJ_EINVAL, "task %zu (%s): %s", i,
                                              pj_fn_name(src->array[i]->fn), why);
            if (!process || src->array[i]->fn == clean)
                continue; /* a million tasks of one function: one pointer compare each */
            int rc = pj__cannot_carry(par->backend->features, src->array[i], i, &checked, msg,
                                      sizeof msg);
            if (rc)
                return pj__parallel_set_error(par, rc, "%s", msg);
            if (!src->array[i]->fn->pointer_args)
                clean = src->array[i]->fn;
        }
    } else if (!src->producer) {
        return pj__parallel_set_error(par, PJ_EINVAL, "no tasks: the producer is NULL");
    }
    return 0;
}

void pj__run_free(pj_iter *run)
{
    while (run->oldest) {
        struct run_batch *b = run->oldest;
        window_unlink(run, b);
        pj__run_batch_free(b);
    }
    pj__run_batch_release(atomic_load(&run->spare));
    free(run->yielded_message);
    free(run->yielded_heap);
    pj_task_free(run->stash);
    pthread_cond_destroy(&run->cond);
    pthread_mutex_destroy(&run->lock);
    pj__shared_run_end(run->shared_run); /* every batch is back: its sealed inputs go */
    free(run);
}

static void begin_progress(pj_iter *run, const struct pj__source *src)
{
    const pj_parallel *par = run->par;
    bool inline_runs = par->backend->features & PJ_BACKEND_INLINE;
    pj__progress_begin(&run->progress, &(struct pj__progress_setup){
        .verbose = par->cfg.verbose, .n_jobs_label = par->n_jobs_label,
        .workers = inline_runs ? 1 : par->n_jobs, .backend_display = par->backend->display_name,
        .share = par->worker_share,
        .total_known = src->array != NULL || src->n, .n_tasks = src->n,
        .pre_dispatch = run->window == SIZE_MAX ? 0 : run->window,
        .dispatch_all = run->window == SIZE_MAX,
        .callback = par->cfg.progress, .callback_data = par->cfg.progress_data,
        .bar_tty = -1 });
}

int pj__run_open(pj_parallel *par, const struct pj__source *src, bool list, pj_iter **out)
{
    int rc = run_validate(par, src);
    if (rc)
        return rc;
    pj_iter *run = calloc(1, sizeof *run);
    if (!run)
        return pj__parallel_set_error(par, PJ_ENOMEM, "out of memory");
    run->par = par;
    run->backend = par->backend;
    run->bstate = par->backend_state;
    run->array = src->array;
    run->n_array = src->n;
    run->producer = src->producer;
    run->producer_state = src->state;
    run->source_done = src->array && src->n == 0; /* joblib's Parallel()([]) is [] */
    run->list = list;
    run->ordered = par->cfg.return_as != PJ_GENERATOR_UNORDERED;
    run->in_place = list && src->array;
    run->check_portable = par->backend->features & PJ_BACKEND_PROCESS;
    run->shared_run = run->check_portable ? pj__shared_new_run() : 0;
    run->window = par->window;
    run->hold_windows = src->hold_windows ? src->hold_windows : PJ__HELD_WINDOWS;
    run->fixed_batch = par->cfg.batch_size;
    run->auto_size = 1;
    run->n_workers = par->n_jobs;
    run->stop_on_error = par->cfg.on_error == PJ_ON_ERROR_STOP;
    run->timeout_ns = (uint64_t)(par->cfg.timeout * 1e9);
    /* A cancel that came before the run began is not this run's. */
    run->cancel = &par->run_cancel;
    atomic_store(run->cancel, 0);
    pthread_mutex_init(&run->lock, NULL);
    pthread_condattr_t attr; /* pj__consumer_wait's deadline is on the monotonic clock */
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&run->cond, &attr);
    pthread_condattr_destroy(&attr);
    if (run->in_place) {
        run->results = pj__results_alloc(src->n, &run->results_mapped, run->check_portable);
        run->results_cap = src->n;
        if (!run->results) {
            pj__run_free(run);
            return pj__parallel_set_error(par, PJ_ENOMEM, "out of memory for %zu results",
                                          src->n);
        }
    }
    if (pj__start_watchdog(run)) {
        pj__results_release(run->results, run->results_mapped);
        pj__run_free(run);
        return pj__parallel_set_error(par, PJ_ESYS, "cannot start the timeout watchdog");
    }
    begin_progress(run, src);
    pthread_mutex_lock(&run->lock);
    pj__dispatch_more(run);
    pthread_mutex_unlock(&run->lock);
    *out = run;
    return 0;
}

/* The consumer sleeps at most this long between looks at the cancel flag: pj_parallel_cancel,
 * called from a signal handler, cannot signal a condition variable, and the call it cancels
 * must return within 100 ms. */
#define CONSUMER_TICK_NS (20 * 1000 * 1000)

/* Waits on run->cond (the lock held) until signalled or a tick passes; true once the run is
 * cancelled by pj_parallel_cancel. */
bool pj__consumer_wait(pj_iter *run)
{
    uint64_t wake = pj__now_ns() + CONSUMER_TICK_NS;
    struct timespec ts = { (time_t)(wake / 1000000000u), (long)(wake % 1000000000u) };
    pthread_cond_timedwait(&run->cond, &run->lock, &ts);
    return cancel_seen(run);
}

/* Waits until every batch is back and returned, and no thread is still between submitting a
 * batch and taking the lock again (in dispatch_more or re-running a batch), when that batch may
 * have come back already: then no thread but the caller's touches run. */
static void wait_complete(pj_iter *run)
{
    pthread_mutex_lock(&run->lock);
    cancel_seen(run);
    while (!run_complete(run) || run->dispatching || run->submitting) {
        if (caller_dispatches(run) && !run->dispatching && may_take(run)) {
            pj__dispatch_next(run);
            continue;
        }
        run->consumer_waiting = true;
        pj__consumer_wait(run);
    }
    run->consumer_waiting = false;
    pthread_mutex_unlock(&run->lock);
}

/* The caller of a list run waits anyway: it faults the result array in ahead of the thread
 * that fills it.  The kernel zeroes each fresh page on first touch, and done by the
 * dispatching thread that was a fifth of a tiny-task run on the fork backend (perf:
 * clear_page), where that one thread is the bottleneck.  MADV_POPULATE_WRITE changes no byte,
 * so it may race with the writers; where the kernel lacks it (before Linux 5.14) nothing
 * happens. */
static void prefault_results(const pj_iter *run)
{
#ifdef MADV_POPULATE_WRITE
    char *p = (char *)run->results;
    for (size_t at = 0; at < run->results_mapped; at += HUGE_PAGE)
        if (madvise(p + at, HUGE_PAGE, MADV_POPULATE_WRITE))
            return;
#else
    (void)run;
#endif
}

int pj__run_collect(pj_iter *run, pj_results **out)
{
    prefault_results(run);
    wait_complete(run);
    pj__stop_watchdog(run);
    if (run->taken) /* joblib prints no "finished" line for an empty run */
        pj__progress_end(&run->progress);
    int rc = run_status(run);
    pj_results *res = malloc(sizeof *res);
    if (!res) {
        for (size_t i = 0; i < run->taken; i++)
            pj__result_clear(&run->results[i]);
        pj__results_release(run->results, run->results_mapped);
        pj__run_free(run);
        return PJ_ENOMEM;
    }
    res->n = run->taken;
    res->r = run->results;
    res->mapped = run->results_mapped;
    res->own_memory = run->results_own_memory;
    run->results = NULL;
    *out = res;
    pj__run_free(run);
    return rc;
}
