/* Shared by the bench programs: a clock, medians of repeated runs, and one output format:
 *   bench=<program> workload=<w> metric=<m> median=<x> min=<x> max=<x> runs=<n> [extra]
 * Every figure is a median over several runs, and ratios are taken against a baseline measured
 * in the same run, because absolute times drift on a shared machine. */
#ifndef PJ_BENCH_UTIL_H
#define PJ_BENCH_UTIL_H

#include <parjob.h>

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

/* A busy loop of iters LCG steps the compiler cannot drop: the work a task spins on. */
static inline uint64_t bench_spin(uint64_t iters)
{
    uint64_t x = iters;
    for (uint64_t i = 0; i < iters; i++)
        x = x * 6364136223846793005u + 1442695040888963407u;
    return x;
}

static inline double bench_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static inline int bench_cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

struct bench_stat {
    double median, min, max;
    int runs;
};

static inline struct bench_stat bench_summarise(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, bench_cmp_double);
    struct bench_stat s = { n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2, v[0], v[n - 1], n };
    return s;
}

static inline void bench_print(const char *bench, const char *workload, const char *metric,
                               struct bench_stat s, const char *extra)
{
    printf("bench=%s workload=%s metric=%s median=%.6g min=%.6g max=%.6g runs=%d%s%s\n", bench,
           workload, metric, s.median, s.min, s.max, s.runs, extra ? " " : "",
           extra ? extra : "");
    fflush(stdout);
}

/* pj_run of tasks[0..n) and pj_results_free, timed: seconds.  A failed run ends the program
 * (a figure from a run that failed would be meaningless). */
static inline double bench_timed_run(const char *prog, pj_parallel *par, pj_task **tasks,
                                     size_t n)
{
    pj_results *res;
    double t0 = bench_now();
    int rc = pj_run(par, tasks, n, &res);
    double took = bench_now() - t0;
    if (rc) {
        fprintf(stderr, "%s: run failed on %s: %s\n", prog, pj_parallel_backend(par),
                pj_parallel_errmsg(par));
        exit(1);
    }
    pj_results_free(res);
    return took;
}

static inline int bench_runs(int dflt)
{
    const char *s = getenv("PARJOB_BENCH_RUNS");
    int n = s ? atoi(s) : 0;
    return n > 0 ? n : dflt;
}

#endif
