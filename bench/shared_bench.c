/* Issue 13's figures: one large input (1 GiB) read whole by 64 tasks.
 *   - fork and spawn with the input placed once per run in read-only shared memory (the
 *     default max_nbytes), and with it in a pj_shared_alloc allocation, against threading in
 *     the same rounds (target: at most 1.1x threading's wall time);
 *   - fork and spawn copying it into every task's batch (max_nbytes off), on fewer tasks
 *     (copying 64 GiB would take minutes): seconds per task, over threading's per task;
 *   - the parent's peak RSS during each setting's runs, over the input's size (target: one
 *     copy, 1.0x: the sealed copy is a memfd the parent writes but does not map);
 *   - joblib on the same work (shared_joblib.py: loky with its memmapping, and threads),
 *     calling the same C checksum through ctypes, when Debian's python3-joblib is there.
 *   shared_bench [MiB [tasks]]   (default 1024 64); PJBENCH_SHARED_RUNS sets the rounds (3;
 *   the copying settings take part in the first only), PJBENCH_COPY_TASKS their tasks (4).
 *   About 4 minutes on 2 quiet cores, 9 under a load of 10. */
#include <parjob.h>

#include "bench_util.h"

#include <stdbool.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>

#define MAX_RUNS 32

uint64_t pjshared_checksum(const uint64_t *p, uint64_t n);

struct setting {
    const char *peer;            /* what the figures are called */
    const char *backend;
    long long max_nbytes;
    bool shared;                 /* the input in a pj_shared_alloc allocation */
    size_t tasks;
    int runs;                    /* rounds it takes part in (the copying ones: fewer) */
    pj_parallel *par;
    double wall[MAX_RUNS];
    double ratio[MAX_RUNS];      /* per task, over threading's in the same round */
    double peak_rss;             /* over the input's size */
};

/* VmHWM of this process in bytes, after resetting it with clear_refs (writing 5 there sets it
 * to the current RSS): the peak of what follows. */
static void reset_peak(void)
{
    FILE *f = fopen("/proc/self/clear_refs", "w");
    if (f) {
        fputs("5", f);
        fclose(f);
    }
}

static double peak_bytes(void)
{
    FILE *f = fopen("/proc/self/status", "re");
    char line[256];
    double kb = 0;
    while (f && fgets(line, sizeof line, f))
        if (sscanf(line, "VmHWM: %lf", &kb) == 1)
            break;
    if (f)
        fclose(f);
    return kb * 1024;
}

/* The input as numpy would hold it: its pages huge where the kernel allows (numpy asks for
 * them for large arrays, and joblib's threading peer reads such an array), so that threading's
 * figure is the best a program would see.  A memfd gets huge pages only where
 * transparent_hugepage/shmem_enabled allows, which RESULTS and the README say. */
static uint64_t *input_alloc(size_t n)
{
    void *p = NULL;
    if (posix_memalign(&p, (size_t)2 << 20, n * sizeof(uint64_t)))
        return NULL;
    madvise(p, n * sizeof(uint64_t), MADV_HUGEPAGE);
    uint64_t *w = p;
    for (size_t k = 0; k < n; k++)
        w[k] = k;
    return w;
}

static pj_task **make_tasks(pj_fn *fn, const uint64_t *words, size_t n, size_t count)
{
    pj_task **t = calloc(count, sizeof *t);
    for (size_t k = 0; t && k < count; k++)
        if (!(t[k] = pj_delayed(fn, pj_in(words, n * sizeof *words), (uint64_t)n))) {
            fprintf(stderr, "shared_bench: %s\n", pj_last_errmsg());
            exit(1);
        }
    return t;
}

static void free_tasks(pj_task **t, size_t count)
{
    for (size_t k = 0; k < count; k++)
        pj_task_free(t[k]);
    free(t);
}

static void open_setting(struct setting *s)
{
    s->par = pj_parallel_new(&(pj_config){ .backend = s->backend, .n_jobs = -1,
                                           .max_nbytes = s->max_nbytes });
    if (!s->par) {
        fprintf(stderr, "shared_bench: %s: %s\n", s->backend, pj_last_errmsg());
        exit(1);
    }
}

/* One run of s on words: seconds.  The input's placement (max_nbytes) is part of each run. */
static double run_setting(struct setting *s, pj_fn *fn, uint64_t *words, size_t n)
{
    pj_task **t = make_tasks(fn, words, n, s->tasks);
    double took = bench_timed_run("shared_bench", s->par, t, s->tasks);
    free_tasks(t, s->tasks);
    return took;
}

static void print_setting(const struct setting *s, int runs, double bytes)
{
    char extra[128];
    snprintf(extra, sizeof extra, "tasks=%zu bytes=%.0f", s->tasks, bytes);
    double w[MAX_RUNS], r[MAX_RUNS];
    memcpy(w, s->wall, sizeof w);
    memcpy(r, s->ratio, sizeof r);
    char workload[64];
    snprintf(workload, sizeof workload, "read_1g peer=%s", s->peer);
    bench_print("shared_bench", workload, "wall_s", bench_summarise(w, runs), extra);
    for (int k = 0; k < runs; k++)
        w[k] = s->wall[k] / (double)s->tasks;
    bench_print("shared_bench", workload, "s_per_task", bench_summarise(w, runs), extra);
    if (strcmp(s->peer, "threading"))
        bench_print("shared_bench", workload, "over_threading", bench_summarise(r, runs), extra);
    double p = s->peak_rss;
    bench_print("shared_bench", workload, "parent_peak_rss_over_input",
                bench_summarise(&p, 1), extra);
}

