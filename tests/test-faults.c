/* Fault injection on the process backends (loop tests over backends[]): segfault, abort,
 * exit(3), an endless loop under a timeout, a huge out buffer, a task closing stdin/stdout —
 * at random positions among 1000 tasks, each with exactly its status and every other task
 * right, and the same among 20000 calls of a function of scalars (uniform batches); reuse without descriptor or process growth; a parent SIGKILLed mid-run leaves no
 * worker alive. */
#include <parjob.h>

#include <check.h>

#include "helpers.h"
#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* A file that includes this one to run the cases over backends of its own (test-mpi-faults.c)
 * defines CONFORMANCE_BACKENDS and its own main. */
#ifndef CONFORMANCE_BACKENDS
#define CONFORMANCE_BACKENDS "fork", "spawn"
#define CONFORMANCE_MAIN
#endif
static const char *const backends[] = { CONFORMANCE_BACKENDS };
#define N_BACKENDS ((int)(sizeof backends / sizeof backends[0]))

/* A task that exits on purpose must not fail the test under LeakSanitizer, which would turn
 * the worker's exit(3) into its own exit status. */
const char *__asan_default_options(void);
const char *__asan_default_options(void)
{
    return "detect_leaks=0";
}

/* exit() runs the atexit handlers; under ThreadSanitizer one of them is the runtime's own, which
 * can wait forever in a forked child for a lock a thread of the parent held at the fork — the
 * hazard parjob.h documents for tasks.  Under TSan only, the task leaves with _exit. */
#if defined(__SANITIZE_THREAD__)
#define UNDER_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define UNDER_TSAN 1
#endif
#endif
#if defined(UNDER_TSAN) || defined(__SANITIZE_ADDRESS__)
#define SANITIZED 1
#else
#define SANITIZED 0
#endif
#ifdef UNDER_TSAN
#define EXIT_TASK(code) _exit(code)
#else
#define EXIT_TASK(code) exit(code)
#endif

enum fault { OK, SEGV, ABORT, EXIT3, LOOP, HUGE, CLOSE_STDIO, N_FAULTS };

#define HUGE_BYTES ((size_t)48 << 20)

/* A page no access is allowed to: writing there is a segfault wherever page zero may be mapped
 * (some sandboxes map it). */
