/* Futures: concurrent.futures' Executor over parjob's backends.
 *
 * A future is one pj_batch (one task for pj_submit, one chunk for pj_map_start) handed to the
 * same backend and worker pool a pj_parallel uses: the executor owns a pj_parallel, opens its
 * backend as a run would (pj__parallel_acquire) and keeps it until pj_executor_free.  Batches
 * come back through batch->on_done (future_batch_done), exactly as they come back to the
 * dispatcher; a batch handed back with tasks still pending (a worker process died under an
 * earlier task of the chunk) is re-submitted for those, as the dispatcher does.
 *
 * Cancellation uses the batch's start gate (internal.h, pj__batch_start): cancel moves it
 * PENDING -> CANCELLED, whoever starts the batch moves it PENDING -> STARTED, so exactly one of
 * them wins and a task that has started is never reported cancelled.  A cancelled batch may
 * still sit in the backend's queue; it comes back unrun and only then drops its reference.
 *
 * Lock rule: ex->lock guards the executor and the state, callbacks and waiter lists of every
 * future of it.  It is never held while calling the backend (submit may hand the batch back
 * from inside, on this thread) nor while running a done-callback (which may call any future
 * function).  A waiter's own lock nests inside ex->lock, never the other way round.
 *
 * Lifetimes: a future holds a reference for its user and one while its batch is with the
 * backend; an executor one for its user and one per live future, so a future stays readable
 * after pj_executor_free. */
#include "internal.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum { F_PENDING = 0, F_FINISHED, F_CANCELLED };

/* A batch handed back this many times without progress cannot be run by the backend. */

struct callback {
    pj_future_cb fn;
    void *data;
    struct callback *next;
};

struct waiter;

/* One future's membership in one waiter (pj_as_completed, pj_wait). */
struct wnode {
    struct waiter *w;
    pj_future *f;
    struct wnode *next, *prev; /* f's list of waiters, under f->ex->lock */
    bool linked;
};

struct waiter {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    pj_future **ready;         /* finished futures, in completion order */
    size_t n_ready, taken;     /* pushed, consumed */
    struct wnode *nodes;
    size_t n;
    uint64_t deadline;         /* CLOCK_MONOTONIC ns; UINT64_MAX: none */
};

struct pj_future {
    struct pj_batch batch;     /* first member: on_done recovers the future from it */
    pj_executor *ex;
    _Atomic int gate;          /* PJ__GATE_*: who won, start or cancel */
    _Atomic int state;         /* F_*; written under ex->lock */
    _Atomic int refs;
    pj_task *task;             /* batch.tasks for pj_submit */
    pj_result result;          /* batch.results for pj_submit */
    pj_result cancelled;       /* what result() shows once cancelled */
    struct callback *callbacks, *callbacks_tail;
    struct wnode *waiters;
    pj_future *next, *prev;    /* ex->active: batch with the backend */
    pj_future *cancel_next;    /* shutdown's list of futures whose callbacks it runs */
    bool active;
};

struct pj_executor {
    pj_parallel *par;
    const struct pj_backend *backend;
    void *bstate;
    bool process;              /* tasks cross a process boundary */
    pthread_mutex_t lock;
    pthread_cond_t cond;       /* a future finished or a batch came back */
    size_t waiting;            /* threads waiting on cond */
    _Atomic int refs;
    bool shutdown;
    size_t in_flight;
    pj_future *active;
    size_t next_seq;
    _Atomic int never;         /* batch->cancel points here: futures cancel through the gate */
};

struct pj_completed {
    struct waiter w;
};

struct pj_map {
    pj_executor *ex;
    size_t n, chunksize, n_chunks, next;
    pj_task **tasks;
    pj_result *results;
    pj_future **chunks;
    uint64_t deadline;
    pj_result scratch;         /* the cancelled result of an item of a cancelled chunk */
};

static const char cancelled_message[] = "cancelled before it ran";

/* ---- time ------------------------------------------------------------------------------ */

static int deadline_from(double timeout, uint64_t *deadline)
{
    if (isnan(timeout))
        return PJ_EINVAL;
    if (timeout < 0 || timeout > 1e9) {
        *deadline = UINT64_MAX;
        return 0;
    }
    *deadline = pj__now_ns() + (uint64_t)(timeout * 1e9);
    return 0;
}

