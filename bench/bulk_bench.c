/* bulk_bench.c — pj_run_bulk (issue 14) beside OpenMP and the serial loops, in one run:
 *
 *   add10m   int add(int, int) over 10 M pairs (a column and a constant), into an int array:
 *            c_serial_direct, c_serial_ffi, omp_dyn64_direct, omp_dyn64_ffi (when built with
 *            OpenMP) and parjob_bulk_<backend>; tasks_per_s, and each parjob figure as a
 *            ratio to omp_dyn64_direct (metric=vs_omp_dyn64_direct) and to c_serial_ffi
 *            (metric=vs_c_serial_ffi), per repetition as the harness computes speedups.
 *            Then the peak resident memory a bulk run adds above its arrays
 *            (metric=peak_mib_above_arrays: /proc/self/status VmHWM, reset before the run).
 *   cpu50us, sweep   the peers' workloads (bench/peers/harness.c) through pjb_bench:
 *            parjob_bulk_<backend> beside c_serial_direct, so scripts/bench's report and
 *            bench/sweep.png put the bulk form next to pj_run (parjob_peers) and OpenMP.
 *
 *   bulk_bench [PJBENCH_RUNS=5] [PJBENCH_ONLY=add10m,cpu50us,sweep] [BULK_N=10000000]
 *
 * Lines are the harness's format (bench/peers/harness.h), prog=bulk_bench. */
#include <parjob.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "harness.h"

#define PROG "bulk_bench"

static const char *const backend_names[] = { "sequential", "threading", "fork", "spawn" };
#define N_BACKENDS (sizeof backend_names / sizeof backend_names[0])

static pj_fn *fn_add, *fn_spin;
static pj_parallel *pars[N_BACKENDS];
static int *col_a, *big_out;
static long big_n;

static void die(const char *what, const char *detail)
{
    fprintf(stderr, PROG ": %s: %s\n", what, detail);
    exit(1);
}

/* ---- add over big_n pairs ---------------------------------------------------------------------- */

static double serial_direct(void *ctx)
{
    (void)ctx;
    double t0 = pjb_now();
    for (long i = 0; i < big_n; i++)
        big_out[i] = add(col_a[i], 1);
    return pjb_now() - t0;
}

static double serial_ffi(void *ctx)
{
    (void)ctx;
    double t0 = pjb_now();
    for (long i = 0; i < big_n; i++) {
        int b = 1;
        void *av[2] = { &col_a[i], &b };
        ffi_arg r;
        ffi_call(&pjb_cif_add, FFI_FN(add), &r, av);
        big_out[i] = (int)r;
    }
    return pjb_now() - t0;
}

#ifdef _OPENMP
static double omp_direct(void *ctx)
{
    (void)ctx;
    double t0 = pjb_now();
#pragma omp parallel for schedule(dynamic, 64)
    for (long i = 0; i < big_n; i++)
        big_out[i] = add(col_a[i], 1);
    return pjb_now() - t0;
}

static double omp_ffi(void *ctx)
{
    (void)ctx;
    double t0 = pjb_now();
#pragma omp parallel for schedule(dynamic, 64)
    for (long i = 0; i < big_n; i++) {
        int b = 1;
        void *av[2] = { &col_a[i], &b };
        ffi_arg r;
        ffi_call(&pjb_cif_add, FFI_FN(add), &r, av);
        big_out[i] = (int)r;
    }
    return pjb_now() - t0;
}
#endif

static int run_add(pj_parallel *par)
{
    return pj_run_bulk(par, &(pj_bulk){ .fn = fn_add, .n = (size_t)big_n, .out = big_out,
                                        .cols = (pj_col[]){ pj_col_array(col_a),
                                                            pj_col_const(1) } });
}

static double bulk_add(void *ctx)
{
    double t0 = pjb_now();
    if (run_add(ctx))
        die("pj_run_bulk", pj_last_errmsg());
    return pjb_now() - t0;
}

struct big_variant {
    char peer[48];
    double (*run)(void *ctx);
    void *ctx;
};

static long status_kib(const char *field)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long kib = -1;
    size_t len = strlen(field);
    while (f && fgets(line, sizeof line, f))
        if (strncmp(line, field, len) == 0)
            kib = atol(line + len + 1);
    if (f)
        fclose(f);
    return kib;
}

/* The peak resident memory a run adds above what is resident before it (the arrays, touched). */
static void print_memory(const char *peer, pj_parallel *par, const struct pjb_workload *w)
{
    FILE *f = fopen("/proc/self/clear_refs", "w"); /* "5": VmHWM back to the current RSS */
    if (!f || fputs("5", f) < 0) {
        if (f)
            fclose(f);
        return;
    }
    fclose(f);
    long before = status_kib("VmRSS:");
    if (run_add(par))
        die("pj_run_bulk", pj_last_errmsg());
    double mib = (double)(status_kib("VmHWM:") - before) / 1024.0;
    pjb_print(peer, PROG, w, "peak_mib_above_arrays", &mib, 1, pj_parallel_n_jobs(par), "");
}

static void check_big(const char *peer)
{
    for (long i = 0; i < big_n; i++)
        if (big_out[i] != (int)i + 1)
            die("wrong results", peer);
    memset(big_out, 0, (size_t)big_n * sizeof *big_out);
}

