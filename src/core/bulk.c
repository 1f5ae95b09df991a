/* pj_run_bulk, pj_start_bulk and the bulk iterator: the public entry points.  Each checks its
 * input (bulk_plan.c) with the handle held, before anything runs, then hands the plan to the
 * engine the backend can take: ranges claimed by workers in this process (bulk_ranges.c), or
 * a task per call (bulk_tasks.c). */
#include "bulk.h"

#include <stdlib.h>

/* A run's failure in the calling thread's pj_last_errmsg too, as pj_run reports it. */
static int failed(const pj_parallel *par, int code)
{
    if (code == 0 || code == PJ_EBUSY)
        return code;
    return pj__set_last_error(code, "%s", *par->errmsg ? par->errmsg : pj_strerror(code));
}

/* Process backends: the function must be found again in a worker (PJ_ERESOLVE), checked on
 * the first call's task as pj_run checks every task. */
static int check_crossing(pj_parallel *par, const struct bulk_plan *plan)
{
    if (!(par->backend->features & PJ_BACKEND_PROCESS) || plan->n == 0)
        return 0;
    const pj_fn *fn = plan->fn;
    void *argv[fn->nargs ? fn->nargs : 1];
    for (unsigned j = 0; j < fn->nargs; j++)
        argv[j] = plan->consts + fn->offsets[j]; /* varying pointers NULL: raw ones refused */
    pj_task *t = pj_task_new(fn, argv);
    if (!t)
        return pj__parallel_set_error(par, PJ_ENOMEM, "out of memory");
    const pj_fn *checked = NULL;
    char why[448];
    int rc = pj__task_crossing(par->backend->features, t, &checked, why, sizeof why);
    pj_task_free(t);
    return rc ? pj__parallel_set_error(par, rc, "pj_run_bulk: %s: %s", pj_fn_name(fn), why) : 0;
}

static int open_bulk(pj_parallel *par, const pj_bulk *bulk, bool list, pj_bulk_iter **iter)
{
    struct bulk_plan plan;
    char err[448];
    int rc = pj__bulk_plan(bulk, par->backend->features, false, &plan, err, sizeof err);
    if (rc)
        pj__parallel_set_error(par, rc, "%s", err);
    if (!rc)
        rc = check_crossing(par, &plan);
    if (rc) {
        pj__bulk_plan_free(&plan);
        return rc;
    }
    return pj__bulk_in_process(par) || pj__bulk_pool_takes(par, &plan)
           ? pj__bulk_ranges_open(par, &plan, list, iter)
           : pj__bulk_tasks_open(par, &plan, list, iter);
}

int pj_run_bulk(pj_parallel *par, const pj_bulk *bulk)
{
    if (!par)
        return pj__set_last_error(PJ_EINVAL, "pj_run_bulk: par is NULL (did pj_parallel_new "
                                  "fail?)");
    int rc = pj__parallel_acquire(par);
    if (rc)
        return failed(par, rc);
    rc = open_bulk(par, bulk, true, NULL);
    pj__parallel_release(par);
    return failed(par, rc);
}

pj_bulk_iter *pj_start_bulk(pj_parallel *par, const pj_bulk *bulk)
{
    if (!par)
        return pj__set_last_error(PJ_EINVAL, "pj_start_bulk: par is NULL (did "
                                  "pj_parallel_new fail?)"), NULL;
    int rc = pj__parallel_acquire(par);
    if (rc) {
        failed(par, rc);
        return NULL;
    }
    pj_bulk_iter *it = NULL;
    rc = open_bulk(par, bulk, false, &it);
    if (rc) {
        pj__parallel_release(par);
        failed(par, rc);
        return NULL;
    }
    return it;
}

int pj_bulk_next(pj_bulk_iter *it, pj_range *out)
{
    if (!it || !out)
        return pj__set_last_error(PJ_EINVAL, "pj_bulk_next: %s is NULL",
                                  !it ? "iterator" : "out");
    int rc = it->next(it, out);
    return rc == PJ_EEND ? pj__set_last_error(rc, "pj_bulk_next: every call was yielded") : rc;
}

int pj_bulk_close(pj_bulk_iter *it)
{
    if (!it)
        return pj__set_last_error(PJ_EINVAL, "pj_bulk_close: iterator is NULL");
    pj_parallel *par = it->par;
    int rc = it->close(it);
    rc = failed(par, rc);
    pj__parallel_release(par);
    return rc;
}