static void run_joblib(size_t words, size_t tasks, int runs)
{
    char cmd[1024];
    snprintf(cmd, sizeof cmd,
             "PY=$(command -v /usr/bin/python3 || command -v python3); "
             "$PY -c 'import joblib, numpy' 2>/dev/null && $PY %s %s %zu %zu %d -1 || "
             "echo 'shared_bench: joblib or numpy not installed, its figures skipped' >&2",
             SHARED_JOBLIB_PY, PJSHARED_LIB, words, tasks, runs);
    fflush(stdout);
    if (system(cmd) != 0)
        fprintf(stderr, "shared_bench: shared_joblib.py failed\n");
}

int main(int argc, char **argv)
{
    size_t mib = argc > 1 ? (size_t)atol(argv[1]) : 1024;
    size_t tasks = argc > 2 ? (size_t)atol(argv[2]) : 64;
    const char *ct = getenv("PJBENCH_COPY_TASKS");
    size_t copy_tasks = ct && atol(ct) > 0 ? (size_t)atol(ct) : 4;
    /* Its own count, not PARJOB_BENCH_RUNS: a round reads 64 GiB per setting, and scripts/bench
     * gives a program 5 minutes. */
    const char *sr = getenv("PJBENCH_SHARED_RUNS");
    int runs = sr && atoi(sr) > 0 ? atoi(sr) : 3;
    runs = runs > MAX_RUNS ? MAX_RUNS : runs;
    size_t n = (mib << 20) / sizeof(uint64_t);
    double bytes = (double)(n * sizeof(uint64_t));
    uint64_t *words = input_alloc(n), *shared = NULL;
    if (!words)
        return fprintf(stderr, "shared_bench: no memory for %zu MiB\n", mib), 1;
    pj_fn *fn = PJ_FN(pjshared_checksum, &ffi_type_uint64, &ffi_type_pointer, &ffi_type_uint64);
    struct setting settings[] = {
        { .peer = "threading", .backend = "threading", .tasks = tasks },
        { .peer = "fork_memmap", .backend = "fork", .tasks = tasks },
        { .peer = "spawn_memmap", .backend = "spawn", .tasks = tasks },
        { .peer = "fork_shared_alloc", .backend = "fork", .max_nbytes = PJ_MAX_NBYTES_OFF,
          .shared = true, .tasks = tasks },
        { .peer = "spawn_shared_alloc", .backend = "spawn", .max_nbytes = PJ_MAX_NBYTES_OFF,
          .shared = true, .tasks = tasks },
        { .peer = "fork_copy", .backend = "fork", .max_nbytes = PJ_MAX_NBYTES_OFF,
          .tasks = copy_tasks, .runs = 1 },
        { .peer = "spawn_copy", .backend = "spawn", .max_nbytes = PJ_MAX_NBYTES_OFF,
          .tasks = copy_tasks, .runs = 1 },
    };
    const int n_settings = (int)(sizeof settings / sizeof settings[0]);
    for (int c = 0; c < n_settings; c++)
        open_setting(&settings[c]);
    for (int r = 0; r < runs; r++) {
        double base = 0;
        for (int c = 0; c < n_settings; c++) {
            struct setting *s = &settings[c];
            if (s->runs && r >= s->runs)
                continue; /* copying: minutes a round, so fewer rounds */
            if (s->shared && !shared) { /* the same bytes, in shared memory */
                free(words);
                words = NULL;
                if (!(shared = pj_shared_alloc(n * sizeof *shared)))
                    return fprintf(stderr, "shared_bench: %s\n", pj_last_errmsg()), 1;
                for (size_t k = 0; k < n; k++)
                    shared[k] = k;
            } else if (!s->shared && shared) {
                pj_shared_free(shared);
                shared = NULL;
                if (!(words = input_alloc(n)))
                    return fprintf(stderr, "shared_bench: no memory\n"), 1;
            }
            uint64_t *in = s->shared ? shared : words;
            if (r == 0) { /* the workers start */
                pj_task *one = pj_delayed(fn, pj_in(in, 64), (uint64_t)8);
                bench_timed_run("shared_bench", s->par, &one, 1);
                pj_task_free(one);
            }
            reset_peak();
            s->wall[r] = run_setting(s, fn, in, n);
            double peak = peak_bytes() / bytes;
            s->peak_rss = peak > s->peak_rss ? peak : s->peak_rss;
            if (c == 0)
                base = s->wall[r] / (double)s->tasks;
            s->ratio[r] = s->wall[r] / (double)s->tasks / base;
        }
    }
    for (int c = 0; c < n_settings; c++) {
        int taken = settings[c].runs && settings[c].runs < runs ? settings[c].runs : runs;
        print_setting(&settings[c], taken, bytes);
        pj_parallel_free(settings[c].par);
    }
    pj_fn_free(fn);
    free(words);
    pj_shared_free(shared);
    run_joblib(n, tasks, runs);
    return 0;
}