/* Waits on cond until signalled or deadline; false once the deadline has passed. */
static bool wait_until(pthread_cond_t *cond, pthread_mutex_t *lock, uint64_t deadline)
{
    if (deadline == UINT64_MAX) {
        pthread_cond_wait(cond, lock);
        return true;
    }
    if (pj__now_ns() >= deadline)
        return false;
    struct timespec ts = { (time_t)(deadline / 1000000000u), (long)(deadline % 1000000000u) };
    pthread_cond_timedwait(cond, lock, &ts);
    return true;
}

static void cond_init_monotonic(pthread_cond_t *cond)
{
    pthread_condattr_t attr;
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(cond, &attr);
    pthread_condattr_destroy(&attr);
}

/* ---- executor --------------------------------------------------------------------------- */

pj_executor *pj_executor_new(const pj_config *config)
{
    if (config && config->timeout != 0)
        return pj__set_last_error(PJ_EINVAL, "pj_executor_new: timeout = %g: executors have no "
                                  "per-task timeout (wait with pj_future_result's timeout, or "
                                  "use pj_run)", config->timeout), NULL;
    pj_parallel *par = pj_parallel_new(config);
    if (!par)
        return NULL; /* pj_last_error is set */
    int rc = pj__parallel_acquire(par);
    if (rc) {
        pj__set_last_error(rc, "%s", pj_parallel_errmsg(par));
        pj_parallel_free(par);
        return NULL;
    }
    pj_executor *ex = calloc(1, sizeof *ex);
    if (!ex) {
        pj__parallel_release(par);
        pj_parallel_free(par);
        return pj__set_last_error(PJ_ENOMEM, "out of memory"), NULL;
    }
    ex->par = par;
    ex->backend = par->backend;
    ex->bstate = par->backend_state;
    ex->process = par->backend->features & PJ_BACKEND_PROCESS;
    pthread_mutex_init(&ex->lock, NULL);
    cond_init_monotonic(&ex->cond);
    atomic_init(&ex->refs, 1);
    return ex;
}

static void executor_unref(pj_executor *ex)
{
    if (atomic_fetch_sub(&ex->refs, 1) != 1)
        return;
    pthread_cond_destroy(&ex->cond);
    pthread_mutex_destroy(&ex->lock);
    free(ex);
}

const char *pj_executor_backend(const pj_executor *ex)
{
    return ex ? ex->backend->name : NULL;
}

int pj_executor_n_workers(const pj_executor *ex)
{
    return ex ? pj_parallel_n_jobs(ex->par)
              : pj__set_last_error(PJ_EINVAL, "pj_executor_n_workers: executor is NULL");
}

/* ---- futures: completion ---------------------------------------------------------------- */

static void waiter_push(struct waiter *w, pj_future *f)
{
    pthread_mutex_lock(&w->lock);
    w->ready[w->n_ready++] = f;
    pthread_cond_signal(&w->cond);
    pthread_mutex_unlock(&w->lock);
}

/* Marks f finished or cancelled and wakes whoever waits; returns the callbacks to run (after
 * the lock is released).  ex->lock held; f's state is F_PENDING. */
static struct callback *complete_locked(pj_executor *ex, pj_future *f, int state)
{
    atomic_store(&f->state, state);
    for (struct wnode *n = f->waiters; n; n = n->next) {
        n->linked = false;
        waiter_push(n->w, f);
    }
    f->waiters = NULL;
    if (ex->waiting)
        pthread_cond_broadcast(&ex->cond);
    struct callback *cbs = f->callbacks;
    f->callbacks = f->callbacks_tail = NULL;
    return cbs;
}

static void run_callbacks(pj_future *f, struct callback *cbs)
{
    while (cbs) {
        struct callback *next = cbs->next;
        cbs->fn(f, cbs->data);
        free(cbs);
        cbs = next;
    }
}

static void future_destroy(pj_future *f)
{
    pj__result_clear(&f->result);
    for (struct callback *c = f->callbacks, *next; c; c = next) {
        next = c->next;
        free(c);
    }
    pj_executor *ex = f->ex;
    free(f);
    executor_unref(ex);
}

