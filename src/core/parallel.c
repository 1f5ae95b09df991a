/* Configuration (pj_parallel: its checks, its backend, its lock and error message) and the public
 * run/iterate entry points.  Error names: errors.c; the backend registry: registry.c; CPUs and
 * n_jobs: cpus.c; pre_dispatch: pre_dispatch.c; the results container: results.c. */
#include "internal.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int pj__parallel_set_error(pj_parallel *par, int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(par->errmsg, sizeof par->errmsg, fmt, ap);
    va_end(ap);
    return code;
}

/* A run's failure, as every failing call reports it: in the calling thread's pj_last_errmsg
 * too.  Not for PJ_EBUSY: that message is the caller's already, par's belongs to the run
 * going on. */
static int run_failed(const pj_parallel *par, int code)
{
    if (code == 0 || code == PJ_EBUSY)
        return code;
    return pj__set_last_error(code, "%s", *par->errmsg ? par->errmsg : pj_strerror(code));
}

const char *pj_parallel_errmsg(const pj_parallel *par)
{
    return par ? par->errmsg : "parallel handle is NULL";
}

/* One lock-free store and nothing else: a signal handler may call it (the run notices, see
 * cancel_seen in dispatch.c). */
_Static_assert(ATOMIC_INT_LOCK_FREE == 2, "pj_parallel_cancel needs a lock-free atomic int");

int pj_parallel_cancel(pj_parallel *par)
{
    if (!par)
        return PJ_EINVAL;
    atomic_store_explicit(&par->run_cancel, PJ__CANCEL_KILL, memory_order_release);
    return 0;
}

/* ---- pj_parallel ---------------------------------------------------------------------------- */

static char *dup_or_null(const char *s)
{
    return s ? strdup(s) : NULL;
}

static int check_config(const pj_config *c, char *err, size_t errlen)
{
    if (c->batch_size < 0) {
        snprintf(err, errlen, "batch_size = %ld is negative (use a positive size or PJ_AUTO)",
                 c->batch_size);
        return PJ_EINVAL;
    }
    if (!(c->timeout >= 0) || c->timeout > 1e9) {
        snprintf(err, errlen, "timeout = %g is not a number of seconds >= 0", c->timeout);
        return PJ_EINVAL;
    }
    if (c->return_as > PJ_GENERATOR_UNORDERED || c->on_error > PJ_ON_ERROR_CONTINUE) {
        snprintf(err, errlen, "return_as or on_error holds an unknown value");
        return PJ_EINVAL;
    }
    if (c->max_tasks_per_child < 0 || !(c->idle_worker_timeout >= 0)) {
        snprintf(err, errlen, "max_tasks_per_child and idle_worker_timeout must be >= 0");
        return PJ_EINVAL;
    }
    if (!(c->worker_start_timeout >= 0) || c->worker_start_timeout > 1e9) {
        snprintf(err, errlen, "worker_start_timeout = %g is not a number of seconds >= 0",
                 c->worker_start_timeout);
        return PJ_EINVAL;
    }
    return 0;
}

static int pick_backend(pj_parallel *par, char *err, size_t errlen)
{
    const char *name = par->cfg.backend;
    if (!name || !*name) {
        const char *env = getenv("PARJOB_BACKEND");
        name = env && *env ? env : par->n_jobs == 1 ? "sequential" : "threading";
    }
    par->backend = pj_backend_find(name);
    if (!par->backend) {
        char known[256];
        pj__known_backends(known, sizeof known);
        snprintf(err, errlen, "unknown backend \"%s\"; known backends: %s", name, known);
        return PJ_EBACKEND;
    }
    return 0;
}

int pj__parse_int_env(const char *name, int *out)
{
    const char *s = getenv(name);
    if (!s || !*s)
        return 0;
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    while (isspace((unsigned char)*end))
        end++;
    if (errno || *end || v < INT_MIN || v > INT_MAX)
        return PJ_EINVAL;
    *out = (int)v;
    return 1;
}

/* inner_max_num_threads: a zero takes $PARJOB_INNER_MAX_NUM_THREADS; either must be a count
 * a runtime can be given (at most PJ_MAX_JOBS: more threads than that per worker is a typo). */
static int resolve_inner_threads(int *inner, char *err, size_t errlen)
{
    const char *var = "PARJOB_INNER_MAX_NUM_THREADS";
    if (*inner == 0 && pj__parse_int_env(var, inner) < 0) {
        snprintf(err, errlen, "%s=\"%s\" is not an integer", var, getenv(var));
        return PJ_EINVAL;
    }
    if (*inner > PJ_MAX_JOBS) {
        snprintf(err, errlen, "inner_max_num_threads = %d is out of range (at most %d threads "
                 "per worker; < 0 leaves the runtimes alone)", *inner, PJ_MAX_JOBS);
        return PJ_EINVAL;
    }
    return 0;
}

