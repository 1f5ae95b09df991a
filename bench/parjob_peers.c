/* parjob_peers.c — parjob on the peers' workloads (issue 6), measured by the peers' own harness
 * (bench/peers/harness.c): the same tasks from libpjwork.so, the same serial baseline measured
 * in the same run, the same result checks and the same output lines, so scripts/bench's report
 * puts parjob next to OpenMP, the pthread pool and Python.
 *
 * Every backend registered at run time ("sequential", "threading", "fork", "spawn") runs each
 * workload twice:
 *   parjob_<backend>_auto      batch_size = PJ_AUTO (the default)
 *   parjob_<backend>_b<k>      a fixed batch of k = n / (4 * workers) tasks: four batches a
 *                              worker, the chunksize py_peers gives ProcessPoolExecutor.map
 * with joblib's other defaults (pre_dispatch "2*n_jobs", list results), all in one
 * pjb_bench() call per workload, so every variant is interleaved with the same serial baseline.
 * Workers: the usable CPUs (the sequential backend runs in the caller: n_jobs 1).  The seed
 * example asks for 10 workers and runs auto only: its fixed batch would be 1, where auto starts
 * (the same 1 s run twice); the sequential backend skips it (ten 1 s sleeps in a row: 10 s).
 * The sweep's fixed batches run on the parallel backends only.
 *
 * What is timed: pj_run over tasks built beforehand with pj_delayed (a task is reusable, like a
 * prepared statement; pj_delayed's own cost is printed as metric=ns_per_task), plus
 * pj_results_free.  Copying the results into the harness's output array for its check happens
 * with the clock stopped, as the Python peers check theirs outside the clock.
 * The sweep's fixed-batch figures go under workload=sweep_fixed (their batch differs at every
 * duration), so the plot shows the auto-batching line per backend.
 *
 * Start-up (fork, spawn, and threading for reference): pj_parallel_new to the first result of a
 * one-task pj_run, on a new handle each run (workers start at the first run).
 *
 *   parjob_peers   [PJBENCH_RUNS=5] [PJBENCH_ONLY=tiny,cpu5ms,cpu50us,sweep,seed,startup]
 *                  [PJWORK_ITERS_PER_US=<from calibrate>] */
#include <parjob.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"

#define PROG "parjob_peers"
#define MAX_VARIANTS 16

static const char *const backend_names[] = { "sequential", "threading", "fork", "spawn" };
#define N_BACKENDS (sizeof backend_names / sizeof backend_names[0])

/* The tasks of the workload being measured, built once per workload. */
static pj_task **tasks;
static long n_tasks;

struct pj_variant_ctx {
    char peer[64];
    pj_parallel *par;
};

static pj_fn *fn_add, *fn_spin, *fn_sleep;

static void die(const char *what, const char *detail)
{
    fprintf(stderr, PROG ": %s: %s\n", what, detail);
    exit(1);
}

static void build_tasks(const struct pjb_workload *w)
{
    tasks = malloc((size_t)w->n * sizeof *tasks);
    if (tasks == NULL)
        die("out of memory", w->name);
    for (long i = 0; i < w->n; i++) {
        switch (w->kind) {
        case PJB_ADD: tasks[i] = pj_delayed(fn_add, (int)i, 1); break;
        case PJB_SPIN: tasks[i] = pj_delayed(fn_spin, w->arg); break;
        case PJB_SLEEP: tasks[i] = pj_delayed(fn_sleep, w->arg); break;
        }
        if (tasks[i] == NULL)
            die("pj_delayed", pj_last_errmsg());
    }
    n_tasks = w->n;
}

static void free_tasks(void)
{
    for (long i = 0; i < n_tasks; i++)
        pj_task_free(tasks[i]);
    free(tasks);
    tasks = NULL;
    n_tasks = 0;
}

/* One repetition: pj_run and pj_results_free are timed; reading the results back into the
 * harness's arrays (for its check) is not. */
