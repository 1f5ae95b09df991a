/* The backend-facing batch, task by task: the accessors of parjob.h through which a backend a
 * user registers runs a batch its own way, instead of all at once with pj_batch_run.
 *
 * The library's own backends and front ends read struct pj_batch directly (internal.h): these
 * functions are for code outside the library, one call per task, and the hot path never goes
 * through them.  Every slot a backend may write is made whole by pj_batch_start first (a
 * result array may be recycled, its old bytes still there), so that pj_batch_pending is
 * exact and nothing here frees what it did not allocate. */
#include "internal.h"

#include <stdlib.h>

static bool in_batch(const pj_batch *b, size_t i)
{
    return b && i < b->count;
}

/* Slots from begin on may be written only once pj_batch_start made them whole. */
static bool writable(const pj_batch *b, size_t i)
{
    return in_batch(b, i) && b->slots_ready && i >= b->begin;
}

size_t pj_batch_count(const pj_batch *b)
{
    return b ? b->count : 0;
}

size_t pj_batch_begin(const pj_batch *b)
{
    return b ? b->begin : 0;
}

pj_task *pj_batch_task(const pj_batch *b, size_t i)
{
    return in_batch(b, i) ? b->tasks[i] : NULL;
}

pj_result *pj_batch_result(pj_batch *b, size_t i)
{
    return in_batch(b, i) ? &b->results[i] : NULL;
}

int pj_batch_pending(const pj_batch *b, size_t i)
{
    return writable(b, i) && b->results[i].status == PJ__PENDING;
}

double pj_batch_timeout(const pj_batch *b)
{
    return b ? (double)b->timeout_ns / 1e9 : 0;
}

int pj_batch_cancelled(const pj_batch *b)
{
    return b && b->cancel ? atomic_load_explicit(b->cancel, memory_order_acquire) : 0;
}

/* On a first submit no task has a status yet, whatever the slots hold: each becomes pending,
 * as a process backend's slots are (dispatch.c prepare_results), with its index and fn.  A
 * batch that comes again keeps the statuses its earlier passes wrote. */
int pj_batch_start(pj_batch *b)
{
    if (!b)
        return pj__set_last_error(PJ_EINVAL, "pj_batch_start: batch is NULL");
    if (!pj__batch_start(b))
        return 0;
    if (!b->slots_ready && b->resubmits == 0)
        for (size_t i = b->begin; i < b->count; i++)
            b->results[i] = (pj_result){ .index = b->first_index + i, .status = PJ__PENDING,
                                         .fn = b->tasks[i]->fn };
    b->slots_ready = true;
    return 1;
}

int pj_batch_run_task(pj_batch *b, size_t i)
{
    if (!pj_batch_pending(b, i))
        return pj__set_last_error(PJ_EINVAL, "pj_batch_run_task: task %zu is not pending in "
                                  "this batch (past its end, given a status already, or "
                                  "pj_batch_start not called)", i);
    if (pj_batch_cancelled(b))
        return pj__set_last_error(PJ_ECANCELLED, "pj_batch_run_task: the run is stopping: "
                                  "task %zu stays pending", i);
    /* A cell of this call's own publishes the start to nobody: it only lets pj__execute
     * time the call and report a late return as PJ_ETIMEDOUT, as on "sequential". */
    struct pj__cell own = { 0 };
    struct pj__exec ex = {
        .tasks = b->tasks, .results = b->results, .begin = i, .count = i + 1,
        .cell = b->timeout_ns ? &own : NULL, .timeout_ns = b->timeout_ns,
    };
    bool nested = pj__in_worker;
    pj__in_worker = true;
    uint64_t t0 = pj__now_ns();
    pj__execute(&ex);
    b->exec_ns += pj__now_ns() - t0;
    pj__in_worker = nested;
    return 0;
}

int pj_batch_mark_pending(pj_batch *b, size_t i)
{
    if (!writable(b, i))
        return pj__set_last_error(PJ_EINVAL, "pj_batch_mark_pending: no task %zu to mark in "
                                  "this batch (past its end, before pj_batch_begin, or "
                                  "pj_batch_start not called)", i);
    pj__result_clear(&b->results[i]);
    b->results[i].fn = b->tasks[i]->fn;
    return 0;
}

int pj_batch_mark_stopped(pj_batch *b, size_t i, int status, int code, const char *why)
{
    if (!writable(b, i) || status >= 0)
        return pj__set_last_error(PJ_EINVAL, "pj_batch_mark_stopped: %s", status >= 0
                                  ? "the status must be a negative PJ_E... code"
                                  : "no such task to mark (past its end, before "
                                    "pj_batch_begin, or pj_batch_start not called)");
    pj_result *r = &b->results[i];
    pj__result_clear(r);
    r->fn = b->tasks[i]->fn;
    pj__result_fail(r, status, code, "%s", why ? why : pj_strerror(status));
    if (!r->message)
        return pj__set_last_error(PJ_ENOMEM, "pj_batch_mark_stopped: out of memory for the "
                                  "message");
    return 0;
}
