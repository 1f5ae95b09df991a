/* Bulk runs on every other backend ("fork", "spawn", registered ones) and wherever a deadline
 * applies: each call becomes a task, built from the columns by a producer only as the
 * dispatcher's window takes it (so n calls never cost n tasks at once), run on pj_run's path —
 * batching, pre_dispatch, deadlines, crash isolation, verbose lines as for any producer — and
 * its value copied into the output array as its result comes back.  A call whose value cannot
 * convert (a floating value no integer holds) becomes a task of refuse_call, which fails with
 * the reason, so that it ends with its own status like any other call. */
#include "bulk.h"

#include <stdatomic.h>
#include <stdlib.h>

struct tasks_run {
    struct pj_bulk_iter it;  /* first: the iterator handed out leads here */
    struct bulk_plan plan;
    pj_iter *run;            /* the dispatcher's generator over produce() */
    size_t produced;         /* calls handed over as tasks: [0, produced) */
    size_t yielded;
    _Atomic bool closing;    /* pj_bulk_close: the producer hands over no more */
    bool tail_yielded;       /* the calls never produced (a stop) were yielded cancelled */
    int first_error;
    unsigned char *block;
};

/* What a call that cannot be made runs instead: it fails with why (a string: it crosses). */
static void refuse_call(const char *why)
{
    pj_fail("%s", why);
}

static pj_fn *refuse_fn;
static pthread_once_t refuse_once = PTHREAD_ONCE_INIT;

static void make_refuse_fn(void)
{
    refuse_fn = pj_fn_new("pj_run_bulk", (void (*)(void))refuse_call, &ffi_type_void, 1,
                          (ffi_type *const[]){ &ffi_type_pointer });
}

static pj_buf buf_of(const struct bulk_arg *a, size_t i)
{
    const unsigned char *p = a->base + i * a->stride;
    if (a->load == BULK_BUF_ARRAY)
        return *(const pj_buf *)p;
    return (pj_buf){ (void *)p, a->buf_len, a->buf_kind };
}

static pj_task *refused_task(const char *why)
{
    pthread_once(&refuse_once, make_refuse_fn);
    if (!refuse_fn)
        return NULL;
    pj_task *t = pj_task_new(refuse_fn, (void *const[]){ &(const char *){ why } });
    if (t && pj_task_set_buf(t, 0, pj_cstr(why))) {
        pj_task_free(t);
        return NULL;
    }
    return t;
}

static pj_task *call_task(struct tasks_run *t, size_t i)
{
    const pj_fn *fn = t->plan.fn;
    char why[160];
    if (!pj__bulk_gather(&t->plan, i, t->block, why, sizeof why))
        return refused_task(why);
    void *argv[fn->nargs ? fn->nargs : 1];
    for (unsigned j = 0; j < fn->nargs; j++)
        argv[j] = t->block + fn->offsets[j];
    pj_task *task = pj_task_new(fn, argv);
    for (unsigned k = 0; task && t->plan.has_bufs && k < t->plan.n_vars; k++) {
        const struct bulk_arg *a = &t->plan.vars[k];
        if ((a->load == BULK_BUF || a->load == BULK_BUF_ARRAY) &&
            pj_task_set_buf(task, a->index, buf_of(a, i))) {
            pj_task_free(task);
            return NULL;
        }
    }
    return task;
}

static int produce(void *state, pj_task **task)
{
    struct tasks_run *t = state;
    if (t->produced == t->plan.n || atomic_load(&t->closing))
        return 0;
    *task = call_task(t, t->produced);
    if (!*task)
        return PJ_ENOMEM;
    t->produced++;
    return 1;
}

/* A result is back: its value into out, its status into statuses; the first failure kept. */
static void take_result(struct tasks_run *t, const pj_result *r, pj_parallel *par)
{
    const struct bulk_plan *p = &t->plan;
    int status = r->status;
    if (status == PJ_EFAILED && r->fn == refuse_fn)
        status = PJ_ETYPE;
    if (p->statuses)
        p->statuses[r->index] = status;
    if (status == 0) {
        size_t size;
        const void *v = pj_result_value(r, &size);
        if (v)
            pj__bulk_store(p, r->index, v);
    } else if (status != PJ_ECANCELLED && !t->first_error) {
        t->first_error = status;
        pj__bulk_fail_message(par, status, r->index, p->fn, r->message);
    }
}