static volatile int *guard_page(void)
{
    void *p = mmap(NULL, 4096, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    return p == MAP_FAILED ? NULL : (volatile int *)p;
}

static int faulty(int kind, int x, unsigned char *out, size_t n)
{
    switch (kind) {
    case SEGV: *guard_page() = x; break;
    case ABORT: abort();
    case EXIT3: EXIT_TASK(3);
    case LOOP: for (volatile int spin = 0;; spin++) ; break;
    case HUGE: memset(out, 0xab, n); out[n - 1] = (unsigned char)x; break;
    case CLOSE_STDIO: close(0); close(1); break;
    default: break;
    }
    return x * 2;
}

static pj_fn *faulty_fn(void)
{
    return PJ_FN(faulty, &ffi_type_sint, &ffi_type_sint, &ffi_type_sint, &ffi_type_pointer,
                 &ffi_type_uint64);
}

static void check_status(const pj_result *r, int kind, int x)
{
    static const int status[N_FAULTS] = { 0, PJ_ECRASHED, PJ_ECRASHED, PJ_EEXITED,
                                          PJ_ETIMEDOUT, 0, 0 };
    ck_assert_msg(r->status == status[kind], "task %d (fault %d): status %s (%s)", x, kind,
                  pj_err_name(r->status), r->message ? r->message : "");
    if (kind == SEGV)
        ck_assert_int_eq(r->code, SIGSEGV);
    if (kind == ABORT)
        ck_assert_int_eq(r->code, SIGABRT);
    if (kind == EXIT3)
        ck_assert_int_eq(r->code, 3);
    if (status[kind] == 0)
        ck_assert_int_eq(pj_result_int(r), 2 * x);
}

START_TEST(faults_among_1000)
{
    enum { N = 1000 };
    int kinds[N] = { 0 };
    srand(12345);
    for (int f = SEGV; f < N_FAULTS; f++)
        for (int c = 0; c < (f == LOOP || f == HUGE ? 1 : 3); c++) {
            int at;
            do
                at = rand() % N;
            while (kinds[at]);
            kinds[at] = f;
        }
    unsigned char *huge = malloc(HUGE_BYTES);
    pj_fn *fn = faulty_fn();
    pj_task **tasks = malloc(N * sizeof *tasks);
    for (int k = 0; k < N; k++)
        tasks[k] = kinds[k] == HUGE ? pj_delayed(fn, HUGE, k, pj_out(huge, HUGE_BYTES),
                                                 HUGE_BYTES)
                                    : pj_delayed(fn, kinds[k], k, pj_out(NULL, 0), (size_t)0);
    /* The timeout stops the endless loops; the other faults must end by themselves well
     * before it.  Under valgrind a worker's exit runs a leak check of the whole heap (seconds),
     * and a sanitized worker on a loaded machine was once seen to take over 1 s to die. */
    double timeout = under_valgrind() ? 10.0 : SANITIZED ? 3.0 : 1.0;
    pj_parallel *par = pj_parallel_new(&(pj_config){ .backend = backends[_i], .n_jobs = 2,
        .timeout = timeout, .on_error = PJ_ON_ERROR_CONTINUE });
    pj_results *res;
    int rc = pj_run(par, tasks, N, &res);
    ck_assert_int_ne(rc, 0);
    for (int k = 0; k < N; k++)
        check_status(pj_results_at(res, k), kinds[k], k);
    for (size_t b = 0; b < HUGE_BYTES - 1; b += 4093)
        ck_assert_int_eq(huge[b], 0xab);
    pj_results_free(res);
    pj_parallel_free(par);
    for (int k = 0; k < N; k++)
        pj_task_free(tasks[k]);
    free(tasks);
    free(huge);
    pj_fn_free(fn);
}
END_TEST

/* A function of scalars only: its batches cross as bare argument blocks and its results come
 * back as runs of values (codec.c), a path of its own in the worker. */
static int scalar_faulty(int kind, int x)
{
    switch (kind) {
    case SEGV: *guard_page() = x; break;
    case ABORT: abort();
    case EXIT3: EXIT_TASK(3);
    case N_FAULTS: pj_fail("task %d fails", x); break;
    default: break;
    }
    return x * 2;
}

/* Crashes, exits and pj_fail at random positions among 20000 calls of a scalar function, in
 * auto-sized batches and in small fixed ones (the pool then encodes batches ahead of the
 * workers): each fault gets exactly its status, every other task its value, twice in a row on
 * one handle (the second run on replaced workers and a recycled result array). */
START_TEST(faults_in_uniform_batches)
{
    enum { N = 20000 };
    static int kinds[N];
    memset(kinds, 0, sizeof kinds);
    srand(777);
    static const int faults[] = { SEGV, ABORT, EXIT3, N_FAULTS };
    for (size_t f = 0; f < sizeof faults / sizeof faults[0]; f++)
        for (int c = 0; c < 4; c++) {
            int at;
            do
                at = rand() % N;
            while (kinds[at]);
            kinds[at] = faults[f];
        }
    pj_fn *fn = PJ_FN(scalar_faulty, &ffi_type_sint, &ffi_type_sint, &ffi_type_sint);
    pj_task **tasks = malloc(N * sizeof *tasks);
    for (int k = 0; k < N; k++)
        tasks[k] = pj_delayed(fn, kinds[k], k);
    static const int batch_sizes[] = { PJ_AUTO, 97 };
    for (size_t bs = 0; bs < 2; bs++) {
        pj_parallel *par = pj_parallel_new(&(pj_config){ .backend = backends[_i], .n_jobs = 2,
            .batch_size = batch_sizes[bs], .on_error = PJ_ON_ERROR_CONTINUE });
        for (int round = 0; round < 2; round++) {
            pj_results *res;
            ck_assert_int_ne(pj_run(par, tasks, N, &res), 0);
            for (int k = 0; k < N; k++) {
                const pj_result *r = pj_results_at(res, k);
                ck_assert_int_eq((int)r->index, k);
                if (kinds[k] == N_FAULTS) {
                    ck_assert_int_eq(r->status, PJ_EFAILED);
                    char want[32];
                    snprintf(want, sizeof want, "task %d fails", k);
                    ck_assert_str_eq(r->message, want);
                } else {
                    check_status(r, kinds[k], k);
                }
            }
            ck_assert_int_eq(pj_results_count_status(res, 0), N - 16);
            pj_results_free(res);
        }
        pj_parallel_free(par);
    }
    for (int k = 0; k < N; k++)
        pj_task_free(tasks[k]);
    free(tasks);
    pj_fn_free(fn);
}
END_TEST

/* The default policy stops at the first crash and reports it with the task. */
START_TEST(crash_stops_run)
{
    enum { N = 200 };
    pj_fn *fn = faulty_fn();
    pj_task *tasks[N];
    for (int k = 0; k < N; k++)
        tasks[k] = pj_delayed(fn, k == 50 ? SEGV : OK, k, pj_out(NULL, 0), (size_t)0);
    pj_parallel *par = pj_parallel_new(&(pj_config){ .backend = backends[_i], .n_jobs = 2 });
    pj_results *res;
    ck_assert_int_eq(pj_run(par, tasks, N, &res), PJ_ECRASHED);
    ck_assert_int_eq(pj_results_at(res, 50)->status, PJ_ECRASHED);
    ck_assert_ptr_nonnull(strstr(pj_parallel_errmsg(par), "task 50"));
    for (int k = 0; k < N; k++) {
        int st = pj_results_at(res, k)->status;
        ck_assert(st == 0 || st == PJ_ECANCELLED || k == 50);
    }
    pj_results_free(res);
    pj_parallel_free(par);
    for (int k = 0; k < N; k++)
        pj_task_free(tasks[k]);
    pj_fn_free(fn);
}
END_TEST

/* A task that frees its own out buffer returns normally, then the worker aborts freeing it
 * again, before the result is committed: the crash is still that task's, and it ran once. */
static int free_own_buffer(const char *log, unsigned char *out, size_t n)
{
    FILE *f = fopen(log, "a");
    if (f) {
        fputc('x', f);
        fclose(f);
    }
    memset(out, 7, n);
    free(out);
    return 1;
}

START_TEST(crash_after_return)
{
    char log[] = "/tmp/pjtest-crash-after-return-XXXXXX";
    int fd = mkstemp(log);
    ck_assert_int_ge(fd, 0);
    close(fd);
    unsigned char buf[64];
    pj_fn *fn = PJ_FN(free_own_buffer, &ffi_type_sint, &ffi_type_pointer, &ffi_type_pointer,
                      &ffi_type_uint64);
    pj_task *t = pj_delayed(fn, pj_cstr(log), pj_out(buf, sizeof buf), sizeof buf);
    pj_parallel *par = pj_parallel_new(&(pj_config){ .backend = backends[_i], .n_jobs = 1,
                                                     .on_error = PJ_ON_ERROR_CONTINUE });
    pj_results *res;
    pj_run(par, &t, 1, &res);
    const pj_result *r = pj_results_at(res, 0);
    FILE *f = fopen(log, "r");
    int calls = 0;
    while (f && fgetc(f) != EOF)
        calls++;
    if (f)
        fclose(f);
    unlink(log);
    ck_assert_msg(r->status != PJ_ESYS, "the crash was not attributed: %s", r->message);
    ck_assert_int_eq(calls, 1);
    /* glibc aborts on the double free; ASan reports it and exits; valgrind and TSan's
     * allocator let it by. */
#ifndef UNDER_TSAN
    if (!under_valgrind() && r->status != PJ_EEXITED) {
        ck_assert_int_eq(r->status, PJ_ECRASHED);
        ck_assert_int_eq(r->code, SIGABRT);
    }
#endif
    pj_results_free(res);
    pj_parallel_free(par);
    pj_task_free(t);
    pj_fn_free(fn);
}
END_TEST

/* ---- hygiene ------------------------------------------------------------------------------ */

static int count_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    int n = 0;
    for (struct dirent *e; (e = readdir(d));)
        n += e->d_name[0] != '.';
    closedir(d);
    return n;
}

