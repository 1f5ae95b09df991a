/* The process pool behind the fork and spawn backends: worker slots, the policy that drives
 * them, and one I/O thread in the parent that does everything that touches a worker.  What
 * carries a batch to "a worker somewhere" and brings its records back is the backend's
 * transport (struct pj__transport_ops; transport_local.c: processes on this machine, which
 * says how an MPI transport would plug in): this file knows no socket, mapping or pid table.
 *
 * A slot is a place for one worker: its region (pj__shm, the transport's, at one address for
 * the life of the pool, so a pointer the watchdog holds is never unmapped under it), and, while
 * a worker lives in it, its pid.  A worker runs one batch at a time; a batch that is handed
 * back re-enters the queue through the dispatcher.  A batch that fits is encoded straight into
 * one of the region's two input halves and only where it lies is sent; while a worker runs a
 * batch, the next one may be encoded into its other half ahead (encode_ahead), so DONE is
 * answered at once.  Results come back in the region, alternating halves, and are applied
 * after the worker has its next batch (batch_done).  The transport is called per batch and
 * per event, never per task.
 *
 * The I/O thread hands queued batches to idle workers (starting workers through the
 * transport when the queue needs them), reads what workers send (result records and DONE; it
 * waits on the transport, and finds the slots it needs on stacks of marks, so its work per
 * event does not grow with the number of workers), notices deaths (the end of a worker's
 * channel, then reap: no zombies), attributes a crash to the task the region's cell names,
 * retires workers past max_tasks_per_child or idle_worker_timeout, and passes the
 * dispatcher's cancel flag on to the regions.  pj_batch_done is called from this thread only —
 * except by stop_task, see below.
 *
 * Lock rule: pool->lock guards the queue, the marks and, per slot, batch, pid, reaping,
 * stop_requested and dead_claimed — what stop_task (the dispatcher's watchdog thread) reads.
 * It is never held while calling pj_batch_done, sending, forking or waiting for a child.
 *
 * Timeouts and crashes race for the running task; the cell decides.  The watchdog claims the
 * task by CAS on cell.running before it calls stop_task; the I/O thread, finding a worker dead,
 * claims the same way before it marks the task crashed.  Whoever wins marks the task.  The batch
 * is handed back exactly once: by the I/O thread when it won the cell or stop_task already came
 * (stop_requested), else by stop_task when it comes (dead_claimed). */
#include "process.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>

#define IDLE_DEFAULT_NS (300ull * 1000000000ull)
/* A new worker not READY this long after its launch never will be, most likely: its start-up
 * waits for something (spawn: a constructor waiting for what main provides).  A minute, so
 * that only a start-up that would have hung fails; config.worker_start_timeout sets it. */
#define START_DEFAULT_NS (60ull * 1000000000ull)
#define CANCEL_POLL_MS 20        /* how soon a cancel reaches a running worker */
#define RETRY_LAUNCH_MS 100
#define RX_KEEP ((size_t)16 << 20)
/* A batch encoded ahead for a busy worker is taken over by a free one once it has waited this
 * long and longer than the free worker's last batch took: behind a long task it would wait for
 * that task's end (issue 16), while batches alternating between workers each wait less than
 * the other's batch and keep the encoding they were given (this floor absorbs the I/O
 * thread's latency, which the worker's own batch time does not include). */
#define PARKED_STUCK_NS (5ull * 1000000ull)
#define RX_CHUNK 4096            /* a worker's messages are small but for big results, whose
                                    header says their size: a page per worker, not 64 KiB */
#define EVENTS_PER_WAIT 64

enum slot_state { S_EMPTY, S_STARTING, S_IDLE, S_BUSY };

/* Slots wanted for something, each kept as a stack of slot numbers (struct marks): IDLE, a
 * worker ready for a batch; EMPTY, a slot free for a new worker; AHEAD, a busy worker whose
 * next batch could be encoded ahead; NEXT, a worker with a batch encoded ahead that an idle one
 * may take.  A slot is pushed when it enters the state and checked when popped (it may have
 * left it since): the I/O thread finds what it needs without walking every slot, so its work
 * per event does not grow with n_jobs. */
enum mark { M_IDLE, M_EMPTY, M_AHEAD, M_NEXT, N_MARKS };

