/* The in-process call path: one call through ffi_call, a batch of calls with deadlines and
 * cancellation, pj_fail.  In-process backends call pj_batch_run; the process worker loop
 * (src/process/worker.c) calls pj__execute with a cell in shared memory, and for a uniform
 * batch brackets its own pj__invoke calls with pj__call_begin / pj__call_failed (internal.h). */
#include "internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

PJ_TLS bool pj__in_worker;
bool pj__process_is_worker;

PJ_TLS struct pj__call_context pj__current_call;

/* A batch's tasks publish their progress in a cell when the batch runs in-process: it lives as
 * long as the thread, so an abandoned thread never touches freed memory.  One per nesting level:
 * a task that runs a pj_parallel of its own must not overwrite its own entry. */
#define MAX_NESTED_CELLS 16
static PJ_TLS struct pj__cell thread_cells[MAX_NESTED_CELLS];
static PJ_TLS unsigned cell_depth;

uint64_t pj__now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

int pj_fail(const char *fmt, ...)
{
    if (!pj__current_call.active)
        return pj__set_last_error(PJ_EINVAL, "pj_fail: the calling thread is not running a "
                                  "task");
    char *msg = NULL;
    va_list ap;
    va_start(ap, fmt);
    if (fmt && vasprintf(&msg, fmt, ap) < 0)
        msg = NULL;
    va_end(ap);
    free(pj__current_call.message);
    pj__current_call.message = msg;
    pj__current_call.failed = true;
    return 0;
}

void pj__result_release(pj_result *r)
{
    if (r->message)
        free((char *)r->message);
    if (r->status == 0 && r->fn && pj__fn_result_heap(r->fn))
        free(r->value.heap);
}

void pj__result_clear(pj_result *r)
{
    free((char *)r->message);
    r->message = NULL;
    if (r->fn && pj__fn_result_heap(r->fn) && r->status == 0)
        free(r->value.heap);
    memset(&r->value, 0, sizeof r->value);
    r->status = PJ__PENDING;
    r->code = 0;
}

void pj__result_fail(pj_result *r, int status, int code, const char *fmt, ...)
{
    char *msg = NULL;
    va_list ap;
    va_start(ap, fmt);
    if (vasprintf(&msg, fmt, ap) < 0)
        msg = NULL;
    va_end(ap);
    free((char *)r->message);
    r->message = msg;
    r->status = status;
    r->code = code;
}

/* Where ffi_call writes the return value: in place when it fits, else a heap block, zeroed:
 * a call does not write every byte (a long double's 6 padding bytes, a struct's padding), and
 * a process worker sends all of them to the parent — never its own stale memory. */
static void *return_slot(const pj_fn *fn, pj_result *r)
{
    if (fn->ret_size <= sizeof r->value.bytes)
        return r->value.bytes;
    r->value.heap = calloc(1, fn->ret_size);
    return r->value.heap;
}

/* A C-string return becomes the result's own: an owned string is kept, a borrowed one copied
 * now, while what it points to still holds.  The pointer sits in value.heap already (the
 * union's first bytes, where the call wrote it).  False when the copy ran out of memory. */
static bool keep_string(pj_result *r)
{
    if (r->fn->ret_str != PJ__STR_BORROWED || !r->value.heap)
        return true;
    char *copy = strdup(r->value.heap);
    r->value.heap = copy;
    return copy != NULL;
}

void pj__call_finish(pj_result *r)
{
    if (!pj__current_call.failed && r->fn->ret_str && !keep_string(r)) {
        r->status = 0; /* value.heap is NULL: nothing to free */
        pj__result_fail(r, PJ_ENOMEM, 0, "out of memory copying the returned string");
        pj__current_call = (struct pj__call_context){ 0 };
        return;
    }
    if (pj__current_call.failed) {
        if (r->fn->ret_size > sizeof r->value.bytes)
            free(r->value.heap);
        memset(&r->value, 0, sizeof r->value);
        r->status = PJ_EFAILED;
        r->message = pj__current_call.message ? pj__current_call.message : strdup("pj_fail");
    } else {
        r->status = 0;
        r->message = NULL;
    }
    r->code = 0;
    pj__current_call = (struct pj__call_context){ 0 };
}

void pj__call(const pj_task *t, pj_result *r)
{
    const pj_fn *fn = t->fn;
    r->fn = fn;
    void *slot = return_slot(fn, r);
    if (!slot) {
        pj__result_fail(r, PJ_ENOMEM, 0, "out of memory for the return value");
        return;
    }
    pj__current_call.active = true;
    pj__invoke(fn, t->args, slot);
    pj__call_finish(r);
}

/* A call whose deadline the watchdog watches: the return value lands in a local buffer and is
 * copied into the result only if the watchdog has not claimed the task meanwhile. */
