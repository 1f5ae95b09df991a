/* Bulk runs on backends that run batches in this process (PJ_BACKEND_BATCH_RUN): no record per
 * call.  The backend gets one "claimer" batch per worker; each claims ranges of calls with one
 * atomic step (fetch_add on run->next), calls the function directly from the columns into the
 * output array, and claims again until the calls run out or the run stops.  Batching (fixed or
 * auto), pre_dispatch (it bounds the claimers), on_error, cancellation, verbose lines and the
 * progress callback apply per range; generators yield ranges in order or as they complete.
 *
 * Lock rule: run->lock guards the completion bookkeeping (progress, the ordered intervals, the
 * unordered queue, the first failure, run->out).  A claimer takes it only around a claim and a
 * completion — and only when someone watches (a generator, verbose, a progress callback) or a
 * call failed — never while a call runs.  The consumer never holds it while submitting.
 * On a process pool the same ranges travel as batches (bulk_pool.c); the state is in
 * bulk_ranges.h. */
#include "bulk_ranges.h"

#include <stdlib.h>
#include <time.h>

/* Auto ranges aim for this duration: the dispatcher's target for batches (dispatch.c), the
 * same trade between per-range costs and an idle tail. */
#define RANGE_TARGET_NS (2 * 1000 * 1000)
#define RANGE_MAX ((size_t)1 << 20)
#define RANGE_GROWTH 16
/* The consumer looks at pj_parallel_cancel's flag at least this often. */
#define TICK_NS (20 * 1000 * 1000)
/* Unordered generators hold claimers back past this many finished ranges not yet taken. */
#define HOLD_MAX 65536

static int claimer_run(pj_batch *b);
static void claimer_done(pj_batch *b);
static int ranges_next(pj_bulk_iter *it, pj_range *out);
static int ranges_close(pj_bulk_iter *it);

bool pj__bulk_in_process(const pj_parallel *par)
{
    unsigned f = par->backend->features;
    return (f & PJ_BACKEND_BATCH_RUN) && !(f & PJ_BACKEND_PROCESS) && par->cfg.timeout == 0;
}

/* ---- the calls ------------------------------------------------------------------------------ */

void pj__ranges_record_failure(struct ranges *r, size_t i, int status, const char *why)
{
    if (r->plan.statuses)
        r->plan.statuses[i] = status;
    if (status == PJ_ECANCELLED)
        return;
    pthread_mutex_lock(&r->lock);
    if (!r->first_error && atomic_load(r->cancel) != PJ__CANCEL_KILL) {
        r->first_error = status;
        pj__bulk_fail_message(r->par, status, i, r->plan.fn, why);
    }
    if (r->stop_on_error)
        atomic_store(&r->stop, 1);
    pthread_mutex_unlock(&r->lock);
}

/* One call from the columns: 0, or its failure (recorded). */
static int call_one(struct ranges *r, size_t i, unsigned char *block, void *ret)
{
    const struct bulk_plan *p = &r->plan;
    char why[160];
    if (!pj__bulk_gather(p, i, block, why, sizeof why)) {
        pj__ranges_record_failure(r, i, PJ_ETYPE, why);
        return PJ_ETYPE;
    }
    pj__call_begin();
    pj__invoke(p->fn, block, ret);
    if (pj__call_failed()) {
        char *msg = pj__current_call.message;
        pj__current_call = (struct pj__call_context){ 0 };
        pj__ranges_record_failure(r, i, PJ_EFAILED, msg ? msg : "pj_fail");
        free(msg);
        return PJ_EFAILED;
    }
    pj__call_end();
    pj__bulk_store(p, i, ret);
    if (p->statuses)
        p->statuses[i] = 0;
    return 0;
}

/* The calls [i, hi) a stop leaves unrun are cancelled. */
static int cancel_rest(struct ranges *r, size_t i, size_t hi, int first)
{
    for (; i < hi; i++)
        pj__ranges_record_failure(r, i, PJ_ECANCELLED, NULL);
    return first ? first : PJ_ECANCELLED;
}

/* The direct loop, between failures: a failed call is recorded and the loop goes on after it. */
static int run_range_direct(struct ranges *r, size_t lo, size_t hi)
{
    int first = 0;
    for (size_t i = lo; i < hi;) {
        bool failed;
        i = pj__bulk_direct_run(&r->direct, &r->plan, i, hi, &r->stop, r->cancel, &failed);
        if (i == hi)
            break;
        if (!failed)
            return cancel_rest(r, i, hi, first);
        char *msg = pj__current_call.message;
        pj__current_call = (struct pj__call_context){ 0 };
        pj__ranges_record_failure(r, i, PJ_EFAILED, msg ? msg : "pj_fail");
        free(msg);
        first = first ? first : PJ_EFAILED;
        i++;
    }
    return first;
}