struct marks {
    int *at;                     /* slot numbers; a slot at most once (slot.marked) */
    int n;
};

struct slot {
    enum slot_state state;       /* I/O thread only */
    pid_t pid;                   /* 0: no process */
    struct pj__shm *shm;         /* the transport's region for the slot */
    pj_batch *batch;             /* the batch the worker runs */
    bool reaping;                /* dead or dying: stop_task must not signal the pid */
    bool stop_requested;         /* stop_task killed it; the I/O thread hands the batch back */
    bool dead_claimed;           /* died after the watchdog claimed its task: stop_task hands
                                    the batch back */
    bool stalled;                /* killed by the pool: it held a batch with a deadline and
                                    started no task of it for that long (stopped, frozen) */
    bool cancel_killed;          /* killed by the pool: its batch's run was cancelled with
                                    PJ__CANCEL_KILL (pj_parallel_cancel) */
    uint64_t seen_running;       /* the cell and record count last seen (housekeeping), and */
    uint64_t seen_used;          /* when either last changed: the worker's last sign of life */
    uint64_t progress_at;
    size_t sent_begin, sent_end; /* tasks sent to the worker */
    pj_result init;              /* the initializer's result while starting: records may come
                                    in a RECORDS message before its DONE */
    bool ready;                  /* the process sent READY: its start-up is over */
    bool start_overdue;          /* killed for not being ready in time */
    uint64_t launched_ns;
    int half;                    /* of the shared region, where the last batch sent writes */
    int in_half;                 /* input half of the last batch sent in the region */
    pj_batch *next;              /* encoded ahead into the other input half, not sent yet */
    uint64_t next_len;
    uint64_t next_since;         /* when next was encoded ahead */
    bool slow;                   /* its next was taken over: none is encoded ahead for it again
                                    until its batch is done */
    long tasks_run;
    uint64_t idle_since;
    uint64_t modules_gen;        /* pj__modules_generation() when the worker was started */
    unsigned char *rx;           /* bytes received, not yet a whole message */
    size_t rx_len, rx_cap;
    bool marked[N_MARKS];        /* on that stack of the pool's marks */
};

struct pool {
    pthread_mutex_t lock;
    pj_batch *head, *tail;       /* queued, through backend_next */
    size_t queued;
    bool shutdown;
    const struct pj__transport_ops *tr; /* what carries batches to the workers */
    struct pj__transport *t;     /* its state; events name a struct slot */
    pthread_t io;
    int n;
    struct slot *slots;
    struct marks marks[N_MARKS]; /* under lock */
    int n_starting, n_processes; /* slots S_STARTING, slots with a pid: I/O thread only */
    uint64_t housekeeping_due;   /* I/O thread only; UINT64_MAX: nothing to look after */
    bool verbose;
    bool told_short;             /* said that fewer workers than n could start */
    char launch_error[256];      /* why the last worker that failed to start did */
    const struct pj__proc_ops *ops;
    pj_task *initializer;
    struct pj__inner inner;      /* the limit every worker gets on the runtimes its tasks run */
    bool warming;                /* open waits while the I/O thread starts every worker */
    pthread_cond_t warm;
    long max_tasks;
    uint64_t idle_ns;
    uint64_t start_ns;           /* how long a new worker may take to be READY */
    int failed;                  /* sticky: the initializer failed, or a new worker's start-up:
                                    no new worker can serve */
    char failure[400];
    struct pj__wbuf tx;
};

static void *io_main(void *arg);

/* ---- small helpers ------------------------------------------------------------------------ */

static void wake_io(struct pool *p)
{
    p->tr->wake(p->t);
}

/* The slot's number, as the transport knows it. */
static int slot_no(const struct pool *p, const struct slot *s)
{
    return (int)(s - p->slots);
}

static void kill_worker(struct pool *p, struct slot *s)
{
    p->tr->kill(p->t, slot_no(p, s));
}

static void fail_pending(pj_batch *b, size_t from, int code, const char *why)
{
    for (size_t i = from; i < b->count; i++)
        if (b->results[i].status == PJ__PENDING)
            pj__result_fail(&b->results[i], code, 0, "%s", why);
}

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

/* ---- slots ---------------------------------------------------------------------------------- */

