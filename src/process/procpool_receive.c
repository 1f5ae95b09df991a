/* What the process pool's workers send and how they end: the I/O thread reads a worker's
 * channel, parses whole messages (READY, RECORDS, DONE, ERROR) and applies their records; when
 * the channel ends it reaps the worker, keeps what it finished and attributes its death to the
 * task it was running, or fails the pool when a start-up failed.  The design, the lock rule and
 * how a death and the watchdog's timeout race for a task: procpool.c. */
#include "procpool.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#define RX_CHUNK 4096            /* a worker's messages are small but for big results, whose
                                    header says their size: a page per worker, not 64 KiB */

static const char *signal_name(int sig)
{
    switch (sig) {
    case SIGSEGV: return "SIGSEGV";
    case SIGBUS: return "SIGBUS";
    case SIGABRT: return "SIGABRT";
    case SIGFPE: return "SIGFPE";
    case SIGILL: return "SIGILL";
    case SIGKILL: return "SIGKILL";
    case SIGTERM: return "SIGTERM";
    case SIGPIPE: return "SIGPIPE";
    default: return "a signal";
    }
}

/* ---- receiving ------------------------------------------------------------------------------ */

static void apply_shm(struct slot *s, int half, struct pj__records to)
{
    struct pj__area a = pj__shm_area(s->shm, half);
    uint64_t used = atomic_load_explicit(a.used, memory_order_acquire);
    if (used <= a.cap)
        pj__apply_records(to, a.data, used);
}

/* The initializer's record, from a RECORDS message or shared memory, into s->init. */
static void init_records(struct pool *p, struct slot *s, const unsigned char *rec, size_t len)
{
    struct pj__records one = { .tasks = &p->initializer, .results = &s->init, .count = 1 };
    if (rec)
        pj__apply_records(one, rec, len);
    else
        apply_shm(s, s->half, one); /* skipped if a RECORDS message brought it already */
}

/* The initializer's DONE: the worker serves batches, or the pool fails. */
static void init_done(struct pool *p, struct slot *s)
{
    init_records(p, s, NULL, 0);
    pj_result r = s->init;
    s->init = (pj_result){ .status = PJ__PENDING };
    if (r.status == 0) {
        pj__pool_set_state(p, s, S_IDLE);
    } else {
        p->failed = r.status == PJ__PENDING ? PJ_EPROTO : r.status;
        snprintf(p->failure, sizeof p->failure, "the initializer failed in a new worker: %s",
                 r.message ? r.message : "no result");
        pj__pool_retire(p, s);
    }
    pj__result_release(&r);
}

/* The worker finished b.  Without deadlines the worker gets its next batch before b's records
 * are applied, so it does not wait for that; with deadlines b goes back first, as the
 * watchdog must never see b's cell naming the next batch's task. */
static void batch_done(struct pool *p, struct slot *s, uint64_t exec_ns)
{
    pj_batch *b = s->batch;
    int half = s->half;
    s->tasks_run += (long)(s->sent_end - s->sent_begin);
    b->exec_ns = s->sent_end == b->count && s->sent_begin == 0 ? exec_ns : 0;
    s->idle_since = pj__now_ns();
    /* A stale fork worker is retired here, not by schedule: schedule would restart its slot
     * while parse still walks the old worker's buffer. */
    bool recycle = (p->max_tasks && s->tasks_run >= p->max_tasks) || predates_modules(p, s);
    if (b->timeout_ns) {
        apply_shm(s, half, pj__batch_records(b));
        pj__pool_give_back(p, s, b);
        if (recycle)
            pj__pool_retire(p, s);
        return;
    }
    if (s->next && recycle)
        pj__pool_drop_next(p, s); /* a fresh worker gets it, from io_main's next schedule */
    struct slot *stuck = s->next ? pj__pool_stuck_parked(p, s, exec_ns) : NULL;
    if (stuck) { /* its batch is older than ours: ours back in line behind it */
        pj__pool_drop_next(p, s);
        pj__pool_drop_next(p, stuck);
        stuck->slow = true;
    }
    s->slow = false;
    pthread_mutex_lock(&p->lock);
    pj_batch *next = s->next;
    s->batch = next;
    s->next = NULL;
    if (next)
        pj__pool_mark_locked(p, s, M_AHEAD);
    pthread_mutex_unlock(&p->lock);
    if (next && !pj__pool_hand_over(p, s, next, next->count, s->next_len)) {
        pj__pool_schedule(p); /* next went back failed: the worker is idle */
    } else if (!next) {
        pj__pool_set_state(p, s, S_IDLE);
        if (recycle)
            pj__pool_retire(p, s);
        else
            pj__pool_schedule(p);
    }
    apply_shm(s, half, pj__batch_records(b));
    pj_batch_done(b);
}