/* Runs calls [lo, hi); the status of the first that did not succeed, 0 if all did. */
static int run_range(struct ranges *r, size_t lo, size_t hi, unsigned char *block, void *ret)
{
    if (r->direct_ok)
        return run_range_direct(r, lo, hi);
    int first = 0;
    for (size_t i = lo; i < hi; i++) {
        if (stopping(r))
            return cancel_rest(r, i, hi, first);
        int s = call_one(r, i, block, ret);
        if (s && !first)
            first = s;
    }
    return first;
}

/* ---- claiming and completing ------------------------------------------------------------------ */

static size_t range_size(struct ranges *r)
{
    if (r->fixed)
        return r->fixed;
    size_t k = atomic_load_explicit(&r->auto_size, memory_order_relaxed);
    /* Near the end smaller ranges keep every worker busy to the last call, down to a 64th of
     * the auto size, as the dispatcher's batches do. */
    size_t next = atomic_load_explicit(&r->next, memory_order_relaxed);
    size_t left = next < r->n ? r->n - next : 0;
    size_t share = left / (2 * r->n_claimers);
    size_t least = k / 64 ? k / 64 : 1;
    return share < k ? (share > least ? share : least) : k;
}

void pj__ranges_adapt(struct ranges *r, size_t count, uint64_t ns)
{
    if (r->fixed || !count)
        return;
    double per_call = (double)ns / (double)count;
    size_t cur = atomic_load_explicit(&r->auto_size, memory_order_relaxed);
    double most = (double)r->max_range;
    double ideal = per_call > 0 ? RANGE_TARGET_NS / per_call : most;
    size_t k = ideal < 1 ? 1 : ideal > most ? r->max_range : (size_t)ideal;
    if (k > cur * RANGE_GROWTH)
        k = cur * RANGE_GROWTH;
    atomic_store_explicit(&r->auto_size, k, memory_order_relaxed);
}

/* An unordered generator whose consumer lags holds claimers back (the lock held). */
static void hold_back(struct ranges *r)
{
    while (r->q_len >= r->hold && !stopping(r)) {
        uint64_t wake = pj__now_ns() + TICK_NS;
        struct timespec ts = { (time_t)(wake / 1000000000u), (long)(wake % 1000000000u) };
        pthread_cond_timedwait(&r->cond, &r->lock, &ts);
    }
}

/* One atomic step claims [*lo, *hi); false when nothing is left or the run stops. */
bool pj__ranges_claim(struct ranges *r, size_t *lo, size_t *hi)
{
    if (!r->watched) {
        if (stopping(r))
            return false;
        size_t k = range_size(r);
        *lo = atomic_fetch_add_explicit(&r->next, k, memory_order_relaxed);
        *hi = *lo + k < r->n ? *lo + k : r->n;
        return *lo < r->n;
    }
    pthread_mutex_lock(&r->lock);
    if (!r->ordered && !r->list && !r->pool) /* the pool's thread never waits: its queue grows */
        hold_back(r);
    bool got = false;
    if (!stopping(r)) {
        size_t k = range_size(r);
        pj__progress_dispatch_begin(&r->progress);
        *lo = atomic_fetch_add_explicit(&r->next, k, memory_order_relaxed);
        *hi = *lo + k < r->n ? *lo + k : r->n;
        got = *lo < r->n;
        pj__progress_dispatch_end(&r->progress, got ? *hi - *lo : 0);
        if (!got)
            pj__progress_exhausted(&r->progress);
    }
    pthread_mutex_unlock(&r->lock);
    return got;
}

static void merge_status(int *into, int status)
{
    if (!*into)
        *into = status;
}

/* Ordered: [lo, hi) is done; the prefix grows over what now touches it (the lock held).  The
 * intervals beyond the prefix are separated by claimed ranges still running, so there are at
 * most n_claimers of them. */
