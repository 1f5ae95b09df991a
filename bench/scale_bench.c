/* Worker pools that scale (issue 18): how start-up, a run and pj_parallel_free grow with the
 * number of workers, for every backend and for Python's ProcessPoolExecutor in the same run.
 *
 *   scale_n<N>     for n_jobs = N (64 .. 2048): one run of N tasks that each sleep 100 ms,
 *                  timed from pj_parallel_new: first_s (the first result), run_s (the last),
 *                  then free_s (pj_parallel_free, once all N workers live: a pool may
 *                  still be starting some when the run ends), and per-worker figures: (first_s - 0.1) / N
 *                  and free_s / N in microseconds, and cpu_us_per_worker: the CPU time of the
 *                  whole run (this process and its reaped children, user and system) per
 *                  worker, which a loaded machine inflates less than the wall times.
 *                  peer=py_processpool is ProcessPoolExecutor(max_workers=N) from Debian's
 *                  /usr/bin/python3 running time.sleep(0.1) N times, timed the same way by the
 *                  script (shutdown(wait=True) as free; the interpreter's start not counted).
 *                  peer=bare_processes is the floor under both: n children of this program
 *                  that run nothing (each blocked reading its own socket), forked in turn
 *                  (start_s), then ended by closing the sockets and reaped in turn (free_s).
 *   idle_memory    1024 idle workers of "fork" and of "spawn" after such a run: the mean PSS of
 *                  a worker (/proc/<pid>/smaps_rollup) and the parent's PSS growth per worker,
 *                  and the page tables (VmPTE, which PSS leaves out) of each.
 *
 * Arguments, for a look at one point: `scale_bench [N] [BACKEND...]` times only n_jobs = N on
 * those backends (parjob's, "bare" or "python"), without the memory figures.
 *
 * Medians of min(PARJOB_BENCH_RUNS, 3) runs with min and max (ProcessPoolExecutor: one run
 * above 512 workers, where one takes 10-40 s here).  Lines in bench_util.h's format;
 * scripts/bench plots first_s and free_s against n_jobs (bench/scale.gp). */
#include <parjob.h>

#include "bench_util.h"

#include <dirent.h>
#include <errno.h>
#include <spawn.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#define TASK_MS 100
#define MEMORY_N 1024
#define MAX_RUNS 3
#define PY_MANY 512 /* above: one run of ProcessPoolExecutor */

extern char **environ;

static const int sizes[] = { 64, 128, 256, 512, 1024, 2048 };
static const char *const backends[] = { "threading", "fork", "spawn" };

static int sleep_ms(int ms)
{
    usleep((useconds_t)ms * 1000);
    return ms;
}

struct timing {
    double first, run, free, cpu;
};

/* CPU seconds of this process and of its reaped children so far. */
static double cpu_s(void)
{
    struct rusage self, children;
    getrusage(RUSAGE_SELF, &self);
    getrusage(RUSAGE_CHILDREN, &children);
    const struct timeval *tv[] = { &self.ru_utime, &self.ru_stime, &children.ru_utime,
                                   &children.ru_stime };
    double s = 0;
    for (int i = 0; i < 4; i++)
        s += (double)tv[i]->tv_sec + (double)tv[i]->tv_usec / 1e6;
    return s;
}

static pj_parallel *new_parallel(const char *backend, int n)
{
    pj_parallel *par = pj_parallel_new(&(pj_config){
        .n_jobs = n, .backend = backend, .return_as = PJ_GENERATOR_UNORDERED });
    if (!par) {
        fprintf(stderr, "scale_bench: pj_parallel_new(%s, %d): %s\n", backend, n,
                pj_last_errmsg());
        exit(1);
    }
    return par;
}

/* Whether /proc entry `name` is a child of this process (the pool's workers are, here). */
static bool is_child(const char *name)
{
    char path[300], buf[512];
    snprintf(path, sizeof path, "/proc/%s/stat", name);
    FILE *f = name[0] >= '1' && name[0] <= '9' ? fopen(path, "r") : NULL;
    if (!f)
        return false;
    size_t len = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[len] = 0;
    const char *close_paren = strrchr(buf, ')'); /* the name may hold spaces */
    long ppid;
    return close_paren && sscanf(close_paren + 2, "%*c %ld", &ppid) == 1 &&
           ppid == (long)getpid();
}

static int count_children(void)
{
    int count = 0;
    DIR *d = opendir("/proc");
    for (struct dirent *e; d && (e = readdir(d));)
        count += is_child(e->d_name);
    if (d)
        closedir(d);
    return count;
}

