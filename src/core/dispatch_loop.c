/* The dispatch loop: batches sized (fixed, or auto for AUTO_TARGET_NS each), taken within the
 * pre_dispatch window and handed to the backend; and batches as they come back: re-run where
 * tasks are left pending, finished (the error policy, accounting, progress, results stored or
 * queued for the generators), each completion dispatching the next.  Part of the dispatcher
 * (dispatch.h); its lock rule applies. */
#include "dispatch.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Auto batching aims for batches of this duration.  Measured with bench/dispatch_bench.c (auto
 * against the best fixed size, threading, 2 cores): a 0.2 ms target loses 6-7% on 1-100 us
 * tasks to per-batch costs; 2 ms and 10 ms both stay within 1-2% of the best from 1 us to
 * 100 ms; 2 ms is kept because its batches are 5x smaller: less memory in flight, earlier
 * results from a generator, a shorter idle tail and a prompter stop after a failure. */
#define AUTO_TARGET_NS (2 * 1000 * 1000)
/* Largest auto batch: where batches own their tasks and results (generators, producers) this
 * bounds a streaming run's memory, ~2 MB a batch; a list over an array costs no memory per
 * batch, and there fewer, bigger batches are 15-20% faster on 50 ns tasks. */
#define AUTO_MAX_BATCH 16384u
#define AUTO_MAX_BATCH_IN_PLACE (1u << 20)
#define AUTO_MAX_GROWTH 16
#define CANCELLED_BATCH 4096

/* ---- policy and accounting ------------------------------------------------------------------ */

static void record_failure(pj_iter *run, const pj_result *r)
{
    if (r->status == 0 || r->status == PJ_ECANCELLED)
        return;
    if (run->first_error == 0 && !run->user_cancelled) { /* else par's message says so */
        run->first_error = r->status;
        run->first_error_index = r->index;
        pj__parallel_set_error(run->par, r->status, "task %zu (%s): %s", r->index,
                               r->fn ? pj_fn_name(r->fn) : "?",
                               r->message ? r->message : pj_strerror(r->status));
    }
    if (run->stop_on_error && !run->stopping)
        stop_run(run);
}

static void update_auto_size(pj_iter *run, const struct run_batch *b)
{
    if (run->fixed_batch || b->batch.resubmits || !b->batch.exec_ns || b->batch.count == 0)
        return;
    /* Decaying sums weight big batches more: their per-task time is the better measure. */
    run->sum_ns = 0.7 * run->sum_ns + (double)b->batch.exec_ns;
    run->sum_tasks = 0.7 * run->sum_tasks + (double)b->batch.count;
    double per_task = run->sum_ns / run->sum_tasks;
    double most = run->in_place ? AUTO_MAX_BATCH_IN_PLACE : AUTO_MAX_BATCH;
    double ideal = per_task > 0 ? AUTO_TARGET_NS / per_task : most;
    size_t cap = run->auto_size * AUTO_MAX_GROWTH;
    size_t next = ideal < 1 ? 1 : ideal > most ? (size_t)most : (size_t)ideal;
    run->auto_size = next > cap ? cap : next;
}

static size_t next_batch_size(const pj_iter *run)
{
    size_t k = run->fixed_batch ? (size_t)run->fixed_batch : run->auto_size;
    if (run->array && !run->fixed_batch) {
        /* Near the end, smaller batches keep every worker busy to the last task — down to a
         * 64th of the auto size (~30 us of work): below that, tiny tasks would end a run with
         * dozens of round trips to run a few hundred calls. */
        size_t share = (run->n_array - run->taken) / (2 * (size_t)run->n_workers);
        size_t least = k / 64 ? k / 64 : 1;
        if (share < k)
            k = share > least ? share : least;
    }
    return k;
}

/* List mode over a producer: room for `need` results, made before the tasks are taken so
 * that finishing a batch never fails to store its results. */
static int reserve_results(pj_iter *run, size_t need)
{
    if (need <= run->results_cap)
        return 0;
    size_t cap = run->results_cap ? run->results_cap : 256;
    while (cap < need)
        cap *= 2;
    pj_result *grown = realloc(run->results, cap * sizeof *grown);
    if (!grown)
        return PJ_ENOMEM;
    run->results = grown;
    run->results_cap = cap;
    return 0;
}

