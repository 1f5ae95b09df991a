/* Issue 3's figures.
 *   dispatch_bench [backend] [what]   backend: threading (default), fork, spawn...
 *                                     what: all (default), rss, auto
 * rss:  ten million tasks through generator mode from a producer callback; prints the peak RSS
 *       above the process's baseline (target: under 32 MiB).
 * auto: for task durations from 50 ns to 100 ms, throughput of batch_size = PJ_AUTO against
 *       the best fixed batch size, measured in the same run, as a ratio (target: >= 0.9). */
#include <parjob.h>

#include "bench_util.h"

#include <string.h>
#include <sys/resource.h>

static volatile uint64_t spin_sink;
static double iters_per_ns;

static void calibrate(void)
{
    uint64_t n = 1u << 24;
    double t0 = bench_now();
    spin_sink = bench_spin(n);
    iters_per_ns = (double)n / ((bench_now() - t0) * 1e9);
}

static long peak_rss_kib(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_maxrss;
}

static int identity(int x)
{
    return x;
}

struct counter {
    pj_fn *fn;
    long next, n;
};

static int produce(void *state, pj_task **task)
{
    struct counter *c = state;
    if (c->next == c->n)
        return 0;
    *task = pj_delayed(c->fn, (int)c->next++);
    return *task ? 1 : -1;
}

static void bench_rss(const char *backend)
{
    pj_fn *fn = PJ_FN(identity, &ffi_type_sint, &ffi_type_sint);
    pj_parallel *par = pj_parallel_new(&(pj_config){ .n_jobs = 2, .backend = backend,
                                                     .return_as = PJ_GENERATOR });
    struct counter warm = { fn, 0, 1000 };
    pj_iter *it = pj_start_source(par, produce, &warm); /* starts the workers first */
    pj_result r;
    while (pj_next(it, &r) == 0)
        ;
    pj_iter_close(it);
    long base = peak_rss_kib();
    struct counter c = { fn, 0, 10 * 1000 * 1000 };
    double t0 = bench_now();
    it = pj_start_source(par, produce, &c);
    long expect = 0, wrong = 0;
    while (pj_next(it, &r) == 0)
        wrong += r.status != 0 || pj_result_int(&r) != expect++;
    int rc = pj_iter_close(it);
    double took = bench_now() - t0;
    char extra[160];
    snprintf(extra, sizeof extra, "backend=%s tasks=%ld wrong=%ld rc=%d seconds=%.2f "
             "target_mib=<32", backend, expect, wrong, rc, took);
    struct bench_stat s = { (peak_rss_kib() - base) / 1024.0, 0, 0, 1 };
    s.min = s.max = s.median;
    bench_print("dispatch", "generator_10M", "peak_rss_above_baseline_mib", s, extra);
    pj_parallel_free(par);
    pj_fn_free(fn);
}

/* One task of the sweep: spins for the given number of iterations. */
static uint64_t work(uint64_t iters)
{
    return bench_spin(iters);
}

static double median_throughput(const char *backend, long batch, pj_task **tasks, size_t n,
                                int runs)
{
    pj_parallel *par = pj_parallel_new(&(pj_config){ .n_jobs = 2, .backend = backend,
                                                     .batch_size = batch });
    double v[16];
    /* start the workers outside the measurement */
    bench_timed_run("dispatch_bench", par, tasks, n < 64 ? n : 64);
    for (int r = 0; r < runs; r++)
        v[r] = (double)n / bench_timed_run("dispatch_bench", par, tasks, n);
    pj_parallel_free(par);
    return bench_summarise(v, runs).median;
}

static void bench_auto(const char *backend)
{
    static const double durations_ns[] = { 50, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8 };
    static const long fixed[] = { 1, 4, 16, 64, 256, 1024, 4096, 16384, 65536 };
    pj_fn *fn = PJ_FN(work, &ffi_type_uint64, &ffi_type_uint64);
    int runs = bench_runs(3);
    runs = runs > 16 ? 16 : runs;
    for (size_t d = 0; d < sizeof durations_ns / sizeof *durations_ns; d++) {
        /* About 0.4 s of serial work per run, and at least 8 tasks a worker. */
        size_t n = (size_t)(0.4e9 / durations_ns[d]);
        n = n < 16 ? 16 : n;
        uint64_t iters = (uint64_t)(durations_ns[d] * iters_per_ns);
        pj_task **tasks = malloc(n * sizeof *tasks);
        for (size_t i = 0; i < n; i++)
            tasks[i] = pj_delayed(fn, iters ? iters : 1);
        double best = 0;
        long best_size = 0;
        for (size_t f = 0; f < sizeof fixed / sizeof *fixed; f++) {
            if ((size_t)fixed[f] * 4 > n && fixed[f] > 1)
                break; /* fewer than 2 batches a worker: cannot be the best */
            double t = median_throughput(backend, fixed[f], tasks, n, runs);
            if (t > best)
                best = t, best_size = fixed[f];
        }
        double automatic = median_throughput(backend, PJ_AUTO, tasks, n, runs);
        char workload[64], extra[160];
        snprintf(workload, sizeof workload, "task_%gns", durations_ns[d]);
        snprintf(extra, sizeof extra, "backend=%s best_fixed=%ld best_fixed_tasks_per_s=%.4g "
                 "auto_tasks_per_s=%.4g target=>=0.9", backend, best_size, best, automatic);
        struct bench_stat s = { automatic / best, automatic / best, automatic / best, runs };
        bench_print("dispatch", workload, "auto_vs_best_fixed", s, extra);
        for (size_t i = 0; i < n; i++)
            pj_task_free(tasks[i]);
        free(tasks);
    }
    pj_fn_free(fn);
}

int main(int argc, char **argv)
{
    const char *backend = argc > 1 ? argv[1] : "threading";
    const char *what = argc > 2 ? argv[2] : "all";
    calibrate();
    if (strcmp(what, "auto") != 0)
        bench_rss(backend);
    if (strcmp(what, "rss") != 0)
        bench_auto(backend);
    return 0;
}
