/* The process pool's slots and how batches reach workers: the stacks of marks the I/O thread
 * finds slots on, a slot's state, starting and retiring a worker, encoding and sending a batch
 * (into the region's free input half, or ahead while the worker is busy), and the scheduling
 * that hands queued batches to idle workers.  The design and the lock rule: procpool.c. */
#include "procpool.h"

#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>

/* A batch encoded ahead for a busy worker is taken over by a free one once it has waited this
 * long and longer than the free worker's last batch took: behind a long task it would wait for
 * that task's end (issue 16), while batches alternating between workers each wait less than
 * the other's batch and keep the encoding they were given (this floor absorbs the I/O
 * thread's latency, which the worker's own batch time does not include). */
#define PARKED_STUCK_NS (5ull * 1000000ull)

/* ---- slots ---------------------------------------------------------------------------------- */

void pj__pool_mark_locked(struct pool *p, struct slot *s, enum mark m)
{
    if (s->marked[m])
        return;
    s->marked[m] = true;
    p->marks[m].at[p->marks[m].n++] = (int)(s - p->slots);
}

static void mark(struct pool *p, struct slot *s, enum mark m)
{
    pthread_mutex_lock(&p->lock);
    pj__pool_mark_locked(p, s, m);
    pthread_mutex_unlock(&p->lock);
}

/* Whether s is still what mark m says. */
static bool still(const struct slot *s, enum mark m)
{
    switch (m) {
    case M_IDLE: return s->state == S_IDLE && !s->dead_claimed;
    case M_EMPTY: return s->state == S_EMPTY && !s->dead_claimed && !s->batch;
    case M_AHEAD: return s->state == S_BUSY && !s->next && s->batch && !s->batch->timeout_ns &&
                         !s->slow;
    default: return s->next != NULL;
    }
}

/* The slot last marked m that still is what m says (left on its stack); NULL when none.  What
 * is dropped on the way was pushed by an event of its own, which pays for it. */
static struct slot *peek_locked(struct pool *p, enum mark m)
{
    struct marks *k = &p->marks[m];
    while (k->n) {
        struct slot *s = &p->slots[k->at[k->n - 1]];
        if (still(s, m))
            return s;
        s->marked[m] = false;
        k->n--;
    }
    return NULL;
}

static struct slot *take_locked(struct pool *p, enum mark m)
{
    struct slot *s = peek_locked(p, m);
    if (s) {
        s->marked[m] = false;
        p->marks[m].n--;
    }
    return s;
}

/* s enters state st: the counts, the marks and when housekeeping is next due follow. */
void pj__pool_set_state_locked(struct pool *p, struct slot *s, enum slot_state st)
{
    p->n_starting += (st == S_STARTING) - (s->state == S_STARTING);
    s->state = st;
    uint64_t now = st == S_IDLE || st == S_BUSY ? pj__now_ns() : 0, due = UINT64_MAX;
    if (st == S_IDLE) {
        pj__pool_mark_locked(p, s, M_IDLE);
        due = p->idle_ns < UINT64_MAX - now ? now + p->idle_ns : UINT64_MAX;
    } else if (st == S_EMPTY) {
        pj__pool_mark_locked(p, s, M_EMPTY);
    } else if (st == S_BUSY) {
        pj__pool_mark_locked(p, s, M_AHEAD);
        due = now + CANCEL_POLL_MS * 1000000ull;
    }
    if (due < p->housekeeping_due)
        p->housekeeping_due = due;
}

void pj__pool_set_state(struct pool *p, struct slot *s, enum slot_state st)
{
    pthread_mutex_lock(&p->lock);
    pj__pool_set_state_locked(p, s, st);
    pthread_mutex_unlock(&p->lock);
}


/* Ends the slot's process: closes the channel (the worker exits on EOF) and waits for it. */
void pj__pool_retire(struct pool *p, struct slot *s)
{
    pthread_mutex_lock(&p->lock);
    s->reaping = true;
    pthread_mutex_unlock(&p->lock);
    p->tr->reap(p->t, slot_no(p, s));
    p->n_processes--;
    pthread_mutex_lock(&p->lock);
    s->pid = 0;
    s->reaping = false;
    pj__pool_set_state_locked(p, s, S_EMPTY);
    s->tasks_run = 0;
    s->rx_len = 0;
    pthread_mutex_unlock(&p->lock);
}

