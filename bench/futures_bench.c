/* Futures (issue 7): what one future costs, on every backend in this build, against
 * concurrent.futures.ProcessPoolExecutor.submit (bench/peers/py_peers.py, workload "futures"),
 * both calling the same C function: `int add(int, int)` of libpjwork (bench/peers/work.c).
 *   futures_latency     submit one future and wait for its result, one at a time: latency_s is
 *                       the median of ROUND_TRIPS round trips, per run
 *   futures_throughput  submit n futures at once (task records made before the clock starts),
 *                       then collect every result and free it: tasks_per_s
 * Workers: the CPUs this process may run on (sched_getaffinity, as the Python peer counts
 * them); 1 for the sequential backend.  Printed in the peers' format, so bench/peers/report.py
 * puts parjob and Python in one table:
 *   peer=parjob_futures_<backend> prog=futures_bench workload=<w> metric=<m> median=<x> ...
 * PARJOB_BENCH_RUNS sets the runs (default 5), PARJOB_BENCH_N the futures of a throughput run
 * (default 100 000); with PJBENCH_ONLY set (scripts/bench), runs only if it names "futures". */
#include "bench_util.h"
#include "work.h"

#include <parjob.h>

#include <sched.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

enum { ROUND_TRIPS = 500, N_DEFAULT = 100000 };

static void emit(const char *backend, const char *workload, const char *metric, double *v,
                 int runs, size_t n, int workers)
{
    struct bench_stat s = bench_summarise(v, runs);
    printf("peer=parjob_futures_%s prog=futures_bench workload=%s metric=%s median=%.6g "
           "min=%.6g max=%.6g runs=%d n=%zu workers=%d\n", backend, workload, metric, s.median,
           s.min, s.max, s.runs, n, workers);
    fflush(stdout);
}

/* The median of ROUND_TRIPS submit-to-result latencies, in seconds; < 0 on error. */
static double latency_run(pj_executor *ex, pj_task *t)
{
    double lat[ROUND_TRIPS];
    for (int k = 0; k < ROUND_TRIPS; k++) {
        double t0 = bench_now();
        pj_future *f = pj_submit(ex, t);
        const pj_result *r;
        if (!f || pj_future_result(f, PJ_FOREVER, &r) != 0 || pj_result_int(r) != 3)
            return -1;
        lat[k] = bench_now() - t0;
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
               pj_result_int(r) != (int)(i % 1000) + 1;
        pj_future_free(futures[i]);
    }
    double took = bench_now() - t0;
    return bad ? -1 : (double)n / took;
}

static int usable_cpus(void)
{
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) != 0)
        return 1;
    int n = CPU_COUNT(&set);
    return n > 0 ? n : 1;
}

static bool wanted(void)
{
    const char *only = getenv("PJBENCH_ONLY");
    if (!only || !*only)
        return true;
    char *list = strdup(only), *save = NULL;
    bool hit = false;
    for (char *w = strtok_r(list, ",", &save); w && !hit; w = strtok_r(NULL, ",", &save))
        hit = strcmp(w, "futures") == 0;
    free(list);
    return hit;
}

int main(void)
{
    static const char *const backends[] = { "sequential", "threading", "fork", "spawn" };
    if (!wanted()) {
        printf("# futures_bench: skipped (PJBENCH_ONLY does not name futures)\n");
        return 0;
    }
    int runs = bench_runs(5), cpus = usable_cpus();
    const char *env_n = getenv("PARJOB_BENCH_N");
    size_t n = env_n && atol(env_n) > 0 ? (size_t)atol(env_n) : N_DEFAULT;
    pj_fn *fn = PJ_FN(add, &ffi_type_sint, &ffi_type_sint, &ffi_type_sint);
    pj_task *one = pj_delayed(fn, 1, 2);
    pj_task **tasks = calloc(n, sizeof *tasks);
    pj_future **futures = calloc(n, sizeof *futures);
    double *lat = calloc((size_t)runs, sizeof *lat), *thr = calloc((size_t)runs, sizeof *thr);
    if (!fn || !one || !tasks || !futures || !lat || !thr)
        return 1;
    for (size_t i = 0; i < n; i++)
        if (!(tasks[i] = pj_delayed(fn, (int)(i % 1000), 1)))
            return 1;
    printf("# futures_bench: cpus=%d round_trips=%d n=%zu runs=%d\n", cpus, ROUND_TRIPS, n, runs);
    int rc = 0;
    for (size_t b = 0; b < sizeof backends / sizeof backends[0]; b++) {
        if (!pj_backend_find(backends[b])) {
            printf("# futures_bench: backend %s is not in this build\n", backends[b]);
            continue;
        }
        int workers = b == 0 ? 1 : cpus;
        pj_executor *ex = pj_executor_new(&(pj_config){ .n_jobs = workers,
                                                        .backend = backends[b] });
        if (!ex) {
            fprintf(stderr, "futures_bench: %s: %s\n", backends[b], pj_last_errmsg());
            rc = 1;
            continue;
        }
        bool ok = latency_run(ex, one) >= 0; /* warm up: workers started, caches filled */
        for (int k = 0; ok && k < runs; k++) {
            lat[k] = latency_run(ex, one);
            thr[k] = throughput_run(ex, tasks, futures, n);
            ok = lat[k] >= 0 && thr[k] >= 0;
        }
        if (ok) {
            emit(backends[b], "futures_latency", "latency_s", lat, runs, ROUND_TRIPS, workers);
            emit(backends[b], "futures_throughput", "tasks_per_s", thr, runs, n, workers);
        } else {
            fprintf(stderr, "futures_bench: %s: a future failed\n", backends[b]);
            rc = 1;
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