static void print_ratio(const struct big_variant *v, int k, int base, const double *t, int runs,
                        const struct pjb_workload *w, int workers)
{
    double fig[runs];
    char metric[64], extra[96];
    for (int r = 0; r < runs; r++)
        fig[r] = t[base * runs + r] / t[k * runs + r];
    snprintf(metric, sizeof metric, "vs_%s", v[base].peer);
    snprintf(extra, sizeof extra, "baseline=%s", v[base].peer);
    pjb_print(v[k].peer, PROG, w, metric, fig, runs, workers, extra);
}

static void bench_add(void)
{
    static const struct pjb_workload w = { "add10m", PJB_ADD, 0, 0, 0, 0 };
    struct pjb_workload wl = w;
    wl.n = big_n;
    struct big_variant v[4 + N_BACKENDS];
    int nv = 0, omp = -1;
    v[nv++] = (struct big_variant){ "c_serial_direct", serial_direct, NULL };
    v[nv++] = (struct big_variant){ "c_serial_ffi", serial_ffi, NULL };
#ifdef _OPENMP
    omp = nv;
    v[nv++] = (struct big_variant){ "omp_dyn64_direct", omp_direct, NULL };
    v[nv++] = (struct big_variant){ "omp_dyn64_ffi", omp_ffi, NULL };
#endif
    int first_parjob = nv;
    for (size_t b = 0; b < N_BACKENDS; b++) {
        v[nv] = (struct big_variant){ "", bulk_add, pars[b] };
        snprintf(v[nv].peer, sizeof v[nv].peer, "parjob_bulk_%s", backend_names[b]);
        nv++;
    }
    int runs = pjb_runs();
    double *t = calloc((size_t)nv * (size_t)runs, sizeof *t);
    for (int r = -1; r < runs; r++) /* -1: the warm-up (workers start), not recorded */
        for (int k = 0; k < nv; k++) {
            double e = v[k].run(v[k].ctx);
            check_big(v[k].peer);
            if (r >= 0)
                t[k * runs + r] = e;
        }
    for (int k = 0; k < nv; k++) {
        int workers = k >= first_parjob ? pj_parallel_n_jobs(v[k].ctx)
                      : strstr(v[k].peer, "serial") ? 1 : pjb_cpus();
        double fig[runs];
        for (int r = 0; r < runs; r++)
            fig[r] = (double)big_n / t[k * runs + r];
        pjb_print(v[k].peer, PROG, &wl, "tasks_per_s", fig, runs, workers, "");
        if (k < first_parjob)
            continue;
        if (omp >= 0)
            print_ratio(v, k, omp, t, runs, &wl, workers);
        print_ratio(v, k, 1, t, runs, &wl, workers);
    }
    for (size_t b = 0; b < N_BACKENDS; b++)
        print_memory(v[first_parjob + (int)b].peer, pars[b], &wl);
    free(t);
}

/* ---- the peers' spin workloads --------------------------------------------------------------- */

static double bulk_spin(const struct pjb_workload *w, void *ctx)
{
    double t0 = pjb_now();
    int rc = pj_run_bulk(ctx, &(pj_bulk){ .fn = fn_spin, .n = (size_t)w->n, .out = pjb_dout,
                                          .cols = (pj_col[]){ pj_col_const(w->arg) } });
    if (rc)
        die("pj_run_bulk", pj_last_errmsg());
    return pjb_now() - t0;
}

static void bench_spin(const struct pjb_workload *w)
{
    struct pjb_variant v[1 + N_BACKENDS];
    char names[N_BACKENDS][48];
    int nv = 0;
    v[nv++] = (struct pjb_variant){ "c_serial_direct", pjb_serial_direct, NULL };
    for (size_t b = 0; b < N_BACKENDS; b++) {
        snprintf(names[b], sizeof names[b], "parjob_bulk_%s", backend_names[b]);
        v[nv++] = (struct pjb_variant){ names[b], bulk_spin, pars[b] };
    }
    pjb_bench(PROG, w, v, nv, 0, pjb_cpus());
}

int main(void)
{
    size_t nw;
    const struct pjb_workload *w = pjb_init(&nw);
    const char *env = getenv("BULK_N");
    big_n = env ? atol(env) : 10000000;
    fn_add = PJ_FN(add, &ffi_type_sint, &ffi_type_sint, &ffi_type_sint);
    fn_spin = PJ_FN(spin_us, &ffi_type_double, &ffi_type_double);
    for (size_t b = 0; b < N_BACKENDS; b++) {
        pars[b] = pj_parallel_new(&(pj_config){
            .backend = backend_names[b], .n_jobs = b == 0 ? 1 : pjb_cpus() });
        if (!pars[b])
            die("pj_parallel_new", pj_last_errmsg());
    }
    printf("# %s: cpus=%d n=%ld iters_per_us=%.2f\n", PROG, pjb_cpus(), big_n,
           pjwork_iters_per_us());
    if (pjb_enabled("add10m")) {
        col_a = malloc((size_t)big_n * sizeof *col_a);
        big_out = calloc((size_t)big_n, sizeof *big_out);
        if (!col_a || !big_out)
            die("out of memory", "add10m");
        for (long i = 0; i < big_n; i++)
            col_a[i] = (int)i;
        bench_add();
        free(col_a), free(big_out);
    }
    for (size_t k = 0; k < nw; k++)
        if (w[k].kind == PJB_SPIN && pjb_enabled(w[k].name) && strcmp(w[k].name, "cpu5ms"))
            bench_spin(&w[k]);
    for (size_t b = 0; b < N_BACKENDS; b++)
        pj_parallel_free(pars[b]);
    pj_fn_free(fn_add), pj_fn_free(fn_spin);
    return 0;
}
