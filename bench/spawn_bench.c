/* Issue 5's figures: the spawn backend against fork (and serial) in the same run.
 *   - start-up: a fresh pj_parallel to its first result, and to every worker having run a task,
 *     for 2 and 10 workers (target: 10 workers ready in under 50 ms);
 *   - steady state: tiny-task throughput (int add(int, int), auto batching) and a 5 ms CPU-bound
 *     task's speedup, 2 workers (target: spawn within 10% of fork);
 *   - the seed example: ten 1-second sleeps, n_jobs = 10, on every backend (target: < 1.1 s).
 *   spawn_bench [n_tiny_tasks]   (default 1 000 000); PARJOB_BENCH_RUNS sets the runs (>= 5).
 *   PARJOB_BENCH_QUICK=1 skips the seed example (15 s of sleeping). */
#include <parjob.h>

#include "bench_util.h"

#include <stdbool.h>
#include <string.h>

#define MAX_RUNS 32
#define READY_TASK_S 0.020 /* each worker's task in the "all ready" probe */

static int add(int a, int b)
{
    return a + b;
}

static double wait_seconds(double seconds)
{
    struct timespec ts = { (time_t)seconds, (long)((seconds - (time_t)seconds) * 1e9) };
    nanosleep(&ts, NULL);
    return seconds;
}

/* About 5 ms of arithmetic on this machine after calibrate(); the result defeats the optimiser. */
static double spin(long iterations)
{
    double x = 0;
    for (long i = 0; i < iterations; i++)
        x += (double)(i % 7) * 1e-9;
    return x;
}

static long calibrate_5ms(void)
{
    long n = 100000;
    for (;;) {
        double t0 = bench_now();
        volatile double sink = spin(n);
        double t = bench_now() - t0;
        (void)sink;
        if (t > 0.02)
            return (long)((double)n * 0.005 / t);
        n *= 2;
    }
}

static bool have_backend(const char *name)
{
    if (pj_backend_find(name))
        return true;
    printf("bench=spawn backend=%s skipped: not built in\n", name);
    return false;
}

static pj_parallel *new_par(const char *backend, int n_jobs, long batch)
{
    pj_parallel *par = pj_parallel_new(&(pj_config){ .n_jobs = n_jobs, .backend = backend,
                                                     .batch_size = batch });
    if (!par) {
        fprintf(stderr, "spawn_bench: %s: %s\n", backend, pj_last_errmsg());
        exit(1);
    }
    return par;
}

static void print_stat(const char *workload, const char *metric, double *v, int runs,
                       const char *extra)
{
    bench_print("spawn", workload, metric, bench_summarise(v, runs), extra);
}

/* ---- start-up ------------------------------------------------------------------------------ */

/* A fresh handle's first result: the time to start one worker and get a task back. */
static double first_result_ms(const char *backend, int n_jobs, pj_task *probe)
{
    double t0 = bench_now();
    pj_parallel *par = pj_parallel_new(&(pj_config){ .n_jobs = n_jobs, .backend = backend,
                                                     .batch_size = 1,
                                                     .return_as = PJ_GENERATOR_UNORDERED });
    pj_iter *it = par ? pj_start(par, &probe, 1) : NULL;
    pj_result r;
    if (!it || pj_next(it, &r) || r.status) {
        fprintf(stderr, "spawn_bench: first result on %s failed: %s\n", backend,
                par ? pj_parallel_errmsg(par) : pj_last_errmsg());
        exit(1);
    }
    double t = (bench_now() - t0) * 1e3;
    pj_iter_close(it);
    pj_parallel_free(par);
    return t;
}

/* Every worker ready: n_jobs tasks of READY_TASK_S each, one per batch, finish together only
 * when all n_jobs workers run one each; the wall time less the task is the ready time. */
