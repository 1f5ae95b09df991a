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
 * transport when the queue needs them, and at the pool's start every worker a slice at a time
 * between its looks at events: warm_some), reads what workers send (result records and DONE; it
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
 * (stop_requested), else by stop_task when it comes (dead_claimed).
 *
 * The pool's files, each with one part: this one opens and closes the pool and runs the I/O
 * thread's loop; procpool_schedule.c keeps the slots and their marks and hands batches to
 * workers; procpool_receive.c reads what workers send and attributes their deaths;
 * procpool_housekeeping.c looks after deadlines, stalls, cancel kills and idle workers;
 * procpool.h holds what they share. */
#include "procpool.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>

#define IDLE_DEFAULT_NS (300ull * 1000000000ull)
/* A new worker not READY this long after its launch never will be, most likely: its start-up
 * waits for something (spawn: a constructor waiting for what main provides).  A minute, so
 * that only a start-up that would have hung fails; config.worker_start_timeout sets it. */
#define START_DEFAULT_NS (60ull * 1000000000ull)
#define RETRY_LAUNCH_MS 100
#define EVENTS_PER_WAIT 64
/* A sanitizer's allocator is not fork-safe (glibc's malloc is): a worker forked while another
 * thread allocated could wait forever on its lock.  There the thread that opens a pool whose
 * workers are forked waits until all have started, before the run allocates. */
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define FORK_UNSAFE_MALLOC 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer) || \
    __has_feature(memory_sanitizer)
#define FORK_UNSAFE_MALLOC 1
#endif
#endif
#ifndef FORK_UNSAFE_MALLOC
#define FORK_UNSAFE_MALLOC 0
#endif

static void wake_io(struct pool *p)
{
    p->tr->wake(p->t);
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

/* ---- the I/O thread ------------------------------------------------------------------------- */

/* Waits for events, then reads the workers that have something: the work done here is in
 * proportion to the ready workers, not to the pool's size. */
static void wait_events(struct pool *p, int timeout)
{
    void *ready[EVENTS_PER_WAIT];
    int k = p->tr->wait(p->t, ready, EVENTS_PER_WAIT, timeout);
    for (int i = 0; i < k; i++) {
        struct slot *s = ready[i];
        if (s->pid)
            pj__pool_read_slot(p, s); /* a slot relaunched since its event reads nothing: harmless */
    }
}

/* Starts workers in the slots that have never had one, in order, for WARM_SLICE_NS (one at
 * least) before the I/O thread looks at its events again: the first workers get batches and
 * their results come back while the others start, so the first result does not wait for the
 * last of n_jobs workers (2048 fork workers take about 0.5 s to start on 2 cores, spawn ones
 * 1-2 s).  Returns true while slots remain.
 *
 * Warm-up ends at the first worker that cannot start: a process or descriptor limit, most
 * likely, which the slots after it would meet too.  They wait on the EMPTY stack, where
 * schedule retries a start while batches wait, and the pool says at once (verbose) that it
 * runs with fewer workers — not at the end of a warm-up that a short run may not see. */
static bool warm_some(struct pool *p)
{
    if (!p->warming)
        return false;
    uint64_t until = pj__now_ns() + WARM_SLICE_NS;
    bool failed;
    do
        failed = !pj__pool_start_worker(p, &p->slots[p->warm_next++]);
    while (!failed && p->warm_next < p->n && pj__now_ns() < until);
    if (!failed && p->warm_next < p->n)
        return true;
    pthread_mutex_lock(&p->lock);
    for (; p->warm_next < p->n; p->warm_next++)
        pj__pool_mark_locked(p, &p->slots[p->warm_next], M_EMPTY);
    p->warming = false;
    pthread_cond_broadcast(&p->warm);
    pthread_mutex_unlock(&p->lock);
    if (p->n_processes < p->n)
        pj__pool_tell_short(p, p->launch_error);
    return false;
}

/* Shared objects died (the sealed copies of a run at its end, pj_shared_free): every worker
 * holding one is told to let it go now, so that its memory goes while the pool idles too. */
static void sweep_shared(struct pool *p)
{
    uint64_t gen = pj__shared_generation();
    if (!p->tr->share || gen == p->shared_gen)
        return;
    p->shared_gen = gen;
    for (int i = 0; i < p->n; i++)
        if (p->slots[i].pid)
            pj__peer_sweep(&p->slots[i].peer, p->tr, p->t, i);
}

static void wake_on_death(void *arg)
{
    struct pool *p = arg;
    p->tr->wake(p->t);
}

static void *io_main(void *arg)
{
    struct pool *p = arg;
    for (;;) {
        pthread_mutex_lock(&p->lock);
        bool stop = p->shutdown;
        pthread_mutex_unlock(&p->lock);
        if (stop)
            break;
        bool retry = pj__pool_schedule(p);
        if (!retry) /* a worker failed to start: queued batches wait for its retry instead */
            pj__pool_encode_ahead(p);
        int timeout = pj__pool_housekeeping(p);
        if (warm_some(p) || p->more_to_start)
            timeout = 0; /* more workers to start once the events are read */
        if (retry && (timeout < 0 || timeout > RETRY_LAUNCH_MS))
            timeout = RETRY_LAUNCH_MS;
        wait_events(p, timeout);
        sweep_shared(p);
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
    if (p->listening)
        pj__shared_unlisten(wake_on_death, p);
    for (int i = 0; i < p->n; i++)
        pj__peer_free(&p->slots[i].peer);
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
    p->max_nbytes = config->max_nbytes < 0 ? UINT64_MAX
                    : config->max_nbytes ? (uint64_t)config->max_nbytes
                                         : (uint64_t)PJ_MAX_NBYTES_DEFAULT;
    p->housekeeping_due = UINT64_MAX;
    p->tr = ops->transport;
    p->warming = true;
    int rc = p->tr->open(&p->t, n_workers, ops, &p->inner, err, errlen);
    if (!rc && p->tr->share && !(rc = pj__shared_listen(wake_on_death, p)))
        p->listening = true;
    if (!rc)
        rc = pool_memory(p);
    if (!rc)
        rc = start_io(p, err, errlen);
    if (rc) {
        pool_free(p);
        return rc;
    }
    pthread_mutex_lock(&p->lock);
    while (p->warming && FORK_UNSAFE_MALLOC && ops->fnref->kind == PJ__FNREF_POINTER)
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
    pj__pool_mark_locked(p, dead, M_EMPTY);
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
