/* The dispatcher: takes tasks from a source in batches (fixed or auto-sized), keeps at most
 * pre_dispatch batches taken and not yet returned, hands batches to the backend, re-runs what a
 * crash or timeout left pending, watches deadlines, applies the error policy, and returns
 * results as a list or in (un)ordered generator order.
 *
 * Lock rule: run->lock guards every field of the run and the dispatcher's fields of each batch.
 * It is never held while calling into the backend (submit, stop_task), the producer, or while a
 * task runs, because the backend may hand a batch back from inside submit, on any thread; one
 * thread at a time dispatches (run->dispatching), and whoever finds that flag set leaves the
 * work to it — the dispatching thread re-checks the window before it lets go. */
#include "internal.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/mman.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

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
    const pj_fn *fn_checked;      /* last function found resolvable (pj__task_crossing) */
    const pj_fn *fn_clean;        /* last function whose tasks always cross (cannot_cross) */
    _Atomic(struct run_batch *) spare; /* the last batch freed with arrays of its own */
    pj_result *results;           /* list mode */
    size_t results_cap;
    size_t results_mapped;        /* bytes mapped for results (0: malloc'd) */
    bool results_own_memory;      /* some result holds a message or a heap value */

    /* batches taken and not returned, oldest first; finished ones queued (unordered) */
    size_t window, in_window, in_flight;
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

static void dispatch_more(pj_iter *run);
static void dispatch_next(pj_iter *run);
static bool may_take(const pj_iter *run);
static void run_batch_done(pj_batch *b);

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

/* ---- batches -------------------------------------------------------------------------------- */

static void window_link(pj_iter *run, struct run_batch *b)
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

static void window_unlink(pj_iter *run, struct run_batch *b)
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

static void batch_release(struct run_batch *b)
{
    if (!b)
        return;
    free(b->own_tasks);
    free(b->own_results);
    free(b);
}

/* A batch with arrays of its own (a producer's, or a generator's over an array) reuses the
 * last one freed: calloc'ing two big arrays per batch made glibc consolidate its fast bins
 * every time — the path every task's malloc takes — and fault in fresh pages (perf: a fifth
 * of a producer run on tiny tasks).  Its slots were left cleared by batch_free. */
static struct run_batch *batch_reuse(pj_iter *run, size_t k)
{
    struct run_batch *b = atomic_exchange(&run->spare, NULL);
    if (b && b->own_cap < k) {
        batch_release(b);
        return NULL;
    }
    if (b)
        *b = (struct run_batch){ .own_tasks = b->own_tasks, .own_results = b->own_results,
                                 .own_cap = b->own_cap };
    return b;
}

static struct run_batch *batch_new(pj_iter *run, size_t first, size_t k, bool own)
{
    struct run_batch *b = own ? batch_reuse(run, k ? k : 1) : NULL;
    if (!b && !(b = calloc(1, sizeof *b)))
        return NULL;
    b->run = run;
    b->batch.on_done = run_batch_done;
    b->batch.first_index = first;
    b->batch.timeout_ns = run->timeout_ns;
    b->batch.cancel = run->cancel;
    if (own && !b->own_tasks) {
        b->own_cap = k ? k : 1;
        b->own_tasks = calloc(b->own_cap, sizeof *b->own_tasks);
        b->own_results = calloc(b->own_cap, sizeof *b->own_results);
        if (!b->own_tasks || !b->own_results) {
            batch_release(b);
            return NULL;
        }
    }
    if (own) {
        b->batch.tasks = b->own_tasks;
        b->batch.results = b->own_results;
    }
    return b;
}

static void batch_free(struct run_batch *b)
{
    if (b->own_results)
        for (size_t i = 0; i < b->batch.count; i++)
            pj__result_clear(&b->own_results[i]);
    if (b->owns_tasks)
        for (size_t i = 0; i < b->batch.count; i++)
            pj_task_free(b->own_tasks[i]);
    if (b->own_results && b->run) {
        batch_release(atomic_exchange(&b->run->spare, b));
        return;
    }
    batch_release(b);
}

/* Process backends leave the tasks they could not run pending, so their slots start so,
 * written whole: the array may be recycled (pj__results_alloc).  fn is left to whoever writes
 * the result, or to finish_batch: a look at each task here cost as much as the pass itself.
 * The in-process executor writes every slot it is given: a pass here would only double the
 * memory traffic of tiny tasks (index and fn are filled in when the batch finishes). */
