/* The fork backend against the serial loop it replaces, in the same run:
 *   tiny    int add(int, int) with auto batching: tasks per second, and the ratio to a serial
 *           loop of direct calls (what per-task overhead costs);
 *   cpu5ms  a ~5 ms CPU-bound task on 2 workers: tasks per second, and the speedup over the
 *           serial loop (the target: at least 1.9x).
 * Medians of PARJOB_BENCH_RUNS runs (default 5) with min and max; workers are started by a
 * warm-up run first, as a reused pj_parallel keeps them.  When Debian's python3-joblib is
 * installed (Debian's /usr/bin/python3 is asked first), joblib's default backend runs the tiny
 * workload too, and the last line is the comparison: fork's tiny-task rate over
 * joblib's, target at least 100 (tasks built beforehand, as the serial loop's arguments are;
 * joblib's clock also covers its delayed() calls: pj_delayed's own cost is core_bench's). */
#include <parjob.h>

#include "bench_util.h"

#include <stdint.h>
#include <string.h>

#define TINY_N 2000000
#define CPU_N 80

static int add(int a, int b)
{
    return a + b;
}

/* Calibrated once so one call takes about 5 ms on this machine. */
static long spin_iters;

static double spin(long iters)
{
    double x = 1.0;
    for (long k = 0; k < iters; k++)
        x = x * 1.0000001 + 1e-9;
    return x;
}

static void calibrate(void)
{
    long iters = 1000000;
    double t0 = bench_now();
    volatile double sink = spin(iters);
    (void)sink;
    double took = bench_now() - t0;
    spin_iters = (long)(iters * (0.005 / took));
}

static double serial_tiny(const int *a, int *out)
{
    int (*volatile call)(int, int) = add; /* a call per task, as the serial code would make */
    double t0 = bench_now();
    for (int k = 0; k < TINY_N; k++)
        out[k] = call(a[k], k);
    return bench_now() - t0;
}

static double serial_cpu(void)
{
    volatile double sink = 0;
    double t0 = bench_now();
    for (int k = 0; k < CPU_N; k++)
        sink += spin(spin_iters);
    return bench_now() - t0;
}

/* Prints the figure line; returns the median tasks per second. */
static double report(const char *workload, double *par_s, double *ser_s, int runs, size_t n)
{
    double tp[runs], ts[runs];
    for (int r = 0; r < runs; r++) {
        tp[r] = n / par_s[r];
        ts[r] = n / ser_s[r];
    }
    struct bench_stat p = bench_summarise(tp, runs), s = bench_summarise(ts, runs);
    char extra[96];
    snprintf(extra, sizeof extra, "ratio_vs_serial=%.4g serial_median=%.6g", p.median / s.median,
             s.median);
    bench_print("fork", workload, "tasks_per_s", p, extra);
    return p.median;
}

static double tiny(int runs)
{
    pj_fn *fn = PJ_FN(add, &ffi_type_sint, &ffi_type_sint, &ffi_type_sint);
    pj_task **tasks = malloc(TINY_N * sizeof *tasks);
    int *a = malloc(TINY_N * sizeof *a), *out = malloc(TINY_N * sizeof *out);
    for (int k = 0; k < TINY_N; k++) {
        a[k] = k;
        tasks[k] = pj_delayed(fn, k, k);
    }
    pj_parallel *par = pj_parallel_new(&(pj_config){ .backend = "fork", .n_jobs = 2 });
    bench_timed_run("process_bench", par, tasks, TINY_N / 10);
    double par_s[runs], ser_s[runs];
    for (int r = 0; r < runs; r++) {
        ser_s[r] = serial_tiny(a, out);
        par_s[r] = bench_timed_run("process_bench", par, tasks, TINY_N);
    }
    double median = report("tiny", par_s, ser_s, runs, TINY_N);
    pj_parallel_free(par);
    for (int k = 0; k < TINY_N; k++)
        pj_task_free(tasks[k]);
    free(tasks);
    free(a);
    free(out);
    pj_fn_free(fn);
    return median;
}

static void cpu5ms(int runs)
{
    pj_fn *fn = PJ_FN(spin, &ffi_type_double, &ffi_type_slong);
    pj_task *tasks[CPU_N];
    for (int k = 0; k < CPU_N; k++)
        tasks[k] = pj_delayed(fn, spin_iters);
    pj_parallel *par = pj_parallel_new(&(pj_config){ .backend = "fork", .n_jobs = 2 });
    bench_timed_run("process_bench", par, tasks, 4);
    double par_s[runs], ser_s[runs];
    for (int r = 0; r < runs; r++) {
        ser_s[r] = serial_cpu();
        par_s[r] = bench_timed_run("process_bench", par, tasks, CPU_N);
    }
    report("cpu5ms", par_s, ser_s, runs, CPU_N);
    pj_parallel_free(par);
    for (int k = 0; k < CPU_N; k++)
        pj_task_free(tasks[k]);
    pj_fn_free(fn);
}

/* joblib's default backend (loky) on the tiny workload, when python3-joblib is installed
 * (Debian's python first: a python of one's own may lack it).  Its median, or 0. */
static double joblib_tiny(void)
{
    const char *py =
        "$(command -v /usr/bin/python3 || command -v python3) -c \"import time,statistics as st\n"
        "from joblib import Parallel, delayed\n"
        "def add(a,b): return a+b\n"
        "n=100000; p=Parallel(n_jobs=2); p(delayed(add)(i,i) for i in range(100)); v=[]\n"
        "for _ in range(5):\n"
        "  t=time.perf_counter(); p(delayed(add)(i,i) for i in range(n)); "
        "v.append(n/(time.perf_counter()-t))\n"
        "print(st.median(v), min(v), max(v))\" 2>/dev/null";
    FILE *f = popen(py, "r");
    double m = 0, lo, hi;
    if (f && fscanf(f, "%lf %lf %lf", &m, &lo, &hi) == 3)
        printf("bench=joblib workload=tiny metric=tasks_per_s median=%.6g min=%.6g max=%.6g "
               "runs=5 backend=loky\n", m, lo, hi);
    else
        printf("# joblib not available (apt-get install python3-joblib): no joblib figure\n");
    if (f)
        pclose(f);
    return m;
}

int main(void)
{
    int runs = bench_runs(5);
    calibrate();
    double fork_tiny = tiny(runs);
    cpu5ms(runs);
    double loky = joblib_tiny();
    if (loky > 0) /* the target: at least 100 */
        printf("bench=fork workload=tiny metric=ratio_vs_joblib median=%.4g target=>=100\n",
               fork_tiny / loky);
    return 0;
}