static void future_unref(pj_future *f)
{
    if (atomic_fetch_sub(&f->refs, 1) == 1)
        future_destroy(f);
}

static void active_unlink(pj_executor *ex, pj_future *f)
{
    if (f->prev)
        f->prev->next = f->next;
    else
        ex->active = f->next;
    if (f->next)
        f->next->prev = f->prev;
    f->next = f->prev = NULL;
    f->active = false;
    ex->in_flight--;
    if (ex->waiting)
        pthread_cond_broadcast(&ex->cond);
}

/* The backend hands a future's batch back: here, from any thread, in the submitting process.
 * Tasks left pending (a process worker died under an earlier task of the chunk) go back to the
 * backend, as the dispatcher's run_batch_done does; otherwise the future is finished. */
static void future_batch_done(pj_batch *b)
{
    pj_future *f = (pj_future *)b;
    pj_executor *ex = f->ex;
    if (pj__batch_rerun(b, atomic_load(&f->gate) == PJ__GATE_CANCELLED)) {
        int rc = ex->backend->submit(ex->bstate, b);
        if (rc == 0)
            return; /* it comes back here once more */
        char why[160];
        snprintf(why, sizeof why, "backend %s could not take the batch again: %s",
                 ex->backend->name, pj_strerror(rc));
        pj__batch_fail_from(b, b->begin, rc, why);
    }
    pthread_mutex_lock(&ex->lock);
    struct callback *cbs = NULL;
    if (atomic_load(&f->state) == F_PENDING)
        cbs = complete_locked(ex, f, F_FINISHED);
    pthread_mutex_unlock(&ex->lock);
    run_callbacks(f, cbs);
    /* Only now is the batch back: shutdown(wait) returns after the callbacks have run. */
    pthread_mutex_lock(&ex->lock);
    active_unlink(ex, f);
    pthread_mutex_unlock(&ex->lock);
    future_unref(f); /* the batch's reference */
}

/* ---- futures: submission ---------------------------------------------------------------- */

/* who: "pj_submit" or "pj_map_start item 7", for the message. */
/* checked: the caller's cache of the last function found good (pj__task_crossing). */
static int check_task(const pj_executor *ex, const pj_task *t, const char *who,
                      const pj_fn **checked)
{
    char why[448];
    int rc = pj__task_crossing(ex->backend->features, t, checked, why, sizeof why);
    if (rc)
        return pj__set_last_error(rc, "%s (%s) on backend %s: %s", who, pj_fn_name(t->fn),
                                  ex->backend->name, why);
    return 0;
}

static pj_future *future_new(pj_executor *ex, pj_task *const *tasks, pj_result *results,
                             size_t count)
{
    pj_future *f = calloc(1, sizeof *f);
    if (!f)
        return NULL;
    f->ex = ex;
    atomic_init(&f->refs, 1);
    atomic_init(&f->gate, PJ__GATE_PENDING);
    atomic_init(&f->state, F_PENDING);
    pj_batch *b = &f->batch;
    b->tasks = tasks;
    b->results = results;
    b->count = count;
    b->cancel = &ex->never;
    b->gate = &f->gate;
    b->on_done = future_batch_done;
    atomic_fetch_add(&ex->refs, 1);
    return f;
}

/* Hands f's batch to the backend.  0, or PJ_ESHUTDOWN / the backend's code: the batch was not
 * taken and f is as future_new left it. */
static int future_submit(pj_executor *ex, pj_future *f)
{
    pj_batch *b = &f->batch;
    pthread_mutex_lock(&ex->lock);
    if (ex->shutdown) {
        pthread_mutex_unlock(&ex->lock);
        return PJ_ESHUTDOWN;
    }
    b->first_index = ex->next_seq;
    ex->next_seq += b->count;
    for (size_t i = 0; i < b->count; i++) {
        pj_result *r = &b->results[i];
        memset(r, 0, sizeof *r);
        r->index = b->first_index + i;
        r->status = PJ__PENDING;
        r->fn = b->tasks[i]->fn;
    }
    f->cancelled = (pj_result){ .index = b->first_index, .status = PJ_ECANCELLED,
                                .message = cancelled_message, .fn = b->tasks[0]->fn };
    f->next = ex->active;
    if (ex->active)
        ex->active->prev = f;
    ex->active = f;
    f->active = true;
    ex->in_flight++;
    atomic_fetch_add(&f->refs, 1); /* the batch's, dropped when it comes back */
    pthread_mutex_unlock(&ex->lock);

    int rc = ex->backend->submit(ex->bstate, b);
    if (rc) {
        pthread_mutex_lock(&ex->lock);
        active_unlink(ex, f);
        atomic_fetch_sub(&f->refs, 1);
        pthread_mutex_unlock(&ex->lock);
    }
    return rc;
}