/* Starts a worker in an empty slot through the transport. */
static int launch(struct pool *p, struct slot *s, char *err, size_t errlen)
{
    s->shm->cap = PJ__SHM_HALF_CAP(PJ__SHM_SIZE);
    s->shm->in_cap = PJ__SHM_INPUT;
    atomic_store(&s->shm->cell.running, 0);
    atomic_store(&s->shm->readonly_fault, 0);
    pj__peer_forget(&s->peer); /* a new worker maps nothing yet */
    s->modules_gen = pj__modules_generation(); /* before the fork: never newer than the child */
    pid_t pid = p->tr->start(p->t, slot_no(p, s), s, err, errlen);
    if (pid <= 0)
        return pid ? (int)pid : PJ_ESYS;
    p->n_processes++;
    pthread_mutex_lock(&p->lock);
    s->pid = pid;
    s->stop_requested = false;
    pthread_mutex_unlock(&p->lock);
    s->idle_since = s->launched_ns = pj__now_ns();
    s->ready = s->start_overdue = false;
    s->stalled = s->cancel_killed = false; /* a retired worker's EOF was never read */
    pj__pool_set_state(p, s, S_IDLE);
    if (s->launched_ns + p->start_ns < p->housekeeping_due) /* its start-up deadline */
        p->housekeeping_due = s->launched_ns + p->start_ns;
    return 0;
}

/* ---- sending -------------------------------------------------------------------------------- */

/* Hands a batch back to the dispatcher: the slot forgets it first. */
void pj__pool_give_back(struct pool *p, struct slot *s, pj_batch *b)
{
    pthread_mutex_lock(&p->lock);
    if (s && s->batch == b)
        s->batch = NULL;
    pthread_mutex_unlock(&p->lock);
    if (s && s->state == S_BUSY)
        pj__pool_set_state(p, s, S_IDLE);
    pj_batch_done(b);
}

/* The next batch's records go to the other half of the region: the last batch's may still be
 * being applied (batch_done). */
static void next_half(struct slot *s)
{
    s->half ^= 1;
    atomic_store(&s->shm->half, s->half);
    atomic_store(&s->shm->used[s->half], 0);
}


/* Sends the initializer to a new worker; it serves batches once that is DONE. */
static void send_init(struct pool *p, struct slot *s)
{
    char err[256] = "";
    int rc = pj__encode_batch(&p->tx, PJ__MSG_INIT, &p->initializer, 0, 1, 0, p->ops->fnref,
                              NULL, err, sizeof err);
    pj__pool_set_state(p, s, S_STARTING);
    s->init = (pj_result){ .status = PJ__PENDING };
    next_half(s);
    if (rc) {
        p->failed = rc;
        snprintf(p->failure, sizeof p->failure, "the initializer cannot be sent to a worker: "
                 "%s", err);
        pj__pool_retire(p, s);
        return;
    }
    p->tr->send(p->t, slot_no(p, s), p->tx.p, p->tx.len); /* a dead worker shows as EOF */
}

/* What the codec places in shared memory for b: its run's large inputs (above max_nbytes),
 * and every buffer in a shared allocation. */
static struct pj__sharing sharing_for(const struct pool *p, const pj_batch *b)
{
    return (struct pj__sharing){ .run = b->run_id, .max_nbytes = p->max_nbytes };
}

/* b's tasks [b->begin, end) as a batch message into w; a bulk batch (no tasks) from its
 * columns.  Task buffers cross as sharing_for says. */
static int encode(struct pj__wbuf *w, pj_batch *b, size_t end, struct pool *p, char *err,
                  size_t errlen)
{
    if (!b->tasks)
        return pj__encode_range_batch(w, PJ__MSG_BATCH, b, b->begin, end, p->ops->fnref,
                                      &b->uniform_fn, err, errlen);
    struct pj__sharing sh = sharing_for(p, b);
    return pj__encode_batch_shared(w, PJ__MSG_BATCH, b->tasks, b->begin, end, b->timeout_ns,
                                   p->ops->fnref, p->tr->share ? &sh : NULL, &b->uniform_fn,
                                   err, errlen);
}

/* Encodes b's tasks [b->begin, end) into the input half of s's region that its running batch
 * (if any) does not use.  *len: the body's length there.  0, or a PJ_E code — PJ_ENOMEM with
 * *too_big (unless NULL) set when they do not fit the half. */
