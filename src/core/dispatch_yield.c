/* The generators' side of a run: results yielded one at a time, in submission order or as
 * batches finish, and a generator closed early.  Part of the dispatcher (dispatch.h); its lock
 * rule applies. */
#include "dispatch.h"

#include <stdlib.h>
#include <string.h>

static void release_yielded(pj_iter *run)
{
    free(run->yielded_message);
    free(run->yielded_heap);
    run->yielded_message = NULL;
    run->yielded_heap = NULL;
}

/* The finished batch to yield from next, if any. */
static struct run_batch *next_ready(pj_iter *run)
{
    if (run->ordered)
        return run->oldest && run->oldest->done ? run->oldest : NULL;
    struct run_batch *b = run->done_head;
    if (b) {
        run->done_head = b->done_next;
        if (!run->done_head)
            run->done_tail = NULL;
    }
    return b;
}

int pj__run_next(pj_iter *run, pj_result *out)
{
    release_yielded(run);
    pthread_mutex_lock(&run->lock);
    if (cancel_seen(run)) { /* results not yet yielded stay unread: pj_iter_close frees them */
        pthread_mutex_unlock(&run->lock);
        return PJ_ECANCELLED;
    }
    for (;;) {
        struct run_batch *b = run->yielding;
        if (b && run->yield_pos < b->batch.count) {
            pj_result *r = &b->batch.results[run->yield_pos++];
            *out = *r;
            run->yielded_message = (char *)r->message;
            if (r->status == 0 && r->fn && pj__fn_result_heap(r->fn))
                run->yielded_heap = r->value.heap;
            memset(r, 0, sizeof *r); /* moved to the caller */
            pthread_mutex_unlock(&run->lock);
            return 0;
        }
        if (b) {
            run->yielding = NULL;
            run->held--;
            window_unlink(run, b);
            pj__run_batch_free(b);
            pj__dispatch_more(run);
        }
        b = next_ready(run);
        if (b) {
            run->yielding = b;
            run->yield_pos = 0;
            continue;
        }
        /* A thread still taking a batch (a completion's dispatch, lock released) may yet
         * link one that a stop made the last: wait for it. */
        if (run_complete(run) && !run->dispatching)
            break;
        run->consumer_waiting = true;
        bool cancelled = pj__consumer_wait(run);
        run->consumer_waiting = false;
        if (cancelled) {
            pthread_mutex_unlock(&run->lock);
            return PJ_ECANCELLED;
        }
    }
    pthread_mutex_unlock(&run->lock);
    return PJ_EEND;
}

int pj__run_close(pj_iter *run)
{
    pthread_mutex_lock(&run->lock);
    cancel_seen(run);
    if (!run_complete(run)) {
        /* Cancel what has not started; the producer is not called again. */
        run->stopping = true;
        run->source_done = true;
        int none = 0; /* never lower a KILL to a STOP */
        atomic_compare_exchange_strong(run->cancel, &none, PJ__CANCEL_STOP);
    }
    while (run->in_flight || run->dispatching || run->submitting) {
        run->consumer_waiting = true;
        pj__consumer_wait(run);
    }
    run->consumer_waiting = false;
    pthread_mutex_unlock(&run->lock);
    pj__stop_watchdog(run);
    if (run->taken) /* joblib prints no "finished" line for an empty run */
        pj__progress_end(&run->progress);
    int rc = run_status(run);
    pj__run_free(run);
    return rc;
}

pj_parallel *pj__run_parallel(const pj_iter *run)
{
    return run->par;
}
