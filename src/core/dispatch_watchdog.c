/* Deadlines: the watchdog thread of a run with a timeout, which has the backend stop each task
 * running past it (or every running task, once the run is cancelled).  Part of the dispatcher
 * (dispatch.h); its lock rule applies. */
#include "dispatch.h"

#include <stdint.h>
#include <stdio.h>
#include <time.h>

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

int pj__start_watchdog(pj_iter *run)
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

void pj__stop_watchdog(pj_iter *run)
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