static int encode_in_area(struct pool *p, struct slot *s, pj_batch *b, size_t end,
                          uint64_t *len, bool *too_big, char *err, size_t errlen)
{
    struct pj__wbuf area = { .p = pj__shm_input(s->shm, s->in_half ^ 1),
                             .cap = s->shm->in_cap, .fixed = true };
    b->uniform_begin = b->begin;
    b->uniform_end = end;
    int rc = encode(&area, b, end, p, err, errlen);
    *len = rc == 0 ? area.len - sizeof(struct pj__msg_header) : 0;
    if (too_big)
        *too_big = area.oom;
    return rc;
}

/* Encodes b's tasks [b->begin, end) into the worker's free input half when they fit: the
 * worker then reads them in place, and neither side copies them through the channel.  Else
 * into p->tx, for the channel.  *in_area: the body's length in the half, 0 when p->tx holds
 * the whole message.  0 or a PJ_E code. */
static int encode_for(struct pool *p, struct slot *s, pj_batch *b, size_t end,
                      uint64_t *in_area, char *err, size_t errlen)
{
    bool too_big;
    int rc = encode_in_area(p, s, b, end, in_area, &too_big, err, errlen);
    if (rc == 0 || !too_big)
        return rc;
    return encode(&p->tx, b, end, p, err, errlen);
}

/* Hands an encoded batch to the worker: first the shared objects it names that the worker
 * lacks (sharing.c), then the whole message, or where it lies in the region.  False when an
 * object could not be handed: the batch went back, its tasks failed. */
bool pj__pool_hand_over(struct pool *p, struct slot *s, pj_batch *b, size_t end, uint64_t in_area)
{
    char err[256] = "";
    struct pj__sharing sh = sharing_for(p, b);
    int rc = p->tr->share && b->tasks /* a bulk batch has no buffers */
             ? pj__peer_hand(&s->peer, &sh, b->tasks, b->begin, end, p->tr, p->t, slot_no(p, s),
                             err, sizeof err) : 0;
    if (rc) {
        fail_pending(b, b->begin, rc, err);
        pj__pool_give_back(p, s, b);
        return false;
    }
    s->sent_begin = b->begin;
    s->sent_end = end;
    s->progress_at = pj__now_ns();
    s->seen_running = s->seen_used = 0; /* the cell is idle, and next_half empties the half */
    /* The run may have stopped already: the worker must not start what is cancelled. */
    atomic_store(&s->shm->cancel, b->cancel && atomic_load(b->cancel));
    next_half(s);
    atomic_store_explicit(&b->cell, &s->shm->cell, memory_order_release);
    if (!in_area) {
        p->tr->send(p->t, slot_no(p, s), p->tx.p, p->tx.len); /* a dead worker: EOF */
        if (p->tx.cap > RX_KEEP)
            pj__wbuf_free(&p->tx);
        return true;
    }
    s->in_half ^= 1;
    pj__put_area_batch(&p->tx, s->in_half, in_area);
    p->tr->send(p->t, slot_no(p, s), p->tx.p, p->tx.len);
    return true;
}

static void send_batch(struct pool *p, struct slot *s, pj_batch *b)
{
    if (!pj__batch_start(b)) {
        pj__pool_give_back(p, s, b);
        return;
    }
    size_t end = b->count;
    if (p->max_tasks && (size_t)(p->max_tasks - s->tasks_run) < end - b->begin)
        end = b->begin + (size_t)(p->max_tasks - s->tasks_run);
    char err[256] = "";
    uint64_t in_area;
    int rc = encode_for(p, s, b, end, &in_area, err, sizeof err);
    if (rc) {
        fail_pending(b, b->begin, rc, err);
        pj__pool_give_back(p, s, b);
        return;
    }
    pj__pool_hand_over(p, s, b, end, in_area);
}

/* ---- scheduling ----------------------------------------------------------------------------- */

static pj_batch *pop_locked(struct pool *p)
{
    pj_batch *b = p->head;
    if (b) {
        p->head = b->backend_next;
        if (!p->head)
            p->tail = NULL;
        p->queued--;
    }
    return b;
}

static void requeue_front_locked(struct pool *p, pj_batch *b)
{
    b->backend_next = p->head;
    p->head = b;
    if (!p->tail)
        p->tail = b;
    p->queued++;
}