static void tasks_free(struct tasks_run *t)
{
    pj__bulk_plan_free(&t->plan);
    free(t->block);
    free(t);
}

/* The calls a stop left unproduced end cancelled. */
static void cancel_unproduced(struct tasks_run *t)
{
    if (t->plan.statuses)
        for (size_t i = t->produced; i < t->plan.n; i++)
            t->plan.statuses[i] = PJ_ECANCELLED;
}

static int tasks_next(pj_bulk_iter *it, pj_range *out);

/* Every call handed over ends with its own status: the producer stops, and the calls already
 * taken into the window (at most pre_dispatch batches) are run and taken as a consumer would
 * take them — the dispatcher's own close would drop their results unread.  The calls never
 * handed over are cancelled.  After pj_parallel_cancel the results not yet taken are the
 * dispatcher's to drop: those calls keep the PJ_ECANCELLED written at the start. */
static int tasks_close(pj_bulk_iter *it)
{
    struct tasks_run *t = (struct tasks_run *)it;
    atomic_store(&t->closing, true);
    pj_range range;
    while (tasks_next(it, &range) == 0)
        ;
    int rc = pj__run_close(t->run);
    cancel_unproduced(t);
    /* The calls' failures are ours (their message is in par since take_result); a cancel
     * (pj_parallel_cancel) or the source's failure (out of memory building a task) is the
     * dispatcher's, with its message. */
    if (rc == PJ_ECANCELLED || !t->first_error)
        t->first_error = rc;
    rc = t->first_error;
    tasks_free(t);
    return rc;
}

static int tasks_next(pj_bulk_iter *it, pj_range *out)
{
    struct tasks_run *t = (struct tasks_run *)it;
    pj_result r;
    int rc = pj__run_next(t->run, &r);
    if (rc == 0) {
        take_result(t, &r, it->par);
        t->yielded++;
        *out = (pj_range){ r.index, r.index + 1, t->plan.statuses ? t->plan.statuses[r.index]
                                                                   : r.status };
        if (out->status == PJ_EFAILED && r.fn == refuse_fn)
            out->status = PJ_ETYPE;
        return 0;
    }
    if (rc == PJ_EEND && t->produced < t->plan.n && !t->tail_yielded) {
        t->tail_yielded = true;
        cancel_unproduced(t);
        *out = (pj_range){ t->produced, t->plan.n, PJ_ECANCELLED };
        return 0;
    }
    return rc == PJ_EEND ? PJ_EEND
                         : pj__set_last_error(rc, "pj_bulk_next: the run was cancelled");
}

int pj__bulk_tasks_open(pj_parallel *par, struct bulk_plan *plan, bool list,
                        pj_bulk_iter **iter)
{
    struct tasks_run *t = calloc(1, sizeof *t);
    unsigned char *block = calloc(1, plan->fn->args_size ? plan->fn->args_size : 1);
    if (!t || !block) {
        free(t);
        free(block);
        pj__bulk_plan_free(plan);
        return pj__parallel_set_error(par, PJ_ENOMEM, "out of memory");
    }
    t->plan = *plan;
    t->block = block;
    memcpy(block, plan->consts, plan->fn->args_size);
    t->it = (struct pj_bulk_iter){ tasks_next, tasks_close, par };
    if (plan->statuses) /* what pj_parallel_cancel drops unread is left so */
        for (size_t i = 0; i < plan->n; i++)
            plan->statuses[i] = PJ_ECANCELLED;
    struct pj__source src = { .producer = produce, .state = t, .n = plan->n, .hold_windows = 1 };
    int rc = pj__run_open(par, &src, false, &t->run);
    if (rc) {
        tasks_free(t);
        return rc;
    }
    if (!list) {
        *iter = &t->it;
        return 0;
    }
    pj_range range;
    while (tasks_next(&t->it, &range) == 0)
        ;
    return tasks_close(&t->it);
}
