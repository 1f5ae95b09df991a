/* The dispatcher's private header, included only by its files (dispatch.c, dispatch_take.c,
 * dispatch_loop.c, dispatch_yield.c, dispatch_watchdog.c): the run (pj_iter) and the batch as
 * the dispatcher holds it, the small helpers every one of them calls on its hot paths (static
 * inline, as they were static beside their callers before the split), and what the files call
 * of one another.  No backend and no other front end sees any of it.
 *
 * Lock rule: run->lock guards every field of the run and the dispatcher's fields of each batch.
 * It is never held while calling into the backend (submit, stop_task), the producer, or while a
 * task runs, because the backend may hand a batch back from inside submit, on any thread; one
 * thread at a time dispatches (run->dispatching), and whoever finds that flag set leaves the
 * work to it — the dispatching thread re-checks the window before it lets go. */
#ifndef PJ_DISPATCH_H
#define PJ_DISPATCH_H

#include "internal.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct pj_iter {
    pj_parallel *par;
    const struct pj_backend *backend;
    void *bstate;
    pthread_mutex_t lock;
    pthread_cond_t cond;          /* the consumer waits here for results or the end */
    pthread_cond_t watchdog_cond;

    /* source */
    pj_task *const *array;
    size_t n_array;
    pj_producer producer;
    void *producer_state;
    pj_task *stash;               /* a producer task held back for a batch of its own */
    size_t taken;                 /* tasks taken from the source */
    bool source_done;

    /* mode */
    bool list;                    /* pj_run: everything into results[] */
    bool ordered;                 /* generators: yield in submission order */
    bool in_place;                /* list over an array: batches write into results[] */
    bool check_portable;          /* process backend: pointers must be declared buffers */
    uint64_t shared_run;          /* process backend: the run's number for its large inputs
                                     (pj__shared_new_run), placed once and dropped at the end */
    const pj_fn *fn_checked;      /* last function found resolvable (pj__task_crossing) */
    const pj_fn *fn_clean;        /* last function whose tasks always cross (cannot_cross) */
    _Atomic(struct run_batch *) spare; /* the last batch freed with arrays of its own */
    pj_result *results;           /* list mode */
    size_t results_cap;
    size_t results_mapped;        /* bytes mapped for results (0: malloc'd) */
    bool results_own_memory;      /* some result holds a message or a heap value */

    /* batches taken and not returned, oldest first; finished ones queued (unordered) */
    size_t window, in_window, in_flight;
    size_t hold_windows;          /* pj__source's, resolved: PJ__HELD_WINDOWS by default */
    size_t held;                  /* generators: finished batches in the window, not yet yielded */
    size_t claimed;               /* dispatches counted for progress by completions, which the
                                     caller's thread makes (caller_dispatches) */
    struct run_batch *oldest, *newest;
    struct run_batch *done_head, *done_tail;
    struct run_batch *yielding;
    size_t yield_pos;
    char *yielded_message;        /* owned by the iterator until the next pj_next */
    void *yielded_heap;

    /* batch sizing */
    long fixed_batch;
    size_t auto_size;
    double sum_ns, sum_tasks;     /* decaying sums of measured batch time and size */
    int n_workers;

    /* accounting and policy */
    size_t completed, done_batches;
    bool stop_on_error, stopping, dispatching, consumer_waiting;
    int submitting;               /* threads in submit_batch with the lock released */
    _Atomic int *cancel;          /* &par->run_cancel: PJ__CANCEL_* for every batch */
    bool user_cancelled;          /* pj_parallel_cancel was seen: the run ends PJ_ECANCELLED */
    int first_error;
    size_t first_error_index;
    uint64_t timeout_ns;
    bool watchdog_running, watchdog_stop;
    pthread_t watchdog;
    struct pj__progress progress;
};

/* A batch as the dispatcher holds it: the backend-facing pj_batch (first, so that the batch
 * handed back with pj_batch_done leads back here), then the dispatcher's own bookkeeping,
 * which no backend and no other front end sees.  Guarded by run->lock. */
struct run_batch {
    struct pj_batch batch;
    pj_iter *run;
    struct run_batch *next, *prev; /* the window: batches taken, not returned, oldest first */
    struct run_batch *done_next; /* finished batches not yet yielded (unordered mode) */
    bool in_flight;              /* with the backend */
    bool done;
    bool owns_tasks;             /* producer tasks: freed with the batch */
    bool prefailed;              /* failed before running (a task no process can carry) */
    /* storage for tasks/results when they are not the caller's arrays */
    pj_task **own_tasks;
    pj_result *own_results;
    size_t own_cap;              /* entries of own_tasks and own_results */
};

/* ---- what the dispatch files call of one another -------------------------------------------- */

/* dispatch_take.c: batches, and tasks taken from the source into them. */
/* Takes up to k tasks from the source into a new batch.  Runs without the lock (the producer
 * may be slow): only the dispatching thread is here.  *ended: the source has no more; *err:
 * PJ_ENOMEM or PJ_ESOURCE.  NULL when there was nothing to take or no memory. */