static void mark_locked(struct pool *p, struct slot *s, enum mark m)
{
    if (s->marked[m])
        return;
    s->marked[m] = true;
    p->marks[m].at[p->marks[m].n++] = (int)(s - p->slots);
}

static void mark(struct pool *p, struct slot *s, enum mark m)
{
    pthread_mutex_lock(&p->lock);
    mark_locked(p, s, m);
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
static void set_state_locked(struct pool *p, struct slot *s, enum slot_state st)
{
    p->n_starting += (st == S_STARTING) - (s->state == S_STARTING);
    s->state = st;
    uint64_t now = st == S_IDLE || st == S_BUSY ? pj__now_ns() : 0, due = UINT64_MAX;
    if (st == S_IDLE) {
        mark_locked(p, s, M_IDLE);
        due = p->idle_ns < UINT64_MAX - now ? now + p->idle_ns : UINT64_MAX;
    } else if (st == S_EMPTY) {
        mark_locked(p, s, M_EMPTY);
    } else if (st == S_BUSY) {
        mark_locked(p, s, M_AHEAD);
        due = now + CANCEL_POLL_MS * 1000000ull;
    }
    if (due < p->housekeeping_due)
        p->housekeeping_due = due;
}

static void set_state(struct pool *p, struct slot *s, enum slot_state st)
{
    pthread_mutex_lock(&p->lock);
    set_state_locked(p, s, st);
    pthread_mutex_unlock(&p->lock);
}

/* The stacks of marks, and each slot's region from the transport. */
static int pool_memory(struct pool *p)
{
    for (int m = 0; m < N_MARKS; m++)
        if (!(p->marks[m].at = malloc((size_t)p->n * sizeof(int))))
            return PJ_ENOMEM;
    for (int i = 0; i < p->n; i++)
        p->slots[i].shm = p->tr->region(p->t, i);
    return 0;
}

static void pool_memory_free(struct pool *p)
{
    for (int m = 0; m < N_MARKS; m++)
        free(p->marks[m].at);
    for (int i = 0; i < p->n; i++)
        free(p->slots[i].rx);
}

/* Ends the slot's process: closes the channel (the worker exits on EOF) and waits for it. */
static void retire(struct pool *p, struct slot *s)
{
    pthread_mutex_lock(&p->lock);
    s->reaping = true;
    pthread_mutex_unlock(&p->lock);
    p->tr->reap(p->t, slot_no(p, s));
    p->n_processes--;
    pthread_mutex_lock(&p->lock);
    s->pid = 0;
    s->reaping = false;
    set_state_locked(p, s, S_EMPTY);
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
    set_state(p, s, S_IDLE);
    if (s->launched_ns + p->start_ns < p->housekeeping_due) /* its start-up deadline */
        p->housekeeping_due = s->launched_ns + p->start_ns;
    return 0;
}

/* ---- sending -------------------------------------------------------------------------------- */

/* Hands a batch back to the dispatcher: the slot forgets it first. */
static void give_back(struct pool *p, struct slot *s, pj_batch *b)
{
    pthread_mutex_lock(&p->lock);
    if (s && s->batch == b)
        s->batch = NULL;
    pthread_mutex_unlock(&p->lock);
    if (s && s->state == S_BUSY)
        set_state(p, s, S_IDLE);
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

/* A worker that shares the parent's address space as of its fork (function pointers cross as
 * they are) lacks a library dlopen'ed since, or has one closed since at its old address: a
 * pointer into it would crash the worker or call other code.  Such a worker gets no further
 * batch; it is retired and a fresh one forked.  Workers that resolve (module, offset) load
 * what they need themselves. */
static bool predates_modules(const struct pool *p, const struct slot *s)
{
    return p->ops->fnref->kind == PJ__FNREF_POINTER &&
           s->modules_gen != pj__modules_generation();
}

/* Sends the initializer to a new worker; it serves batches once that is DONE. */
static void send_init(struct pool *p, struct slot *s)
{
    char err[256] = "";
    int rc = pj__encode_batch(&p->tx, PJ__MSG_INIT, &p->initializer, 0, 1, 0, p->ops->fnref,
                              NULL, err, sizeof err);
    set_state(p, s, S_STARTING);
    s->init = (pj_result){ .status = PJ__PENDING };
    next_half(s);
    if (rc) {
        p->failed = rc;
        snprintf(p->failure, sizeof p->failure, "the initializer cannot be sent to a worker: "
                 "%s", err);
        retire(p, s);
        return;
    }
    p->tr->send(p->t, slot_no(p, s), p->tx.p, p->tx.len); /* a dead worker shows as EOF */
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
    int rc = pj__encode_batch(&area, PJ__MSG_BATCH, b->tasks, b->begin, end, b->timeout_ns,
                              p->ops->fnref, &b->uniform_fn, err, errlen);
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
    return pj__encode_batch(&p->tx, PJ__MSG_BATCH, b->tasks, b->begin, end, b->timeout_ns,
                            p->ops->fnref, &b->uniform_fn, err, errlen);
}

/* Hands an encoded batch to the worker: the whole message, or where it lies in the region. */
static void hand_over(struct pool *p, struct slot *s, pj_batch *b, size_t end, uint64_t in_area)
{
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
        return;
    }
    s->in_half ^= 1;
    pj__put_area_batch(&p->tx, s->in_half, in_area);
    p->tr->send(p->t, slot_no(p, s), p->tx.p, p->tx.len);
}

static void send_batch(struct pool *p, struct slot *s, pj_batch *b)
{
    if (!pj__batch_start(b)) {
        give_back(p, s, b);
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
        give_back(p, s, b);
        return;
    }
    hand_over(p, s, b, end, in_area);
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
static void encode_ahead(struct pool *p)
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
            mark_locked(p, s, M_AHEAD);
            pthread_mutex_unlock(&p->lock);
            return;
        }
        pthread_mutex_lock(&p->lock);
        s->next = b;
        s->next_since = pj__now_ns();
        mark_locked(p, s, M_NEXT);
        pthread_mutex_unlock(&p->lock);
    }
}

