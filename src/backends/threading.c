/* pthreads: n persistent workers pop whole batches from one queue and run them in place.
 * Idle workers sleep on a condition variable (an idle pool uses no CPU); a batch costs one
 * queue push and pop, and a wake-up only when a worker is asleep.
 *
 * A thread cannot be killed.  When a task overruns its deadline, stop_task abandons the worker
 * running it: the worker leaves the pool's list, a replacement thread keeps the pool's
 * capacity, and the abandoned thread, when its call finally returns, frees its own record and
 * exits without touching the pool (which may be gone by then).  The abandoned call itself runs
 * to its end: that is documented in parjob.h. */
#include "internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct worker {
    pthread_t thread;
    struct pool *pool;
    pj_batch *current;           /* guarded by pool->lock */
    _Atomic bool abandoned;      /* set once stop_task has detached this worker */
    struct worker *next;
};

struct pool {
    pthread_mutex_t lock;
    pthread_cond_t wake;
    pj_batch *head, *tail;       /* queued batches, linked through backend_next */
    int idle;                    /* workers asleep on wake */
    bool shutdown;
    struct worker *workers;
    struct pj__inner inner;      /* each thread's share of the CPUs for OpenMP inside tasks */
};

static int threading_open(void **state, int n_workers, const pj_config *config, char *errbuf,
                          size_t errlen);
static int threading_submit(void *state, pj_batch *batch);
static void threading_stop_task(void *state, pj_batch *batch);
static void threading_close(void *state);

const struct pj_backend pj__backend_threading = {
    .version = PJ_BACKEND_VERSION,
    .name = "threading",
    .display_name = "ThreadingBackend",
    .features = PJ_BACKEND_BATCH_RUN,
    .open = threading_open,
    .submit = threading_submit,
    .stop_task = threading_stop_task,
    .close = threading_close,
};

/* The abandoned worker waits for stop_task to finish detaching it (it is already on its way:
 * the watchdog claimed the task before the call returned), then leaves. */
static void *leave_abandoned(struct worker *w)
{
    while (!atomic_load(&w->abandoned)) {
        struct timespec ts = { 0, 1000000 };
        nanosleep(&ts, NULL);
    }
    free(w);
    return NULL;
}

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    struct pool *pool = w->pool;
    pj__in_worker = true;
    pj__inner_apply_thread(&pool->inner); /* OpenMP's nthreads ICV is per thread */
    pthread_mutex_lock(&pool->lock);
    for (;;) {
        while (!pool->head && !pool->shutdown) {
            pool->idle++;
            pthread_cond_wait(&pool->wake, &pool->lock);
            pool->idle--;
        }
        pj_batch *b = pool->head;
        if (!b)
            break;
        pool->head = b->backend_next;
        if (!pool->head)
            pool->tail = NULL;
        w->current = b;
        pthread_mutex_unlock(&pool->lock);
        if (pj_batch_run(b))
            return leave_abandoned(w); /* b is the dispatcher's again; pool may be gone */
        pthread_mutex_lock(&pool->lock);
        w->current = NULL;
        pthread_mutex_unlock(&pool->lock);
        pj_batch_done(b);
        pthread_mutex_lock(&pool->lock);
    }
    pthread_mutex_unlock(&pool->lock);
    return NULL;
}

/* Adds a worker; the caller holds pool->lock or owns the pool alone. */
static int add_worker(struct pool *pool)
{
    struct worker *w = calloc(1, sizeof *w);
    if (!w)
        return PJ_ENOMEM;
    w->pool = pool;
    if (pthread_create(&w->thread, NULL, worker_main, w)) {
        free(w);
        return PJ_ESYS;
    }
    w->next = pool->workers;
    pool->workers = w;
    return 0;
}

static int threading_open(void **state, int n_workers, const pj_config *config, char *errbuf,
                          size_t errlen)
{
    struct pool *pool = calloc(1, sizeof *pool);
    if (!pool)
        return PJ_ENOMEM;
    pj__inner_init(&pool->inner, config, n_workers);
    pthread_mutex_init(&pool->lock, NULL);
    pthread_cond_init(&pool->wake, NULL);
    for (int i = 0; i < n_workers; i++) {
        int rc = add_worker(pool);
        if (rc) {
            snprintf(errbuf, errlen, "could not start thread %d of %d", i + 1, n_workers);
            threading_close(pool);
            return rc;
        }
    }
    *state = pool;
    return 0;
}

static int threading_submit(void *state, pj_batch *b)
{
    struct pool *pool = state;
    b->backend_next = NULL;
    pthread_mutex_lock(&pool->lock);
    if (pool->tail)
        pool->tail->backend_next = b;
    else
        pool->head = b;
    pool->tail = b;
    if (pool->idle)
        pthread_cond_signal(&pool->wake);
    pthread_mutex_unlock(&pool->lock);
    return 0;
}

static void threading_stop_task(void *state, pj_batch *b)
{
    struct pool *pool = state;
    pthread_mutex_lock(&pool->lock);
    for (struct worker **p = &pool->workers; *p; p = &(*p)->next) {
        struct worker *w = *p;
        if (w->current != b)
            continue;
        *p = w->next;
        pthread_detach(w->thread);
        atomic_store(&w->abandoned, true);
        add_worker(pool); /* keep the capacity; on failure the pool runs one short */
        break;
    }
    pthread_mutex_unlock(&pool->lock);
    pj_batch_done(b);
}

static void threading_close(void *state)
{
    struct pool *pool = state;
    pthread_mutex_lock(&pool->lock);
    pool->shutdown = true;
    pthread_cond_broadcast(&pool->wake);
    pthread_mutex_unlock(&pool->lock);
    while (pool->workers) {
        struct worker *w = pool->workers;
        pool->workers = w->next;
        pthread_join(w->thread, NULL);
        free(w);
    }
    pthread_cond_destroy(&pool->wake);
    pthread_mutex_destroy(&pool->lock);
    free(pool);
}
