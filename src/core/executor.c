/* Futures: concurrent.futures' Executor over parjob's backends.
 *
 * A future is one pj_batch (one task for pj_submit, one chunk for pj_map_start) handed to the
 * same backend and worker pool a pj_parallel uses: the executor owns a pj_parallel, opens its
 * backend as a run would (pj__parallel_acquire) and keeps it until pj_executor_free.  Batches
 * come back through batch->on_done (pj__future_batch_done), exactly as they come back to the
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
 * after pj_executor_free.
 *
 * Its files: this one holds the executor, submission, shutdown and pj_map; futures.c a
 * future's completion, its queries and waiting on futures (pj_as_completed, pj_wait);
 * executor.h what they share. */
#include "executor.h"

#include "bulk.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct pj_map {
    pj_executor *ex;
    const pj_fn *fn;
    size_t n, chunksize, n_chunks, next;
    struct bulk_plan *plan;    /* backends that run batches in this process: each chunk calls
                                  fn from the arrays into its slots (bulk_slots.c), no task
                                  per item; NULL on the others, which get tasks */
    pj_task **tasks;
    pj_result *results;
    pj_future **chunks;
    uint64_t deadline;
    pj_result scratch;         /* the cancelled result of an item of a cancelled chunk */
};

static const char cancelled_message[] = "cancelled before it ran";

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
    pj__cond_init_monotonic(&ex->cond);
    atomic_init(&ex->refs, 1);
    return ex;
}

void pj__executor_unref(pj_executor *ex)
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
    b->on_done = pj__future_batch_done;
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
        r->fn = b->tasks ? b->tasks[i]->fn : b->range_plan->fn;
    }
    f->cancelled = (pj_result){ .index = b->first_index, .status = PJ_ECANCELLED,
                                .message = cancelled_message,
                                .fn = b->tasks ? b->tasks[0]->fn : b->range_plan->fn };
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
        pj__future_active_unlink(ex, f);
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
        pj__future_unref(f);
        return NULL;
    }
    return f;
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
        struct callback *cbs = pj__future_complete_locked(ex, f, F_CANCELLED);
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
        pj__future_run_callbacks(f, cbs);
        pj__future_unref(f);
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
    pj__executor_unref(ex);
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
    pj__bulk_slots_free(m->plan);
    free(m);
}

/* Builds the tasks fn(arrays[0][i], arrays[1][i], ...) — or, on a backend that runs batches
 * in this process, the plan its chunks call from (no task per item). */
static int map_tasks(pj_map *m, const pj_fn *fn, const void *const *arrays)
{
    unsigned f = m->ex->backend->features;
    if ((f & PJ_BACKEND_BATCH_RUN) && !(f & PJ_BACKEND_PROCESS)) {
        char err[448];
        int rc = pj__bulk_slots_plan(fn, arrays, m->n, &m->plan, err, sizeof err);
        return rc ? pj__set_last_error(rc, "pj_map_start: %s", err) : 0;
    }
    if (!(m->tasks = calloc(m->n ? m->n : 1, sizeof *m->tasks)))
        return PJ_ENOMEM;
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
    if (pj__deadline_from(timeout, &deadline))
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
    m->fn = fn;
    m->n = n;
    m->chunksize = chunksize ? chunksize : 1;
    m->n_chunks = n / m->chunksize + (n % m->chunksize != 0);
    m->deadline = deadline;
    m->results = calloc(n ? n : 1, sizeof *m->results);
    m->chunks = calloc(m->n_chunks ? m->n_chunks : 1, sizeof *m->chunks);
    int rc = !m->results || !m->chunks ? PJ_ENOMEM : map_tasks(m, fn, arrays);
    for (size_t c = 0; !rc && c < m->n_chunks; c++) {
        size_t first = c * m->chunksize;
        size_t k = n - first < m->chunksize ? n - first : m->chunksize;
        m->chunks[c] = future_new(ex, m->tasks ? m->tasks + first : NULL, m->results + first,
                                  k);
        if (m->chunks[c] && m->plan) {
            m->chunks[c]->batch.run_ranges = pj__bulk_run_slots;
            m->chunks[c]->batch.range_plan = m->plan;
            m->chunks[c]->batch.range_first = first;
        }
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
    bool done = pj__future_wait_done_locked(ex, f, m->deadline);
    pthread_mutex_unlock(&ex->lock);
    if (!done)
        return pj__set_last_error(PJ_ETIMEDOUT, "pj_map_next: the map's deadline passed "
                                  "before item %zu was done", m->next);
    if (atomic_load(&f->state) == F_CANCELLED) {
        m->scratch = (pj_result){ .index = m->next, .status = PJ_ECANCELLED,
                                  .message = cancelled_message, .fn = m->fn };
        *out = &m->scratch;
    } else {
        m->results[m->next].index = m->next; /* the position in the map, not the executor */
        *out = &m->results[m->next];
    }
    m->next++;
    return pj__future_result_status("pj_map_next", *out);
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
