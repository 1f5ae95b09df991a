/* Futures (concurrent.futures' Future) of the executor: a future's completion when its batch
 * comes back from the backend, its queries (done, result, cancel, callbacks), and waiting on
 * many (pj_as_completed, pj_wait), with the monotonic deadlines they wait to.  The lock rule
 * and the lifetimes: executor.c. */
#include "executor.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct pj_completed {
    struct waiter w;
};

/* ---- time ------------------------------------------------------------------------------ */

int pj__deadline_from(double timeout, uint64_t *deadline)
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

void pj__cond_init_monotonic(pthread_cond_t *cond)
{
    pthread_condattr_t attr;
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(cond, &attr);
    pthread_condattr_destroy(&attr);
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
struct callback *pj__future_complete_locked(pj_executor *ex, pj_future *f, int state)
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

void pj__future_run_callbacks(pj_future *f, struct callback *cbs)
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
    pj__executor_unref(ex);
}

void pj__future_unref(pj_future *f)
{
    if (atomic_fetch_sub(&f->refs, 1) == 1)
        future_destroy(f);
}

void pj__future_active_unlink(pj_executor *ex, pj_future *f)
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
 * backend, as the dispatcher's pj__run_batch_done does; otherwise the future is finished. */
void pj__future_batch_done(pj_batch *b)
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
        cbs = pj__future_complete_locked(ex, f, F_FINISHED);
    pthread_mutex_unlock(&ex->lock);
    pj__future_run_callbacks(f, cbs);
    /* Only now is the batch back: shutdown(wait) returns after the callbacks have run. */
    pthread_mutex_lock(&ex->lock);
    pj__future_active_unlink(ex, f);
    pthread_mutex_unlock(&ex->lock);
    pj__future_unref(f); /* the batch's reference */
}

/* ---- futures: queries ------------------------------------------------------------------- */

static int null_future(const char *who)
{
    return pj__set_last_error(PJ_EINVAL, "%s: future is NULL", who);
}

/* A result's status as a call's return value: a failure's message goes where every failing
 * call leaves one (pj_last_errmsg). */
int pj__future_result_status(const char *who, const pj_result *r)
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
bool pj__future_wait_done_locked(pj_executor *ex, pj_future *f, uint64_t deadline)
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
    if (!f || !out || pj__deadline_from(timeout, &deadline))
        return pj__set_last_error(PJ_EINVAL, "pj_future_result: %s", !f ? "future is NULL"
                                  : !out ? "out is NULL" : "timeout is NaN");
    pj_executor *ex = f->ex;
    pthread_mutex_lock(&ex->lock);
    bool done = pj__future_wait_done_locked(ex, f, deadline);
    pthread_mutex_unlock(&ex->lock);
    if (!done)
        return pj__set_last_error(PJ_ETIMEDOUT, "pj_future_result: task %zu is not done after "
                                  "%g s", f->batch.first_index, timeout);
    *out = atomic_load(&f->state) == F_CANCELLED ? &f->cancelled : &f->result;
    return pj__future_result_status("pj_future_result", *out);
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
    struct callback *cbs = pj__future_complete_locked(ex, f, F_CANCELLED);
    pthread_mutex_unlock(&ex->lock);
    pj__future_run_callbacks(f, cbs);
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
    pj__future_run_callbacks(f, c); /* already done: now, in this thread */
    return 0;
}

void pj_future_free(pj_future *f)
{
    if (f)
        pj__future_unref(f);
}

size_t pj_future_index(const pj_future *f)
{
    return f ? f->batch.first_index : 0;
}

/* ---- waiters: as_completed and wait ------------------------------------------------------ */

static int waiter_init(struct waiter *w, pj_future *const *futures, size_t n, double timeout)
{
    memset(w, 0, sizeof *w);
    if (pj__deadline_from(timeout, &w->deadline))
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
    pj__cond_init_monotonic(&w->cond);
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