static void refused(struct pool *p, struct slot *s, const unsigned char *body, size_t len)
{
    struct pj__frame_error e = pj__frame_error(body, len);
    int code = e.code;
    char why[PJ__FRAME_WHY_MAX + 64];
    snprintf(why, sizeof why, "the worker refused the batch: %.*s", e.why_len, e.why);
    if (s->state == S_STARTING) {
        pj__result_release(&s->init);
        s->init = (pj_result){ .status = PJ__PENDING };
        p->failed = code;
        snprintf(p->failure, sizeof p->failure, "the initializer could not run: %s", why);
        pj__pool_retire(p, s);
        return;
    }
    pj__pool_drop_next(p, s);
    fail_pending(s->batch, s->sent_begin, code, why);
    pj__pool_give_back(p, s, s->batch);
}

/* One whole message from a worker; false when the worker broke the protocol. */
static bool handle(struct pool *p, struct slot *s, uint32_t type, const unsigned char *body,
                   size_t len)
{
    if (type == PJ__MSG_READY) {
        if (s->ready || len)
            return false;
        s->ready = true;
        return true;
    }
    if (!s->ready)
        return false;
    bool starting = s->state == S_STARTING;
    if (!starting && s->state != S_BUSY)
        return false;
    switch (type) {
    case PJ__MSG_RECORDS:
        if (starting)
            init_records(p, s, body, len);
        else if (pj__apply_records(pj__batch_records(s->batch), body, len))
            return false;
        return true;
    case PJ__MSG_DONE: {
        uint64_t ns;
        if (!pj__frame_done(body, len, &ns))
            return false;
        if (starting)
            init_done(p, s);
        else
            batch_done(p, s, ns);
        return true;
    }
    case PJ__MSG_ERROR:
        refused(p, s, body, len);
        return true;
    default:
        return false;
    }
}

/* Parses whole messages out of s->rx; false on a protocol error. */
static bool parse(struct pool *p, struct slot *s)
{
    size_t at = 0;
    bool ok = true;
    pid_t pid = s->pid; /* a message may retire the worker, and its slot start another */
    while (ok && s->pid && s->pid == pid) {
        struct pj__msg_header h;
        int whole = pj__frame_next(s->rx + at, s->rx_len - at, &h);
        if (whole < 0)
            return false;
        if (!whole)
            break;
        ok = handle(p, s, h.type, s->rx + at + sizeof h, (size_t)h.len);
        at += sizeof h + (size_t)h.len;
    }
    if (!s->pid || s->pid != pid)
        return true; /* retired while handling: its buffer is gone with it */
    memmove(s->rx, s->rx + at, s->rx_len - at);
    s->rx_len -= at;
    return ok;
}

static bool rx_reserve(struct slot *s)
{
    size_t want = s->rx_len + RX_CHUNK;
    struct pj__msg_header h;
    if (pj__frame_next(s->rx, s->rx_len, &h) == 0 && s->rx_len >= sizeof h &&
        sizeof h + h.len > want)
        want = sizeof h + (size_t)h.len;
    if (want <= s->rx_cap)
        return true;
    unsigned char *grown = realloc(s->rx, want);
    if (!grown)
        return false;
    s->rx = grown;
    s->rx_cap = want;
    return true;
}