pj_future *pj_submit(pj_executor *ex, pj_task *task)
{
    if (!ex || !task)
        return pj__set_last_error(PJ_EINVAL, "pj_submit: %s is NULL", ex ? "task" : "executor"),
               NULL;
    const pj_fn *checked = NULL;
    if (check_task(ex, task, "pj_submit", &checked))
        return NULL;
    pj_future *f = future_new(ex, NULL, NULL, 1);
    if (!f)
        return pj__set_last_error(PJ_ENOMEM, "pj_submit: out of memory"), NULL;
    f->task = task;
    f->batch.tasks = &f->task;
    f->batch.results = &f->result;
    int rc = future_submit(ex, f);
    if (rc) {
        pj__set_last_error(rc, rc == PJ_ESHUTDOWN ? "pj_submit: the executor is shut down"
                           : "pj_submit: backend %s refused the task: %s", ex->backend->name,
                           pj_strerror(rc));
        future_unref(f);
        return NULL;
    }
    return f;
}

/* ---- futures: queries ------------------------------------------------------------------- */

static int null_future(const char *who)
{
    return pj__set_last_error(PJ_EINVAL, "%s: future is NULL", who);
}

/* A result's status as a call's return value: a failure's message goes where every failing
 * call leaves one (pj_last_errmsg). */
static int result_status(const char *who, const pj_result *r)
{
    if (r->status == 0)
        return 0;
    return pj__set_last_error(r->status, "%s: task %zu: %s", who, r->index,
                              r->message ? r->message : pj_strerror(r->status));
}

int pj_future_done(const pj_future *f)
{
    return f ? atomic_load(&((pj_future *)f)->state) != F_PENDING : null_future("pj_future_done");
}

int pj_future_cancelled(const pj_future *f)
{
    return f ? atomic_load(&((pj_future *)f)->state) == F_CANCELLED
             : null_future("pj_future_cancelled");
}

int pj_future_running(const pj_future *f)
{
    if (!f)
        return null_future("pj_future_running");
    pj_future *m = (pj_future *)f;
    return atomic_load(&m->gate) == PJ__GATE_STARTED && atomic_load(&m->state) == F_PENDING;
}

/* Waits until f is done or the deadline passes; ex->lock held. */
static bool wait_done_locked(pj_executor *ex, pj_future *f, uint64_t deadline)
{
    bool in_time = true;
    while (atomic_load(&f->state) == F_PENDING && in_time) {
        ex->waiting++;
        in_time = wait_until(&ex->cond, &ex->lock, deadline);
        ex->waiting--;
    }
    return atomic_load(&f->state) != F_PENDING;
}

int pj_future_result(pj_future *f, double timeout, const pj_result **out)
{
    if (out)
        *out = NULL;
    uint64_t deadline;
    if (!f || !out || deadline_from(timeout, &deadline))
        return pj__set_last_error(PJ_EINVAL, "pj_future_result: %s", !f ? "future is NULL"
                                  : !out ? "out is NULL" : "timeout is NaN");
    pj_executor *ex = f->ex;
    pthread_mutex_lock(&ex->lock);
    bool done = wait_done_locked(ex, f, deadline);
    pthread_mutex_unlock(&ex->lock);
    if (!done)
        return pj__set_last_error(PJ_ETIMEDOUT, "pj_future_result: task %zu is not done after "
                                  "%g s", f->batch.first_index, timeout);
    *out = atomic_load(&f->state) == F_CANCELLED ? &f->cancelled : &f->result;
    return result_status("pj_future_result", *out);
}

