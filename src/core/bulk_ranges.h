/* The ranges engine's state (bulk_ranges.c), shared with its process-pool half
 * (bulk_pool.c): ranges of calls claimed with one atomic step, run by claimers in this process
 * or sent to parjob's process pool as batches of no tasks.  The lock rule: bulk_ranges.c. */
#ifndef PJ_BULK_RANGES_H
#define PJ_BULK_RANGES_H

#include "bulk.h"

struct interval {
    size_t begin, end;
    int status;
};

struct claimer {
    struct pj_batch batch;    /* first: the batch handed back leads here */
    struct ranges *run;
    size_t max_ranges;        /* 0: until the calls run out */
};

/* On parjob's process pool a range is a batch of no tasks, its calls encoded from the columns
 * (PJ_BACKEND_COLUMNS, pj__encode_range_batch), its results in slots of its own. */
struct range_batch {
    struct pj_batch batch;    /* first: the batch handed back leads here */
    struct ranges *run;
    size_t lo, hi;
    pj_result *slots;
    size_t cap;
};

struct ranges {
    struct pj_bulk_iter it;   /* first: the iterator handed out leads here */
    struct bulk_plan plan;
    struct bulk_direct direct;
    bool direct_ok;           /* the plan takes the direct loop (bulk_direct.c) */
    pj_parallel *par;
    size_t n;
    _Atomic size_t next;      /* the next call to claim (may pass n) */
    _Atomic size_t auto_size;
    size_t fixed;             /* config.batch_size, 0: auto */
    size_t n_claimers;
    bool inline_backend, list, ordered, watched, stop_on_error;
    bool pool;                /* parjob's process pool: range batches (bulk_pool.c) */
    size_t max_range;         /* auto ranges' largest: RANGE_MAX, or POOL_MAX_RANGE */
    struct range_batch *batches; /* pool: n_claimers of them */
    _Atomic int stop;         /* claim no more; calls not started are cancelled */
    _Atomic int *cancel;      /* &par->run_cancel: PJ__CANCEL_KILL after pj_parallel_cancel */
    pthread_mutex_t lock;
    pthread_cond_t cond;
    size_t out;               /* claimers (or range batches) with the backend */
    int first_error;
    _Atomic size_t completed;
    struct pj__progress progress;
    bool finalized;
    /* ordered: [0, yielded) yielded, [yielded, prefix) done, done[] beyond it */
    size_t yielded, prefix;
    int prefix_status;
    struct interval *done;
    size_t n_done;
    /* unordered: finished ranges not yet taken */
    struct interval *queue;
    size_t q_head, q_len, q_cap, hold, taken;
    struct claimer claimers[];
};

static inline bool stopping(const struct ranges *r)
{
    return atomic_load_explicit(&r->stop, memory_order_relaxed) ||
           atomic_load_explicit(r->cancel, memory_order_relaxed);
}

/* bulk_ranges.c: call i ended with status (why: its message, copied); the first failure is
 * the run's, and stops it under PJ_ON_ERROR_STOP.  Takes the lock unless status is
 * PJ_ECANCELLED. */
PJ_HIDDEN void pj__ranges_record_failure(struct ranges *r, size_t i, int status,
                                         const char *why);
/* Auto ranges from a range of count calls that took ns. */
PJ_HIDDEN void pj__ranges_adapt(struct ranges *r, size_t count, uint64_t ns);
/* One atomic step claims [*lo, *hi); false when nothing is left or the run stops. */
PJ_HIDDEN bool pj__ranges_claim(struct ranges *r, size_t *lo, size_t *hi);
/* Calls [lo, hi) have all ended (status: the first failure's, 0): progress, and the ranges
 * a generator yields. */
PJ_HIDDEN void pj__ranges_complete(struct ranges *r, size_t lo, size_t hi, int status);
/* bulk_pool.c: hands the pool its first range batches; the largest auto range there. */
PJ_HIDDEN void pj__ranges_pool_start(struct ranges *r);
PJ_HIDDEN size_t pj__bulk_pool_max_range(void);

#endif