/* ---- deaths --------------------------------------------------------------------------------- */

/* The pool killed a stalled worker (kill_if_stalled): a task it had returned, whose result
 * never came, timed out; one it had just started when the kill came is left pending, to run
 * again elsewhere (it did not crash, and did not finish). */
static void attribute_stalled(pj_batch *b, size_t i, uint64_t id)
{
    if (id & PJ__CELL_RETURNED)
        pj__result_fail(&b->results[i], PJ_ETIMEDOUT, 0, "the task returned, but its worker "
                        "process then stopped (SIGSTOP? a frozen cgroup?) for longer than the "
                        "timeout before sending the result, and was killed");
}

/* Marks the task the dead worker was running, if the cell still names it and the watchdog has
 * not claimed it.  Returns true when the watchdog had claimed it. */
static bool attribute(struct slot *s, pj_batch *b, int st)
{
    _Atomic uint64_t *running = &s->shm->cell.running;
    uint64_t id = atomic_load(running);
    if (id & PJ__CELL_STOPPED)
        return true;
    if (!id || !atomic_compare_exchange_strong(running, &id, id | PJ__CELL_STOPPED))
        return (id & PJ__CELL_STOPPED) != 0;
    size_t i = (size_t)((id & ~PJ__CELL_RETURNED) - 1);
    if (i < s->sent_begin || i >= s->sent_end || b->results[i].status != PJ__PENDING)
        return false;
    if (s->cancel_killed)
        pj__result_fail(&b->results[i], PJ_ECANCELLED, 0, "cancelled while running "
                        "(pj_parallel_cancel): its worker process was killed");
    else if (s->stalled)
        attribute_stalled(b, i, id);
    else if (WIFSIGNALED(st) && atomic_load(&s->shm->readonly_fault))
        pj__result_fail(&b->results[i], PJ_ECRASHED, WTERMSIG(st), "the task wrote into a "
                        "read-only input (a pj_in buffer above max_nbytes, which workers map "
                        "read-only: declare it pj_inout, or place it with pj_shared_alloc, to "
                        "write into it); its worker process died by signal %d (%s)",
                        WTERMSIG(st), signal_name(WTERMSIG(st)));
    else if (WIFSIGNALED(st))
        pj__result_fail(&b->results[i], PJ_ECRASHED, WTERMSIG(st), "the worker process died "
                        "by signal %d (%s) while running this task", WTERMSIG(st),
                        signal_name(WTERMSIG(st)));
    else
        pj__result_fail(&b->results[i], PJ_EEXITED, WEXITSTATUS(st), "the task ended its "
                        "worker process with exit status %d", WEXITSTATUS(st));
    return false;
}

static void initializer_died(struct pool *p, int st)
{
    p->failed = WIFSIGNALED(st) ? PJ_ECRASHED : PJ_EEXITED;
    snprintf(p->failure, sizeof p->failure, "the initializer %s %d in a new worker",
             WIFSIGNALED(st) ? "died by signal" : "exited with status",
             WIFSIGNALED(st) ? WTERMSIG(st) : WEXITSTATUS(st));
}

/* A worker ended before READY.  Its start-up is the program's (spawn), the same in every new
 * worker: no new one would do better, so the pool fails as when the initializer fails.  The
 * first such failure is the one reported: the others that started with it say the same. */