static void prepare_results(const pj_iter *run, struct run_batch *b)
{
    if (!run->check_portable)
        return;
    for (size_t i = 0; i < b->batch.count; i++)
        b->batch.results[i] = (pj_result){ .index = b->batch.first_index + i,
                                           .status = PJ__PENDING };
}

/* The same, with msg naming the task: "task 3 (add): ...". */
static int cannot_carry(unsigned features, const pj_task *t, size_t index, const pj_fn **checked,
                        char *msg, size_t len)
{
    char why[448];
    int rc = pj__task_crossing(features, t, checked, why, sizeof why);
    if (rc && msg)
        snprintf(msg, len, "task %zu (%s): %s", index, pj_fn_name(t->fn), why);
    return rc;
}

static struct run_batch *take_from_array(pj_iter *run, size_t first, size_t k, bool *ended)
{
    size_t left = run->n_array - first;
    k = k < left ? k : left;
    struct run_batch *b = batch_new(run, first, k, !run->in_place);
    if (!b)
        return NULL;
    if (run->in_place) {
        b->batch.tasks = run->array + first;
        b->batch.results = run->results + first;
    } else {
        memcpy(b->own_tasks, run->array + first, k * sizeof *b->own_tasks);
    }
    b->batch.count = k;
    *ended = first + k == run->n_array;
    return b;
}

/* True when a process backend cannot carry t (checked as tasks are taken from a producer). */
static bool cannot_cross(pj_iter *run, const pj_task *t, size_t index)
{
    if (!run->check_portable || t->fn == run->fn_clean)
        return false;
    if (cannot_carry(run->backend->features, t, index, &run->fn_checked, NULL, 0))
        return true;
    if (!t->fn->pointer_args)
        run->fn_clean = t->fn;
    return false;
}

/* A task that cannot cross gets a batch of its own, failed without running: the batch being
 * filled ends before it, and the next one starts with it (run->stash). */
static void take_from_producer(pj_iter *run, struct run_batch *b, size_t k, bool *ended, int *err)
{
    while (b->batch.count < k) {
        pj_task *t = run->stash;
        int rc = 1;
        run->stash = NULL;
        if (!t)
            rc = run->producer(run->producer_state, &t);
        if (rc == 1 && t && cannot_cross(run, t, b->batch.first_index + b->batch.count)) {
            if (b->batch.count) {
                run->stash = t;
                return;
            }
            b->own_tasks[b->batch.count++] = t;
            b->prefailed = true;
            return;
        }
        if (rc == 1 && t) {
            b->own_tasks[b->batch.count++] = t;
            continue;
        }
        *ended = true;
        if (rc < 0 || (rc == 1 && !t))
            *err = PJ_ESOURCE;
        return;
    }
}

static void fail_prefailed(pj_iter *run, struct run_batch *b)
{
    char msg[512];
    int rc = cannot_carry(run->backend->features, b->batch.tasks[0], b->batch.first_index,
                          &run->fn_checked, msg, sizeof msg);
    if (rc)
        pj__result_fail(&b->batch.results[0], rc, 0, "%s", msg);
}

/* Takes up to k tasks from the source into a new batch.  Runs without the lock (the producer
 * may be slow): only the dispatching thread is here.  *ended: the source has no more. */
static struct run_batch *take_batch(pj_iter *run, size_t first, size_t k, bool *ended, int *err)
{
    *ended = false;
    *err = 0;
    struct run_batch *b = run->array ? take_from_array(run, first, k, ended)
                                    : batch_new(run, first, k, true);
    if (!b)
        return *err = PJ_ENOMEM, NULL;
    if (!run->array) {
        b->owns_tasks = true;
        take_from_producer(run, b, k, ended, err);
        if (b->batch.count == 0) {
            batch_free(b);
            return NULL;
        }
    }
    prepare_results(run, b);
    if (b->prefailed)
        fail_prefailed(run, b);
    return b;
}

/* ---- policy and accounting ------------------------------------------------------------------ */

/* Stops dispatch: tasks not started are cancelled, and a producer is over — it is not called
 * again, so the run ends once what it handed over is back.  (An array's remaining tasks are
 * still taken, to be reported cancelled.) */
static void stop_run(pj_iter *run)
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
static bool cancel_seen(pj_iter *run)
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

static bool run_complete(const pj_iter *run)
{
    return run->source_done && run->in_window == 0;
}