static int call_watched(const pj_task *t, pj_result *r, struct pj__cell *cell, uint64_t id)
{
    const pj_fn *fn = t->fn;
    _Alignas(16) unsigned char local[sizeof r->value.bytes] = { 0 }; /* see return_slot */
    void *slot = fn->ret_size <= sizeof local ? local : calloc(1, fn->ret_size);
    if (!slot) {
        pj__result_fail(r, PJ_ENOMEM, 0, "out of memory for the return value");
        return 0;
    }
    /* Once the task is published as running, the watchdog may claim it and the caller may free
     * the task and its pj_fn while this thread is still setting the call up: call from copies
     * on this stack, so an abandoned call reads nothing parjob's caller owns. */
    unsigned n = fn->nargs ? fn->nargs : 1;
    struct pj__argop ops[n];
    ffi_type *atypes[n];
    size_t offsets[n];
    _Alignas(16) unsigned char args[fn->args_size ? fn->args_size : 16];
    pj_fn copy = *fn;
    memcpy(ops, fn->ops, fn->nargs * sizeof *ops);
    memcpy(atypes, fn->atypes, fn->nargs * sizeof *atypes);
    memcpy(offsets, fn->offsets, fn->nargs * sizeof *offsets);
    memcpy(args, t->args, fn->args_size);
    copy.ops = ops, copy.atypes = atypes, copy.offsets = offsets, copy.cif.arg_types = atypes;
    atomic_store_explicit(&cell->started_ns, pj__now_ns(), memory_order_relaxed);
    atomic_store_explicit(&cell->running, id, memory_order_release);
    pj__current_call.active = true;
    pj__invoke(&copy, args, slot);
    uint64_t expected = id;
    if (!atomic_compare_exchange_strong(&cell->running, &expected, 0)) {
        /* Claimed: the result belongs to the dispatcher now.  Touch nothing of the batch. */
        free(pj__current_call.message);
        pj__current_call = (struct pj__call_context){ 0 };
        if (slot != local)
            free(slot);
        else if (copy.ret_str == PJ__STR_OWNED)
            free(*(void **)local); /* the abandoned call's string: nobody will read it */
        return PJ_ETIMEDOUT;
    }
    r->fn = fn;
    if (slot == local)
        memcpy(r->value.bytes, local, sizeof local);
    else
        r->value.heap = slot;
    pj__call_finish(r);
    return 0;
}

int pj__execute(const struct pj__exec *ex)
{
    uint64_t limit = ex->timeout_ns;
    for (size_t i = ex->begin; i < ex->count; i++) {
        pj_result *r = &ex->results[i];
        if (ex->cancel && atomic_load_explicit(ex->cancel, memory_order_relaxed)) {
            for (; i < ex->count; i++)
                pj__result_fail(&ex->results[i], PJ_ECANCELLED, 0, "cancelled before it ran");
            break;
        }
        if (!ex->cell) {
            pj__call(ex->tasks[i], r);
            continue;
        }
        uint64_t t0 = pj__now_ns();
        if (call_watched(ex->tasks[i], r, ex->cell, i + 1))
            return PJ_ETIMEDOUT;
        uint64_t took = pj__now_ns() - t0;
        if (limit && took > limit && r->status == 0) {
            /* Finished, but after its deadline (the watchdog had not looked yet, or nobody
             * can interrupt this backend): late is timed out, whoever noticed. */
            pj__result_clear(r);
            r->fn = ex->tasks[i]->fn;
            pj__result_fail(r, PJ_ETIMEDOUT, 0, "ran %.3f s, past its timeout of %.3f s",
                            took / 1e9, limit / 1e9);
        }
    }
    return 0;
}

bool pj__batch_start(pj_batch *b)
{
    int expected = PJ__GATE_PENDING;
    if (!b->gate || atomic_compare_exchange_strong(b->gate, &expected, PJ__GATE_STARTED) ||
        expected == PJ__GATE_STARTED)
        return true;
    for (size_t i = b->begin; i < b->count; i++)
        pj__result_fail(&b->results[i], PJ_ECANCELLED, 0, "cancelled before it ran");
    return false;
}

int pj_batch_run(pj_batch *b)
{
    if (!pj__batch_start(b))
        return 0; /* cancelled through its gate: every slot says so; hand it back */
    if (b->run_ranges) {
        bool nested = pj__in_worker;
        pj__in_worker = true;
        b->run_ranges(b);
        pj__in_worker = nested;
        return 0;
    }
    bool nested = pj__in_worker;
    pj__in_worker = true;
    /* Deeper than the cells go, tasks are not interrupted; a late one is still reported. */
    struct pj__cell *cell = b->timeout_ns && cell_depth < MAX_NESTED_CELLS
                            ? &thread_cells[cell_depth] : NULL;
    struct pj__exec ex = {
        .tasks = b->tasks, .results = b->results, .begin = b->begin, .count = b->count,
        .cell = cell, .timeout_ns = b->timeout_ns, .cancel = b->cancel,
    };
    if (cell) {
        atomic_store(&cell->running, 0);
        atomic_store_explicit(&b->cell, cell, memory_order_release);
    }
    cell_depth++;
    uint64_t t0 = pj__now_ns();
    int rc = pj__execute(&ex);
    cell_depth--;
    pj__in_worker = nested;
    if (rc)
        return pj__set_last_error(rc, "pj_batch_run: the running task was stopped at its "
                                  "deadline: forget the batch");
    b->exec_ns = pj__now_ns() - t0;
    return 0;
}
