/* Inner threads (issue 19): tasks that are themselves OpenMP code, n_jobs = -1, with parjob's
 * limit on the threads of each worker's OpenMP (config.inner_max_num_threads = 0, joblib's
 * default: usable CPUs / n_jobs) and without it (-1: every worker's OpenMP starts a thread per
 * CPU, n_jobs * CPUs threads in all).
 *
 *   omp50ms  TASKS tasks, each omp_steps(): 50 parallel loops of ~1 ms of one core's work
 *            (~50 ms of CPU a task), a solver's time steps.
 *
 * The baseline is the loop a program would write without parjob: the same tasks one after
 * another on this thread, each with OpenMP's default team (every CPU).  For each backend and
 * setting: the speedup over that baseline (median/min/max of PARJOB_BENCH_RUNS rounds, each
 * a serial loop then one run of every setting, after a warm-up run), and the context switches
 * of one more run of each setting alone (getrusage of this process and its reaped workers,
 * from pj_parallel_new to pj_parallel_free: csw = voluntary + involuntary, nivcsw =
 * involuntary, the preemptions oversubscription causes; cpu_s = user + system seconds, which
 * threads waiting at a barrier for a team mate off the CPU inflate).  On a machine others
 * load, the wall-clock speedup also measures the share of the CPUs a setting takes from
 * them (more threads, more share); the CPU seconds do not.  When Debian's python3-joblib is installed, inner_joblib.py runs the same
 * omp_steps (this build's libpjomp, through ctypes) with joblib's default backend, limit on
 * (joblib's default) and off (inner_max_num_threads = CPUs), against its own serial loop. */
#include <parjob.h>

#include "bench_util.h"

#include <omp.h>
#include <string.h>
#include <sys/resource.h>

#define TASKS 16
#define STEPS 50
#define MAX_RUNS 64

double omp_steps(long steps, long iters_per_step);

static long iters_per_step;

/* Iterations that make one step ~1 ms on one thread. */
static void calibrate(void)
{
    int before = omp_get_max_threads();
    omp_set_num_threads(1);
    long iters = 1000000;
    omp_steps(1, iters); /* page in, start the runtime */
    double t0 = bench_now();
    omp_steps(5, iters);
    double took = (bench_now() - t0) / 5;
    iters_per_step = (long)((double)iters * (0.001 / took));
    omp_set_num_threads(before);
}

/* What this process and its reaped children have used so far. */
struct usage {
    long csw, nivcsw;            /* context switches: all, involuntary */
    double cpu_s;                /* user + system */
};

static struct usage usage_now(void)
{
    struct rusage self, children;
    getrusage(RUSAGE_SELF, &self);
    getrusage(RUSAGE_CHILDREN, &children);
    struct usage u = { .nivcsw = self.ru_nivcsw + children.ru_nivcsw };
    u.csw = self.ru_nvcsw + children.ru_nvcsw + u.nivcsw;
    const struct timeval *tv[] = { &self.ru_utime, &self.ru_stime, &children.ru_utime,
                                   &children.ru_stime };
    for (int k = 0; k < 4; k++)
        u.cpu_s += (double)tv[k]->tv_sec + (double)tv[k]->tv_usec / 1e6;
    return u;
}

static double serial_run(void)
{
    double t0 = bench_now();
    volatile double sink = 0;
    for (int k = 0; k < TASKS; k++)
        sink += omp_steps(STEPS, iters_per_step);
    (void)sink;
    return bench_now() - t0;
}

struct setting {
    const char *backend;
    int inner;                   /* config.inner_max_num_threads: 0 the limit, -1 none */
    pj_parallel *par;
    double speedup[MAX_RUNS];
};

static pj_parallel *open_par(const struct setting *c)
{
    pj_parallel *par = pj_parallel_new(&(pj_config){
        .n_jobs = -1, .backend = c->backend, .batch_size = 1, .inner_max_num_threads = c->inner });
    if (!par) {
        fprintf(stderr, "inner_bench: %s\n", pj_last_errmsg());
        exit(1);
    }
    return par;
}

/* What one run of c uses, from pj_parallel_new to pj_parallel_free (its workers are reaped
 * by then, so RUSAGE_CHILDREN holds theirs). */