static void wake_consumer(pj_iter *run)
{
    if (run->consumer_waiting)
        pthread_cond_signal(&run->cond);
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
                           run->source_done ? run->taken : run->array ? run->n_array : 0);
    if (!run->list)
        run->held++;
    if (run->list) {
        if (!run->in_place)
            append_results(run, b);
        window_unlink(run, b);
        batch_free(b);
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

/* In a list run from a producer the caller's thread, which only waits, takes the tasks
 * (wait_complete): the producer then runs beside the workers instead of on the thread that
 * must also feed them (a process pool's I/O thread), and in the caller's thread. */
static bool caller_dispatches(const pj_iter *run)
{
    return run->list && run->producer;
}

static void run_batch_done(pj_batch *done)
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
        dispatch_next(run);
    }
    pthread_mutex_unlock(&run->lock);
}

/* ---- dispatching ---------------------------------------------------------------------------- */

/* pre_dispatch bounds the batches taken and not finished; a generator's finished batches
 * not yet yielded are held apart, up to PJ__HELD_WINDOWS windows. */
static bool may_take(const pj_iter *run)
{
    size_t held_most = run->window > SIZE_MAX / PJ__HELD_WINDOWS ? SIZE_MAX
                                                                 : run->window * PJ__HELD_WINDOWS;
    if (run->source_done || run->in_window - run->held >= run->window || run->held >= held_most)
        return false;
    return !run->stopping || run->array; /* a stopped producer is not called again */
}

/* A generator's consumer has a result to take now (next_ready would find a batch). */
static bool ready_to_yield(const pj_iter *run)
{
    return run->ordered ? run->oldest && run->oldest->done : run->done_head != NULL;
}

static void dispatch_more(pj_iter *run)
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
        struct run_batch *b = take_batch(run, first, k, &ended, &err);
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
static void dispatch_next(pj_iter *run)
{
    size_t taken = run->taken;
    bool was_done = run->source_done;
    dispatch_more(run);
    if (run->source_done && (was_done || run->taken == taken))
        pj__progress_exhausted(&run->progress);
}

/* ---- deadlines ------------------------------------------------------------------------------ */

/* Claims the task b is running if it started at least limit ns before now; returns its index
 * + 1, or 0 and lowers *wake to the moment it will have.  The claim is a CAS on the cell the
 * executor also CASes when the task returns: exactly one side owns the task's result. */
static uint64_t claim_if_late(struct run_batch *b, uint64_t now, uint64_t limit, uint64_t *wake)
{
    struct pj__cell *cell = atomic_load_explicit(&b->batch.cell, memory_order_acquire);
    if (!cell)
        return 0;
    uint64_t id = atomic_load_explicit(&cell->running, memory_order_acquire);
    if (id == 0 || (id & (PJ__CELL_STOPPED | PJ__CELL_RETURNED)))
        return 0;
    uint64_t started = atomic_load_explicit(&cell->started_ns, memory_order_acquire);
    if (atomic_load_explicit(&cell->running, memory_order_acquire) != id)
        return 0; /* moved on meanwhile: started belongs to another task */
    if (now < started + limit) {
        if (started + limit < *wake)
            *wake = started + limit;
        return 0;
    }
    uint64_t expected = id;
    if (!atomic_compare_exchange_strong(&cell->running, &expected, id | PJ__CELL_STOPPED))
        return 0;
    return id;
}

/* Task id - 1 of b is claimed: it timed out (or was cancelled: status); have the backend stop
 * it (the lock is released around stop_task, which hands the batch back). */
static void stop_claimed(pj_iter *run, struct run_batch *b, uint64_t id, int status,
                         const char *why)
{
    pj__result_fail(&b->batch.results[id - 1], status, 0, "%s", why);
    b->batch.begin = id; /* the tasks after it have not run; pj_batch_done re-runs them */
    for (size_t i = id; i < b->batch.count; i++)
        b->batch.results[i].status = PJ__PENDING;
    pthread_mutex_unlock(&run->lock);
    run->backend->stop_task(run->bstate, &b->batch);
    pthread_mutex_lock(&run->lock);
}

/* Stops one task past its deadline, if any (the window may change while stop_task runs
 * unlocked, so the watchdog scans again after each); lowers *wake to the next deadline.  Once
 * the run is cancelled (pj_parallel_cancel) every running task is past it. */