/* Processes whose parent is this one (zombies included). */
static int count_children(void)
{
    DIR *d = opendir("/proc");
    int n = 0;
    pid_t me = getpid();
    for (struct dirent *e; (e = readdir(d));) {
        if (e->d_name[0] < '0' || e->d_name[0] > '9')
            continue;
        char path[300], buf[512];
        snprintf(path, sizeof path, "/proc/%s/stat", e->d_name);
        FILE *f = fopen(path, "r");
        if (!f)
            continue;
        size_t len = fread(buf, 1, sizeof buf - 1, f);
        fclose(f);
        buf[len] = 0;
        char *close_paren = strrchr(buf, ')');
        int ppid = 0;
        if (close_paren && sscanf(close_paren + 2, "%*c %d", &ppid) == 1 && ppid == me)
            n++;
    }
    closedir(d);
    return n;
}

static int add(int a, int b)
{
    return a + b;
}

START_TEST(reuse_cycles)
{
    int cycles = under_valgrind() ? 15 : 200;
    pj_fn *fn = PJ_FN(add, &ffi_type_sint, &ffi_type_sint, &ffi_type_sint);
    pj_task *tasks[16];
    for (int k = 0; k < 16; k++)
        tasks[k] = pj_delayed(fn, k, 1);
    int fds = count_fds(), kids = count_children();
    for (int c = 0; c < cycles; c++) {
        pj_parallel *par = pj_parallel_new(&(pj_config){ .backend = backends[_i], .n_jobs = 2,
            .batch_size = 2 });
        pj_results *res;
        ck_assert_int_eq(pj_run(par, tasks, 16, &res), 0);
        ck_assert_int_eq(pj_result_int(pj_results_at(res, 15)), 16);
        pj_results_free(res);
        pj_parallel_free(par);
    }
    ck_assert_int_eq(count_fds(), fds);
    ck_assert_int_eq(count_children(), kids);
    /* One handle, many runs: the same workers serve them all. */
    pj_parallel *par = pj_parallel_new(&(pj_config){ .backend = backends[_i], .n_jobs = 2 });
    for (int c = 0; c < cycles; c++) {
        pj_results *res;
        ck_assert_int_eq(pj_run(par, tasks, 16, &res), 0);
        pj_results_free(res);
        ck_assert_int_le(count_children(), kids + 2);
    }
    pj_parallel_free(par);
    ck_assert_int_eq(count_fds(), fds);
    ck_assert_int_eq(count_children(), kids);
    for (int k = 0; k < 16; k++)
        pj_task_free(tasks[k]);
    pj_fn_free(fn);
}
END_TEST