int pj_future_cancel(pj_future *f)
{
    if (!f)
        return null_future("pj_future_cancel");
    pj_executor *ex = f->ex;
    pthread_mutex_lock(&ex->lock);
    int state = atomic_load(&f->state);
    if (state != F_PENDING) {
        pthread_mutex_unlock(&ex->lock);
        return state == F_CANCELLED;
    }
    int expected = PJ__GATE_PENDING;
    if (!atomic_compare_exchange_strong(&f->gate, &expected, PJ__GATE_CANCELLED)) {
        pthread_mutex_unlock(&ex->lock);
        return 0; /* started: it runs to its end */
    }
    struct callback *cbs = complete_locked(ex, f, F_CANCELLED);
    pthread_mutex_unlock(&ex->lock);
    run_callbacks(f, cbs);
    return 1;
}

int pj_future_add_done_callback(pj_future *f, pj_future_cb fn, void *data)
{
    if (!f || !fn)
        return pj__set_last_error(PJ_EINVAL, "pj_future_add_done_callback: %s is NULL",
                                  !f ? "future" : "fn");
    struct callback *c = malloc(sizeof *c);
    if (!c)
        return pj__set_last_error(PJ_ENOMEM, "pj_future_add_done_callback: out of memory");
    *c = (struct callback){ .fn = fn, .data = data };
    pj_executor *ex = f->ex;
    pthread_mutex_lock(&ex->lock);
    if (atomic_load(&f->state) == F_PENDING) {
        if (f->callbacks_tail)
            f->callbacks_tail->next = c;
        else
            f->callbacks = c;
        f->callbacks_tail = c;
        c = NULL;
    }
    pthread_mutex_unlock(&ex->lock);
    run_callbacks(f, c); /* already done: now, in this thread */
    return 0;
}

void pj_future_free(pj_future *f)
{
    if (f)
        future_unref(f);
}

size_t pj_future_index(const pj_future *f)
{
    return f ? f->batch.first_index : 0;
}

/* ---- shutdown --------------------------------------------------------------------------- */

int pj_executor_shutdown(pj_executor *ex, int wait, int cancel_futures)
{
    if (!ex)
        return pj__set_last_error(PJ_EINVAL, "pj_executor_shutdown: executor is NULL");
    pj_future *cancelled = NULL;
    pthread_mutex_lock(&ex->lock);
    ex->shutdown = true;
    for (pj_future *f = cancel_futures ? ex->active : NULL; f; f = f->next) {
        int expected = PJ__GATE_PENDING;
        if (atomic_load(&f->state) != F_PENDING ||
            !atomic_compare_exchange_strong(&f->gate, &expected, PJ__GATE_CANCELLED))
            continue;
        struct callback *cbs = complete_locked(ex, f, F_CANCELLED);
        if (cbs) {
            /* Run once the lock is released: hold f, whose batch may come back meanwhile. */
            f->callbacks = cbs;
            atomic_fetch_add(&f->refs, 1);
            f->cancel_next = cancelled;
            cancelled = f;
        }
    }
    pthread_mutex_unlock(&ex->lock);
    while (cancelled) {
        pj_future *f = cancelled, *next = f->cancel_next;
        struct callback *cbs = f->callbacks;
        f->callbacks = NULL;
        run_callbacks(f, cbs);
        future_unref(f);
        cancelled = next;
    }
    if (wait) {
        pthread_mutex_lock(&ex->lock);
        while (ex->in_flight) {
            ex->waiting++;
            pthread_cond_wait(&ex->cond, &ex->lock);
            ex->waiting--;
        }
        pthread_mutex_unlock(&ex->lock);
    }
    return 0;
}

void pj_executor_free(pj_executor *ex)
{
    if (!ex)
        return;
    pj_executor_shutdown(ex, 1, 0);
    pj__parallel_release(ex->par);
    pj_parallel_free(ex->par);
    ex->par = NULL;
    executor_unref(ex);
}

/* ---- waiters: as_completed and wait ------------------------------------------------------ */