static void add_done(struct ranges *r, size_t lo, size_t hi, int status)
{
    if (lo == r->prefix) {
        r->prefix = hi;
        merge_status(&r->prefix_status, status);
        while (r->n_done && r->done[0].begin == r->prefix) {
            r->prefix = r->done[0].end;
            merge_status(&r->prefix_status, r->done[0].status);
            memmove(r->done, r->done + 1, --r->n_done * sizeof *r->done);
        }
        return;
    }
    size_t at = 0;
    while (at < r->n_done && r->done[at].begin < lo)
        at++;
    if (at && r->done[at - 1].end == lo) { /* joins the one before, maybe the one after too */
        struct interval *d = &r->done[at - 1];
        d->end = hi;
        merge_status(&d->status, status);
        if (at < r->n_done && r->done[at].begin == hi) {
            d->end = r->done[at].end;
            merge_status(&d->status, r->done[at].status);
            memmove(r->done + at, r->done + at + 1, (--r->n_done - at) * sizeof *r->done);
        }
        return;
    }
    if (at < r->n_done && r->done[at].begin == hi) {
        r->done[at].begin = lo;
        r->done[at].status = status ? status : r->done[at].status;
        return;
    }
    memmove(r->done + at + 1, r->done + at, (r->n_done - at) * sizeof *r->done);
    r->done[at] = (struct interval){ lo, hi, status };
    r->n_done++;
}

/* The pool's unordered queue, full: twice the room, in order from 0. */
static bool grow_queue(struct ranges *r)
{
    struct interval *q = malloc(2 * r->q_cap * sizeof *q);
    if (!q)
        return false;
    for (size_t k = 0; k < r->q_len; k++)
        q[k] = r->queue[(r->q_head + k) % r->q_cap];
    free(r->queue);
    r->queue = q;
    r->q_head = 0;
    r->q_cap *= 2;
    return true;
}

/* Unordered: queued for the consumer, joined to the last queued when adjacent. */
static void enqueue(struct ranges *r, size_t lo, size_t hi, int status)
{
    if (r->q_len) {
        struct interval *last = &r->queue[(r->q_head + r->q_len - 1) % r->q_cap];
        if (last->end == lo) {
            last->end = hi;
            merge_status(&last->status, status);
            return;
        }
    }
    if (r->q_len == r->q_cap && !grow_queue(r))
        return; /* out of memory: the range is not yielded, its calls keep their statuses */
    r->queue[(r->q_head + r->q_len++) % r->q_cap] = (struct interval){ lo, hi, status };
}

void pj__ranges_complete(struct ranges *r, size_t lo, size_t hi, int status)
{
    atomic_fetch_add_explicit(&r->completed, hi - lo, memory_order_relaxed);
    if (!r->watched)
        return;
    pthread_mutex_lock(&r->lock);
    pj__progress_completed(&r->progress, hi - lo, r->n);
    if (!r->list) {
        if (r->ordered)
            add_done(r, lo, hi, status);
        else
            enqueue(r, lo, hi, status);
        pthread_cond_broadcast(&r->cond);
    }
    pthread_mutex_unlock(&r->lock);
}

/* The body of a claimer batch, in a worker of the backend (pj_batch_run). */
static int claimer_run(pj_batch *b)
{
    struct claimer *c = (struct claimer *)b;
    struct ranges *r = c->run;
    const pj_fn *fn = r->plan.fn;
    _Alignas(16) unsigned char block[fn->args_size ? fn->args_size : 16];
    _Alignas(16) unsigned char ret[fn->ret_size > 16 ? fn->ret_size : 16];
    memcpy(block, r->plan.consts, fn->args_size);
    size_t lo, hi;
    for (size_t ranges = 0; !c->max_ranges || ranges < c->max_ranges; ranges++) {
        if (!pj__ranges_claim(r, &lo, &hi))
            break;
        uint64_t t0 = pj__now_ns();
        int status = run_range(r, lo, hi, block, ret);
        pj__ranges_adapt(r, hi - lo, pj__now_ns() - t0);
        pj__ranges_complete(r, lo, hi, status);
    }
    return 0;
}

static void claimer_done(pj_batch *b)
{
    struct ranges *r = ((struct claimer *)b)->run;
    pthread_mutex_lock(&r->lock);
    r->out--;
    pthread_cond_broadcast(&r->cond);
    pthread_mutex_unlock(&r->lock); /* r may be freed by the consumer from here on */
}

/* Hands k claimers to the backend (the lock not held); 0 or the backend's refusal. */
static int submit_claimers(struct ranges *r, size_t k, size_t max_ranges)
{
    for (size_t c = 0; c < k; c++) {
        struct claimer *cl = &r->claimers[c];
        *cl = (struct claimer){ .run = r, .max_ranges = max_ranges };
        cl->batch.run_ranges = claimer_run;
        cl->batch.on_done = claimer_done;
        cl->batch.cancel = r->cancel;
        pthread_mutex_lock(&r->lock);
        r->out++;
        pthread_mutex_unlock(&r->lock);
        int rc = r->par->backend->submit(r->par->backend_state, &cl->batch);
        if (rc) {
            pthread_mutex_lock(&r->lock);
            r->out--;
            pthread_mutex_unlock(&r->lock);
            atomic_store(&r->stop, 1);
            return pj__parallel_set_error(r->par, rc, "backend %s refused a batch: %s",
                                          r->par->backend->name, pj_strerror(rc));
        }
    }
    return 0;
}