static int my_pid(int ms)
{
    struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };
    nanosleep(&ts, NULL);
    return (int)getpid();
}

/* In a child of the test: report the workers' pids on fd, then run something long. */
static _Noreturn void doomed_parent(const char *backend, int fd)
{
    pj_fn *fn = PJ_FN(my_pid, &ffi_type_sint, &ffi_type_sint);
    pj_task *tasks[8];
    for (int k = 0; k < 8; k++)
        tasks[k] = pj_delayed(fn, 30);
    pj_parallel *par = pj_parallel_new(&(pj_config){ .backend = backend, .n_jobs = 2,
        .batch_size = 1 });
    pj_results *res;
    if (pj_run(par, tasks, 8, &res))
        _exit(2);
    for (int k = 0; k < 8; k++) {
        int pid = pj_result_int(pj_results_at(res, k));
        if (write(fd, &pid, sizeof pid) != sizeof pid)
            _exit(3);
    }
    close(fd);
    for (int k = 0; k < 8; k++)
        tasks[k] = pj_delayed(fn, 100000);
    pj_run(par, tasks, 8, &res); /* killed in here */
    _exit(4);
}

static bool alive(pid_t pid)
{
    char path[64], buf[512];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return false;
    size_t len = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[len] = 0;
    char *p = strrchr(buf, ')');
    return p && p[2] != 'Z' && p[2] != 'X';
}

START_TEST(parent_killed)
{
    int pipefd[2];
    ck_assert_int_eq(pipe(pipefd), 0);
    pid_t parent = fork();
    ck_assert_int_ge(parent, 0);
    if (parent == 0) {
        close(pipefd[0]);
        doomed_parent(backends[_i], pipefd[1]);
    }
    close(pipefd[1]);
    int pids[8], got = 0;
    while (got < 8 && read(pipefd[0], &pids[got], sizeof pids[got]) == sizeof pids[got])
        got++;
    close(pipefd[0]);
    ck_assert_int_eq(got, 8);
    usleep(200 * 1000); /* the long run is under way */
    kill(parent, SIGKILL);
    int st;
    waitpid(parent, &st, 0);
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (int k = 0; k < 8; k++) {
        ck_assert_int_ne(pids[k], parent);
        for (int tries = 0; alive(pids[k]) && tries < 200; tries++)
            usleep(10 * 1000);
        ck_assert_msg(!alive(pids[k]), "worker %d outlived its parent", pids[k]);
    }
}
END_TEST

/* ---- worker life ---------------------------------------------------------------------------- */

static int init_value; /* set in workers only, by the initializer */

static void set_init(int v)
{
    init_value = v;
}

static int get_init(int ms)
{
    return my_pid(ms) ? init_value : -1;
}

