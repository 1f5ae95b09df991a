/* The process pool's private declarations, shared by its files and included by them only:
 * procpool.c (open, close and the I/O thread's loop), procpool_schedule.c (slots, their marks,
 * sending and scheduling), procpool_receive.c (what workers send, and their deaths) and
 * procpool_housekeeping.c (deadlines, stalls, cancel kills, idle workers).  The design and the
 * lock rule are in procpool.c's opening comment. */
#ifndef PJ_PROCPOOL_H
#define PJ_PROCPOOL_H

#include "process.h"

#define CANCEL_POLL_MS 20        /* how soon a cancel reaches a running worker */
#define RX_KEEP ((size_t)16 << 20)
#define WARM_SLICE_NS (2ull * 1000000ull) /* starting workers, between two looks at events: a
                                             few fork or spawn starts (0.3-0.6 ms each) */

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
    struct pj__peer peer;        /* the shared objects its worker has been handed */
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
    bool warming;                /* slots warm_next.. have never had a worker: the I/O
                                    thread is starting them (warm_some) */
    int warm_next;
    bool more_to_start;          /* schedule stopped starting workers for the slice: I/O
                                    thread only */
    pthread_cond_t warm;
    long max_tasks;
    uint64_t idle_ns;
    uint64_t start_ns;           /* how long a new worker may take to be READY */
    int failed;                  /* sticky: the initializer failed, or a new worker's start-up:
                                    no new worker can serve */
    char failure[400];
    struct pj__wbuf tx;
    uint64_t max_nbytes;         /* inputs above it go in sealed shared memory (UINT64_MAX:
                                    none) */
    uint64_t shared_gen;         /* pj__shared_generation() at the last sweep_shared */
    bool listening;              /* woken by the registry when a shared object dies */
};

/* ---- small helpers ------------------------------------------------------------------------ */

/* The slot's number, as the transport knows it. */
static inline int slot_no(const struct pool *p, const struct slot *s)
{
    return (int)(s - p->slots);
}

static inline void kill_worker(struct pool *p, struct slot *s)
{
    p->tr->kill(p->t, slot_no(p, s));
}

static inline void fail_pending(pj_batch *b, size_t from, int code, const char *why)
{
    for (size_t i = from; i < b->count; i++)
        if (b->results[i].status == PJ__PENDING)
            pj__result_fail(&b->results[i], code, 0, "%s", why);
}

/* A worker that shares the parent's address space as of its fork (function pointers cross as
 * they are) lacks a library dlopen'ed since, or has one closed since at its old address: a
 * pointer into it would crash the worker or call other code.  Such a worker gets no further
 * batch; it is retired and a fresh one forked.  Workers that resolve (module, offset) load
 * what they need themselves. */
static inline bool predates_modules(const struct pool *p, const struct slot *s)
{
    return p->ops->fnref->kind == PJ__FNREF_POINTER &&
           s->modules_gen != pj__modules_generation();
}

/* ---- across the pool's files (each is described where it is defined) ---------------------- */

/* procpool_schedule.c */
PJ_HIDDEN void pj__pool_mark_locked(struct pool *p, struct slot *s, enum mark m);
PJ_HIDDEN void pj__pool_set_state_locked(struct pool *p, struct slot *s, enum slot_state st);
PJ_HIDDEN void pj__pool_set_state(struct pool *p, struct slot *s, enum slot_state st);
PJ_HIDDEN void pj__pool_retire(struct pool *p, struct slot *s);
PJ_HIDDEN void pj__pool_give_back(struct pool *p, struct slot *s, pj_batch *b);
PJ_HIDDEN bool pj__pool_hand_over(struct pool *p, struct slot *s, pj_batch *b, size_t end,
                                  uint64_t in_area);
PJ_HIDDEN void pj__pool_encode_ahead(struct pool *p);
PJ_HIDDEN void pj__pool_drop_next(struct pool *p, struct slot *s);
PJ_HIDDEN struct slot *pj__pool_stuck_parked(struct pool *p, const struct slot *free,
                                             uint64_t batch_ns);
PJ_HIDDEN void pj__pool_tell_short(struct pool *p, const char *why);
PJ_HIDDEN bool pj__pool_start_worker(struct pool *p, struct slot *e);
PJ_HIDDEN bool pj__pool_schedule(struct pool *p);
/* procpool_receive.c */
PJ_HIDDEN void pj__pool_read_slot(struct pool *p, struct slot *s);
/* procpool_housekeeping.c */
PJ_HIDDEN int pj__pool_housekeeping(struct pool *p);

#endif
