/* Batches, and the tasks taken from the source into them: from an array (in place for a list,
 * or copied), or from a producer, each task a process backend cannot carry given a batch of its
 * own, failed before it runs.  Part of the dispatcher (dispatch.h); its lock rule applies. */
#include "dispatch.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- batches -------------------------------------------------------------------------------- */

void pj__run_batch_release(struct run_batch *b)
{
    if (!b)
        return;
    free(b->own_tasks);
    free(b->own_results);
    free(b);
}

/* A batch with arrays of its own (a producer's, or a generator's over an array) reuses the
 * last one freed: calloc'ing two big arrays per batch made glibc consolidate its fast bins
 * every time — the path every task's malloc takes — and fault in fresh pages (perf: a fifth
 * of a producer run on tiny tasks).  Its slots were left cleared by pj__run_batch_free. */
static struct run_batch *batch_reuse(pj_iter *run, size_t k)
{
    struct run_batch *b = atomic_exchange(&run->spare, NULL);
    if (b && b->own_cap < k) {
        pj__run_batch_release(b);
        return NULL;
    }
    if (b)
        *b = (struct run_batch){ .own_tasks = b->own_tasks, .own_results = b->own_results,
                                 .own_cap = b->own_cap };
    return b;
}

static struct run_batch *batch_new(pj_iter *run, size_t first, size_t k, bool own)
{
    struct run_batch *b = own ? batch_reuse(run, k ? k : 1) : NULL;
    if (!b && !(b = calloc(1, sizeof *b)))
        return NULL;
    b->run = run;
    b->batch.on_done = pj__run_batch_done;
    b->batch.first_index = first;
    b->batch.timeout_ns = run->timeout_ns;
    b->batch.cancel = run->cancel;
    b->batch.run_id = run->shared_run;
    if (own && !b->own_tasks) {
        b->own_cap = k ? k : 1;
        b->own_tasks = calloc(b->own_cap, sizeof *b->own_tasks);
        b->own_results = calloc(b->own_cap, sizeof *b->own_results);
        if (!b->own_tasks || !b->own_results) {
            pj__run_batch_release(b);
            return NULL;
        }
    }
    if (own) {
        b->batch.tasks = b->own_tasks;
        b->batch.results = b->own_results;
    }
    return b;
}

void pj__run_batch_free(struct run_batch *b)
{
    if (b->own_results)
        for (size_t i = 0; i < b->batch.count; i++)
            pj__result_clear(&b->own_results[i]);
    if (b->owns_tasks)
        for (size_t i = 0; i < b->batch.count; i++)
            pj_task_free(b->own_tasks[i]);
    if (b->own_results && b->run) {
        pj__run_batch_release(atomic_exchange(&b->run->spare, b));
        return;
    }
    pj__run_batch_release(b);
}

/* Process backends leave the tasks they could not run pending, so their slots start so,
 * written whole: the array may be recycled (pj__results_alloc).  fn is left to whoever writes
 * the result, or to finish_batch: a look at each task here cost as much as the pass itself.
 * The in-process executor writes every slot it is given: a pass here would only double the
 * memory traffic of tiny tasks (index and fn are filled in when the batch finishes). */
static void prepare_results(const pj_iter *run, struct run_batch *b)
{
    if (!run->check_portable)
        return;
    for (size_t i = 0; i < b->batch.count; i++)
        b->batch.results[i] = (pj_result){ .index = b->batch.first_index + i,
                                           .status = PJ__PENDING };
}

/* The same, with msg naming the task: "task 3 (add): ...". */
int pj__cannot_carry(unsigned features, const pj_task *t, size_t index, const pj_fn **checked,
                     char *msg, size_t len)
{
    char why[448];
    int rc = pj__task_crossing(features, t, checked, why, sizeof why);
    if (rc && msg)
        snprintf(msg, len, "task %zu (%s): %s", index, pj_fn_name(t->fn), why);
    return rc;
}

static struct run_batch *take_from_array(pj_iter *run, size_t first, size_t k, bool *ended)
{
    size_t left = run->n_array - first;
    k = k < left ? k : left;
    struct run_batch *b = batch_new(run, first, k, !run->in_place);
    if (!b)
        return NULL;
    if (run->in_place) {
        b->batch.tasks = run->array + first;
        b->batch.results = run->results + first;
    } else {
        memcpy(b->own_tasks, run->array + first, k * sizeof *b->own_tasks);
    }
    b->batch.count = k;
    *ended = first + k == run->n_array;
    return b;
}

/* True when the backend cannot carry t (checked as tasks are taken from a producer): on a
 * process backend, what cannot cross; on any, a buffer in a freed shared allocation. */
static bool cannot_cross(pj_iter *run, const pj_task *t, size_t index)
{
    if (t->fn == run->fn_clean)
        return false;
    if (pj__cannot_carry(run->backend->features, t, index, &run->fn_checked, NULL, 0))
        return true;
    if (!t->fn->pointer_args)
        run->fn_clean = t->fn;
    return false;
}

/* A task that cannot cross gets a batch of its own, failed without running: the batch being
 * filled ends before it, and the next one starts with it (run->stash). */
static void take_from_producer(pj_iter *run, struct run_batch *b, size_t k, bool *ended, int *err)
{
    while (b->batch.count < k) {
        pj_task *t = run->stash;
        int rc = 1;
        run->stash = NULL;
        if (!t)
            rc = run->producer(run->producer_state, &t);
        if (rc == 1 && t && cannot_cross(run, t, b->batch.first_index + b->batch.count)) {
            if (b->batch.count) {
                run->stash = t;
                return;
            }
            b->own_tasks[b->batch.count++] = t;
            b->prefailed = true;
            return;
        }
        if (rc == 1 && t) {
            b->own_tasks[b->batch.count++] = t;
            continue;
        }
        *ended = true;
        if (rc < 0 || (rc == 1 && !t))
            *err = PJ_ESOURCE;
        return;
    }
}

static void fail_prefailed(pj_iter *run, struct run_batch *b)
{
    char msg[512];
    int rc = pj__cannot_carry(run->backend->features, b->batch.tasks[0], b->batch.first_index,
                              &run->fn_checked, msg, sizeof msg);
    if (rc)
        pj__result_fail(&b->batch.results[0], rc, 0, "%s", msg);
}

/* Takes up to k tasks from the source into a new batch.  Runs without the lock (the producer
 * may be slow): only the dispatching thread is here.  *ended: the source has no more. */
struct run_batch *pj__take_batch(pj_iter *run, size_t first, size_t k, bool *ended, int *err)
{
    *ended = false;
    *err = 0;
    struct run_batch *b = run->array ? take_from_array(run, first, k, ended)
                                    : batch_new(run, first, k, true);
    if (!b)
        return *err = PJ_ENOMEM, NULL;
    if (!run->array) {
        b->owns_tasks = true;
        take_from_producer(run, b, k, ended, err);
        if (b->batch.count == 0) {
            pj__run_batch_free(b);
            return NULL;
        }
    }
    prepare_results(run, b);
    if (b->prefailed)
        fail_prefailed(run, b);
    return b;
}