static bool stop_one_late(pj_iter *run, uint64_t *wake)
{
    bool cancelled = run->user_cancelled;
    uint64_t now = pj__now_ns(), limit = cancelled ? 0 : run->timeout_ns;
    for (struct run_batch *b = run->oldest; b; b = b->next) {
        uint64_t id = b->in_flight ? claim_if_late(b, now, limit, wake) : 0;
        if (!id)
            continue;
        char why[128];
        if (cancelled)
            snprintf(why, sizeof why, "cancelled while running (pj_parallel_cancel): stopped "
                     "by its backend");
        else
            snprintf(why, sizeof why, "still running %.3f s after it started, past its timeout "
                     "of %.3f s", (now - atomic_load(&b->batch.cell->started_ns)) / 1e9,
                     limit / 1e9);
        stop_claimed(run, b, id, cancelled ? PJ_ECANCELLED : PJ_ETIMEDOUT, why);
        return true;
    }
    return false;
}

static void *watchdog_main(void *arg)
{
    pj_iter *run = arg;
    pthread_mutex_lock(&run->lock);
    while (!run->watchdog_stop) {
        uint64_t wake = pj__now_ns() + run->timeout_ns;
        if (stop_one_late(run, &wake))
            continue;
        struct timespec ts = { (time_t)(wake / 1000000000u), (long)(wake % 1000000000u) };
        pthread_cond_timedwait(&run->watchdog_cond, &run->lock, &ts);
    }
    pthread_mutex_unlock(&run->lock);
    return NULL;
}

static int start_watchdog(pj_iter *run)
{
    pthread_condattr_t attr;
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    int rc = pthread_cond_init(&run->watchdog_cond, &attr);
    pthread_condattr_destroy(&attr);
    if (rc)
        return PJ_ESYS;
    if (!run->timeout_ns || !run->backend->stop_task)
        return 0;
    if (pthread_create(&run->watchdog, NULL, watchdog_main, run))
        return PJ_ESYS;
    run->watchdog_running = true;
    return 0;
}