static int waiter_init(struct waiter *w, pj_future *const *futures, size_t n, double timeout)
{
    memset(w, 0, sizeof *w);
    if (deadline_from(timeout, &w->deadline))
        return pj__set_last_error(PJ_EINVAL, "timeout is NaN");
    if (!futures && n)
        return pj__set_last_error(PJ_EINVAL, "futures is NULL");
    for (size_t i = 0; i < n; i++)
        if (!futures[i])
            return pj__set_last_error(PJ_EINVAL, "futures[%zu] is NULL", i);
    w->ready = calloc(n ? n : 1, sizeof *w->ready);
    w->nodes = calloc(n ? n : 1, sizeof *w->nodes);
    if (!w->ready || !w->nodes) {
        free(w->ready);
        free(w->nodes);
        return pj__set_last_error(PJ_ENOMEM, "out of memory for %zu futures", n);
    }
    pthread_mutex_init(&w->lock, NULL);
    cond_init_monotonic(&w->cond);
    w->n = n;
    for (size_t i = 0; i < n; i++) {
        pj_future *f = futures[i];
        struct wnode *node = &w->nodes[i];
        node->w = w;
        node->f = f;
        pthread_mutex_lock(&f->ex->lock);
        if (atomic_load(&f->state) != F_PENDING) {
            waiter_push(w, f);
        } else {
            node->next = f->waiters;
            if (f->waiters)
                f->waiters->prev = node;
            f->waiters = node;
            node->linked = true;
        }
        pthread_mutex_unlock(&f->ex->lock);
    }
    return 0;
}

static void waiter_destroy(struct waiter *w)
{
    for (size_t i = 0; i < w->n; i++) {
        struct wnode *node = &w->nodes[i];
        pj_executor *ex = node->f->ex;
        pthread_mutex_lock(&ex->lock);
        if (node->linked) {
            if (node->prev)
                node->prev->next = node->next;
            else
                node->f->waiters = node->next;
            if (node->next)
                node->next->prev = node->prev;
        }
        pthread_mutex_unlock(&ex->lock);
    }
    pthread_cond_destroy(&w->cond);
    pthread_mutex_destroy(&w->lock);
    free(w->ready);
    free(w->nodes);
}

/* The next finished future, or NULL at the deadline or when all n were taken. */
static pj_future *waiter_next(struct waiter *w)
{
    pj_future *f = NULL;
    pthread_mutex_lock(&w->lock);
    while (w->taken == w->n_ready && w->taken < w->n)
        if (!wait_until(&w->cond, &w->lock, w->deadline))
            break;
    if (w->taken < w->n_ready)
        f = w->ready[w->taken++];
    pthread_mutex_unlock(&w->lock);
    return f;
}

static int cmp_ptr(const void *a, const void *b)
{
    uintptr_t x = (uintptr_t)*(pj_future *const *)a, y = (uintptr_t)*(pj_future *const *)b;
    return x < y ? -1 : x > y;
}

pj_completed *pj_as_completed(pj_future *const *futures, size_t n, double timeout)
{
    if (!futures && n)
        return pj__set_last_error(PJ_EINVAL, "pj_as_completed: futures is NULL"), NULL;
    /* A future given twice is yielded once, as Python's set(fs) does. */
    pj_future **unique = malloc((n ? n : 1) * sizeof *unique);
    pj_completed *it = calloc(1, sizeof *it);
    if (!unique || !it) {
        free(unique);
        free(it);
        return pj__set_last_error(PJ_ENOMEM, "pj_as_completed: out of memory"), NULL;
    }
    size_t k = 0;
    if (n)
        memcpy(unique, futures, n * sizeof *unique);
    qsort(unique, n, sizeof *unique, cmp_ptr);
    for (size_t i = 0; i < n; i++)
        if (k == 0 || unique[k - 1] != unique[i])
            unique[k++] = unique[i];
    int rc = waiter_init(&it->w, unique, k, timeout);
    free(unique);
    if (rc) {
        free(it);
        return NULL;
    }
    return it;
}

int pj_completed_next(pj_completed *it, pj_future **out)
{
    if (out)
        *out = NULL;
    if (!it || !out)
        return pj__set_last_error(PJ_EINVAL, "pj_completed_next: %s is NULL",
                                  !it ? "iterator" : "out");
    if (it->w.taken == it->w.n)
        return pj__set_last_error(PJ_EEND, "pj_completed_next: every future was yielded");
    *out = waiter_next(&it->w);
    return *out ? 0 : pj__set_last_error(PJ_ETIMEDOUT, "pj_completed_next: the deadline "
                                         "passed with %zu futures not done",
                                         it->w.n - it->w.taken);
}