/* A worker that will not run its encoded-ahead batch: back to the front of the queue. */
static void drop_next(struct pool *p, struct slot *s)
{
    if (!s->next)
        return;
    pthread_mutex_lock(&p->lock);
    requeue_front_locked(p, s->next);
    s->next = NULL;
    mark_locked(p, s, M_AHEAD);
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
        drop_next(p, s);
    return s != NULL;
}

/* The busy worker (not `free`) whose batch encoded ahead has waited longest, if that is more
 * than PARKED_STUCK_NS and `batch_ns`: it goes to a free worker instead.  Only the slots on
 * the M_NEXT stack can hold one, so this costs what is encoded ahead, not every slot. */
static struct slot *stuck_parked(struct pool *p, const struct slot *free, uint64_t batch_ns)
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
static void tell_short(struct pool *p, const char *why)
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
static bool start_worker(struct pool *p, struct slot *e)
{
    char err[256] = "";
    int rc = launch(p, e, err, sizeof err);
    if (rc) {
        mark(p, e, M_EMPTY);
        snprintf(p->launch_error, sizeof p->launch_error, "%s", err);
        if (!p->warming)
            tell_short(p, err);
        if (!p->n_processes) {
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
static bool schedule(struct pool *p)
{
    return_cancelled(p);
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
        struct slot *stuck = idle ? stuck_parked(p, NULL, 0) : NULL;
        if (stuck) { /* older than the queue's head: first in line */
            drop_next(p, stuck);
            stuck->slow = true;
            continue;
        }
        pthread_mutex_lock(&p->lock);
        struct slot *s = p->head ? take_locked(p, M_IDLE) : NULL;
        pthread_mutex_unlock(&p->lock);
        if (s && predates_modules(p, s)) {
            retire(p, s);
            continue;
        }
        pthread_mutex_lock(&p->lock);
        pj_batch *b = s ? pop_locked(p) : NULL;
        if (b) {
            s->batch = b;
            set_state_locked(p, s, S_BUSY);
        }
        /* Workers still running their initializer will take part of the queue. */
        struct slot *e = !s && p->queued > (size_t)p->n_starting ? take_locked(p, M_EMPTY)
                                                                  : NULL;
        pthread_mutex_unlock(&p->lock);
        if (b)
            send_batch(p, s, b);
        else if (!e)
            return false;
        else if (!start_worker(p, e))
            return true;
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
        set_state(p, s, S_IDLE);
    } else {
        p->failed = r.status == PJ__PENDING ? PJ_EPROTO : r.status;
        snprintf(p->failure, sizeof p->failure, "the initializer failed in a new worker: %s",
                 r.message ? r.message : "no result");
        retire(p, s);
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
        give_back(p, s, b);
        if (recycle)
            retire(p, s);
        return;
    }
    if (s->next && recycle)
        drop_next(p, s); /* a fresh worker gets it, from io_main's next schedule */
    struct slot *stuck = s->next ? stuck_parked(p, s, exec_ns) : NULL;
    if (stuck) { /* its batch is older than ours: ours back in line behind it */
        drop_next(p, s);
        drop_next(p, stuck);
        stuck->slow = true;
    }
    s->slow = false;
    pthread_mutex_lock(&p->lock);
    pj_batch *next = s->next;
    s->batch = next;
    s->next = NULL;
    if (next)
        mark_locked(p, s, M_AHEAD);
    pthread_mutex_unlock(&p->lock);
    if (next) {
        hand_over(p, s, next, next->count, s->next_len);
    } else {
        set_state(p, s, S_IDLE);
        if (recycle)
            retire(p, s);
        else
            schedule(p);
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
        retire(p, s);
        return;
    }
    drop_next(p, s);
    fail_pending(s->batch, s->sent_begin, code, why);
    give_back(p, s, s->batch);
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
    drop_next(p, s);
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
    set_state_locked(p, s, S_EMPTY);
    s->tasks_run = 0;
    s->rx_len = 0;
    pthread_mutex_unlock(&p->lock);
    if (starting) {
        pj__result_release(&s->init);
        s->init = (pj_result){ .status = PJ__PENDING };
    }
    if (!ready && !killed_by_us)
        startup_failed(p, s, st);
    else if (starting)
        initializer_died(p, st);
    if (hand_back) {
        pj_batch_done(b);
        atomic_store(&s->shm->cell.running, 0);
    }
}

static void read_slot(struct pool *p, struct slot *s)
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
    if (s->rx_cap > RX_KEEP && s->rx_len == 0) {
        free(s->rx);
        s->rx = NULL;
        s->rx_cap = 0;
    }
}

/* ---- the I/O thread ------------------------------------------------------------------------- */

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
static int housekeeping(struct pool *p)
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
                retire(p, s);
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

/* Waits for events, then reads the workers that have something: the work done here is in
 * proportion to the ready workers, not to the pool's size. */
static void wait_events(struct pool *p, int timeout)
{
    void *ready[EVENTS_PER_WAIT];
    int k = p->tr->wait(p->t, ready, EVENTS_PER_WAIT, timeout);
    for (int i = 0; i < k; i++) {
        struct slot *s = ready[i];
        if (s->pid)
            read_slot(p, s); /* a slot relaunched since its event reads nothing: harmless */
    }
}

/* Every worker is started before the first batch, while the thread that opened the pool waits:
 * forks then do not race that thread's allocations (glibc's malloc is fork-safe, a sanitizer's
 * allocator is not: a worker forked mid-malloc there waited forever on its lock).  A worker
 * that fails to start now is started later, when batches wait. */
static void warm_up(struct pool *p)
{
    for (int i = p->n - 1; i >= 0; i--) /* the last started is the first taken */
        start_worker(p, &p->slots[i]);
    if (p->n_processes < p->n)
        tell_short(p, p->launch_error);
    pthread_mutex_lock(&p->lock);
    p->warming = false;
    pthread_cond_broadcast(&p->warm);
    pthread_mutex_unlock(&p->lock);
}

static void *io_main(void *arg)
{
    struct pool *p = arg;
    warm_up(p);
    for (;;) {
        pthread_mutex_lock(&p->lock);
        bool stop = p->shutdown;
        pthread_mutex_unlock(&p->lock);
        if (stop)
            break;
        bool retry = schedule(p);
        if (!retry) /* a worker failed to start: queued batches wait for its retry instead */
            encode_ahead(p);
        int timeout = housekeeping(p);
        if (retry && (timeout < 0 || timeout > RETRY_LAUNCH_MS))
            timeout = RETRY_LAUNCH_MS;
        wait_events(p, timeout);
    }
    return NULL;
}

/* ---- the backend entry points --------------------------------------------------------------- */

static int start_io(struct pool *p, char *err, size_t errlen)
{
    /* The I/O thread blocks every signal so none is delivered to it (the program's handlers
     * run on its own threads), as the launcher thread does. */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int rc = pthread_create(&p->io, NULL, io_main, p);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc) {
        snprintf(err, errlen, "cannot start the pool's I/O thread");
        return PJ_ESYS;
    }
    return 0;
}