static void stop_watchdog(pj_iter *run)
{
    if (run->watchdog_running) {
        pthread_mutex_lock(&run->lock);
        run->watchdog_stop = true;
        pthread_cond_signal(&run->watchdog_cond);
        pthread_mutex_unlock(&run->lock);
        pthread_join(run->watchdog, NULL);
    }
    pthread_cond_destroy(&run->watchdog_cond);
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
            if (!process || src->array[i]->fn == clean)
                continue; /* a million tasks of one function: one pointer compare each */
            int rc = cannot_carry(par->backend->features, src->array[i], i, &checked, msg,
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

static void run_free(pj_iter *run)
{
    while (run->oldest) {
        struct run_batch *b = run->oldest;
        window_unlink(run, b);
        batch_free(b);
    }
    batch_release(atomic_load(&run->spare));
    free(run->yielded_message);
    free(run->yielded_heap);
    pj_task_free(run->stash);
    pthread_cond_destroy(&run->cond);
    pthread_mutex_destroy(&run->lock);
    free(run);
}

static void begin_progress(pj_iter *run, const struct pj__source *src)
{
    const pj_parallel *par = run->par;
    bool inline_runs = par->backend->features & PJ_BACKEND_INLINE;
    pj__progress_begin(&run->progress, &(struct pj__progress_setup){
        .verbose = par->cfg.verbose, .n_jobs_label = par->n_jobs_label,
        .workers = inline_runs ? 1 : par->n_jobs, .backend_display = par->backend->display_name,
        .total_known = src->array != NULL, .n_tasks = src->n,
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
    run->window = par->window;
    run->fixed_batch = par->cfg.batch_size;
    run->auto_size = 1;
    run->n_workers = par->n_jobs;
    run->stop_on_error = par->cfg.on_error == PJ_ON_ERROR_STOP;
    run->timeout_ns = (uint64_t)(par->cfg.timeout * 1e9);
    /* A cancel that came before the run began is not this run's. */
    run->cancel = &par->run_cancel;
    atomic_store(run->cancel, 0);
    pthread_mutex_init(&run->lock, NULL);
    pthread_condattr_t attr; /* consumer_wait's deadline is on the monotonic clock */
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&run->cond, &attr);
    pthread_condattr_destroy(&attr);
    if (run->in_place) {
        run->results = pj__results_alloc(src->n, &run->results_mapped, run->check_portable);
        run->results_cap = src->n;
        if (!run->results) {
            run_free(run);
            return pj__parallel_set_error(par, PJ_ENOMEM, "out of memory for %zu results",
                                          src->n);
        }
    }
    if (start_watchdog(run)) {
        pj__results_release(run->results, run->results_mapped);
        run_free(run);
        return pj__parallel_set_error(par, PJ_ESYS, "cannot start the timeout watchdog");
    }
    begin_progress(run, src);
    pthread_mutex_lock(&run->lock);
    dispatch_more(run);
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
static bool consumer_wait(pj_iter *run)
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
            dispatch_next(run);
            continue;
        }
        run->consumer_waiting = true;
        consumer_wait(run);
    }
    run->consumer_waiting = false;
    pthread_mutex_unlock(&run->lock);
}

static int run_status(pj_iter *run)
{
    return run->user_cancelled ? PJ_ECANCELLED : run->first_error;
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
    stop_watchdog(run);
    if (run->taken) /* joblib prints no "finished" line for an empty run */
        pj__progress_end(&run->progress);
    int rc = run_status(run);
    pj_results *res = malloc(sizeof *res);
    if (!res) {
        for (size_t i = 0; i < run->taken; i++)
            pj__result_clear(&run->results[i]);
        pj__results_release(run->results, run->results_mapped);
        run_free(run);
        return PJ_ENOMEM;
    }
    res->n = run->taken;
    res->r = run->results;
    res->mapped = run->results_mapped;
    res->own_memory = run->results_own_memory;
    run->results = NULL;
    *out = res;
    run_free(run);
    return rc;
}

static void release_yielded(pj_iter *run)
{
    free(run->yielded_message);
    free(run->yielded_heap);
    run->yielded_message = NULL;
    run->yielded_heap = NULL;
}

/* The finished batch to yield from next, if any. */
static struct run_batch *next_ready(pj_iter *run)
{
    if (run->ordered)
        return run->oldest && run->oldest->done ? run->oldest : NULL;
    struct run_batch *b = run->done_head;
    if (b) {
        run->done_head = b->done_next;
        if (!run->done_head)
            run->done_tail = NULL;
    }
    return b;
}

int pj__run_next(pj_iter *run, pj_result *out)
{
    release_yielded(run);
    pthread_mutex_lock(&run->lock);
    if (cancel_seen(run)) { /* results not yet yielded stay unread: pj_iter_close frees them */
        pthread_mutex_unlock(&run->lock);
        return PJ_ECANCELLED;
    }
    for (;;) {
        struct run_batch *b = run->yielding;
        if (b && run->yield_pos < b->batch.count) {
            pj_result *r = &b->batch.results[run->yield_pos++];
            *out = *r;
            run->yielded_message = (char *)r->message;
            if (r->status == 0 && r->fn && pj__fn_result_heap(r->fn))
                run->yielded_heap = r->value.heap;
            memset(r, 0, sizeof *r); /* moved to the caller */
            pthread_mutex_unlock(&run->lock);
            return 0;
        }
        if (b) {
            run->yielding = NULL;
            run->held--;
            window_unlink(run, b);
            batch_free(b);
            dispatch_more(run);
        }
        b = next_ready(run);
        if (b) {
            run->yielding = b;
            run->yield_pos = 0;
            continue;
        }
        /* A thread still taking a batch (a completion's dispatch, lock released) may yet
         * link one that a stop made the last: wait for it. */
        if (run_complete(run) && !run->dispatching)
            break;
        run->consumer_waiting = true;
        bool cancelled = consumer_wait(run);
        run->consumer_waiting = false;
        if (cancelled) {
            pthread_mutex_unlock(&run->lock);
            return PJ_ECANCELLED;
        }
    }
    pthread_mutex_unlock(&run->lock);
    return PJ_EEND;
}

int pj__run_close(pj_iter *run)
{
    pthread_mutex_lock(&run->lock);
    cancel_seen(run);
    if (!run_complete(run)) {
        /* Cancel what has not started; the producer is not called again. */
        run->stopping = true;
        run->source_done = true;
        int none = 0; /* never lower a KILL to a STOP */
        atomic_compare_exchange_strong(run->cancel, &none, PJ__CANCEL_STOP);
    }
    while (run->in_flight || run->dispatching || run->submitting) {
        run->consumer_waiting = true;
        consumer_wait(run);
    }
    run->consumer_waiting = false;
    pthread_mutex_unlock(&run->lock);
    stop_watchdog(run);
    if (run->taken) /* joblib prints no "finished" line for an empty run */
        pj__progress_end(&run->progress);
    int rc = run_status(run);
    run_free(run);
    return rc;
}

pj_parallel *pj__run_parallel(const pj_iter *run)
{
    return run->par;
}