void pj_completed_free(pj_completed *it)
{
    if (!it)
        return;
    waiter_destroy(&it->w);
    free(it);
}

static bool failed(pj_future *f)
{
    return atomic_load(&f->state) == F_FINISHED && f->batch.results[0].status != 0;
}

int pj_wait(pj_future **futures, size_t n, double timeout, pj_return_when when, size_t *n_done)
{
    if (n_done)
        *n_done = 0;
    if (!n_done || (when != PJ_FIRST_COMPLETED && when != PJ_FIRST_EXCEPTION &&
                    when != PJ_ALL_COMPLETED))
        return pj__set_last_error(PJ_EINVAL, "pj_wait: %s", !n_done ? "n_done is NULL"
                                  : "when is not PJ_FIRST_COMPLETED, PJ_FIRST_EXCEPTION or "
                                    "PJ_ALL_COMPLETED");
    struct waiter w;
    int rc = waiter_init(&w, futures, n, timeout);
    if (rc)
        return rc;
    bool met = n == 0;
    for (size_t seen = 0; !met && seen < n; seen++) {
        pj_future *f = waiter_next(&w);
        if (!f)
            break; /* the deadline */
        met = when == PJ_FIRST_COMPLETED || (when == PJ_FIRST_EXCEPTION && failed(f)) ||
              seen + 1 == n;
    }
    waiter_destroy(&w);
    /* Stable split: done first, in their given order, then the rest. */
    pj_future **rest = malloc((n ? n : 1) * sizeof *rest);
    if (!rest)
        return pj__set_last_error(PJ_ENOMEM, "pj_wait: out of memory");
    size_t d = 0, r = 0;
    for (size_t i = 0; i < n; i++) {
        if (atomic_load(&futures[i]->state) != F_PENDING)
            futures[d++] = futures[i];
        else
            rest[r++] = futures[i];
    }
    if (r)
        memcpy(futures + d, rest, r * sizeof *rest);
    free(rest);
    *n_done = d;
    return met ? 0 : pj__set_last_error(PJ_ETIMEDOUT, "pj_wait: the deadline passed first, "
                                        "%zu of %zu futures done", d, n);
}

/* ---- map ------------------------------------------------------------------------------- */

static void map_destroy(pj_map *m)
{
    for (size_t c = 0; c < m->n_chunks; c++)
        if (m->chunks[c])
            pj_future_free(m->chunks[c]);
    for (size_t i = 0; i < m->n; i++) {
        if (m->results)
            pj__result_clear(&m->results[i]);
        if (m->tasks)
            pj_task_free(m->tasks[i]);
    }
    free(m->chunks);
    free(m->tasks);
    free(m->results);
    free(m);
}

/* Builds the tasks fn(arrays[0][i], arrays[1][i], ...). */
static int map_tasks(pj_map *m, const pj_fn *fn, const void *const *arrays)
{
    void *argv[PJ__MAX_ARGS];
    const pj_fn *checked = NULL;
    for (size_t i = 0; i < m->n; i++) {
        for (unsigned a = 0; a < fn->nargs; a++)
            argv[a] = (char *)arrays[a] + i * fn->atypes[a]->size;
        m->tasks[i] = pj_task_new(fn, argv);
        if (!m->tasks[i])
            return pj_last_error();
        char who[64];
        snprintf(who, sizeof who, "pj_map_start item %zu", i);
        int rc = check_task(m->ex, m->tasks[i], who, &checked);
        if (rc)
            return rc;
    }
    return 0;
}