static void pool_free(struct pool *p)
{
    pool_memory_free(p);
    if (p->t)
        p->tr->close(p->t); /* ends and reaps the workers left */
    pj__wbuf_free(&p->tx);
    pthread_cond_destroy(&p->warm);
    pthread_mutex_destroy(&p->lock);
    free(p->slots);
    free(p);
}

int pj__procpool_open(void **state, int n_workers, const pj_config *config,
                      const struct pj__proc_ops *ops, char *err, size_t errlen)
{
    struct pool *p = calloc(1, sizeof *p);
    if (!p || !(p->slots = calloc((size_t)n_workers, sizeof *p->slots))) {
        free(p);
        return PJ_ENOMEM;
    }
    pthread_mutex_init(&p->lock, NULL);
    pthread_cond_init(&p->warm, NULL);
    p->n = n_workers;
    p->ops = ops;
    p->initializer = config->initializer;
    pj__inner_init(&p->inner, config, n_workers);
    p->max_tasks = config->max_tasks_per_child > 0 ? config->max_tasks_per_child : 0;
    p->idle_ns = config->idle_worker_timeout > 0
                     ? (uint64_t)(config->idle_worker_timeout * 1e9) : IDLE_DEFAULT_NS;
    p->start_ns = config->worker_start_timeout > 0
                      ? (uint64_t)(config->worker_start_timeout * 1e9) : START_DEFAULT_NS;
    p->verbose = config->verbose > 0;
    p->housekeeping_due = UINT64_MAX;
    p->tr = ops->transport;
    p->warming = true;
    int rc = p->tr->open(&p->t, n_workers, ops, &p->inner, err, errlen);
    if (!rc)
        rc = pool_memory(p);
    if (!rc)
        rc = start_io(p, err, errlen);
    if (rc) {
        pool_free(p);
        return rc;
    }
    pthread_mutex_lock(&p->lock);
    while (p->warming)
        pthread_cond_wait(&p->warm, &p->lock);
    pthread_mutex_unlock(&p->lock);
    *state = p;
    return 0;
}

