/* Futures: what one future costs, per backend present in this build.
 *   latency_us     submit one task and wait for its result, one future at a time (the median
 *                  of 500 round trips per run)
 *   throughput     futures per second: submit 100 000 futures at once, then collect every
 *                  result and free them (task records are made before the clock starts)
 * Printed as: bench=futures backend=<b> metric=<m> median=<x> min=<x> max=<x> runs=<n>
 * PARJOB_BENCH_RUNS sets the runs (default 5); PARJOB_BENCH_N the futures of a throughput run. */
#include "bench_util.h"

#include <parjob.h>

#include <stdlib.h>

enum { ROUND_TRIPS = 500, N_DEFAULT = 100000, WORKERS = 4 };

static int square(int x)
{
    return x * x;
}

static void print_stat(const char *backend, const char *metric, double *v, int n)
{
    struct bench_stat s = bench_summarise(v, n);
    printf("bench=futures backend=%s metric=%s median=%.6g min=%.6g max=%.6g runs=%d\n", backend,
           metric, s.median, s.min, s.max, s.runs);
    fflush(stdout);
}

/* The median of ROUND_TRIPS submit-to-result latencies, in microseconds; < 0 on error. */
static double latency_run(pj_executor *ex, pj_task *t)
{
    double lat[ROUND_TRIPS];
    for (int k = 0; k < ROUND_TRIPS; k++) {
        double t0 = bench_now();
        pj_future *f = pj_submit(ex, t);
        const pj_result *r;
        if (!f || pj_future_result(f, PJ_FOREVER, &r) != 0 || pj_result_int(r) != 49)
            return -1;
        lat[k] = (bench_now() - t0) * 1e6;
        pj_future_free(f);
    }
    return bench_summarise(lat, ROUND_TRIPS).median;
}

/* Futures per second over n futures; < 0 on error. */
static double throughput_run(pj_executor *ex, pj_task **tasks, pj_future **futures, size_t n)
{
    double t0 = bench_now();
    for (size_t i = 0; i < n; i++)
        if (!(futures[i] = pj_submit(ex, tasks[i])))
            return -1;
    int bad = 0;
    for (size_t i = 0; i < n; i++) {
        const pj_result *r;
        bad |= pj_future_result(futures[i], PJ_FOREVER, &r) != 0 ||
               pj_result_int(r) != (int)(i % 100) * (int)(i % 100);
        pj_future_free(futures[i]);
    }
    double took = bench_now() - t0;
    return bad ? -1 : (double)n / took;
}

int main(void)
{
    static const char *const backends[] = { "sequential", "threading", "fork", "spawn" };
    int runs = bench_runs(5);
    const char *env_n = getenv("PARJOB_BENCH_N");
    size_t n = env_n && atol(env_n) > 0 ? (size_t)atol(env_n) : N_DEFAULT;
    pj_fn *fn = PJ_FN(square, &ffi_type_sint, &ffi_type_sint);
    pj_task *one = pj_delayed(fn, 7);
    pj_task **tasks = calloc(n, sizeof *tasks);
    pj_future **futures = calloc(n, sizeof *futures);
    double *lat = calloc((size_t)runs, sizeof *lat), *thr = calloc((size_t)runs, sizeof *thr);
    if (!fn || !one || !tasks || !futures || !lat || !thr)
        return 1;
    for (size_t i = 0; i < n; i++)
        if (!(tasks[i] = pj_delayed(fn, (int)(i % 100))))
            return 1;
    int rc = 0;
    for (size_t b = 0; b < sizeof backends / sizeof backends[0]; b++) {
        if (!pj_backend_find(backends[b])) {
            printf("# futures_bench: backend %s is not in this build\n", backends[b]);
            continue;
        }
        int workers = b == 0 ? 1 : WORKERS;
        pj_executor *ex = pj_executor_new(&(pj_config){ .n_jobs = workers,
                                                        .backend = backends[b] });
        if (!ex) {
            fprintf(stderr, "futures_bench: %s: %s\n", backends[b], pj_last_errmsg());
            rc = 1;
            continue;
        }
        latency_run(ex, one); /* warm up: workers started, caches filled */
        for (int k = 0; k < runs; k++) {
            lat[k] = latency_run(ex, one);
            thr[k] = throughput_run(ex, tasks, futures, n);
            if (lat[k] < 0 || thr[k] < 0) {
                fprintf(stderr, "futures_bench: %s: a future failed\n", backends[b]);
                rc = 1;
                break;
            }
        }
        if (!rc) {
            print_stat(backends[b], "latency_us", lat, runs);
            char metric[64];
            snprintf(metric, sizeof metric, "throughput_per_s_n%zu_w%d", n, workers);
            print_stat(backends[b], metric, thr, runs);
        }
        pj_executor_free(ex);
    }
    for (size_t i = 0; i < n; i++)
        pj_task_free(tasks[i]);
    free(tasks);
    free(futures);
    free(lat);
    free(thr);
    pj_task_free(one);
    pj_fn_free(fn);
    return rc;
}