pj_map *pj_map_start(pj_executor *ex, const pj_fn *fn, const void *const *arrays, size_t n,
                     size_t chunksize, double timeout)
{
    uint64_t deadline;
    if (!ex || !fn || (!arrays && fn->nargs))
        return pj__set_last_error(PJ_EINVAL, "pj_map_start: %s is NULL", !ex ? "executor"
                                  : !fn ? "fn" : "arrays"), NULL;
    if (deadline_from(timeout, &deadline))
        return pj__set_last_error(PJ_EINVAL, "pj_map_start: timeout is NaN"), NULL;
    if (fn->nargs > PJ__MAX_ARGS)
        return pj__set_last_error(PJ_EARGC, "pj_map_start: %s takes %u arguments, more than "
                                  "%d", pj_fn_name(fn), fn->nargs, PJ__MAX_ARGS), NULL;
    for (unsigned a = 0; a < fn->nargs; a++)
        if (!arrays[a])
            return pj__set_last_error(PJ_EINVAL, "pj_map_start: arrays[%u] is NULL", a), NULL;
    pj_map *m = calloc(1, sizeof *m);
    if (!m)
        return pj__set_last_error(PJ_ENOMEM, "pj_map_start: out of memory"), NULL;
    m->ex = ex;
    m->n = n;
    m->chunksize = chunksize ? chunksize : 1;
    m->n_chunks = n / m->chunksize + (n % m->chunksize != 0);
    m->deadline = deadline;
    m->tasks = calloc(n ? n : 1, sizeof *m->tasks);
    m->results = calloc(n ? n : 1, sizeof *m->results);
    m->chunks = calloc(m->n_chunks ? m->n_chunks : 1, sizeof *m->chunks);
    int rc = !m->tasks || !m->results || !m->chunks ? PJ_ENOMEM : map_tasks(m, fn, arrays);
    for (size_t c = 0; !rc && c < m->n_chunks; c++) {
        size_t first = c * m->chunksize;
        size_t k = n - first < m->chunksize ? n - first : m->chunksize;
        m->chunks[c] = future_new(ex, m->tasks + first, m->results + first, k);
        rc = m->chunks[c] ? future_submit(ex, m->chunks[c]) : PJ_ENOMEM;
    }
    if (rc) {
        if (rc == PJ_ENOMEM)
            pj__set_last_error(rc, "pj_map_start: out of memory for %zu tasks", n);
        else if (rc == PJ_ESHUTDOWN)
            pj__set_last_error(rc, "pj_map_start: the executor is shut down");
        else if (rc != PJ_EPOINTER && rc != PJ_ERESOLVE && rc != PJ_ETYPE && rc != PJ_EARGC)
            pj__set_last_error(rc, "pj_map_start: backend %s refused a chunk: %s",
                               ex->backend->name, pj_strerror(rc));
        pj_map_free(m);
        return NULL;
    }
    return m;
}

int pj_map_next(pj_map *m, const pj_result **out)
{
    if (out)
        *out = NULL;
    if (!m || !out)
        return pj__set_last_error(PJ_EINVAL, "pj_map_next: %s is NULL", !m ? "map" : "out");
    if (m->next == m->n)
        return pj__set_last_error(PJ_EEND, "pj_map_next: every result was returned");
    pj_future *f = m->chunks[m->next / m->chunksize];
    pj_executor *ex = m->ex;
    pthread_mutex_lock(&ex->lock);
    bool done = wait_done_locked(ex, f, m->deadline);
    pthread_mutex_unlock(&ex->lock);
    if (!done)
        return pj__set_last_error(PJ_ETIMEDOUT, "pj_map_next: the map's deadline passed "
                                  "before item %zu was done", m->next);
    if (atomic_load(&f->state) == F_CANCELLED) {
        m->scratch = (pj_result){ .index = m->next, .status = PJ_ECANCELLED,
                                  .message = cancelled_message, .fn = m->tasks[m->next]->fn };
        *out = &m->scratch;
    } else {
        m->results[m->next].index = m->next; /* the position in the map, not the executor */
        *out = &m->results[m->next];
    }
    m->next++;
    return result_status("pj_map_next", *out);
}

void pj_map_free(pj_map *m)
{
    if (!m)
        return;
    /* Chunks not started are cancelled; the batches of the others write into m's arrays, so
     * wait until every one is back from the backend. */
    for (size_t c = 0; c < m->n_chunks && m->chunks[c]; c++)
        pj_future_cancel(m->chunks[c]);
    pj_executor *ex = m->ex;
    pthread_mutex_lock(&ex->lock);
    for (size_t c = 0; c < m->n_chunks && m->chunks[c]; c++) {
        while (m->chunks[c]->active) {
            ex->waiting++;
            pthread_cond_wait(&ex->cond, &ex->lock);
            ex->waiting--;
        }
    }
    pthread_mutex_unlock(&ex->lock);
    map_destroy(m);
}