static double all_ready_ms(const char *backend, int n_jobs, pj_task **sleeps)
{
    double t0 = bench_now();
    pj_parallel *par = new_par(backend, n_jobs, 1);
    bench_timed_run("spawn_bench", par, sleeps, (size_t)n_jobs);
    double t = (bench_now() - t0 - READY_TASK_S) * 1e3;
    pj_parallel_free(par);
    return t;
}

static void bench_startup(int runs)
{
    pj_fn *add_fn = PJ_FN(add, &ffi_type_sint, &ffi_type_sint, &ffi_type_sint);
    pj_fn *sleep_fn = PJ_FN(wait_seconds, &ffi_type_double, &ffi_type_double);
    pj_task *probe = pj_delayed(add_fn, 1, 2);
    pj_task *sleeps[10];
    for (int i = 0; i < 10; i++)
        sleeps[i] = pj_delayed(sleep_fn, READY_TASK_S);
    const char *backends[] = { "spawn", "fork" };
    const int workers[] = { 2, 10 };
    for (size_t b = 0; b < 2; b++) {
        if (!have_backend(backends[b]))
            continue;
        for (size_t w = 0; w < 2; w++) {
            double v[MAX_RUNS];
            char extra[96];
            snprintf(extra, sizeof extra, "backend=%s n_jobs=%d%s", backends[b], workers[w],
                     workers[w] == 10 ? " target_all_ready=<50" : "");
            for (int r = 0; r < runs; r++)
                v[r] = first_result_ms(backends[b], workers[w], probe);
            print_stat("startup", "first_result_ms", v, runs, extra);
            for (int r = 0; r < runs; r++)
                v[r] = all_ready_ms(backends[b], workers[w], sleeps);
            print_stat("startup", "all_ready_ms", v, runs, extra);
        }
    }
    for (int i = 0; i < 10; i++)
        pj_task_free(sleeps[i]);
    pj_task_free(probe);
    pj_fn_free(sleep_fn);
    pj_fn_free(add_fn);
}

/* ---- steady state -------------------------------------------------------------------------- */

static double timed_run(pj_parallel *par, pj_task **tasks, size_t n)
{
    double t0 = bench_now();
    bench_timed_run("spawn_bench", par, tasks, n);
    return bench_now() - t0;
}

/* Warm handles (workers started, auto batch size settled), measured round-robin: a round runs
 * every backend once, so load from elsewhere on the machine hits them alike, and the ratios are
 * taken within a round before the median. */