/* A pool starts its workers while the first tasks run: a run of sleeps may end before the
 * last has started.  free_s is the time to end n idle workers, so it waits for them (at most
 * 30 s), then 0.2 s more for the last ones' start-up to end (a child counts from its fork) —
 * not counted in any figure. */
static void wait_for_workers(const char *backend, int n)
{
    if (strcmp(backend, "threading") == 0)
        return;
    double give_up = bench_now() + 30;
    while (count_children() < n && bench_now() < give_up)
        usleep(10000);
    usleep(200000);
}

/* One run of n sleeps on n workers; *keep (when not NULL) gets the handle, not freed. */
static struct timing time_parjob(const char *backend, int n, pj_task **tasks,
                                 pj_parallel **keep)
{
    struct timing t = { 0 };
    double cpu0 = cpu_s();
    double t0 = bench_now();
    pj_parallel *par = new_parallel(backend, n);
    pj_iter *it = pj_start(par, tasks, (size_t)n);
    if (!it) {
        fprintf(stderr, "scale_bench: pj_start(%s, %d): %s\n", backend, n,
                pj_parallel_errmsg(par));
        exit(1);
    }
    pj_result r;
    int got = 0, rc;
    while ((rc = pj_next(it, &r)) == 0) {
        if (r.status != 0) {
            fprintf(stderr, "scale_bench: %s, n_jobs=%d: a task failed (%d)\n", backend, n,
                    r.status);
            exit(1);
        }
        if (got++ == 0)
            t.first = bench_now() - t0;
    }
    t.run = bench_now() - t0;
    pj_iter_close(it);
    if (rc != PJ_EEND || got != n) {
        fprintf(stderr, "scale_bench: %s, n_jobs=%d: %d results, rc %d\n", backend, n, got, rc);
        exit(1);
    }
    if (keep) {
        *keep = par;
        return t;
    }
    t.cpu = cpu_s() - cpu0;
    wait_for_workers(backend, n);
    double cpu1 = cpu_s(), t1 = bench_now();
    pj_parallel_free(par);
    t.free = bench_now() - t1;
    t.cpu += cpu_s() - cpu1;
    return t;
}

/* ---- ProcessPoolExecutor ------------------------------------------------------------------ */

static const char py_script[] =
    "import sys, time\n"
    "from concurrent.futures import ProcessPoolExecutor, as_completed, wait\n"
    "n = int(sys.argv[1])\n"
    "t0 = time.monotonic()\n"
    "ex = ProcessPoolExecutor(max_workers=n)\n"
    "fs = [ex.submit(time.sleep, 0.1) for _ in range(n)]\n"
    "next(as_completed(fs))\n"
    "first = time.monotonic() - t0\n"
    "wait(fs)\n"
    "run = time.monotonic() - t0\n"
    "t1 = time.monotonic()\n"
    "ex.shutdown(wait=True)\n"
    "free = time.monotonic() - t1\n"
    "import resource as r\n"
    "u = [r.getrusage(w) for w in (r.RUSAGE_SELF, r.RUSAGE_CHILDREN)]\n"
    "print(first, run, free, sum(x.ru_utime + x.ru_stime for x in u), flush=True)\n";

/* ProcessPoolExecutor(max_workers=n) in Debian's python, timed by the script itself (the
 * interpreter's own start is not counted).  false when python cannot run it. */
static bool time_python(int n, struct timing *t)
{
    int out[2];
    if (pipe(out))
        return false;
    char arg[16];
    snprintf(arg, sizeof arg, "%d", n);
    char *argv[] = { "python3", "-c", (char *)py_script, arg, NULL };
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, out[1], 1);
    posix_spawn_file_actions_addclose(&fa, out[0]);
    pid_t pid;
    int rc = posix_spawn(&pid, "/usr/bin/python3", &fa, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    close(out[1]);
    if (rc) {
        close(out[0]);
        return false;
    }
    FILE *f = fdopen(out[0], "r");
    int got = fscanf(f, "%lf %lf %lf %lf", &t->first, &t->run, &t->free, &t->cpu);
    fclose(f);
    int st;
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
        ;
    return got == 4 && WIFEXITED(st) && WEXITSTATUS(st) == 0;
}

/* ---- the floor ------------------------------------------------------------------------------ */

/* n bare children started and ended as a pool's are, without the pool: first and run hold the
 * time to fork them all, free the time to end them all, cpu the whole (with the children). */