PJ_HIDDEN struct run_batch *pj__take_batch(pj_iter *run, size_t first, size_t k, bool *ended,
                                           int *err);
/* Frees b with the tasks and results it owns (its arrays may be kept for the run's next). */
PJ_HIDDEN void pj__run_batch_free(struct run_batch *b);
/* Frees b and its arrays, nothing they hold; NULL is allowed. */
PJ_HIDDEN void pj__run_batch_release(struct run_batch *b);
/* Whether a backend of these features can carry t (pj__task_crossing), with msg naming the
 * task: "task 3 (add): ...". */
PJ_HIDDEN int pj__cannot_carry(unsigned features, const pj_task *t, size_t index,
                               const pj_fn **checked, char *msg, size_t len);

/* dispatch_loop.c: the dispatch loop and the completion of batches; the lock held. */
PJ_HIDDEN void pj__dispatch_more(pj_iter *run);
PJ_HIDDEN void pj__dispatch_next(pj_iter *run);
/* Every batch's on_done: a batch came back from its backend. */
PJ_HIDDEN void pj__run_batch_done(pj_batch *b);

/* dispatch_watchdog.c: the thread that stops tasks past their deadline. */
PJ_HIDDEN int pj__start_watchdog(pj_iter *run);
PJ_HIDDEN void pj__stop_watchdog(pj_iter *run);

/* dispatch.c: the run itself. */
PJ_HIDDEN void pj__run_free(pj_iter *run);
/* Waits on run->cond (the lock held) until signalled or a tick passes; true once the run is
 * cancelled by pj_parallel_cancel. */
PJ_HIDDEN bool pj__consumer_wait(pj_iter *run);

/* ---- shared helpers (static inline: called per batch, and per result by the generators) ----- */

static inline void window_link(pj_iter *run, struct run_batch *b)
{
    b->prev = run->newest;
    b->next = NULL;
    if (run->newest)
        run->newest->next = b;
    else
        run->oldest = b;
    run->newest = b;
    run->in_window++;
}

static inline void window_unlink(pj_iter *run, struct run_batch *b)
{
    if (b->prev)
        b->prev->next = b->next;
    else
        run->oldest = b->next;
    if (b->next)
        b->next->prev = b->prev;
    else
        run->newest = b->prev;
    run->in_window--;
}

/* Stops dispatch: tasks not started are cancelled, and a producer is over — it is not called
 * again, so the run ends once what it handed over is back.  (An array's remaining tasks are
 * still taken, to be reported cancelled.) */
static inline void stop_run(pj_iter *run)
{
    run->stopping = true;
    int none = 0; /* never lower a KILL to a STOP */
    atomic_compare_exchange_strong(run->cancel, &none, PJ__CANCEL_STOP);
    if (!run->array)
        run->source_done = true;
}

/* pj_parallel_cancel only raises the flag (from a signal handler, it can do no more): whoever
 * holds the run's lock next — the consumer waking at least every CONSUMER_TICK_NS, a batch
 * coming back, the dispatching thread — turns it into a stop of the run, once.  Process
 * backends kill the workers running tasks on their own (they see KILL); the watchdog, where
 * there are deadlines, stops the running tasks of every backend that can stop one. */
static inline bool cancel_seen(pj_iter *run)
{
    if (run->user_cancelled)
        return true;
    if (atomic_load_explicit(run->cancel, memory_order_acquire) != PJ__CANCEL_KILL)
        return false;
    run->user_cancelled = true;
    pj__parallel_set_error(run->par, PJ_ECANCELLED, "the run was cancelled (pj_parallel_cancel) "
                           "after %zu of its tasks had finished", run->completed);
    if (!run->stopping)
        stop_run(run);
    if (run->watchdog_running)
        pthread_cond_signal(&run->watchdog_cond);
    return true;
}

static inline bool run_complete(const pj_iter *run)
{
    return run->source_done && run->in_window == 0;
}

static inline void wake_consumer(pj_iter *run)
{
    if (run->consumer_waiting)
        pthread_cond_signal(&run->cond);
}

/* In a list run from a producer the caller's thread, which only waits, takes the tasks
 * (wait_complete): the producer then runs beside the workers instead of on the thread that
 * must also feed them (a process pool's I/O thread), and in the caller's thread. */
static inline bool caller_dispatches(const pj_iter *run)
{
    return run->list && run->producer;
}

/* pre_dispatch bounds the batches taken and not finished; a generator's finished batches
 * not yet yielded are held apart, up to hold_windows windows (PJ__HELD_WINDOWS unless the
 * source asks for fewer). */
static inline bool may_take(const pj_iter *run)
{
    size_t held_most = run->window > SIZE_MAX / run->hold_windows
                       ? SIZE_MAX : run->window * run->hold_windows;
    if (run->source_done || run->in_window - run->held >= run->window || run->held >= held_most)
        return false;
    return !run->stopping || run->array; /* a stopped producer is not called again */
}

static inline int run_status(pj_iter *run)
{
    return run->user_cancelled ? PJ_ECANCELLED : run->first_error;
}

#endif
