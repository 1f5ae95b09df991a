/* The mpi backend's figures (issue 12), run as rank 0 of an MPI job (scripts/bench starts it
 * with mpirun twice: 2 worker ranks of 1 local worker, and 1 worker rank of 2):
 *  - tiny: add() tasks per second, auto batching, on mpi and on fork in the same run;
 *  - cpu5ms: 5 ms compute tasks, speedup over the serial loop of the same calls, mpi and fork
 *    (PJWORK_ITERS_PER_US, which scripts/bench sets, gives every rank the same task length);
 *  - rank 0's CPU while it waits: CPU seconds of this whole process (dispatcher, pool I/O
 *    thread, MPI link thread) over the wall time of an mpi run of 1 s sleeping tasks, in % of
 *    one core.
 * fork runs first: once MPI has started, a fork of this process would copy MPI's state.
 *   usage: mpi_bench [n_jobs (2)] [tiny tasks (200000)] */
#include "bench_util.h"
#include "work.h"

#include <string.h>
#include <sys/resource.h>

static double cpu_s(void)
{
    struct rusage u;
    getrusage(RUSAGE_SELF, &u);
    return u.ru_utime.tv_sec + u.ru_utime.tv_usec / 1e6 + u.ru_stime.tv_sec +
           u.ru_stime.tv_usec / 1e6;
}

static pj_parallel *par_on(const char *backend, int n_jobs)
{
    pj_parallel *par = pj_parallel_new(&(pj_config){ .n_jobs = n_jobs, .backend = backend,
                                                     .batch_size = PJ_AUTO });
    if (!par) {
        fprintf(stderr, "mpi_bench: %s: %s\n", backend, pj_last_errmsg());
        exit(1);
    }
    return par;
}

static pj_task **tasks_of(pj_fn *fn, int n, int kind)
{
    pj_task **t = malloc((size_t)n * sizeof *t);
    for (int i = 0; i < n; i++)
        t[i] = kind == 0 ? pj_delayed(fn, i, 1) : kind == 1 ? pj_delayed(fn, 5000.0)
                                                            : pj_delayed(fn, 1.0);
    return t;
}

static void free_tasks(pj_task **t, int n)
{
    for (int i = 0; i < n; i++)
        pj_task_free(t[i]);
    free(t);
}

/* Median seconds of runs of tasks[0..n) on par (the first run, which starts the workers, not
 * counted). */
static struct bench_stat timed(pj_parallel *par, pj_task **tasks, int n, int runs)
{
    double v[16];
    bench_timed_run("mpi_bench", par, tasks, (size_t)n);
    for (int r = 0; r < runs; r++)
        v[r] = bench_timed_run("mpi_bench", par, tasks, (size_t)n);
    return bench_summarise(v, runs);
}

static void tiny(const char *backend, int n_jobs, int n, int runs)
{
    pj_fn *fn = PJ_FN(add, &ffi_type_sint, &ffi_type_sint, &ffi_type_sint);
    pj_task **t = tasks_of(fn, n, 0);
    pj_parallel *par = par_on(backend, n_jobs);
    struct bench_stat s = timed(par, t, n, runs);
    struct bench_stat rate = { n / s.median, n / s.max, n / s.min, s.runs };
    char extra[96];
    snprintf(extra, sizeof extra, "backend=%s n_jobs=%d tasks=%d", backend, n_jobs, n);
    bench_print("mpi_bench", "tiny", "tasks_per_s", rate, extra);
    pj_parallel_free(par);
    free_tasks(t, n);
    pj_fn_free(fn);
}

/* Speedup over the serial loop of the same calls, each run against a serial loop timed just
 * before it: on a shared machine the load changes between the two otherwise. */
static void cpu5ms(const char *backend, int n_jobs, int runs)
{
    int n = 40 * n_jobs;
    pj_fn *fn = PJ_FN(spin_us, &ffi_type_double, &ffi_type_double);
    pj_task **t = tasks_of(fn, n, 1);
    pj_parallel *par = par_on(backend, n_jobs);
    bench_timed_run("mpi_bench", par, t, (size_t)n); /* workers started */
    double v[16];
    for (int r = 0; r < runs; r++) {
        double t0 = bench_now();
        for (int i = 0; i < n; i++)
            spin_us(5000.0);
        double serial = bench_now() - t0;
        v[r] = serial / bench_timed_run("mpi_bench", par, t, (size_t)n);
    }
    char extra[96];
    snprintf(extra, sizeof extra, "backend=%s n_jobs=%d tasks=%d", backend, n_jobs, n);
    bench_print("mpi_bench", "cpu5ms", "speedup", bench_summarise(v, runs), extra);
    pj_parallel_free(par);
    free_tasks(t, n);
    pj_fn_free(fn);
}

/* Rank 0's CPU over an mpi run of n_jobs x 3 one-second sleeps: what waiting costs it. */
static void waiting_cpu(int n_jobs)
{
    pj_fn *fn = PJ_FN(sleep_s, &ffi_type_double, &ffi_type_double);
    int n = 3 * n_jobs;
    pj_task **t = tasks_of(fn, n, 2);
    pj_parallel *par = par_on("mpi", n_jobs);
    bench_timed_run("mpi_bench", par, t, 1); /* workers started */
    double c0 = cpu_s(), w0 = bench_now();
    bench_timed_run("mpi_bench", par, t, (size_t)n);
    double pct = 100 * (cpu_s() - c0) / (bench_now() - w0);
    struct bench_stat s = { pct, pct, pct, 1 };
    char extra[64];
    snprintf(extra, sizeof extra, "backend=mpi n_jobs=%d", n_jobs);
    bench_print("mpi_bench", "rank0_wait", "cpu_percent", s, extra);
    pj_parallel_free(par);
    free_tasks(t, n);
    pj_fn_free(fn);
}

int main(int argc, char **argv)
{
    int n_jobs = argc > 1 ? atoi(argv[1]) : 2;
    int n_tiny = argc > 2 ? atoi(argv[2]) : 200000;
    int runs = getenv("PARJOB_BENCH_RUNS") ? atoi(getenv("PARJOB_BENCH_RUNS")) : 5;
    if (runs < 1 || runs > 15)
        runs = 5;
    pjwork_calibrate();
    tiny("fork", n_jobs, n_tiny, runs);
    cpu5ms("fork", n_jobs, runs);
    tiny("mpi", n_jobs, n_tiny, runs);
    cpu5ms("mpi", n_jobs, runs);
    waiting_cpu(n_jobs);
    return 0;
}