static struct timing time_bare(int n)
{
    struct timing t = { 0 };
    int *fds = malloc((size_t)n * sizeof *fds);
    pid_t *pids = malloc((size_t)n * sizeof *pids);
    double cpu0 = cpu_s(), t0 = bench_now();
    int k = 0;
    for (; k < n; k++) {
        int sv[2];
        if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv))
            break;
        if ((pids[k] = fork()) == 0) {
            /* what a pool's worker keeps: stdio and its end of the channel */
            if (dup2(sv[1], 3) < 0 || syscall(SYS_close_range, 4u, ~0u, 0u) < 0)
                _exit(1);
            sv[1] = 3;
            char c;
            _exit(read(sv[1], &c, 1) < 0);
        }
        close(sv[1]);
        fds[k] = sv[0];
        if (pids[k] < 0) {
            close(fds[k]);
            break;
        }
    }
    t.first = t.run = bench_now() - t0;
    double t1 = bench_now();
    for (int j = 0; j < k; j++)
        close(fds[j]);
    for (int j = 0; j < k; j++)
        while (waitpid(pids[j], NULL, 0) < 0 && errno == EINTR)
            ;
    t.free = bench_now() - t1;
    t.cpu = cpu_s() - cpu0;
    free(fds);
    free(pids);
    if (k < n)
        fprintf(stderr, "scale_bench: only %d of %d bare processes started\n", k, n);
    return t;
}

static void print_bare(int n, struct timing *t, int runs)
{
    double start[MAX_RUNS], freed[MAX_RUNS], cpu_us[MAX_RUNS];
    for (int r = 0; r < runs; r++) {
        start[r] = t[r].first;
        freed[r] = t[r].free;
        cpu_us[r] = t[r].cpu / n * 1e6;
    }
    char workload[32], extra[96];
    snprintf(workload, sizeof workload, "scale_n%d", n);
    snprintf(extra, sizeof extra, "peer=bare_processes n_jobs=%d workers=%d n=%d", n, n, n);
    bench_print("scale_bench", workload, "start_s", bench_summarise(start, runs), extra);
    bench_print("scale_bench", workload, "free_s", bench_summarise(freed, runs), extra);
    bench_print("scale_bench", workload, "cpu_us_per_worker", bench_summarise(cpu_us, runs),
                extra);
}

/* ---- memory -------------------------------------------------------------------------------- */

/* A "<field> <n> kB" line of a /proc file of pid, in KiB; -1 when it cannot be read. */
static long proc_kib(pid_t pid, const char *file, const char *field)
{
    char path[64], line[256], format[48];
    snprintf(path, sizeof path, "/proc/%ld/%s", (long)pid, file);
    snprintf(format, sizeof format, "%s %%ld kB", field);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    long kib = -1;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, format, &kib) == 1)
            break;
    fclose(f);
    return kib;
}

static long pss_kib(pid_t pid)
{
    return proc_kib(pid, "smaps_rollup", "Pss:");
}

static long pte_kib(pid_t pid)
{
    return proc_kib(pid, "status", "VmPTE:");
}

/* The mean PSS (KiB) of this process's children, which are the pool's workers here, and in
 * *pte their mean VmPTE; *count gets how many there are. */
static double children_pss(int *count, double *pte)
{
    long pte_sum = 0;
    DIR *d = opendir("/proc");
    long sum = 0;
    *count = 0;
    for (struct dirent *e; d && (e = readdir(d));) {
        if (!is_child(e->d_name))
            continue;
        long kib = pss_kib((pid_t)atol(e->d_name)), pt = pte_kib((pid_t)atol(e->d_name));
        if (kib >= 0 && pt >= 0) {
            sum += kib;
            pte_sum += pt;
            ++*count;
        }
    }
    if (d)
        closedir(d);
    *pte = *count ? (double)pte_sum / *count : 0;
    return *count ? (double)sum / *count : 0;
}

static void measure_memory(const char *backend, pj_task **tasks, int runs)
{
    double worker[MAX_RUNS], parent[MAX_RUNS], worker_pte[MAX_RUNS], parent_pte[MAX_RUNS];
    int count = 0;
    for (int r = 0; r < runs; r++) {
        long before = pss_kib(getpid()), pte_before = pte_kib(getpid());
        pj_parallel *par;
        time_parjob(backend, MEMORY_N, tasks, &par);
        wait_for_workers(backend, MEMORY_N);
        usleep(200000); /* the last results applied, every worker back in its read */
        worker[r] = children_pss(&count, &worker_pte[r]);
        parent[r] = (double)(pss_kib(getpid()) - before) / MEMORY_N;
        parent_pte[r] = (double)(pte_kib(getpid()) - pte_before) / MEMORY_N;
        pj_parallel_free(par);
    }
    char extra[96];
    snprintf(extra, sizeof extra, "peer=parjob_%s backend=%s workers=%d counted=%d", backend,
             backend, MEMORY_N, count);
    bench_print("scale_bench", "idle_memory", "worker_pss_kib", bench_summarise(worker, runs),
                extra);
    bench_print("scale_bench", "idle_memory", "parent_pss_kib_per_worker",
                bench_summarise(parent, runs), extra);
    bench_print("scale_bench", "idle_memory", "worker_pte_kib", bench_summarise(worker_pte, runs),
                extra);
    bench_print("scale_bench", "idle_memory", "parent_pte_kib_per_worker",
                bench_summarise(parent_pte, runs), extra);
}