static double run_parjob(const struct pjb_workload *w, void *ctx)
{
    struct pj_variant_ctx *v = ctx;
    pj_results *res;
    double t0 = pjb_now();
    int rc = pj_run(v->par, tasks, (size_t)w->n, &res);
    double t1 = pjb_now();
    if (rc != 0) {
        fprintf(stderr, PROG ": %s on %s: %s: %s\n", v->peer, w->name, pj_strerror(rc),
                pj_parallel_errmsg(v->par));
        exit(1);
    }
    if (w->kind == PJB_ADD)
        for (long i = 0; i < w->n; i++)
            pjb_iout[i] = pj_result_int(pj_results_at(res, (size_t)i));
    else
        for (long i = 0; i < w->n; i++)
            pjb_dout[i] = pj_result_double(pj_results_at(res, (size_t)i));
    double t2 = pjb_now();
    pj_results_free(res);
    return (t1 - t0) + (pjb_now() - t2);
}

static long fixed_batch(const struct pjb_workload *w, int workers)
{
    long b = w->n / (4L * workers);
    return b > 0 ? b : 1;
}

/* Adds the auto and/or fixed-batch variants of `backend` to v[*nv...].  The sequential
 * backend runs in the caller: n_jobs 1 (the harness labels it workers=1). */
static void add_variants(struct pjb_variant *v, struct pj_variant_ctx *ctx, int *nv,
                         const char *backend, const struct pjb_workload *w, int workers,
                         int autob, int fixed)
{
    int seq = strcmp(backend, "sequential") == 0;
    for (int f = autob ? 0 : 1; f <= fixed; f++) {
        long batch = f ? fixed_batch(w, workers) : PJ_AUTO;
        struct pj_variant_ctx *c = &ctx[*nv];
        if (f)
            snprintf(c->peer, sizeof c->peer, "parjob_%s_b%ld", backend, batch);
        else
            snprintf(c->peer, sizeof c->peer, "parjob_%s_auto", backend);
        c->par = pj_parallel_new(&(pj_config){ .n_jobs = seq ? 1 : workers, .backend = backend,
                                               .batch_size = batch });
        if (c->par == NULL)
            die(c->peer, pj_last_errmsg());
        v[*nv] = (struct pjb_variant){ c->peer, run_parjob, c };
        (*nv)++;
    }
}

/* Measures v[0..nv) (v[0] the serial baseline unless w->wall), then frees their handles. */
static void bench_and_free(const struct pjb_workload *w, struct pjb_variant *v,
                           struct pj_variant_ctx *ctx, int nv, int workers)
{
    if (nv > (w->wall ? 0 : 1))
        pjb_bench(PROG, w, v, nv, w->wall ? -1 : 0, workers);
    for (int k = 0; k < nv; k++)
        if (ctx[k].par != NULL)
            pj_parallel_free(ctx[k].par);
    memset(ctx, 0, MAX_VARIANTS * sizeof *ctx);
}

/* One workload on every backend, interleaved with one serial baseline. */
static void bench_workload(const struct pjb_workload *w, const char *const *backends, int nb)
{
    struct pjb_variant v[MAX_VARIANTS];
    struct pj_variant_ctx ctx[MAX_VARIANTS] = { 0 };
    int workers = pjb_workers(w, pjb_cpus()), nv = 0;
    int sweep = strcmp(w->name, "sweep") == 0;
    build_tasks(w);
    if (!w->wall)
        v[nv++] = (struct pjb_variant){ "c_serial_direct", pjb_serial_direct, NULL };
    for (int b = 0; b < nb; b++)
        if (!(w->wall && strcmp(backends[b], "sequential") == 0))
            add_variants(v, ctx, &nv, backends[b], w, workers, 1, !sweep && !w->wall);
    bench_and_free(w, v, ctx, nv, workers);
    if (sweep) {
        /* The sweep's fixed batches: their own table and baseline, parallel backends only. */
        struct pjb_workload wf = *w;
        wf.name = "sweep_fixed";
        nv = 1;
        for (int b = 0; b < nb; b++)
            if (strcmp(backends[b], "sequential") != 0)
                add_variants(v, ctx, &nv, backends[b], w, workers, 0, 1);
        bench_and_free(&wf, v, ctx, nv, workers);
    }
    free_tasks();
}