static int failing_init(void)
{
    pj_fail("no licence server");
    return 0;
}

START_TEST(initializer)
{
    pj_fn *fset = PJ_FN(set_init, &ffi_type_void, &ffi_type_sint);
    pj_fn *fget = PJ_FN(get_init, &ffi_type_sint, &ffi_type_sint);
    pj_task *init = pj_delayed(fset, 42), *tasks[10];
    for (int k = 0; k < 10; k++)
        tasks[k] = pj_delayed(fget, 1);
    pj_parallel *par = pj_parallel_new(&(pj_config){ .backend = backends[_i], .n_jobs = 2,
        .initializer = init, .max_tasks_per_child = 3, .batch_size = 1 });
    pj_results *res;
    ck_assert_int_eq(pj_run(par, tasks, 10, &res), 0);
    for (int k = 0; k < 10; k++) /* recycled workers ran it too */
        ck_assert_int_eq(pj_result_int(pj_results_at(res, k)), 42);
    ck_assert_int_eq(init_value, 0);
    pj_results_free(res);
    pj_parallel_free(par);
    /* An initializer that fails: every task says why, nothing hangs. */
    pj_fn *ffail = PJ_FN(failing_init, &ffi_type_sint);
    pj_task *bad = pj_delayed(ffail);
    par = pj_parallel_new(&(pj_config){ .backend = backends[_i], .n_jobs = 2,
        .initializer = bad, .on_error = PJ_ON_ERROR_CONTINUE });
    ck_assert_int_ne(pj_run(par, tasks, 10, &res), 0);
    for (int k = 0; k < 10; k++) {
        const pj_result *r = pj_results_at(res, k);
        ck_assert_int_ne(r->status, 0);
        ck_assert_ptr_nonnull(strstr(r->message, "no licence server"));
    }
    pj_results_free(res);
    pj_parallel_free(par);
    for (int k = 0; k < 10; k++)
        pj_task_free(tasks[k]);
    pj_task_free(init);
    pj_task_free(bad);
    pj_fn_free(fset);
    pj_fn_free(fget);
    pj_fn_free(ffail);
}
END_TEST

START_TEST(recycling_and_idle)
{
    pj_fn *fn = PJ_FN(my_pid, &ffi_type_sint, &ffi_type_sint);
    pj_task *tasks[12];
    for (int k = 0; k < 12; k++)
        tasks[k] = pj_delayed(fn, 1);
    int kids = count_children();
    pj_parallel *par = pj_parallel_new(&(pj_config){ .backend = backends[_i], .n_jobs = 2,
        .max_tasks_per_child = 2, .batch_size = 4, .idle_worker_timeout = 0.3 });
    pj_results *res;
    ck_assert_int_eq(pj_run(par, tasks, 12, &res), 0);
    int pids[12], distinct = 0;
    for (int k = 0; k < 12; k++) {
        pids[k] = pj_result_int(pj_results_at(res, k));
        bool seen = false;
        for (int j = 0; j < k; j++)
            seen |= pids[j] == pids[k];
        distinct += !seen;
    }
    ck_assert_int_ge(distinct, 6); /* at most 2 tasks per worker */
    pj_results_free(res);
    /* Idle workers leave after idle_worker_timeout and come back for the next run. */
    for (int tries = 0; count_children() > kids && tries < 300; tries++)
        usleep(10 * 1000);
    ck_assert_int_eq(count_children(), kids);
    ck_assert_int_eq(pj_run(par, tasks, 12, &res), 0);
    pj_results_free(res);
    pj_parallel_free(par);
    for (int k = 0; k < 12; k++)
        pj_task_free(tasks[k]);
    pj_fn_free(fn);
}
END_TEST

static Suite *faults_suite(void)
{
    Suite *s = suite_create("faults");
    const struct loop_case cases[] = {
        { "faults_among_1000", faults_among_1000 }, { "crash_stops_run", crash_stops_run },
        { "reuse_cycles", reuse_cycles }, { "parent_killed", parent_killed },
        { "initializer", initializer }, { "recycling_and_idle", recycling_and_idle },
        { "crash_after_return", crash_after_return },
        { "faults_in_uniform_batches", faults_in_uniform_batches },
    };
    add_loop_cases(s, cases, sizeof cases / sizeof cases[0], 300, N_BACKENDS);
    return s;
}

#ifdef CONFORMANCE_MAIN
int main(void)
{
    return run_suite(faults_suite());
}
#endif