static void bench_steady(size_t n_tiny, int runs)
{
    pj_fn *add_fn = PJ_FN(add, &ffi_type_sint, &ffi_type_sint, &ffi_type_sint);
    pj_fn *spin_fn = PJ_FN(spin, &ffi_type_double, &ffi_type_slong);
    pj_task **tiny = malloc(n_tiny * sizeof *tiny);
    for (size_t i = 0; i < n_tiny; i++)
        tiny[i] = pj_delayed(add_fn, (int)i, 1);
    long iters = calibrate_5ms();
    enum { N_CPU = 40, SEQ = 0, FORK = 1, SPAWN = 2 };
    pj_task *cpu[N_CPU];
    for (int i = 0; i < N_CPU; i++)
        cpu[i] = pj_delayed(spin_fn, iters);

    const char *names[] = { "sequential", "fork", "spawn" };
    pj_parallel *par[3] = { NULL };
    for (int b = 0; b < 3; b++) {
        if (!have_backend(names[b]))
            continue;
        par[b] = new_par(names[b], b == SEQ ? 1 : 2, PJ_AUTO);
        bench_timed_run("spawn_bench", par[b], tiny, n_tiny);
        bench_timed_run("spawn_bench", par[b], cpu, N_CPU);
    }
    double tiny_rate[3][MAX_RUNS], cpu_s[3][MAX_RUNS], v[MAX_RUNS];
    for (int r = 0; r < runs; r++)
        for (int b = 0; b < 3; b++)
            if (par[b]) {
                tiny_rate[b][r] = (double)n_tiny / timed_run(par[b], tiny, n_tiny);
                cpu_s[b][r] = timed_run(par[b], cpu, N_CPU);
            }
    char extra[160];
    for (int b = 0; b < 3; b++) {
        if (!par[b])
            continue;
        snprintf(extra, sizeof extra, "backend=%s n_jobs=%d batch=auto", names[b],
                 b == SEQ ? 1 : 2);
        memcpy(v, tiny_rate[b], (size_t)runs * sizeof *v);
        print_stat("tiny_add", "tasks_per_s", v, runs, extra);
        for (int r = 0; r < runs; r++)
            v[r] = cpu_s[SEQ][r] / cpu_s[b][r];
        snprintf(extra, sizeof extra, "backend=%s n_jobs=%d task=5ms_cpu tasks=%d%s", names[b],
                 b == SEQ ? 1 : 2, N_CPU, b == SEQ ? "" : " target=>=1.9");
        print_stat("cpu_5ms", "speedup_vs_serial", v, runs, extra);
    }
    if (par[FORK] && par[SPAWN]) {
        for (int r = 0; r < runs; r++)
            v[r] = tiny_rate[SPAWN][r] / tiny_rate[FORK][r];
        print_stat("tiny_add", "spawn_over_fork", v, runs, "n_jobs=2 target=>=0.9");
        for (int r = 0; r < runs; r++)
            v[r] = cpu_s[FORK][r] / cpu_s[SPAWN][r];
        print_stat("cpu_5ms", "spawn_over_fork", v, runs, "n_jobs=2 target=>=0.9");
    }
    for (int b = 0; b < 3; b++)
        pj_parallel_free(par[b]);
    for (int i = 0; i < N_CPU; i++)
        pj_task_free(cpu[i]);
    for (size_t i = 0; i < n_tiny; i++)
        pj_task_free(tiny[i]);
    free(tiny);
    pj_fn_free(spin_fn);
    pj_fn_free(add_fn);
}

/* ---- the seed example ---------------------------------------------------------------------- */

static void bench_seed(int runs)
{
    pj_fn *sleep_fn = PJ_FN(wait_seconds, &ffi_type_double, &ffi_type_double);
    pj_task *tasks[10];
    for (int i = 0; i < 10; i++)
        tasks[i] = pj_delayed(sleep_fn, 1);
    const char *backends[] = { "threading", "fork", "spawn" };
    for (size_t b = 0; b < 3; b++) {
        if (!have_backend(backends[b]))
            continue;
        double v[MAX_RUNS];
        for (int r = 0; r < runs; r++) {
            double t0 = bench_now(); /* as examples/seed_sleep.c: the handle's start-up counts */
            pj_parallel *par = new_par(backends[b], 10, PJ_AUTO);
            bench_timed_run("spawn_bench", par, tasks, 10);
            pj_parallel_free(par);
            v[r] = bench_now() - t0;
        }
        char extra[64];
        snprintf(extra, sizeof extra, "backend=%s n_jobs=10 target=<1.1", backends[b]);
        print_stat("seed_sleep_10x1s", "wall_s", v, runs, extra);
    }
    for (int i = 0; i < 10; i++)
        pj_task_free(tasks[i]);
    pj_fn_free(sleep_fn);
}

int main(int argc, char **argv)
{
    size_t n_tiny = argc > 1 ? strtoul(argv[1], NULL, 10) : 1000000;
    int runs = bench_runs(5);
    runs = runs < 5 ? 5 : runs > MAX_RUNS ? MAX_RUNS : runs;
    if (n_tiny == 0)
        n_tiny = 1;
    bench_startup(runs);
    bench_steady(n_tiny, runs);
    const char *quick = getenv("PARJOB_BENCH_QUICK");
    if (!quick || !*quick || *quick == '0')
        bench_seed(runs);
    return 0;
}