static struct usage run_usage(const struct setting *c, pj_task **tasks)
{
    struct usage u0 = usage_now();
    pj_parallel *par = open_par(c);
    bench_timed_run("inner_bench", par, tasks, TASKS);
    pj_parallel_free(par);
    struct usage u1 = usage_now();
    return (struct usage){ u1.csw - u0.csw, u1.nivcsw - u0.nivcsw, u1.cpu_s - u0.cpu_s };
}

/* joblib on the same function, when Debian's python3-joblib is there. */
static void run_joblib(int runs)
{
    char cmd[1024];
    snprintf(cmd, sizeof cmd,
             "PY=$(command -v /usr/bin/python3 || command -v python3); "
             "$PY -c 'import joblib' 2>/dev/null && $PY %s %s %d %d %ld %d || "
             "echo 'inner_bench: joblib not installed, its figures skipped' >&2",
             INNER_JOBLIB_PY, PJOMP_LIB, TASKS, STEPS, iters_per_step, runs);
    fflush(stdout);
    if (system(cmd) != 0)
        fprintf(stderr, "inner_bench: inner_joblib.py failed\n");
}

int main(void)
{
    int runs = bench_runs(5);
    runs = runs > MAX_RUNS ? MAX_RUNS : runs;
    calibrate();
    pj_fn *fn = PJ_FN(omp_steps, &ffi_type_double, &ffi_type_slong, &ffi_type_slong);
    pj_task *tasks[TASKS];
    for (int k = 0; k < TASKS; k++)
        tasks[k] = pj_delayed(fn, (long)STEPS, iters_per_step);
    /* Every setting's workers stay up and the runs interleave, a round of the serial loop and
     * each setting at a time: the machine's load drifts, and each speedup is over the serial
     * loop of its own round. */
    struct setting settings[] = {
        { .backend = "threading", .inner = 0 }, { .backend = "threading", .inner = -1 },
        { .backend = "fork", .inner = 0 }, { .backend = "fork", .inner = -1 },
        { .backend = "spawn", .inner = 0 }, { .backend = "spawn", .inner = -1 },
    };
    const int n_settings = (int)(sizeof settings / sizeof settings[0]);
    serial_run(); /* warm-up: OpenMP's team starts */
    for (int c = 0; c < n_settings; c++) {
        settings[c].par = open_par(&settings[c]);
        bench_timed_run("inner_bench", settings[c].par, tasks, TASKS); /* workers start */
    }
    double serial[MAX_RUNS];
    for (int r = 0; r < runs; r++) {
        serial[r] = serial_run();
        for (int c = 0; c < n_settings; c++)
            settings[c].speedup[r] =
                serial[r] / bench_timed_run("inner_bench", settings[c].par, tasks, TASKS);
    }
    char extra[200];
    struct usage u0 = usage_now();
    serial_run();
    struct usage u1 = usage_now();
    snprintf(extra, sizeof extra, "omp_threads=%d tasks=%d csw=%ld nivcsw=%ld cpu_s=%.3f",
             omp_get_max_threads(), TASKS, u1.csw - u0.csw, u1.nivcsw - u0.nivcsw,
             u1.cpu_s - u0.cpu_s);
    bench_print("inner_bench", "omp50ms", "serial_s", bench_summarise(serial, runs), extra);
    for (int c = 0; c < n_settings; c++) {
        pj_parallel_free(settings[c].par);
        struct usage u = run_usage(&settings[c], tasks);
        snprintf(extra, sizeof extra, "backend=%s limit=%s n_jobs=%d csw=%ld nivcsw=%ld "
                 "cpu_s=%.3f", settings[c].backend, settings[c].inner < 0 ? "off" : "on",
                 pj_cpu_count(), u.csw, u.nivcsw, u.cpu_s);
        bench_print("inner_bench", "omp50ms", "speedup",
                    bench_summarise(settings[c].speedup, runs), extra);
    }
    run_joblib(runs);
    for (int k = 0; k < TASKS; k++)
        pj_task_free(tasks[k]);
    pj_fn_free(fn);
    return 0;
}
