/* The process pool's housekeeping, which the I/O thread runs when due: passing a cancel on
 * to running workers (and killing them for PJ__CANCEL_KILL), killing a worker that stalls on a
 * batch with a deadline or is not ready by its start-up deadline, and retiring workers idle
 * too long.  The design and the lock rule: procpool.c. */
#include "procpool.h"

/* A task's deadline runs from its start, which the worker marks: a worker that holds a batch
 * with a deadline and starts none of its tasks (between tasks, or with a task returned and its
 * result not yet committed) for that long is stopped (SIGSTOP, a frozen cgroup) or stuck.  It
 * is killed; worker_died hands the batch back and the dispatcher runs what it had not run on
 * another worker.  A task it is running is the watchdog's to time out, not ours. */
static void kill_if_stalled(struct pool *p, struct slot *s, uint64_t now)
{
    if (!s->ready) { /* still in its start-up: start_deadline's to judge, not ours */
        s->progress_at = now;
        return;
    }
    uint64_t limit = s->batch->timeout_ns;
    uint64_t running = atomic_load_explicit(&s->shm->cell.running, memory_order_acquire);
    uint64_t used = atomic_load_explicit(&s->shm->used[s->half & 1], memory_order_acquire);
    if (running != s->seen_running || used != s->seen_used) {
        s->seen_running = running;
        s->seen_used = used;
        s->progress_at = now;
        return;
    }
    bool between_tasks = running == 0 || (running & PJ__CELL_RETURNED);
    if (!limit || !between_tasks || s->stalled || s->reaping || now - s->progress_at < limit)
        return;
    s->stalled = true;
    kill_worker(p, s); /* the I/O thread sees EOF and hands the batch back */
}

/* Kills a worker not READY by its deadline (worker_died then fails the pool); lowers *due
 * to the deadline of one still starting. */
static void start_deadline(struct pool *p, struct slot *s, uint64_t now, uint64_t *due)
{
    uint64_t deadline = s->launched_ns + p->start_ns;
    if (now >= deadline) {
        s->start_overdue = true;
        kill_worker(p, s); /* its channel ends: worker_died */
        return;
    }
    if (deadline < *due)
        *due = deadline;
}

static int ms_until(uint64_t due, uint64_t now)
{
    if (due == UINT64_MAX)
        return -1;
    uint64_t ms = due > now ? (due - now) / 1000000 + 1 : 0;
    return ms > INT32_MAX ? INT32_MAX : (int)ms;
}

/* Passes each running batch's cancel flag to its worker; retires workers idle too long.  It
 * walks every slot, so it runs when due — every CANCEL_POLL_MS while a worker is busy, else at
 * the first idle deadline — not at every event.  Returns the wait's timeout in ms. */
int pj__pool_housekeeping(struct pool *p)
{
    uint64_t now = pj__now_ns();
    if (now < p->housekeeping_due)
        return ms_until(p->housekeeping_due, now);
    p->housekeeping_due = UINT64_MAX;
    uint64_t due = UINT64_MAX;
    for (int i = 0; i < p->n; i++) {
        struct slot *s = &p->slots[i];
        if (s->pid && !s->ready && !s->start_overdue) {
            start_deadline(p, s, now, &due);
            if (s->start_overdue)
                continue; /* not retired: its death says why the pool failed */
        }
        if (s->state == S_BUSY && s->batch) {
            int cancel = s->batch->cancel ? atomic_load(s->batch->cancel) : 0;
            if (cancel)
                atomic_store(&s->shm->cancel, 1);
            if (cancel == PJ__CANCEL_KILL && !s->cancel_killed && !s->reaping) {
                s->cancel_killed = true;
                kill_worker(p, s); /* the I/O thread sees EOF and hands the batch back */
            }
            kill_if_stalled(p, s, now);
            if (now + CANCEL_POLL_MS * 1000000ull < due)
                due = now + CANCEL_POLL_MS * 1000000ull;
        } else if (s->state == S_IDLE && s->pid) {
            uint64_t idle_due = p->idle_ns < UINT64_MAX - s->idle_since
                                    ? s->idle_since + p->idle_ns : UINT64_MAX;
            if (now >= idle_due) {
                pj__pool_retire(p, s);
                continue;
            }
            if (idle_due < due)
                due = idle_due;
        }
    }
    if (due < p->housekeeping_due)
        p->housekeeping_due = due;
    return ms_until(p->housekeeping_due, now);
}