int pj__procpool_submit(void *state, pj_batch *b)
{
    struct pool *p = state;
    b->backend_next = NULL;
    pthread_mutex_lock(&p->lock);
    if (p->tail)
        p->tail->backend_next = b;
    else
        p->head = b;
    p->tail = b;
    p->queued++;
    pthread_mutex_unlock(&p->lock);
    wake_io(p);
    return 0;
}

void pj__procpool_stop_task(void *state, pj_batch *b)
{
    struct pool *p = state;
    struct slot *dead = NULL;
    pthread_mutex_lock(&p->lock);
    for (int i = 0; i < p->n; i++) {
        struct slot *s = &p->slots[i];
        if (s->batch != b)
            continue;
        if (s->dead_claimed) {
            s->batch = NULL;
            dead = s;
        } else {
            s->stop_requested = true;
            if (!s->reaping)
                kill_worker(p, s); /* the I/O thread sees EOF and hands the batch back */
        }
        break;
    }
    pthread_mutex_unlock(&p->lock);
    if (!dead)
        return;
    pj_batch_done(b);
    pthread_mutex_lock(&p->lock);
    atomic_store(&dead->shm->cell.running, 0);
    dead->dead_claimed = false; /* the slot may take a new worker */
    mark_locked(p, dead, M_EMPTY);
    pthread_mutex_unlock(&p->lock);
    wake_io(p);
}

void pj__procpool_close(void *state)
{
    struct pool *p = state;
    pthread_mutex_lock(&p->lock);
    p->shutdown = true;
    pthread_mutex_unlock(&p->lock);
    wake_io(p);
    pthread_join(p->io, NULL);
    pool_free(p); /* the transport ends every worker, in parallel */
}