/* While a worker runs a batch, the next queued one is encoded into its other input half, so
 * that on DONE the worker gets it at once instead of waiting while it is encoded (a quarter of
 * a worker's time on tiny tasks).  Only batches that need nothing decided at send time: no
 * deadline, no start gate (a future may still be cancelled), no max_tasks_per_child cut, and
 * small enough for the half; the others take the ordinary path.  Not while a worker's start
 * is to be retried: a batch parked on a busy worker would not be counted as waiting for it. */
void pj__pool_encode_ahead(struct pool *p)
{
    while (!p->max_tasks) {
        pthread_mutex_lock(&p->lock);
        pj_batch *h = p->head;
        bool fits = h && !h->gate && !h->timeout_ns && !h->not_ahead;
        struct slot *s = fits ? take_locked(p, M_AHEAD) : NULL;
        pj_batch *b = s ? pop_locked(p) : NULL;
        pthread_mutex_unlock(&p->lock);
        if (!b)
            return;
        char err[256];
        if (encode_in_area(p, s, b, b->count, &s->next_len, NULL, err, sizeof err)) {
            b->not_ahead = true; /* not again at every turn of the loop */
            pthread_mutex_lock(&p->lock);
            requeue_front_locked(p, b); /* send_batch will say what is wrong with it */
            pj__pool_mark_locked(p, s, M_AHEAD);
            pthread_mutex_unlock(&p->lock);
            return;
        }
        pthread_mutex_lock(&p->lock);
        s->next = b;
        s->next_since = pj__now_ns();
        pj__pool_mark_locked(p, s, M_NEXT);
        pthread_mutex_unlock(&p->lock);
    }
}

/* A worker that will not run its encoded-ahead batch: back to the front of the queue. */
void pj__pool_drop_next(struct pool *p, struct slot *s)
{
    if (!s->next)
        return;
    pthread_mutex_lock(&p->lock);
    requeue_front_locked(p, s->next);
    s->next = NULL;
    pj__pool_mark_locked(p, s, M_AHEAD);
    pthread_mutex_unlock(&p->lock);
}

/* An idle worker with nothing queued takes a batch encoded ahead for a busy one (encoded
 * again, for its own region) rather than wait for the dispatcher.  True when one moved. */
static bool steal_next(struct pool *p)
{
    pthread_mutex_lock(&p->lock);
    struct slot *s = take_locked(p, M_NEXT);
    pthread_mutex_unlock(&p->lock);
    if (s)
        pj__pool_drop_next(p, s);
    return s != NULL;
}

/* The busy worker (not `free`) whose batch encoded ahead has waited longest, if that is more
 * than PARKED_STUCK_NS and `batch_ns`: it goes to a free worker instead.  Only the slots on
 * the M_NEXT stack can hold one, so this costs what is encoded ahead, not every slot. */
struct slot *pj__pool_stuck_parked(struct pool *p, const struct slot *free, uint64_t batch_ns)
{
    uint64_t now = pj__now_ns(), least = batch_ns > PARKED_STUCK_NS ? batch_ns : PARKED_STUCK_NS;
    struct slot *oldest = NULL;
    pthread_mutex_lock(&p->lock);
    const struct marks *k = &p->marks[M_NEXT];
    for (int j = 0; j < k->n; j++) {
        struct slot *o = &p->slots[k->at[j]];
        if (o != free && o->next && o->state == S_BUSY && now - o->next_since > least &&
            (!oldest || o->next_since < oldest->next_since))
            oldest = o;
    }
    pthread_mutex_unlock(&p->lock);
    return oldest;
}

/* No worker can run anything: every queued batch fails with why. */
static void fail_queue(struct pool *p, int code, const char *why)
{
    for (;;) {
        pthread_mutex_lock(&p->lock);
        pj_batch *b = pop_locked(p);
        pthread_mutex_unlock(&p->lock);
        if (!b)
            return;
        fail_pending(b, b->begin, code, why);
        pj_batch_done(b);
    }
}

/* Says once, when verbose, that the pool runs with fewer workers than asked for, and why: the
 * run goes on with those that started. */