static void append_results(pj_iter *run, struct run_batch *b)
{
    size_t bytes = b->batch.count * sizeof *b->batch.results;
    memcpy(run->results + b->batch.first_index, b->batch.results, bytes);
    memset(b->batch.results, 0, bytes); /* moved: nothing left to free */
}

/* A batch whose every task has its status. */
static void finish_batch(pj_iter *run, struct run_batch *b)
{
    b->done = true;
    bool prepared = run->check_portable; /* index is set since prepare_results */
    const pj_fn *seen = NULL;
    for (size_t i = 0; i < b->batch.count; i++) {
        pj_result *r = &b->batch.results[i];
        if (!prepared)
            r->index = b->batch.first_index + i;
        if (!prepared || !r->fn)
            r->fn = b->batch.tasks[i]->fn;
        if (r->status)
            record_failure(run, r);
        if (r->message)
            run->results_own_memory = true;
        else if (r->fn != seen)
            run->results_own_memory |= pj__fn_result_heap(seen = r->fn);
    }
    run->completed += b->batch.count;
    run->done_batches++;
    update_auto_size(run, b);
    pj__progress_completed(&run->progress, b->batch.count,
                           run->source_done ? run->taken : run->n_array);
    if (!run->list)
        run->held++;
    if (run->list) {
        if (!run->in_place)
            append_results(run, b);
        window_unlink(run, b);
        pj__run_batch_free(b);
    } else if (!run->ordered) {
        b->done_next = NULL;
        if (run->done_tail)
            run->done_tail->done_next = b;
        else
            run->done_head = b;
        run->done_tail = b;
    }
    wake_consumer(run);
}

void pj__batch_fail_from(pj_batch *b, size_t from, int status, const char *why)
{
    for (size_t i = from; i < b->count; i++)
        pj__result_fail(&b->results[i], status, 0, "%s", why);
}

static size_t first_pending(const pj_batch *b)
{
    for (size_t i = b->begin; i < b->count; i++)
        if (b->results[i].status == PJ__PENDING)
            return i;
    return b->count;
}

/* Fails the pending tasks of b from `from` on: after the first pending one, a backend that
 * runs tasks its own way (batch.c) may have left others with their status. */
static void fail_pending_from(pj_batch *b, size_t from, int status, const char *why)
{
    for (size_t i = from; i < b->count; i++)
        if (b->results[i].status == PJ__PENDING)
            pj__result_fail(&b->results[i], status, 0, "%s", why);
}

bool pj__batch_rerun(pj_batch *b, bool cancelled)
{
    size_t j = first_pending(b);
    if (j == b->count)
        return false;
    if (cancelled) {
        fail_pending_from(b, j, PJ_ECANCELLED, "cancelled before it ran");
        return false;
    }
    bool progress = j != b->sent_begin;
    if (!progress && b->resubmits >= 3) {
        fail_pending_from(b, j, PJ_ESYS, "the backend handed the task back unrun repeatedly");
        return false;
    }
    b->resubmits = progress ? 1 : b->resubmits + 1;
    b->begin = b->sent_begin = j;
    return true;
}

/* Hands b to the backend; the lock is held on entry and exit, released around submit. */
static void submit_batch(pj_iter *run, struct run_batch *b)
{
    run->in_flight++;
    run->submitting++;
    b->in_flight = true;
    pthread_mutex_unlock(&run->lock);
    int rc = run->backend->submit(run->bstate, &b->batch);
    pthread_mutex_lock(&run->lock);
    if (--run->submitting == 0)
        wake_consumer(run);
    if (rc) {
        run->in_flight--;
        b->in_flight = false;
        char why[160];
        snprintf(why, sizeof why, "backend %s could not take the batch: %s",
                 run->backend->name, pj_strerror(rc));
        pj__batch_fail_from(&b->batch, b->batch.begin, rc, why);
        finish_batch(run, b);
    }
}

void pj_batch_done(pj_batch *b)
{
    b->on_done(b);
}