/* ---- the run's end ------------------------------------------------------------------------------ */

/* Once no claimer is out (the lock held): the calls never claimed end cancelled. */
static void finalize(struct ranges *r)
{
    if (r->finalized)
        return;
    r->finalized = true;
    size_t next = atomic_load(&r->next);
    size_t from = next < r->n ? next : r->n;
    if (from == r->n)
        return;
    if (r->plan.statuses)
        for (size_t i = from; i < r->n; i++)
            r->plan.statuses[i] = PJ_ECANCELLED;
    atomic_store(&r->next, r->n);
    if (r->list)
        return;
    if (r->ordered)
        add_done(r, from, r->n, PJ_ECANCELLED);
    else
        r->queue[(r->q_head + r->q_len++) % r->q_cap] =
            (struct interval){ from, r->n, PJ_ECANCELLED };
}

static void wait_tick(struct ranges *r)
{
    uint64_t wake = pj__now_ns() + TICK_NS;
    struct timespec ts = { (time_t)(wake / 1000000000u), (long)(wake % 1000000000u) };
    pthread_cond_timedwait(&r->cond, &r->lock, &ts);
}

static int run_status(struct ranges *r)
{
    if (atomic_load(r->cancel) == PJ__CANCEL_KILL) {
        pj__parallel_set_error(r->par, PJ_ECANCELLED, "the run was cancelled "
                               "(pj_parallel_cancel) after %zu of its calls had finished",
                               atomic_load(&r->completed));
        return PJ_ECANCELLED;
    }
    return r->first_error;
}

static void ranges_free(struct ranges *r)
{
    pthread_cond_destroy(&r->cond);
    pthread_mutex_destroy(&r->lock);
    pj__bulk_plan_free(&r->plan);
    free(r->done);
    free(r->queue);
    for (size_t c = 0; r->batches && c < r->n_claimers; c++)
        free(r->batches[c].slots);
    free(r->batches);
    free(r);
}

/* Waits for every claimer, ends progress and frees the run; its status. */
static int finish(struct ranges *r)
{
    pthread_mutex_lock(&r->lock);
    while (r->out)
        wait_tick(r);
    finalize(r);
    pthread_mutex_unlock(&r->lock);
    pj__progress_end(&r->progress);
    int rc = run_status(r);
    ranges_free(r);
    return rc;
}

/* ---- opening, the generator -------------------------------------------------------------------- */

static void begin_progress(struct ranges *r)
{
    const pj_parallel *par = r->par;
    size_t window = par->window;
    pj__progress_begin(&r->progress, &(struct pj__progress_setup){
        .verbose = par->cfg.verbose, .n_jobs_label = par->n_jobs_label,
        .workers = r->inline_backend ? 1 : par->n_jobs,
        .backend_display = par->backend->display_name,
        .share = par->worker_share, .total_known = true, .n_tasks = r->n,
        .pre_dispatch = window == SIZE_MAX ? 0 : window, .dispatch_all = window == SIZE_MAX,
        .callback = par->cfg.progress, .callback_data = par->cfg.progress_data,
        .bar_tty = -1 });
}