/* ---- the sweep ------------------------------------------------------------------------------ */

static void print_timings(const char *peer, int n, struct timing *t, int runs)
{
    double first[MAX_RUNS], run[MAX_RUNS], freed[MAX_RUNS], start_us[MAX_RUNS],
        free_us[MAX_RUNS], cpu_us[MAX_RUNS];
    for (int r = 0; r < runs; r++) {
        first[r] = t[r].first;
        run[r] = t[r].run;
        freed[r] = t[r].free;
        start_us[r] = (t[r].first - TASK_MS / 1000.0) / n * 1e6;
        free_us[r] = t[r].free / n * 1e6;
        cpu_us[r] = t[r].cpu / n * 1e6;
    }
    char workload[32], extra[96];
    snprintf(workload, sizeof workload, "scale_n%d", n);
    snprintf(extra, sizeof extra, "peer=%s n_jobs=%d workers=%d n=%d", peer, n, n, n);
    bench_print("scale_bench", workload, "first_s", bench_summarise(first, runs), extra);
    bench_print("scale_bench", workload, "run_s", bench_summarise(run, runs), extra);
    bench_print("scale_bench", workload, "free_s", bench_summarise(freed, runs), extra);
    bench_print("scale_bench", workload, "start_us_per_worker", bench_summarise(start_us, runs),
                extra);
    bench_print("scale_bench", workload, "free_us_per_worker", bench_summarise(free_us, runs),
                extra);
    bench_print("scale_bench", workload, "cpu_us_per_worker", bench_summarise(cpu_us, runs),
                extra);
}

/* Whether argv (after N) names backend, or names none. */
static bool wanted(int argc, char **argv, const char *backend)
{
    for (int i = 2; i < argc; i++)
        if (strcmp(argv[i], backend) == 0)
            return true;
    return argc <= 2;
}

int main(int argc, char **argv)
{
    int only = argc > 1 ? atoi(argv[1]) : 0;
    int runs = bench_runs(3);
    if (runs > MAX_RUNS)
        runs = MAX_RUNS;
    pj_fn *fn = PJ_FN(sleep_ms, &ffi_type_sint, &ffi_type_sint);
    int most = sizes[sizeof sizes / sizeof *sizes - 1];
    pj_task **tasks = malloc((size_t)most * sizeof *tasks);
    for (int i = 0; i < most; i++)
        tasks[i] = pj_delayed(fn, TASK_MS);
    printf("# scale_bench: cpus=%ld runs=%d task_ms=%d python=/usr/bin/python3\n",
           sysconf(_SC_NPROCESSORS_ONLN), runs, TASK_MS);
    for (size_t k = 0; k < sizeof sizes / sizeof *sizes; k++) {
        int n = sizes[k];
        struct timing t[MAX_RUNS];
        if (only && n != only)
            continue;
        for (size_t b = 0; b < sizeof backends / sizeof *backends; b++) {
            if (!wanted(argc, argv, backends[b]))
                continue;
            for (int r = 0; r < runs; r++)
                t[r] = time_parjob(backends[b], n, tasks, NULL);
            char peer[32];
            snprintf(peer, sizeof peer, "parjob_%s", backends[b]);
            print_timings(peer, n, t, runs);
        }
        if (wanted(argc, argv, "bare")) {
            for (int r = 0; r < runs; r++)
                t[r] = time_bare(n);
            print_bare(n, t, runs);
        }
        int py_runs = n > PY_MANY ? 1 : runs;
        bool py = wanted(argc, argv, "python");
        if (!py)
            continue;
        for (int r = 0; py && r < py_runs; r++)
            py = time_python(n, &t[r]);
        if (py)
            print_timings("py_processpool", n, t, py_runs);
        else
            printf("# scale_bench: ProcessPoolExecutor(max_workers=%d) did not run\n", n);
        fflush(stdout);
    }
    if (!only) {
        measure_memory("fork", tasks, runs);
        measure_memory("spawn", tasks, runs);
    }
    for (int i = 0; i < most; i++)
        pj_task_free(tasks[i]);
    free(tasks);
    pj_fn_free(fn);
    return 0;
}
