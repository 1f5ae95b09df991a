/* Inner threads (issue 19): tasks that are themselves OpenMP code, n_jobs = -1, with parjob's
 * limit on the threads of each worker's OpenMP (config.inner_max_num_threads = 0, joblib's
 * default: usable CPUs / n_jobs) and without it (-1: every worker's OpenMP starts a thread per
 * CPU, n_jobs * CPUs threads in all).
 *
 *   omp50ms  TASKS tasks, each omp_steps(): 50 parallel loops of ~1 ms of one core's work
 *            (~50 ms of CPU a task), a solver's time steps;
 *   dgemm    (built where Debian's libopenblas-dev is installed) TASKS tasks, each a
 *            cblas_dgemm of n x n matrices, n such that one takes ~50 ms on one core.
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

#include <math.h>
#include <omp.h>
#include <string.h>
#include <sys/resource.h>
#ifdef PJ_BENCH_OPENBLAS
#include <cblas.h>
#endif

#define TASKS 16
#define STEPS 50
#define MAX_RUNS 64

double omp_steps(long steps, long iters_per_step);

/* A workload: TASKS calls of call(a, b). */
struct workload {
    const char *name;
    double (*call)(long a, long b);
    long a, b;
    pj_task *tasks[TASKS];
};

/* CPU time of this thread: calibration on a loaded machine must not count the time others
 * held the CPU. */
static double thread_cpu_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Iterations that make one step of omp_steps ~1 ms on one thread. */
static long calibrate_omp(void)
{
    int before = omp_get_max_threads();
    omp_set_num_threads(1);
    long iters = 1000000;
    omp_steps(1, iters); /* page in, start the runtime */
    double t0 = thread_cpu_s();
    omp_steps(5, iters);
    double took = (thread_cpu_s() - t0) / 5;
    omp_set_num_threads(before);
    return (long)((double)iters * (0.001 / took));
}

#ifdef PJ_BENCH_OPENBLAS
/* reps products of two n x n matrices; returns an entry, so nothing is optimised away. */
static double dgemm_task(long n, long reps)
{
    double *a = malloc(3 * sizeof *a * (size_t)(n * n)), *b = a + n * n, *c = b + n * n;
    if (!a)
        return -1;
    for (long i = 0; i < 2 * n * n; i++)
        a[i] = (double)(i % 7) * 0.5;
    for (long r = 0; r < reps; r++)
        cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)n, (int)n, (int)n, 1, a,
                    (int)n, b, (int)n, 0, c, (int)n);
    double v = c[n + 1];
    free(a);
    return v;
}

/* The n for which one dgemm_task takes ~50 ms on one thread: its cost grows as n^3. */
static long calibrate_dgemm(void)
{
    int before = openblas_get_num_threads();
    openblas_set_num_threads(1);
    long n = 256;
    dgemm_task(n, 1);
    double t0 = thread_cpu_s();
    dgemm_task(n, 3);
    double took = (thread_cpu_s() - t0) / 3;
    openblas_set_num_threads(before);
    return (long)((double)n * cbrt(0.050 / took));
}
#endif

static double serial_run(const struct workload *w)
{
    double t0 = bench_now();
    volatile double sink = 0;
    for (int k = 0; k < TASKS; k++)
        sink += w->call(w->a, w->b);
    (void)sink;
    return bench_now() - t0;
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

/* joblib on the same work, when Debian's python3-joblib is there. */
static void run_joblib(const struct workload *w, int runs)
{
    char cmd[1024];
    snprintf(cmd, sizeof cmd,
             "PY=$(command -v /usr/bin/python3 || command -v python3); "
             "$PY -c 'import joblib' 2>/dev/null && $PY %s %s %s %d %ld %ld %d || "
             "echo 'inner_bench: joblib not installed, its figures skipped' >&2",
             INNER_JOBLIB_PY, PJOMP_LIB, w->name, TASKS, w->a, w->b, runs);
    fflush(stdout);
    if (system(cmd) != 0)
        fprintf(stderr, "inner_bench: inner_joblib.py failed\n");
}

static void bench_workload(struct workload *w, int runs)
{
    /* Every setting's workers stay up and the runs interleave, a round of the serial loop and
     * each setting at a time: the machine's load drifts, and each speedup is over the serial
     * loop of its own round. */
    struct setting settings[] = {
        { .backend = "threading", .inner = 0 }, { .backend = "threading", .inner = -1 },
        { .backend = "fork", .inner = 0 }, { .backend = "fork", .inner = -1 },
        { .backend = "spawn", .inner = 0 }, { .backend = "spawn", .inner = -1 },
    };
    const int n_settings = (int)(sizeof settings / sizeof settings[0]);
    serial_run(w); /* warm-up: the runtime's threads start */
    for (int c = 0; c < n_settings; c++) {
        settings[c].par = open_par(&settings[c]);
        bench_timed_run("inner_bench", settings[c].par, w->tasks, TASKS); /* workers start */
    }
    double serial[MAX_RUNS];
    for (int r = 0; r < runs; r++) {
        serial[r] = serial_run(w);
        for (int c = 0; c < n_settings; c++)
            settings[c].speedup[r] =
                serial[r] / bench_timed_run("inner_bench", settings[c].par, w->tasks, TASKS);
    }
    char extra[200];
    struct usage u0 = usage_now();
    serial_run(w);
    struct usage u1 = usage_now();
    snprintf(extra, sizeof extra, "tasks=%d a=%ld b=%ld csw=%ld nivcsw=%ld cpu_s=%.3f", TASKS,
             w->a, w->b, u1.csw - u0.csw, u1.nivcsw - u0.nivcsw, u1.cpu_s - u0.cpu_s);
    bench_print("inner_bench", w->name, "serial_s", bench_summarise(serial, runs), extra);
    for (int c = 0; c < n_settings; c++) {
        pj_parallel_free(settings[c].par);
        struct usage u = run_usage(&settings[c], w->tasks);
        snprintf(extra, sizeof extra, "backend=%s limit=%s n_jobs=%d csw=%ld nivcsw=%ld "
                 "cpu_s=%.3f", settings[c].backend, settings[c].inner < 0 ? "off" : "on",
                 pj_cpu_count(), u.csw, u.nivcsw, u.cpu_s);
        bench_print("inner_bench", w->name, "speedup",
                    bench_summarise(settings[c].speedup, runs), extra);
    }
    run_joblib(w, runs);
}

int main(void)
{
    int runs = bench_runs(5);
    runs = runs > MAX_RUNS ? MAX_RUNS : runs;
    struct workload workloads[] = {
        { .name = "omp50ms", .call = omp_steps, .a = STEPS, .b = calibrate_omp() },
#ifdef PJ_BENCH_OPENBLAS
        { .name = "dgemm", .call = dgemm_task, .a = calibrate_dgemm(), .b = 1 },
#endif
    };
    pj_fn *fn[2];
    for (size_t i = 0; i < sizeof workloads / sizeof workloads[0]; i++) {
        struct workload *w = &workloads[i];
        fn[i] = pj_fn_new(w->name, (void (*)(void))w->call, &ffi_type_double, 2,
                          (ffi_type *[]){ &ffi_type_slong, &ffi_type_slong });
        for (int k = 0; k < TASKS; k++)
            w->tasks[k] = pj_delayed(fn[i], w->a, w->b);
        bench_workload(w, runs);
        for (int k = 0; k < TASKS; k++)
            pj_task_free(w->tasks[k]);
        pj_fn_free(fn[i]);
    }
    return 0;
}