static struct ranges *ranges_new(pj_parallel *par, struct bulk_plan *plan, bool list)
{
    bool inline_backend = par->backend->features & PJ_BACKEND_INLINE;
    bool pool = !pj__bulk_in_process(par);
    /* A pool keeps two ranges a worker in flight, so a worker has its next one at hand. */
    size_t k = inline_backend ? 1 : (size_t)par->n_jobs * (pool ? 2 : 1);
    if (par->window < k)
        k = par->window; /* pre_dispatch: at most that many ranges claimed and not finished */
    struct ranges *r = calloc(1, sizeof *r + k * sizeof r->claimers[0]);
    if (!r)
        return NULL;
    r->plan = *plan;
    r->direct_ok = pj__bulk_direct_plan(&r->plan, &r->direct);
    r->par = par;
    r->n = plan->n;
    r->n_claimers = k;
    r->inline_backend = inline_backend;
    r->pool = pool;
    r->max_range = pool ? pj__bulk_pool_max_range() : RANGE_MAX;
    r->batches = pool ? calloc(k, sizeof *r->batches) : NULL;
    r->list = list;
    r->ordered = par->cfg.return_as != PJ_GENERATOR_UNORDERED;
    r->watched = !list || par->cfg.verbose > 0 || par->cfg.progress;
    r->stop_on_error = par->cfg.on_error == PJ_ON_ERROR_STOP;
    r->fixed = (size_t)par->cfg.batch_size;
    atomic_init(&r->auto_size, 1);
    r->cancel = &par->run_cancel;
    size_t hold = par->window > HOLD_MAX / PJ__HELD_WINDOWS ? HOLD_MAX
                  : PJ__HELD_WINDOWS * par->window;
    r->hold = hold;
    r->q_cap = hold + k + 2;
    r->done = calloc(k + 2, sizeof *r->done);
    r->queue = list || r->ordered ? NULL : calloc(r->q_cap, sizeof *r->queue);
    if (!r->done || (!list && !r->ordered && !r->queue) || (pool && !r->batches)) {
        free(r->done);
        free(r->queue);
        free(r->batches);
        free(r);
        return NULL;
    }
    pthread_mutex_init(&r->lock, NULL);
    pthread_condattr_t attr;
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&r->cond, &attr);
    pthread_condattr_destroy(&attr);
    r->it = (struct pj_bulk_iter){ ranges_next, ranges_close, par };
    return r;
}

int pj__bulk_ranges_open(pj_parallel *par, struct bulk_plan *plan, bool list,
                         pj_bulk_iter **iter)
{
    struct ranges *r = ranges_new(par, plan, list);
    if (!r) {
        pj__bulk_plan_free(plan);
        return pj__parallel_set_error(par, PJ_ENOMEM, "out of memory");
    }
    atomic_store(r->cancel, 0); /* a cancel that came before the run began is not this run's */
    begin_progress(r);
    /* An inline backend runs a claimer inside submit: a generator asks for ranges as its
     * consumer needs them (ranges_next); a list claims them all at once. */
    int rc = 0;
    if (r->pool)
        pj__ranges_pool_start(r);
    else if (!r->inline_backend || list)
        rc = submit_claimers(r, r->n_claimers, 0);
    if (list || rc) {
        int status = finish(r);
        return rc ? rc : status;
    }
    *iter = &r->it;
    return 0;
}

/* Takes a finished range for the consumer (the lock held); false when none is ready. */
static bool take_range(struct ranges *r, pj_range *out)
{
    if (r->ordered && r->prefix > r->yielded) {
        *out = (pj_range){ r->yielded, r->prefix, r->prefix_status };
        r->yielded = r->prefix;
        r->prefix_status = 0;
        return true;
    }
    if (!r->ordered && r->q_len) {
        struct interval *q = &r->queue[r->q_head];
        *out = (pj_range){ q->begin, q->end, q->status };
        r->q_head = (r->q_head + 1) % r->q_cap;
        r->q_len--;
        r->taken += out->end - out->begin;
        pthread_cond_broadcast(&r->cond); /* a claimer held back may go on */
        return true;
    }
    return false;
}

static int ranges_next(pj_bulk_iter *it, pj_range *out)
{
    struct ranges *r = (struct ranges *)it;
    pthread_mutex_lock(&r->lock);
    for (;;) {
        if (atomic_load(r->cancel) == PJ__CANCEL_KILL) {
            pthread_mutex_unlock(&r->lock);
            return pj__set_last_error(PJ_ECANCELLED, "pj_bulk_next: the run was cancelled");
        }
        if (take_range(r, out))
            break;
        if ((r->ordered ? r->yielded : r->taken) == r->n) {
            pthread_mutex_unlock(&r->lock);
            return PJ_EEND;
        }
        bool all_claimed = atomic_load(&r->next) >= r->n || stopping(r);
        if (!r->out && all_claimed) {
            finalize(r);
            continue;
        }
        if (!r->out && r->inline_backend) {
            pthread_mutex_unlock(&r->lock);
            size_t ahead = r->par->window < 64 ? r->par->window : 64;
            int rc = submit_claimers(r, 1, ahead);
            pthread_mutex_lock(&r->lock);
            if (rc)
                finalize(r);
            continue;
        }
        wait_tick(r);
    }
    pthread_mutex_unlock(&r->lock);
    return 0;
}

static int ranges_close(pj_bulk_iter *it)
{
    struct ranges *r = (struct ranges *)it;
    atomic_store(&r->stop, 1);
    return finish(r);
}