void pj__run_batch_done(pj_batch *done)
{
    struct run_batch *b = (struct run_batch *)done; /* its first member */
    pj_iter *run = b->run;
    pthread_mutex_lock(&run->lock);
    run->in_flight--;
    b->in_flight = false;
    atomic_store_explicit(&b->batch.cell, NULL, memory_order_relaxed);
    cancel_seen(run);
    if (pj__batch_rerun(&b->batch, run->stopping))
        submit_batch(run, b);
    else
        finish_batch(run, b);
    if (caller_dispatches(run)) {
        /* joblib dispatches from the completion, before the next completion prints: count
         * the dispatch now, the caller's thread makes it. */
        if (may_take(run)) {
            pj__progress_dispatch_begin(&run->progress);
            run->claimed++;
        }
        wake_consumer(run);
    } else {
        pj__dispatch_next(run);
    }
    pthread_mutex_unlock(&run->lock);
}

/* ---- dispatching ---------------------------------------------------------------------------- */

/* A generator's consumer has a result to take now (next_ready would find a batch). */
static bool ready_to_yield(const pj_iter *run)
{
    return run->ordered ? run->oldest && run->oldest->done : run->done_head != NULL;
}

void pj__dispatch_more(pj_iter *run)
{
    if (run->dispatching)
        return;
    run->dispatching = true;
    cancel_seen(run);
    while (may_take(run)) {
        bool cancelled = run->stopping;
        size_t first = run->taken;
        /* After a stop, the rest of an array is cancelled in big batches: in place, all at
         * once; for a generator, in pieces the window can hold. */
        size_t k = !cancelled ? next_batch_size(run) : run->in_place ? run->n_array - first
                                                                       : CANCELLED_BATCH;
        bool ended;
        int err;
        if (run->list && !run->in_place && reserve_results(run, first + k)) {
            if (!run->first_error) {
                run->first_error = PJ_ENOMEM;
                run->first_error_index = first;
                pj__parallel_set_error(run->par, PJ_ENOMEM, "out of memory for the results of "
                                       "tasks from %zu on: the producer was not called again",
                                       first);
            }
            run->source_done = true;
            break;
        }
        if (run->claimed)
            run->claimed--;
        else
            pj__progress_dispatch_begin(&run->progress);
        pthread_mutex_unlock(&run->lock);
        struct run_batch *b = pj__take_batch(run, first, k, &ended, &err);
        pthread_mutex_lock(&run->lock);
        pj__progress_dispatch_end(&run->progress, b ? b->batch.count : 0);
        if (err && !run->first_error) {
            run->first_error = err;
            run->first_error_index = first + (b ? b->batch.count : 0);
            pj__parallel_set_error(run->par, err, err == PJ_ESOURCE ? "the task source failed "
                                   "after %zu tasks" : "out of memory taking task %zu",
                                   run->first_error_index);
            if (err == PJ_ENOMEM)
                ended = true;
        }
        if (ended || (run->stopping && !run->array))
            run->source_done = true;
        if (!b)
            break;
        run->taken += b->batch.count;
        window_link(run, b);
        if (cancelled) {
            pj__batch_fail_from(&b->batch, 0, PJ_ECANCELLED, "cancelled before it ran");
            finish_batch(run, b);
            continue;
        }
        if (b->prefailed)
            finish_batch(run, b);
        else
            submit_batch(run, b);
        /* A backend that runs batches in this thread has run b already, so every batch it
         * takes is held finished: a generator runs one window (pre_dispatch) ahead of its
         * consumer and then yields, instead of holding its first result behind
         * PJ__HELD_WINDOWS windows of tasks. */
        if (!run->list && (run->backend->features & PJ_BACKEND_INLINE) &&
            run->held >= run->window && ready_to_yield(run))
            break;
    }
    for (; run->claimed; run->claimed--)
        pj__progress_dispatch_end(&run->progress, 0); /* the source had nothing for them */
    run->dispatching = false;
    wake_consumer(run);
}

/* What follows a completion, as in joblib's callback: try to dispatch the next batch.  The
 * attempt that finds the source exhausted is when joblib's lines turn to "remaining:" (its
 * iterator becomes None), not the take that emptied it. */
void pj__dispatch_next(pj_iter *run)
{
    size_t taken = run->taken;
    bool was_done = run->source_done;
    pj__dispatch_more(run);
    if (run->source_done && (was_done || run->taken == taken))
        pj__progress_exhausted(&run->progress);
}
