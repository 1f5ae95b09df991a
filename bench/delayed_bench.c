/* Issue 14 item 5: what pj_delayed costs in a program that builds a million tasks right before
 * one run, with glibc's default malloc settings (no mallopt advice).
 *   delayed_bench [n] [reps]      n tasks (default 1000000), reps cycles (default 11)
 * A cycle allocates an array of n task pointers, builds n tasks of int add(int, int) with
 * pj_delayed into it (timed together), then frees the tasks and the array (timed apart):
 *   run:    with a pj_run of the tasks (threading, auto batching, results checked and freed)
 *           between building and freeing, as a program that builds its tasks for one run;
 *   no_run: building and freeing only, as parjob_peers measures pj_delayed: there glibc hands
 *           the freed heap back to the kernel each cycle, and every task lands on a new page.
 * Times are the calling thread's CPU time (CLOCK_THREAD_CPUTIME_ID: page faults included, other
 * programs on a loaded machine not), per task; medians over the cycles, and the minor page
 * faults a cycle's building took (getrusage).
 * Under callgrind (valgrind --tool=callgrind bench/delayed_bench 100000 3) the instructions per
 * pj_delayed are the inclusive Ir of pj_delayed_va divided by 2 * n * reps. */
#include <parjob.h>

#include "bench_util.h"

#include <string.h>
#include <sys/resource.h>

static int add(int a, int b)
{
    return a + b;
}

static double cpu_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static long minor_faults(void)
{
    struct rusage ru;
    getrusage(RUSAGE_THREAD, &ru);
    return ru.ru_minflt;
}

static void die(const char *what, const char *why)
{
    fprintf(stderr, "delayed_bench: %s: %s\n", what, why);
    exit(1);
}

/* One run of tasks[0..n) whose results are checked (a wrong result ends the program). */
static void run_once(pj_parallel *par, pj_task **tasks, size_t n)
{
    pj_results *res;
    if (pj_run(par, tasks, n, &res))
        die("pj_run", pj_parallel_errmsg(par));
    for (size_t i = 0; i < n; i += n / 7 + 1)
        if (pj_result_int(pj_results_at(res, i)) != (int)i + 1)
            die("pj_run", "wrong result");
    pj_results_free(res);
}

struct figures {
    double *build_ns, *free_ns, *faults;
};

/* One cycle, its figures into slot r of f. */
static void cycle(pj_fn *fn, pj_parallel *par, size_t n, const struct figures *f, int r)
{
    long f0 = minor_faults();
    double t0 = cpu_now();
    pj_task **tasks = malloc(n * sizeof *tasks);
    if (!tasks)
        die("setup", "out of memory");
    for (size_t i = 0; i < n; i++)
        if (!(tasks[i] = pj_delayed(fn, (int)i, 1)))
            die("pj_delayed", pj_last_errmsg());
    double t1 = cpu_now();
    f->faults[r] = (double)(minor_faults() - f0);
    if (par)
        run_once(par, tasks, n);
    double t2 = cpu_now();
    for (size_t i = 0; i < n; i++)
        pj_task_free(tasks[i]);
    free(tasks);
    f->build_ns[r] = (t1 - t0) / (double)n * 1e9;
    f->free_ns[r] = (cpu_now() - t2) / (double)n * 1e9;
}

static void measure(const char *workload, pj_fn *fn, pj_parallel *par, size_t n, int reps)
{
    struct figures f = { calloc((size_t)reps, sizeof(double)),
                         calloc((size_t)reps, sizeof(double)),
                         calloc((size_t)reps, sizeof(double)) };
    if (!f.build_ns || !f.free_ns || !f.faults)
        die("setup", "out of memory");
    for (int r = 0; r < reps; r++)
        cycle(fn, par, n, &f, r);
    char extra[64];
    snprintf(extra, sizeof extra, "n=%zu clock=thread_cpu", n);
    bench_print("delayed_bench", workload, "ns_per_pj_delayed", bench_summarise(f.build_ns, reps),
                extra);
    bench_print("delayed_bench", workload, "ns_per_pj_task_free",
                bench_summarise(f.free_ns, reps), extra);
    bench_print("delayed_bench", workload, "minor_faults_building",
                bench_summarise(f.faults, reps), extra);
    free(f.build_ns);
    free(f.free_ns);
    free(f.faults);
}

int main(int argc, char **argv)
{
    size_t n = argc > 1 ? strtoul(argv[1], NULL, 10) : 1000000;
    int reps = argc > 2 ? atoi(argv[2]) : 11;
    if (n == 0 || reps < 1)
        die("usage", "delayed_bench [n > 0] [reps > 0]");
    pj_fn *fn = PJ_FN(add, &ffi_type_sint, &ffi_type_sint, &ffi_type_sint);
    if (!fn)
        die("setup", pj_last_errmsg());
    /* no_run first: a pool's threads and their allocations change what glibc can trim. */
    measure("add_int_int_no_run", fn, NULL, n, reps);
    pj_parallel *par = pj_parallel_new(&(pj_config){ .n_jobs = 2, .backend = "threading" });
    if (!par)
        die("setup", pj_last_errmsg());
    measure("add_int_int_run", fn, par, n, reps);
    pj_parallel_free(par);
    pj_fn_free(fn);
    return 0;
}