static void startup_failed(struct pool *p, const struct slot *s, int st)
{
    const char *what = p->ops->startup;
    if (p->failed)
        return;
    if (s->start_overdue) {
        p->failed = PJ_ETIMEDOUT;
        snprintf(p->failure, sizeof p->failure, "a new worker process was not ready to run "
                 "tasks %.3g s after it started: %s did not finish (one that waits for "
                 "something main provides never will; if it is only slow, raise "
                 "config.worker_start_timeout)", (double)p->start_ns / 1e9, what);
    } else if (WIFSIGNALED(st)) {
        p->failed = PJ_ECRASHED;
        snprintf(p->failure, sizeof p->failure, "a new worker process died by signal %d (%s) "
                 "before it was ready to run tasks, in %s", WTERMSIG(st),
                 signal_name(WTERMSIG(st)), what);
    } else {
        p->failed = PJ_EEXITED;
        snprintf(p->failure, sizeof p->failure, "a new worker process exited with status %d "
                 "before it was ready to run tasks, in %s", WEXITSTATUS(st), what);
    }
}

/* A worker the transport lost with its machine (mpi: a worker rank gone) fails the pool: its
 * tasks' fate is unknown, no task is to blame, and the run must end with the reason. */
static void transport_lost(struct pool *p, const struct slot *s)
{
    char why[256] = "";
    int code = p->tr->lost ? p->tr->lost(p->t, slot_no(p, s), why, sizeof why) : 0;
    if (!code || p->failed)
        return;
    p->failed = code;
    snprintf(p->failure, sizeof p->failure, "%s", why);
}

/* The channel ended: reap the worker, keep what it finished, mark what killed it. */
static void worker_died(struct pool *p, struct slot *s)
{
    pthread_mutex_lock(&p->lock);
    s->reaping = true;
    pthread_mutex_unlock(&p->lock);
    int st = p->tr->reap(p->t, slot_no(p, s));
    p->n_processes--;
    bool starting = s->state == S_STARTING, ready = s->ready;
    bool killed_by_us = s->cancel_killed || s->stalled; /* not a start-up that failed */
    pj__pool_drop_next(p, s);
    pj_batch *b = s->batch;
    if (b)
        apply_shm(s, s->half, pj__batch_records(b));
    pthread_mutex_lock(&p->lock);
    bool claimed = b && attribute(s, b, st);
    bool hand_back = b && (!claimed || s->stop_requested);
    if (hand_back)
        s->batch = NULL;
    else if (b)
        s->dead_claimed = true; /* stop_task is on its way and will hand it back */
    s->pid = 0;
    s->reaping = false;
    s->stop_requested = false;
    s->stalled = false;
    s->cancel_killed = false;
    pj__pool_set_state_locked(p, s, S_EMPTY);
    s->tasks_run = 0;
    s->rx_len = 0;
    pthread_mutex_unlock(&p->lock);
    if (starting) {
        pj__result_release(&s->init);
        s->init = (pj_result){ .status = PJ__PENDING };
    }
    transport_lost(p, s);
    if (!ready && !killed_by_us)
        startup_failed(p, s, st);
    else if (starting)
        initializer_died(p, st);
    if (hand_back) {
        pj_batch_done(b);
        atomic_store(&s->shm->cell.running, 0);
    }
}

void pj__pool_read_slot(struct pool *p, struct slot *s)
{
    for (;;) {
        if (!rx_reserve(s)) {
            kill_worker(p, s); /* cannot hold its message: treat it as lost */
            worker_died(p, s);
            return;
        }
        ssize_t k = p->tr->receive(p->t, slot_no(p, s), s->rx + s->rx_len,
                                   s->rx_cap - s->rx_len);
        if (k < 0)
            break; /* nothing more for now */
        if (k == 0) {
            worker_died(p, s);
            return;
        }
        s->rx_len += (size_t)k;
        if (!parse(p, s)) {
            kill_worker(p, s);
            worker_died(p, s);
            return;
        }
        if (!s->pid)
            return;
    }
    /* Nothing half received: the buffer goes (a grown one is kept for the next big result,
     * up to RX_KEEP), so an idle worker holds none, and a worker forked later does not
     * inherit a page per earlier one (8 MiB at 2048 workers while they start). */
    if (s->rx_len == 0 && (s->rx_cap <= RX_CHUNK || s->rx_cap > RX_KEEP)) {
        free(s->rx);
        s->rx = NULL;
        s->rx_cap = 0;
    }
}