/* joblib's prefix shows n_jobs as asked (Parallel(n_jobs=-1)), None when left unset. */
static void label_n_jobs(pj_parallel *par, int asked)
{
    int from_env = 0;
    if (asked == 0 && !pj__in_worker_context() && pj__parse_int_env("PARJOB_N_JOBS", &from_env) > 0)
        asked = from_env;
    if (asked)
        snprintf(par->n_jobs_label, sizeof par->n_jobs_label, "%d", asked);
    else
        snprintf(par->n_jobs_label, sizeof par->n_jobs_label, "None");
}

/* n_jobs < 0 against the CPUs of the backend's workers where they are not this process's
 * (joblib's effective_n_jobs): the mpi backend's worker ranks.  n_jobs as asked, or from
 * $PARJOB_N_JOBS (checked already by pj__resolve_n_jobs). */
static int backend_n_jobs(pj_parallel *par, int asked, char *err, size_t errlen)
{
    const struct pj__backend_hooks *hooks = pj__backend_hooks(par->backend);
    if (asked == 0 && !pj__in_worker_context())
        pj__parse_int_env("PARJOB_N_JOBS", &asked);
    if (asked >= 0 || !hooks || !hooks->effective_n_jobs)
        return 0;
    return hooks->effective_n_jobs(asked, &par->n_jobs, err, errlen);
}

pj_parallel *pj_parallel_new(const pj_config *config)
{
    static const pj_config unset;
    char err[512] = "";
    const pj_config *c = config ? config : &unset;
    int rc = check_config(c, err, sizeof err);
    pj_parallel *par = calloc(1, sizeof *par);
    if (!par)
        return pj__set_last_error(PJ_ENOMEM, "out of memory"), NULL;
    par->cfg = *c;
    if (!rc)
        rc = pj__resolve_n_jobs(c->n_jobs, &par->n_jobs, err, sizeof err);
    if (!rc)
        rc = resolve_inner_threads(&par->cfg.inner_max_num_threads, err, sizeof err);
    if (!rc)
        label_n_jobs(par, c->n_jobs);
    if (!rc)
        rc = pick_backend(par, err, sizeof err);
    if (!rc)
        rc = backend_n_jobs(par, c->n_jobs, err, sizeof err);
    if (!rc) {
        par->backend_name = strdup(par->backend->name);
        par->pre_dispatch_expr = dup_or_null(c->pre_dispatch ? c->pre_dispatch : "2*n_jobs");
        if (!par->backend_name || !par->pre_dispatch_expr)
            rc = PJ_ENOMEM, snprintf(err, sizeof err, "out of memory");
    }
    if (!rc)
        rc = pj__eval_pre_dispatch(par->pre_dispatch_expr, par->n_jobs, &par->window, err,
                                   sizeof err);
    if (rc) {
        pj__set_last_error(rc, "%s", err);
        free(par->backend_name);
        free(par->pre_dispatch_expr);
        free(par);
        return NULL;
    }
    par->cfg.backend = par->backend_name;
    par->cfg.pre_dispatch = par->pre_dispatch_expr;
    if (par->cfg.verbose == 0 && pj__parse_int_env("PARJOB_VERBOSE", &par->cfg.verbose) < 0)
        par->cfg.verbose = 0;
    return par;
}

void pj_parallel_free(pj_parallel *par)
{
    if (!par)
        return;
    if (atomic_load(&par->busy)) {
        /* Freeing under a running call would pull the workers from under it: refuse. */
        pj__parallel_set_error(par, PJ_EBUSY, "pj_parallel_free: a run or iterator is open");
        return;
    }
    if (par->backend_open)
        par->backend->close(par->backend_state);
    free(par->backend_name);
    free(par->pre_dispatch_expr);
    free(par);
}

int pj_parallel_n_jobs(const pj_parallel *par)
{
    return par ? par->n_jobs : pj__set_last_error(PJ_EINVAL, "pj_parallel_n_jobs: par is NULL");
}

const char *pj_parallel_backend(const pj_parallel *par)
{
    return par ? par->backend->name : NULL;
}