void pj__pool_tell_short(struct pool *p, const char *why)
{
    if (p->told_short || !p->n_processes)
        return;
    p->told_short = true;
    if (!p->verbose)
        return;
    struct rlimit nproc = { 0 }, nofile = { 0 };
    getrlimit(RLIMIT_NPROC, &nproc);
    getrlimit(RLIMIT_NOFILE, &nofile);
    char lim[2][24];
    for (int i = 0; i < 2; i++) {
        rlim_t v = i ? nofile.rlim_cur : nproc.rlim_cur;
        if (v == RLIM_INFINITY)
            snprintf(lim[i], sizeof lim[i], "unlimited");
        else
            snprintf(lim[i], sizeof lim[i], "%llu", (unsigned long long)v);
    }
    fprintf(stderr, "[Parallel(n_jobs=%d)]: only %d of %d workers could start (%s; "
            "RLIMIT_NPROC %s, RLIMIT_NOFILE %s): running with those\n", p->n, p->n_processes,
            p->n, why, lim[0], lim[1]);
    fflush(stderr);
}

/* Starts a worker in empty slot e; false when it could not start (retry later). */
bool pj__pool_start_worker(struct pool *p, struct slot *e)
{
    char err[256] = "";
    int rc = launch(p, e, err, sizeof err);
    if (rc) {
        mark(p, e, M_EMPTY);
        snprintf(p->launch_error, sizeof p->launch_error, "%s", err);
        if (!p->warming)
            pj__pool_tell_short(p, err);
        if (!p->n_processes && !p->warming) { /* warm-up may yet start one */
            char why[320];
            snprintf(why, sizeof why, "cannot start a worker process: %s", err);
            fail_queue(p, rc, why);
        }
        return false;
    }
    if (p->initializer)
        send_init(p, e);
    return true;
}

/* Queued batches whose run is cancelled go back unrun, without waiting for a worker (the
 * workers of a run cancelled with PJ__CANCEL_KILL are being killed and replaced).  A pool
 * serves one handle, which runs one run at a time: the queued batches share one flag, and a
 * look at the head is enough. */
static void return_cancelled(struct pool *p)
{
    for (;;) {
        pthread_mutex_lock(&p->lock);
        pj_batch *b = p->head && p->head->cancel && atomic_load(p->head->cancel)
                      ? pop_locked(p) : NULL;
        pthread_mutex_unlock(&p->lock);
        if (!b)
            return;
        pj_batch_done(b);
    }
}

/* Hands queued batches to idle workers, starting workers while batches wait.  Returns true
 * when a launch failed and should be retried. */
bool pj__pool_schedule(struct pool *p)
{
    return_cancelled(p);
    uint64_t starts_until = 0; /* when starting workers gives way to the events; 0: none yet */
    for (;;) {
        if (p->failed) {
            fail_queue(p, p->failed, p->failure);
            return false;
        }
        pthread_mutex_lock(&p->lock);
        struct slot *idle = peek_locked(p, M_IDLE);
        bool starving = !p->head && idle;
        pthread_mutex_unlock(&p->lock);
        if (starving && steal_next(p))
            continue;
        struct slot *stuck = idle ? pj__pool_stuck_parked(p, NULL, 0) : NULL;
        if (stuck) { /* older than the queue's head: first in line */
            pj__pool_drop_next(p, stuck);
            stuck->slow = true;
            continue;
        }
        pthread_mutex_lock(&p->lock);
        struct slot *s = p->head ? take_locked(p, M_IDLE) : NULL;
        pthread_mutex_unlock(&p->lock);
        if (s && predates_modules(p, s)) {
            pj__pool_retire(p, s);
            continue;
        }
        pthread_mutex_lock(&p->lock);
        pj_batch *b = s ? pop_locked(p) : NULL;
        if (b) {
            s->batch = b;
            pj__pool_set_state_locked(p, s, S_BUSY);
        }
        /* Workers still running their initializer will take part of the queue. */
        bool want = !s && p->queued > (size_t)p->n_starting;
        bool slice_over = want && starts_until && pj__now_ns() > starts_until;
        struct slot *e = want && !slice_over ? take_locked(p, M_EMPTY) : NULL;
        pthread_mutex_unlock(&p->lock);
        p->more_to_start = slice_over; /* the others after a look at the events */
        if (b)
            send_batch(p, s, b);
        else if (!e)
            return false;
        else if (!pj__pool_start_worker(p, e))
            return true;
        else if (!starts_until)
            starts_until = pj__now_ns() + WARM_SLICE_NS;
    }
}