/* pj_delayed's cost per task: the part of a run the figures above leave out. */
static void bench_delayed(const struct pjb_workload *w)
{
    int runs = pjb_runs();
    double *ns = calloc((size_t)runs, sizeof *ns);
    if (ns == NULL)
        die("out of memory", "delayed");
    for (int r = -1; r < runs; r++) {
        double t0 = pjb_now();
        build_tasks(w);
        double t = pjb_now() - t0;
        free_tasks();
        if (r >= 0)
            ns[r] = t / (double)w->n * 1e9;
    }
    pjb_print("parjob_delayed", PROG, w, "ns_per_task", ns, runs, 1, "what=pj_delayed");
    free(ns);
}

/* Cold start: a new handle to its first result. */
static void bench_startup(const char *backend)
{
    const struct pjb_workload w = { "startup", PJB_ADD, 1, 0, 0, 0 };
    int runs = pjb_runs(), ncpu = pjb_cpus();
    double *t = calloc((size_t)runs, sizeof *t);
    pj_task *task = pj_delayed(fn_add, 1, 2);
    if (t == NULL || task == NULL)
        die("out of memory", "startup");
    for (int r = -1; r < runs; r++) {
        pj_results *res;
        double t0 = pjb_now();
        pj_parallel *par = pj_parallel_new(&(pj_config){ .n_jobs = ncpu, .backend = backend });
        if (par == NULL)
            die(backend, pj_last_errmsg());
        int rc = pj_run(par, &task, 1, &res);
        double e = pjb_now() - t0;
        if (rc != 0 || pj_result_int(pj_results_at(res, 0)) != 3)
            die(backend, rc ? pj_parallel_errmsg(par) : "wrong result");
        pj_results_free(res);
        pj_parallel_free(par);
        if (r >= 0)
            t[r] = e;
    }
    char peer[64];
    snprintf(peer, sizeof peer, "parjob_%s", backend);
    pjb_print(peer, PROG, &w, "startup_s", t, runs, ncpu, "what=new_to_first_result");
    pj_task_free(task);
    free(t);
}

int main(void)
{
    size_t nw;
    const struct pjb_workload *w = pjb_init(&nw);
    /* Spawned workers re-execute this program: hand them this process's calibration so their
     * tasks are as long as the serial loop's (scripts/bench already exports one for the run). */
    char ipu[64];
    snprintf(ipu, sizeof ipu, "%.17g", pjwork_iters_per_us());
    setenv("PJWORK_ITERS_PER_US", ipu, 1);

    fn_add = PJ_FN(add, &ffi_type_sint, &ffi_type_sint, &ffi_type_sint);
    fn_spin = PJ_FN(spin_us, &ffi_type_double, &ffi_type_double);
    fn_sleep = PJ_FN(sleep_s, &ffi_type_double, &ffi_type_double);
    if (fn_add == NULL || fn_spin == NULL || fn_sleep == NULL)
        die("pj_fn_new", pj_last_errmsg());

    const char *backends[N_BACKENDS];
    int nb = 0;
    for (size_t b = 0; b < N_BACKENDS; b++)
        if (pj_backend_find(backend_names[b]) != NULL)
            backends[nb++] = backend_names[b];
    printf("# " PROG ": parjob=%u.%u.%u cpus=%d iters_per_us=%.2f backends=", pj_version() >> 16,
           (pj_version() >> 8) & 0xff, pj_version() & 0xff, pjb_cpus(), pjwork_iters_per_us());
    for (int b = 0; b < nb; b++)
        printf("%s%s", b ? "," : "", backends[b]);
    printf("\n");
    fflush(stdout);

    for (size_t k = 0; k < nw; k++) {
        if (!pjb_enabled(w[k].name))
            continue;
        if (strcmp(w[k].name, "tiny") == 0)
            bench_delayed(&w[k]);
        bench_workload(&w[k], backends, nb);
    }
    if (pjb_enabled("startup"))
        for (int b = 0; b < nb; b++)
            if (strcmp(backends[b], "sequential") != 0)
                bench_startup(backends[b]);
    pj_fn_free(fn_add);
    pj_fn_free(fn_spin);
    pj_fn_free(fn_sleep);
    return 0;
}