int pj__parallel_acquire(pj_parallel *par)
{
    int idle = 0;
    if (!atomic_compare_exchange_strong(&par->busy, &idle, 1)) /* par->errmsg is the runner's */
        return pj__set_last_error(PJ_EBUSY, "this pj_parallel is already running in another "
                                  "thread (or has an open iterator)");
    par->errmsg[0] = 0;
    if (par->backend_open)
        return 0;
    char err[256] = "";
    int rc = par->backend->open(&par->backend_state, par->n_jobs, &par->cfg, err, sizeof err);
    if (rc) {
        atomic_store(&par->busy, 0);
        return pj__parallel_set_error(par, rc, "backend %s failed to start: %s",
                                      par->backend->name, *err ? err : pj_strerror(rc));
    }
    par->backend_open = true;
    const struct pj__backend_hooks *hooks = pj__backend_hooks(par->backend);
    if (hooks && hooks->describe_share)
        hooks->describe_share(par->n_jobs, par->worker_share, sizeof par->worker_share);
    return 0;
}

void pj__parallel_release(pj_parallel *par)
{
    atomic_store(&par->busy, 0);
}

/* ---- runs ----------------------------------------------------------------------------------- */

static int run_list(pj_parallel *par, const struct pj__source *src, pj_results **results)
{
    if (!par) {
        if (results)
            *results = NULL;
        return pj__set_last_error(PJ_EINVAL, "par is NULL (did pj_parallel_new fail?)");
    }
    if (!results)
        return run_failed(par, pj__parallel_set_error(par, PJ_EINVAL, "results is NULL"));
    *results = NULL;
    int rc = pj__parallel_acquire(par);
    if (rc)
        return run_failed(par, rc);
    pj_iter *run;
    rc = pj__run_open(par, src, true, &run);
    if (!rc)
        rc = pj__run_collect(run, results);
    pj__parallel_release(par);
    return run_failed(par, rc);
}

/* What an empty array of tasks is read as, so that tasks may be NULL when n is 0. */
static pj_task *const no_tasks[1];

int pj_run(pj_parallel *par, pj_task *const *tasks, size_t n, pj_results **results)
{
    if (!tasks && n == 0)
        tasks = no_tasks;
    if (par && !tasks) {
        if (results)
            *results = NULL; /* as every other PJ_EINVAL of pj_run: never a stale pointer */
        return run_failed(par, pj__parallel_set_error(par, PJ_EINVAL, "tasks is NULL"));
    }
    struct pj__source src = { .array = tasks, .n = n };
    return run_list(par, &src, results);
}

int pj_run_source(pj_parallel *par, pj_producer next, void *state, pj_results **results)
{
    struct pj__source src = { .producer = next, .state = state };
    return run_list(par, &src, results);
}

static pj_iter *start(pj_parallel *par, const struct pj__source *src)
{
    if (!par)
        return pj__set_last_error(PJ_EINVAL, "pj_start: parallel handle is NULL"), NULL;
    int rc = pj__parallel_acquire(par);
    pj_iter *it = NULL;
    if (!rc)
        rc = pj__run_open(par, src, false, &it);
    if (rc) {
        if (rc != PJ_EBUSY) { /* busy: the message is already this thread's, par's is not ours */
            pj__parallel_release(par);
            pj__set_last_error(rc, "%s", par->errmsg);
        }
        return NULL;
    }
    return it;
}

pj_iter *pj_start(pj_parallel *par, pj_task *const *tasks, size_t n)
{
    if (!tasks && n == 0)
        tasks = no_tasks;
    if (!tasks)
        return pj__set_last_error(PJ_EINVAL, "pj_start: tasks is NULL"), NULL;
    struct pj__source src = { .array = tasks, .n = n };
    return start(par, &src);
}

pj_iter *pj_start_source(pj_parallel *par, pj_producer next, void *state)
{
    struct pj__source src = { .producer = next, .state = state };
    return start(par, &src);
}

int pj_next(pj_iter *it, pj_result *out)
{
    if (!it || !out)
        return pj__set_last_error(PJ_EINVAL, "pj_next: %s is NULL", !it ? "iterator" : "out");
    int rc = pj__run_next(it, out);
    return rc ? pj__set_last_error(rc, "pj_next: every result was returned") : 0;
}

int pj_iter_close(pj_iter *it)
{
    if (!it)
        return pj__set_last_error(PJ_EINVAL, "pj_iter_close: iterator is NULL");
    pj_parallel *par = pj__run_parallel(it);
    int rc = pj__run_close(it);
    /* par is idle once released and may be freed by another thread: read its message first. */
    rc = run_failed(par, rc);
    pj__parallel_release(par);
    return rc;
}
