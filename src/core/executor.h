/* The futures executor's private declarations, shared by executor.c (the executor, submission,
 * shutdown, map) and futures.c (a future's completion, its queries, waiting on futures) and
 * included by them only.  The lock rule and the lifetimes: executor.c's opening comment. */
#ifndef PJ_EXECUTOR_H
#define PJ_EXECUTOR_H

#include "internal.h"

enum { F_PENDING = 0, F_FINISHED, F_CANCELLED };

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

/* ---- across the executor's files (each is described where it is defined) ---------------- */

/* executor.c */
PJ_HIDDEN void pj__executor_unref(pj_executor *ex);
/* futures.c */
PJ_HIDDEN int pj__deadline_from(double timeout, uint64_t *deadline);
PJ_HIDDEN void pj__cond_init_monotonic(pthread_cond_t *cond);
PJ_HIDDEN struct callback *pj__future_complete_locked(pj_executor *ex, pj_future *f, int state);
PJ_HIDDEN void pj__future_run_callbacks(pj_future *f, struct callback *cbs);
PJ_HIDDEN void pj__future_unref(pj_future *f);
PJ_HIDDEN void pj__future_active_unlink(pj_executor *ex, pj_future *f);
PJ_HIDDEN void pj__future_batch_done(pj_batch *b);
PJ_HIDDEN int pj__future_result_status(const char *who, const pj_result *r);
PJ_HIDDEN bool pj__future_wait_done_locked(pj_executor *ex, pj_future *f, uint64_t deadline);

#endif
