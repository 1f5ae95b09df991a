/* Parallel: configuration (n_jobs, backends, environment defaults, pre_dispatch), the backend
 * registry, pj_run's bad input and busy handle, reuse, big runs, order, error policies,
 * progress callback and joblib's verbose lines, an idle pool's CPU use. */
#include <parjob.h>

#include "internal.h" /* pj__eval_pre_dispatch, pj__format_time: checked directly */

#include <check.h>

#include "helpers.h"
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <regex.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* ---- helpers ------------------------------------------------------------------------------- */

/* Each test restores the environment it changes (CK_FORK=no runs every test in one process). */
static void clear_env(void)
{
    unsetenv("PARJOB_N_JOBS");
    unsetenv("PARJOB_BACKEND");
    unsetenv("PARJOB_VERBOSE");
}

static pj_parallel *new_par(const pj_config *cfg)
{
    pj_parallel *par = pj_parallel_new(cfg);
    ck_assert_msg(par != NULL, "pj_parallel_new: %s", pj_last_errmsg());
    return par;
}

/* pj_parallel_new must refuse cfg with code, its message mentioning needle. */
static void ck_new_refused(const pj_config *cfg, int code, const char *needle)
{
    pj_parallel *par = pj_parallel_new(cfg);
    if (par)
        pj_parallel_free(par);
    ck_assert_msg(par == NULL, "pj_parallel_new accepted what it must refuse (%s)", needle);
    ck_assert_str_eq(pj_err_name(pj_last_error()), pj_err_name(code));
    ck_assert_msg(strstr(pj_last_errmsg(), needle) != NULL, "message \"%s\" lacks \"%s\"",
                  pj_last_errmsg(), needle);
}

static int n_jobs_of(const pj_config *cfg)
{
    pj_parallel *par = new_par(cfg);
    int n = pj_parallel_n_jobs(par);
    pj_parallel_free(par);
    return n;
}

static int expected_negative(int n)
{
    int v = pj_cpu_count() + 1 + n;
    return v < 1 ? 1 : v;
}

/* Task functions. */
static int add(int a, int b)
{
    return a + b;
}

#define MAX_TASKS 1000
static _Atomic int ran[MAX_TASKS];

/* Sleeps us microseconds, counts its call, fails when asked: returns 3 i + 1. */
static int64_t work(int64_t i, int us, int fail)
{
    if (i >= 0 && i < MAX_TASKS)
        atomic_fetch_add(&ran[i], 1);
    if (us > 0)
        sleep_us(us);
    if (fail)
        pj_fail("boom %lld", (long long)i);
    return 3 * i + 1;
}

static pj_fn *work_fn(void)
{
    pj_fn *fn = PJ_FN(work, &ffi_type_sint64, &ffi_type_sint64, &ffi_type_sint, &ffi_type_sint);
    ck_assert_ptr_nonnull(fn);
    return fn;
}

static void reset_ran(void)
{
    for (int i = 0; i < MAX_TASKS; i++)
        atomic_store(&ran[i], 0);
}

static void free_tasks(pj_task **tasks, size_t n)
{
    for (size_t i = 0; i < n; i++)
        pj_task_free(tasks[i]);
}

/* Output capture: fd 1 or 2 into a temporary file, read back as one string. */
struct capture {
    int fd, saved;
    FILE *file;
};

static void capture_begin(struct capture *c, int fd)
{
    fflush(stdout);
    fflush(stderr);
    c->fd = fd;
    c->file = tmpfile();
    ck_assert_ptr_nonnull(c->file);
    c->saved = dup(fd);
    ck_assert_int_ge(c->saved, 0);
    ck_assert_int_ge(dup2(fileno(c->file), fd), 0);
}

static char *capture_end(struct capture *c)
{
    fflush(stdout);
    fflush(stderr);
    dup2(c->saved, c->fd);
    close(c->saved);
    long len = ftell(c->file);
    ck_assert_int_ge(len, 0);
    char *text = calloc(1, (size_t)len + 1);
    rewind(c->file);
    ck_assert_uint_eq(fread(text, 1, (size_t)len, c->file), (size_t)len);
    fclose(c->file);
    return text;
}

static bool matches(const char *line, const char *pattern)
{
    regex_t re;
    ck_assert_int_eq(regcomp(&re, pattern, REG_EXTENDED | REG_NOSUB), 0);
    bool ok = regexec(&re, line, 0, NULL, 0) == 0;
    regfree(&re);
    return ok;
}

/* Splits text into lines (modifies it); returns the count. */
static int split_lines(char *text, char **lines, int max)
{
    int n = 0;
    for (char *save = NULL, *l = strtok_r(text, "\n", &save); l && n < max;
         l = strtok_r(NULL, "\n", &save))
        lines[n++] = l;
    return n;
}

/* ---- n_jobs ---------------------------------------------------------------------------------- */

START_TEST(n_jobs_positive)
{
    clear_env();
    ck_assert_int_eq(n_jobs_of(&(pj_config){ .n_jobs = 1 }), 1);
    ck_assert_int_eq(n_jobs_of(&(pj_config){ .n_jobs = 2 }), 2);
    ck_assert_int_eq(n_jobs_of(&(pj_config){ .n_jobs = 7, .backend = "sequential" }), 7);
    ck_assert_int_eq(n_jobs_of(&(pj_config){ .n_jobs = PJ_MAX_JOBS }), PJ_MAX_JOBS);
}
END_TEST

START_TEST(n_jobs_negative)
{
    clear_env();
    int cpus = pj_cpu_count();
    ck_assert_int_eq(n_jobs_of(&(pj_config){ .n_jobs = -1 }), cpus);
    ck_assert_int_eq(n_jobs_of(&(pj_config){ .n_jobs = -2 }), cpus > 1 ? cpus - 1 : 1);
    for (int n = -3; n >= -12; n--)
        ck_assert_int_eq(n_jobs_of(&(pj_config){ .n_jobs = n }), expected_negative(n));
    ck_assert_int_eq(n_jobs_of(&(pj_config){ .n_jobs = -(cpus + 5) }), 1);
    ck_assert_int_eq(n_jobs_of(&(pj_config){ .n_jobs = -PJ_MAX_JOBS }), 1);
}
END_TEST

START_TEST(n_jobs_zero_uses_env)
{
    clear_env();
    ck_assert_int_eq(n_jobs_of(&(pj_config){ .n_jobs = 0 }), 1);
    setenv("PARJOB_N_JOBS", "3", 1);
    ck_assert_int_eq(n_jobs_of(&(pj_config){ 0 }), 3);
    ck_assert_int_eq(n_jobs_of(&(pj_config){ .n_jobs = 2 }), 2); /* the config wins */
    setenv("PARJOB_N_JOBS", "-1", 1);
    ck_assert_int_eq(n_jobs_of(&(pj_config){ 0 }), pj_cpu_count());
    setenv("PARJOB_N_JOBS", "", 1);
    ck_assert_int_eq(n_jobs_of(&(pj_config){ 0 }), 1);
    setenv("PARJOB_N_JOBS", "abc", 1);
    ck_new_refused(&(pj_config){ 0 }, PJ_EINVAL, "PARJOB_N_JOBS");
    setenv("PARJOB_N_JOBS", "99999", 1);
    ck_new_refused(&(pj_config){ 0 }, PJ_EINVAL, "n_jobs");
    clear_env();
}
END_TEST

START_TEST(n_jobs_absurd)
{
    clear_env();
    ck_new_refused(&(pj_config){ .n_jobs = PJ_MAX_JOBS + 1 }, PJ_EINVAL, "n_jobs");
    ck_new_refused(&(pj_config){ .n_jobs = INT_MAX }, PJ_EINVAL, "n_jobs");
    ck_new_refused(&(pj_config){ .n_jobs = INT_MIN }, PJ_EINVAL, "n_jobs");
    ck_new_refused(&(pj_config){ .n_jobs = -PJ_MAX_JOBS - 1 }, PJ_EINVAL, "n_jobs");
}
END_TEST

/* More workers than CPUs is allowed (joblib allows it too) and runs correctly. */
START_TEST(n_jobs_more_than_cpus)
{
    int n = 2 * pj_cpu_count() + 3;
    pj_parallel *par = new_par(&(pj_config){ .n_jobs = n, .backend = "threading",
                                             .batch_size = 1 });
    ck_assert_int_eq(pj_parallel_n_jobs(par), n);
    pj_fn *fn = work_fn();
    pj_task *tasks[64];
    for (int i = 0; i < 64; i++)
        tasks[i] = pj_delayed(fn, i, 2000, 0);
    pj_results *res;
    ck_assert_int_eq(pj_run(par, tasks, 64, &res), 0);
    for (int i = 0; i < 64; i++)
        ck_assert_int_eq(pj_result_i64(pj_results_at(res, (size_t)i)), 3 * i + 1);
    pj_results_free(res);
    pj_parallel_free(par);
    free_tasks(tasks, 64);
    pj_fn_free(fn);
}
END_TEST

START_TEST(cpu_count_bounds)
{
    int n = pj_cpu_count();
    ck_assert_int_ge(n, 1);
    ck_assert_int_le(n, (int)sysconf(_SC_NPROCESSORS_ONLN));
    cpu_set_t set;
    ck_assert_int_eq(sched_getaffinity(0, sizeof set, &set), 0);
    ck_assert_int_le(n, CPU_COUNT(&set));
}
END_TEST

static int first_allowed_cpu(void)
{
    cpu_set_t set;
    ck_assert_int_eq(sched_getaffinity(0, sizeof set, &set), 0);
    for (int c = 0; c < CPU_SETSIZE; c++)
        if (CPU_ISSET(c, &set))
            return c;
    ck_abort_msg("no CPU in the affinity mask");
    return -1;
}

/* A child restricted to one CPU sees one: n_jobs = -1 and -2 both give 1 worker there. */
START_TEST(cpu_count_one_cpu_affinity)
{
    int cpu = first_allowed_cpu();
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        cpu_set_t one;
        CPU_ZERO(&one);
        CPU_SET(cpu, &one);
        if (sched_setaffinity(0, sizeof one, &one) != 0)
            _exit(10);
        if (pj_cpu_count() != 1)
            _exit(11);
        pj_parallel *par = pj_parallel_new(&(pj_config){ .n_jobs = -1 });
        if (!par || pj_parallel_n_jobs(par) != 1)
            _exit(12);
        pj_parallel_free(par);
        par = pj_parallel_new(&(pj_config){ .n_jobs = -2 });
        if (!par || pj_parallel_n_jobs(par) != 1)
            _exit(13);
        pj_parallel_free(par);
        _exit(0);
    }
    int status;
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0,
                  "child under one-CPU affinity failed with status %d (10: setaffinity, 11: "
                  "pj_cpu_count != 1, 12/13: n_jobs -1/-2 != 1)", status);
}
END_TEST

/* The same through taskset(1): this binary re-executed as `taskset -c N test-parallel` prints
 * pj_cpu_count() (see main). */
START_TEST(cpu_count_under_taskset)
{
    if (access("/usr/bin/taskset", X_OK) != 0 && access("/bin/taskset", X_OK) != 0) {
        fprintf(stderr, "cpu_count_under_taskset: taskset not installed, skipped\n");
        return;
    }
    char self[4096];
    ssize_t len = readlink("/proc/self/exe", self, sizeof self - 1);
    ck_assert_int_gt(len, 0);
    self[len] = 0;
    char cmd[4200];
    snprintf(cmd, sizeof cmd, "taskset -c %d '%s'", first_allowed_cpu(), self);
    setenv("PJ_TEST_PRINT_CPU_COUNT", "1", 1);
    FILE *p = popen(cmd, "r");
    unsetenv("PJ_TEST_PRINT_CPU_COUNT");
    ck_assert_ptr_nonnull(p);
    int count = -1;
    ck_assert_int_eq(fscanf(p, "%d", &count), 1);
    ck_assert_int_eq(pclose(p), 0);
    ck_assert_int_eq(count, 1);
}
END_TEST

/* A pj_parallel made inside a task defaults to one worker, whatever the environment says. */
static int nested_n_jobs(int unused)
{
    (void)unused;
    pj_parallel *inner = pj_parallel_new(NULL);
    if (!inner)
        return -1;
    int n = pj_parallel_n_jobs(inner);
    pj_parallel_free(inner);
    return n;
}

START_TEST(nested_defaults_to_one_job)
{
    clear_env();
    setenv("PARJOB_N_JOBS", "3", 1);
    pj_fn *fn = PJ_FN(nested_n_jobs, &ffi_type_sint, &ffi_type_sint);
    pj_task *t = pj_delayed(fn, 0);
    pj_parallel *par = new_par(&(pj_config){ .n_jobs = 2, .backend = "threading" });
    pj_results *res;
    ck_assert_int_eq(pj_run(par, &t, 1, &res), 0);
    ck_assert_int_eq(pj_result_int(pj_results_at(res, 0)), 1);
    ck_assert_int_eq(n_jobs_of(NULL), 3); /* outside a task the environment applies */
    pj_results_free(res);
    pj_parallel_free(par);
    pj_task_free(t);
    pj_fn_free(fn);
    clear_env();
}
END_TEST

/* ---- backends and other configuration ---------------------------------------------------- */

START_TEST(default_backend)
{
    clear_env();
    pj_parallel *par = new_par(&(pj_config){ .n_jobs = 1 });
    ck_assert_str_eq(pj_parallel_backend(par), "sequential");
    pj_parallel_free(par);
    par = new_par(&(pj_config){ .n_jobs = 2 });
    ck_assert_str_eq(pj_parallel_backend(par), "threading");
    pj_parallel_free(par);
}
END_TEST

START_TEST(env_backend)
{
    clear_env();
    setenv("PARJOB_BACKEND", "sequential", 1);
    pj_parallel *par = new_par(&(pj_config){ .n_jobs = 2 });
    ck_assert_str_eq(pj_parallel_backend(par), "sequential");
    pj_parallel_free(par);
    par = new_par(&(pj_config){ .n_jobs = 2, .backend = "threading" }); /* the config wins */
    ck_assert_str_eq(pj_parallel_backend(par), "threading");
    pj_parallel_free(par);
    setenv("PARJOB_BACKEND", "no-such-backend", 1);
    ck_new_refused(&(pj_config){ .n_jobs = 2 }, PJ_EBACKEND, "no-such-backend");
    clear_env();
}
END_TEST

START_TEST(unknown_backend_lists_known)
{
    clear_env();
    ck_new_refused(&(pj_config){ .n_jobs = 2, .backend = "threads" }, PJ_EBACKEND,
                   "\"threads\"");
    ck_assert_ptr_nonnull(strstr(pj_last_errmsg(), "\"sequential\""));
    ck_assert_ptr_nonnull(strstr(pj_last_errmsg(), "\"threading\""));
}
END_TEST

static char *run_verbose_capture(const pj_config *cfg, int fd);

START_TEST(env_verbose)
{
    clear_env();
    setenv("PARJOB_VERBOSE", "10", 1);
    char *out = run_verbose_capture(&(pj_config){ .n_jobs = 2, .backend = "threading" }, 2);
    ck_assert_msg(strstr(out, "[Parallel(n_jobs=2)]: Using backend ThreadingBackend with 2 "
                              "concurrent workers.\n") != NULL, "stderr was: %s", out);
    free(out);
    /* A negative verbose in the config is silent whatever the environment says. */
    out = run_verbose_capture(&(pj_config){ .n_jobs = 2, .verbose = -1 }, 2);
    ck_assert_str_eq(out, "");
    free(out);
    setenv("PARJOB_VERBOSE", "loud", 1);
    out = run_verbose_capture(&(pj_config){ .n_jobs = 2 }, 2);
    ck_assert_str_eq(out, "");
    free(out);
    clear_env();
    out = run_verbose_capture(&(pj_config){ .n_jobs = 2 }, 2);
    ck_assert_str_eq(out, "");
    free(out);
}
END_TEST

START_TEST(negative_batch_size)
{
    ck_new_refused(&(pj_config){ .n_jobs = 2, .batch_size = -1 }, PJ_EINVAL, "batch_size");
    ck_new_refused(&(pj_config){ .n_jobs = 2, .batch_size = LONG_MIN }, PJ_EINVAL,
                   "batch_size");
}
END_TEST

START_TEST(bad_config_fields)
{
    ck_new_refused(&(pj_config){ .timeout = -1 }, PJ_EINVAL, "timeout");
    ck_new_refused(&(pj_config){ .timeout = NAN }, PJ_EINVAL, "timeout");
    ck_new_refused(&(pj_config){ .return_as = (pj_return_as)7 }, PJ_EINVAL, "return_as");
    ck_new_refused(&(pj_config){ .on_error = (pj_on_error)9 }, PJ_EINVAL, "on_error");
    ck_new_refused(&(pj_config){ .max_tasks_per_child = -1 }, PJ_EINVAL,
                   "max_tasks_per_child");
}
END_TEST

/* NULL config: every field unset, so one sequential worker, and it runs. */
START_TEST(null_config)
{
    clear_env();
    pj_parallel *par = new_par(NULL);
    ck_assert_int_eq(pj_parallel_n_jobs(par), 1);
    ck_assert_str_eq(pj_parallel_backend(par), "sequential");
    ck_assert_str_eq(pj_parallel_errmsg(par), "");
    pj_fn *fn = PJ_FN(add, &ffi_type_sint, &ffi_type_sint, &ffi_type_sint);
    pj_task *tasks[3] = { pj_delayed(fn, 1, 2), pj_delayed(fn, 3, 4), pj_delayed(fn, -5, 5) };
    pj_results *res;
    ck_assert_int_eq(pj_run(par, tasks, 3, &res), 0);
    ck_assert_int_eq(pj_result_int(pj_results_at(res, 0)), 3);
    ck_assert_int_eq(pj_result_int(pj_results_at(res, 1)), 7);
    ck_assert_int_eq(pj_result_int(pj_results_at(res, 2)), 0);
    ck_assert_ptr_null(pj_results_at(res, 3));
    ck_assert_uint_eq(pj_results_count_status(res, 0), 3);
    pj_results_free(res);
    pj_parallel_free(par);
    free_tasks(tasks, 3);
    pj_fn_free(fn);
}
END_TEST

/* ---- pre_dispatch ---------------------------------------------------------------------------- */

static size_t eval_pd(const char *expr, int n_jobs)
{
    size_t out = 0;
    char err[256] = "";
    int rc = pj__eval_pre_dispatch(expr, n_jobs, &out, err, sizeof err);
    ck_assert_msg(rc == 0, "pre_dispatch \"%s\" refused: %s", expr, err);
    return out;
}

START_TEST(pre_dispatch_forms)
{
    ck_assert_uint_eq(eval_pd("all", 3), SIZE_MAX);
    ck_assert_uint_eq(eval_pd("8", 3), 8);
    ck_assert_uint_eq(eval_pd("2*n_jobs", 3), 6);
    ck_assert_uint_eq(eval_pd("n_jobs+4", 3), 7);
    ck_assert_uint_eq(eval_pd("(n_jobs+1)**2", 3), 16);
    ck_assert_uint_eq(eval_pd("-(-3)", 3), 3);
    ck_assert_uint_eq(eval_pd("7//2", 3), 3);
    ck_assert_uint_eq(eval_pd("7%3", 3), 1);
    ck_assert_uint_eq(eval_pd(" 2 * n_jobs ", 5), 10);
    ck_assert_uint_eq(eval_pd("2**3**2", 1), 512);     /* right-associative */
    ck_assert_uint_eq(eval_pd("-2**2+5", 1), 1);       /* ** binds tighter than unary minus */
    ck_assert_uint_eq(eval_pd("-7%3+1", 1), 3);        /* Python's %: -7 % 3 == 2 */
    ck_assert_uint_eq(eval_pd("-7//2+5", 1), 1);       /* floor division: -7 // 2 == -4 */
    ck_assert_uint_eq(eval_pd("n_jobs/2", 3), 1);      /* 1.5, truncated as int() does */
    ck_assert_uint_eq(eval_pd("1+2*3-4", 1), 3);
    ck_assert_uint_eq(eval_pd("+5", 1), 5);
    /* 30 characters is the limit, and it is allowed. */
    ck_assert_uint_eq(strlen(" 1+1+1+1+1+1+1+1+1+1+1+1+1+1+1"), 30);
    ck_assert_uint_eq(eval_pd(" 1+1+1+1+1+1+1+1+1+1+1+1+1+1+1", 1), 15);
}
END_TEST

START_TEST(pre_dispatch_errors)
{
    const char *bad[] = { "", "2*", "n_jobs;rm -rf", "abc", "1+1+1+1+1+1+1+1+1+1+1+1+1+1+1+1",
                          "0", "1/0", "-1", "n_jobs-n_jobs", "(2", "2)", "1e3", "n_jobsx",
                          "2***3", "7%0", "7//0", "system(\"x\")", "2 n_jobs", "0.5" };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        ck_new_refused(&(pj_config){ .n_jobs = 2, .pre_dispatch = bad[i] }, PJ_EINVAL,
                       "pre_dispatch");
        size_t out = 42;
        char err[256];
        ck_assert_msg(pj__eval_pre_dispatch(bad[i], 2, &out, err, sizeof err) == PJ_EINVAL,
                      "\"%s\" accepted", bad[i]);
        ck_assert_uint_eq(out, 42);
    }
    ck_assert_uint_eq(strlen(bad[4]), 31);
    ck_new_refused(&(pj_config){ .pre_dispatch = "1/0" }, PJ_EINVAL, "division by zero");
    ck_new_refused(&(pj_config){ .pre_dispatch = bad[4] }, PJ_EINVAL, "30 characters");
}
END_TEST

/* The default is 2*n_jobs batches, as joblib's. */
START_TEST(pre_dispatch_default)
{
    pj_parallel *par = new_par(&(pj_config){ .n_jobs = 3 });
    ck_assert_uint_eq(par->window, 6);
    pj_parallel_free(par);
    par = new_par(&(pj_config){ .n_jobs = 3, .pre_dispatch = "all" });
    ck_assert_uint_eq(par->window, SIZE_MAX);
    pj_parallel_free(par);
}
END_TEST

START_TEST(format_time)
{
    char buf[32];
    pj__format_time(buf, sizeof buf, 0.04);
    ck_assert_str_eq(buf, "   0.0s");
    pj__format_time(buf, sizeof buf, 5.25);
    ck_assert_str_eq(buf, "   5.2s");
    pj__format_time(buf, sizeof buf, 59.9);
    ck_assert_str_eq(buf, "  59.9s");
    pj__format_time(buf, sizeof buf, 90);
    ck_assert_str_eq(buf, " 1.5min");
    pj__format_time(buf, sizeof buf, 600);
    ck_assert_str_eq(buf, "10.0min");
}
END_TEST

/* ---- a user-registered backend: batches run on a thread of its own ------------------------ */

struct own_node {
    pj_batch *batch;
    struct own_node *next;
};

struct own_state {
    pthread_t thread;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    struct own_node *head, *tail;
    bool stop;
};

static _Atomic int own_opened_workers;
static _Atomic int own_closed;

static void *own_main(void *arg)
{
    struct own_state *s = arg;
    pthread_mutex_lock(&s->lock);
    for (;;) {
        while (!s->head && !s->stop)
            pthread_cond_wait(&s->cond, &s->lock);
        struct own_node *n = s->head;
        if (!n)
            break;
        s->head = n->next;
        if (!s->head)
            s->tail = NULL;
        pthread_mutex_unlock(&s->lock);
        if (pj_batch_run(n->batch) == 0)
            pj_batch_done(n->batch);
        free(n);
        pthread_mutex_lock(&s->lock);
    }
    pthread_mutex_unlock(&s->lock);
    return NULL;
}

static int own_open(void **state, int n_workers, const pj_config *config, char *errbuf,
                    size_t errlen)
{
    (void)config, (void)errbuf, (void)errlen;
    struct own_state *s = calloc(1, sizeof *s);
    if (!s)
        return PJ_ENOMEM;
    pthread_mutex_init(&s->lock, NULL);
    pthread_cond_init(&s->cond, NULL);
    if (pthread_create(&s->thread, NULL, own_main, s)) {
        free(s);
        return PJ_ESYS;
    }
    atomic_store(&own_opened_workers, n_workers);
    *state = s;
    return 0;
}

static int own_submit(void *state, pj_batch *batch)
{
    struct own_state *s = state;
    struct own_node *n = malloc(sizeof *n);
    if (!n)
        return PJ_ENOMEM;
    n->batch = batch;
    n->next = NULL;
    pthread_mutex_lock(&s->lock);
    if (s->tail)
        s->tail->next = n;
    else
        s->head = n;
    s->tail = n;
    pthread_cond_signal(&s->cond);
    pthread_mutex_unlock(&s->lock);
    return 0;
}

static void own_close(void *state)
{
    struct own_state *s = state;
    pthread_mutex_lock(&s->lock);
    s->stop = true;
    pthread_cond_signal(&s->cond);
    pthread_mutex_unlock(&s->lock);
    pthread_join(s->thread, NULL);
    pthread_cond_destroy(&s->cond);
    pthread_mutex_destroy(&s->lock);
    free(s);
    atomic_fetch_add(&own_closed, 1);
}

static const struct pj_backend own_backend = {
    .version = PJ_BACKEND_VERSION,
    .name = "own-thread",
    .display_name = "OwnThreadBackend",
    .features = 0,
    .open = own_open,
    .submit = own_submit,
    .stop_task = NULL,
    .close = own_close,
};

/* Registered once per process (CK_FORK=no runs every test in one). */
static void register_own(void)
{
    int rc = pj_backend_register(&own_backend);
    ck_assert_msg(rc == 0 || (rc == PJ_EBUSY && pj_backend_find("own-thread") == &own_backend),
                  "pj_backend_register: %s", pj_err_name(rc));
    ck_assert_ptr_eq(pj_backend_find("own-thread"), &own_backend);
}

static pthread_t where_ran[64];

static int record_thread(int i)
{
    where_ran[i] = pthread_self();
    return i * i;
}

START_TEST(registered_backend_runs)
{
    clear_env();
    register_own();
    atomic_store(&own_closed, 0);
    pj_parallel *par = new_par(&(pj_config){ .n_jobs = 3, .backend = "own-thread",
                                             .batch_size = 4 });
    ck_assert_str_eq(pj_parallel_backend(par), "own-thread");
    pj_fn *fn = PJ_FN(record_thread, &ffi_type_sint, &ffi_type_sint);
    pj_task *tasks[64];
    for (int i = 0; i < 64; i++)
        tasks[i] = pj_delayed(fn, i);
    for (int round = 0; round < 3; round++) {
        pj_results *res;
        ck_assert_int_eq(pj_run(par, tasks, 64, &res), 0);
        ck_assert_int_eq(atomic_load(&own_opened_workers), 3);
        for (int i = 0; i < 64; i++) {
            ck_assert_int_eq(pj_result_int(pj_results_at(res, (size_t)i)), i * i);
            ck_assert(pthread_equal(where_ran[i], where_ran[0]));
        }
        ck_assert(!pthread_equal(where_ran[0], pthread_self()));
        pj_results_free(res);
    }
    ck_assert_int_eq(atomic_load(&own_closed), 0); /* opened once, kept across runs */
    pj_parallel_free(par);
    ck_assert_int_eq(atomic_load(&own_closed), 1);
    free_tasks(tasks, 64);
    pj_fn_free(fn);
}
END_TEST

START_TEST(registered_backend_verbose_and_listed)
{
    clear_env();
    register_own();
    char *out = run_verbose_capture(&(pj_config){ .n_jobs = 3, .backend = "own-thread",
                                                  .verbose = 1 }, 2);
    ck_assert_msg(strstr(out, "[Parallel(n_jobs=3)]: Using backend OwnThreadBackend with 3 "
                              "concurrent workers.\n") != NULL, "stderr: %s", out);
    free(out);
    ck_new_refused(&(pj_config){ .backend = "nope" }, PJ_EBACKEND, "\"own-thread\"");
}
END_TEST

START_TEST(register_duplicate_and_malformed)
{
    register_own();
    ck_assert_int_eq(pj_backend_register(&own_backend), PJ_EBUSY);
    struct pj_backend dup = own_backend;
    dup.name = "threading";
    ck_assert_int_eq(pj_backend_register(&dup), PJ_EBUSY);
    dup.name = "sequential";
    ck_assert_int_eq(pj_backend_register(&dup), PJ_EBUSY);
    ck_assert_ptr_eq(pj_backend_find("threading"), pj_backend_find("threading"));
    ck_assert_str_eq(pj_backend_find("threading")->name, "threading");

    ck_assert_int_eq(pj_backend_register(NULL), PJ_EINVAL);
    struct pj_backend bad = own_backend;
    bad.name = "malformed";
    bad.version = 0;
    ck_assert_int_eq(pj_backend_register(&bad), PJ_EINVAL);
    bad = own_backend;
    bad.name = NULL;
    ck_assert_int_eq(pj_backend_register(&bad), PJ_EINVAL);
    bad.name = "";
    ck_assert_int_eq(pj_backend_register(&bad), PJ_EINVAL);
    bad = own_backend;
    bad.name = "malformed";
    bad.open = NULL;
    ck_assert_int_eq(pj_backend_register(&bad), PJ_EINVAL);
    bad = own_backend;
    bad.name = "malformed";
    bad.submit = NULL;
    ck_assert_int_eq(pj_backend_register(&bad), PJ_EINVAL);
    bad = own_backend;
    bad.name = "malformed";
    bad.close = NULL;
    ck_assert_int_eq(pj_backend_register(&bad), PJ_EINVAL);
    ck_assert_ptr_null(pj_backend_find("malformed"));
    ck_assert_ptr_null(pj_backend_find("nope"));
    ck_assert_ptr_null(pj_backend_find(NULL));
}
END_TEST

/* ---- pj_run: bad input, busy handle --------------------------------------------------------- */

START_TEST(run_bad_input)
{
    pj_fn *fn = PJ_FN(add, &ffi_type_sint, &ffi_type_sint, &ffi_type_sint);
    pj_task *tasks[5];
    for (int i = 0; i < 5; i++)
        tasks[i] = pj_delayed(fn, i, 1);
    pj_parallel *par = new_par(&(pj_config){ .n_jobs = 2, .backend = "threading" });
    pj_results *res = (pj_results *)&res; /* anything but NULL */

    ck_assert_int_eq(pj_run(NULL, tasks, 5, &res), PJ_EINVAL);
    ck_assert_ptr_null(res);
    ck_assert_int_eq(pj_run(par, tasks, 5, NULL), PJ_EINVAL);

    res = (pj_results *)&res;
    ck_assert_int_eq(pj_run(par, NULL, 5, &res), PJ_EINVAL);
    ck_assert_msg(res == NULL, "pj_run(tasks = NULL) left *results unset");
    ck_assert_ptr_nonnull(strstr(pj_parallel_errmsg(par), "tasks"));

    pj_task *saved = tasks[3];
    tasks[3] = NULL;
    ck_assert_int_eq(pj_run(par, tasks, 5, &res), PJ_EINVAL);
    ck_assert_ptr_null(res);
    ck_assert_msg(strstr(pj_parallel_errmsg(par), "task 3 is NULL") != NULL, "errmsg: %s",
                  pj_parallel_errmsg(par));
    tasks[3] = saved;

    ck_assert_int_eq(pj_run_source(par, NULL, NULL, &res), PJ_EINVAL);
    ck_assert_ptr_null(res);
    ck_assert_ptr_null(pj_start(par, NULL, 3));
    ck_assert_int_eq(pj_last_error(), PJ_EINVAL);
    ck_assert_ptr_null(pj_start(NULL, tasks, 5));
    ck_assert_int_eq(pj_last_error(), PJ_EINVAL);
    ck_assert_ptr_null(pj_start_source(par, NULL, NULL));
    pj_result r;
    ck_assert_int_eq(pj_next(NULL, &r), PJ_EINVAL);
    ck_assert_int_eq(pj_iter_close(NULL), PJ_EINVAL);

    /* None of that left the handle busy or broken. */
    ck_assert_int_eq(pj_run(par, tasks, 5, &res), 0);
    ck_assert_int_eq(pj_result_int(pj_results_at(res, 4)), 5);
    pj_results_free(res);
    pj_parallel_free(par);
    free_tasks(tasks, 5);
    pj_fn_free(fn);
}
END_TEST

static _Atomic int blocker_entered, blocker_release;

static int blocker(int v)
{
    atomic_store(&blocker_entered, 1);
    while (!atomic_load(&blocker_release))
        sleep_us(1000);
    return v;
}

struct bg_run {
    pj_parallel *par;
    pj_task *task;
    pj_results *res;
    int rc;
};

static void *bg_main(void *arg)
{
    struct bg_run *b = arg;
    b->rc = pj_run(b->par, &b->task, 1, &b->res);
    return NULL;
}

START_TEST(run_busy_from_another_thread)
{
    atomic_store(&blocker_entered, 0);
    atomic_store(&blocker_release, 0);
    pj_fn *fn = PJ_FN(blocker, &ffi_type_sint, &ffi_type_sint);
    pj_fn *afn = PJ_FN(add, &ffi_type_sint, &ffi_type_sint, &ffi_type_sint);
    pj_task *quick = pj_delayed(afn, 1, 2);
    struct bg_run bg = { .par = new_par(&(pj_config){ .n_jobs = 2, .backend = "threading" }),
                         .task = pj_delayed(fn, 77) };
    pthread_t th;
    ck_assert_int_eq(pthread_create(&th, NULL, bg_main, &bg), 0);
    while (!atomic_load(&blocker_entered))
        sleep_us(1000);

    pj_results *res = (pj_results *)&res;
    ck_assert_int_eq(pj_run(bg.par, &quick, 1, &res), PJ_EBUSY);
    ck_assert_ptr_null(res);
    ck_assert_ptr_nonnull(strstr(pj_last_errmsg(), "already running"));
    ck_assert_ptr_null(pj_start(bg.par, &quick, 1));
    ck_assert_int_eq(pj_last_error(), PJ_EBUSY);

    atomic_store(&blocker_release, 1);
    ck_assert_int_eq(pthread_join(th, NULL), 0);
    ck_assert_int_eq(bg.rc, 0);
    ck_assert_int_eq(pj_result_int(pj_results_at(bg.res, 0)), 77);
    pj_results_free(bg.res);

    /* Free again: the handle runs for the next caller. */
    ck_assert_int_eq(pj_run(bg.par, &quick, 1, &res), 0);
    ck_assert_int_eq(pj_result_int(pj_results_at(res, 0)), 3);
    pj_results_free(res);
    pj_parallel_free(bg.par);
    pj_task_free(bg.task);
    pj_task_free(quick);
    pj_fn_free(fn);
    pj_fn_free(afn);
}
END_TEST

/* An open iterator holds the handle: a run in the same thread is refused, not deadlocked. */
START_TEST(run_busy_with_open_iterator)
{
    pj_fn *fn = PJ_FN(add, &ffi_type_sint, &ffi_type_sint, &ffi_type_sint);
    pj_task *t = pj_delayed(fn, 2, 2);
    pj_parallel *par = new_par(&(pj_config){ .n_jobs = 2, .return_as = PJ_GENERATOR });
    pj_iter *it = pj_start(par, &t, 1);
    ck_assert_ptr_nonnull(it);
    pj_results *res;
    ck_assert_int_eq(pj_run(par, &t, 1, &res), PJ_EBUSY);
    ck_assert_ptr_null(pj_start(par, &t, 1));
    ck_assert_int_eq(pj_last_error(), PJ_EBUSY);
    pj_result r;
    ck_assert_int_eq(pj_next(it, &r), 0);
    ck_assert_int_eq(pj_result_int(&r), 4);
    ck_assert_int_eq(pj_next(it, &r), PJ_EEND);
    ck_assert_int_eq(pj_iter_close(it), 0);
    ck_assert_int_eq(pj_run(par, &t, 1, &res), 0);
    pj_results_free(res);
    pj_parallel_free(par);
    pj_task_free(t);
    pj_fn_free(fn);
}
END_TEST

/* ---- reuse, size, order ----------------------------------------------------------------------- */

START_TEST(reuse_1000_runs)
{
    static const char *const names[] = { "sequential", "threading" };
    pj_fn *fn = PJ_FN(add, &ffi_type_sint, &ffi_type_sint, &ffi_type_sint);
    pj_task *tasks[16];
    for (int i = 0; i < 16; i++)
        tasks[i] = pj_delayed(fn, i, 1000);
    pj_parallel *par = new_par(&(pj_config){ .n_jobs = 2, .backend = names[_i] });
    for (int run = 0; run < 1000; run++) {
        pj_results *res;
        ck_assert_int_eq(pj_run(par, tasks, 16, &res), 0);
        ck_assert_uint_eq(pj_results_count(res), 16);
        for (int i = 0; i < 16; i++)
            ck_assert_int_eq(pj_result_int(pj_results_at(res, (size_t)i)), i + 1000);
        pj_results_free(res);
    }
    pj_parallel_free(par);
    free_tasks(tasks, 16);
    pj_fn_free(fn);
}
END_TEST

START_TEST(hundred_thousand_tasks)
{
    enum { N = 100000 };
    pj_fn *fn = PJ_FN(add, &ffi_type_sint, &ffi_type_sint, &ffi_type_sint);
    pj_task **tasks = malloc(N * sizeof *tasks);
    for (int i = 0; i < N; i++) {
        tasks[i] = pj_delayed(fn, i, -2 * i);
        ck_assert_ptr_nonnull(tasks[i]);
    }
    pj_parallel *par = new_par(&(pj_config){ .n_jobs = 2, .backend = "threading" });
    pj_results *res;
    ck_assert_int_eq(pj_run(par, tasks, N, &res), 0);
    ck_assert_uint_eq(pj_results_count(res), N);
    ck_assert_uint_eq(pj_results_count_status(res, 0), N);
    for (int i = 0; i < N; i++) {
        const pj_result *r = pj_results_at(res, (size_t)i);
        ck_assert_uint_eq(r->index, (size_t)i);
        ck_assert_int_eq(pj_result_int(r), -i);
    }
    pj_results_free(res);
    pj_parallel_free(par);
    free_tasks(tasks, N);
    free(tasks);
    pj_fn_free(fn);
}
END_TEST

/* Tasks finish out of order (random sleeps): results come back in submission order. */
START_TEST(order_under_random_durations)
{
    static const long batch[] = { 1, 3, 0 };
    enum { N = 300 };
    unsigned seed = 12345u + (unsigned)_i;
    pj_fn *fn = work_fn();
    pj_task *tasks[N];
    for (int i = 0; i < N; i++)
        tasks[i] = pj_delayed(fn, i, rand_r(&seed) % 2000, 0);
    pj_parallel *par = new_par(&(pj_config){ .n_jobs = 4, .backend = "threading",
                                             .batch_size = batch[_i] });
    pj_results *res;
    ck_assert_int_eq(pj_run(par, tasks, N, &res), 0);
    for (int i = 0; i < N; i++) {
        const pj_result *r = pj_results_at(res, (size_t)i);
        ck_assert_uint_eq(r->index, (size_t)i);
        ck_assert_int_eq(r->status, 0);
        ck_assert_int_eq(pj_result_i64(r), 3 * i + 1);
    }
    pj_results_free(res);
    pj_parallel_free(par);
    free_tasks(tasks, N);
    pj_fn_free(fn);
}
END_TEST

/* ---- error policies ---------------------------------------------------------------------------- */

/* Each task's status agrees with what ran: ok and failed tasks ran exactly once, cancelled
 * ones never. */
static void check_statuses_agree(const pj_results *res, size_t n)
{
    ck_assert_uint_eq(pj_results_count(res), n);
    for (size_t i = 0; i < n; i++) {
        const pj_result *r = pj_results_at(res, i);
        ck_assert_uint_eq(r->index, i);
        int calls = atomic_load(&ran[i]);
        switch (r->status) {
        case 0:
            ck_assert_int_eq(calls, 1);
            ck_assert_int_eq(pj_result_i64(r), 3 * (int64_t)i + 1);
            ck_assert_ptr_null(r->message);
            break;
        case PJ_EFAILED:
            ck_assert_int_eq(calls, 1);
            ck_assert_ptr_nonnull(r->message);
            break;
        case PJ_ECANCELLED:
            ck_assert_msg(calls == 0, "task %zu reported cancelled but ran %d times", i, calls);
            ck_assert_ptr_nonnull(r->message);
            break;
        default:
            ck_abort_msg("task %zu: unexpected status %s", i, pj_err_name(r->status));
        }
    }
}

START_TEST(stop_policy_threading)
{
    enum { N = 200, BAD = 10 };
    reset_ran();
    pj_fn *fn = work_fn();
    pj_task *tasks[N];
    for (int i = 0; i < N; i++)
        tasks[i] = pj_delayed(fn, i, 1000, i == BAD);
    pj_parallel *par = new_par(&(pj_config){ .n_jobs = 2, .backend = "threading",
                                             .batch_size = 1 });
    pj_results *res = NULL;
    ck_assert_int_eq(pj_run(par, tasks, N, &res), PJ_EFAILED);
    ck_assert_ptr_nonnull(res);
    ck_assert_str_eq(pj_parallel_errmsg(par), "task 10 (work): boom 10");
    check_statuses_agree(res, N);
    ck_assert_int_eq(pj_results_at(res, BAD)->status, PJ_EFAILED);
    ck_assert_str_eq(pj_results_at(res, BAD)->message, "boom 10");
    ck_assert_uint_eq(pj_results_count_status(res, PJ_EFAILED), 1);
    for (int i = 0; i < BAD; i++) /* started before the failing task: they finish */
        ck_assert_int_eq(pj_results_at(res, (size_t)i)->status, 0);
    /* At most pre_dispatch (4) batches were taken ahead: the rest never started. */
    ck_assert_uint_ge(pj_results_count_status(res, PJ_ECANCELLED), N - BAD - 1 - 8);
    pj_results_free(res);
    pj_parallel_free(par);
    free_tasks(tasks, N);
    pj_fn_free(fn);
}
END_TEST

/* Sequentially the stop is exact: everything after the failure is cancelled. */
START_TEST(stop_policy_sequential)
{
    enum { N = 50, BAD = 17 };
    reset_ran();
    pj_fn *fn = work_fn();
    pj_task *tasks[N];
    for (int i = 0; i < N; i++)
        tasks[i] = pj_delayed(fn, i, 0, i == BAD);
    pj_parallel *par = new_par(&(pj_config){ .n_jobs = 1, .backend = "sequential",
                                             .batch_size = 1 });
    pj_results *res;
    ck_assert_int_eq(pj_run(par, tasks, N, &res), PJ_EFAILED);
    ck_assert_str_eq(pj_parallel_errmsg(par), "task 17 (work): boom 17");
    check_statuses_agree(res, N);
    for (int i = 0; i < N; i++)
        ck_assert_int_eq(pj_results_at(res, (size_t)i)->status,
                         i < BAD ? 0 : i == BAD ? PJ_EFAILED : PJ_ECANCELLED);
    pj_results_free(res);
    pj_parallel_free(par);
    free_tasks(tasks, N);
    pj_fn_free(fn);
}
END_TEST

START_TEST(continue_policy)
{
    static const char *const names[] = { "sequential", "threading" };
    enum { N = 200 };
    reset_ran();
    pj_fn *fn = work_fn();
    pj_task *tasks[N];
    for (int i = 0; i < N; i++)
        tasks[i] = pj_delayed(fn, i, 200, i == 10 || i == 50 || i == 150);
    pj_parallel *par = new_par(&(pj_config){ .n_jobs = 2, .backend = names[_i],
                                             .on_error = PJ_ON_ERROR_CONTINUE });
    pj_results *res;
    ck_assert_int_eq(pj_run(par, tasks, N, &res), PJ_EFAILED);
    check_statuses_agree(res, N);
    ck_assert_uint_eq(pj_results_count_status(res, PJ_EFAILED), 3);
    ck_assert_uint_eq(pj_results_count_status(res, 0), N - 3);
    ck_assert_str_eq(pj_results_at(res, 50)->message, "boom 50");
    const char *msg = pj_parallel_errmsg(par);
    ck_assert_msg(strstr(msg, "task 10 (work): boom 10") || strstr(msg, "task 50 (work)") ||
                  strstr(msg, "task 150 (work)"), "errmsg: %s", msg);
    pj_results_free(res);
    pj_parallel_free(par);
    free_tasks(tasks, N);
    pj_fn_free(fn);
}
END_TEST

/* ---- progress ---------------------------------------------------------------------------------- */

struct progress_log {
    size_t calls, last_done, total_seen;
    double last_elapsed;
    bool monotonic, total_constant;
};

static void on_progress(void *data, size_t done, size_t total, double elapsed)
{
    struct progress_log *log = data;
    if (log->calls && (done < log->last_done || elapsed < log->last_elapsed))
        log->monotonic = false;
    if (log->calls && total != log->total_seen)
        log->total_constant = false;
    log->calls++;
    log->last_done = done;
    log->total_seen = total;
    log->last_elapsed = elapsed;
}

START_TEST(progress_callback_figures)
{
    static const char *const names[] = { "sequential", "threading" };
    enum { N = 100 };
    pj_fn *fn = work_fn();
    pj_task *tasks[N];
    for (int i = 0; i < N; i++)
        tasks[i] = pj_delayed(fn, -1, 100, 0);
    struct progress_log log = { .monotonic = true, .total_constant = true };
    pj_parallel *par = new_par(&(pj_config){ .n_jobs = 2, .backend = names[_i],
                                             .batch_size = 1, .progress = on_progress,
                                             .progress_data = &log });
    pj_results *res;
    ck_assert_int_eq(pj_run(par, tasks, N, &res), 0);
    ck_assert_uint_eq(log.calls, N); /* one call per batch of one */
    ck_assert_msg(log.monotonic, "done or elapsed went backwards");
    ck_assert_msg(log.total_constant, "total changed during the run");
    ck_assert_uint_eq(log.total_seen, N);
    ck_assert_uint_eq(log.last_done, N);
    ck_assert(log.last_elapsed >= 0 && log.last_elapsed < 60);
    pj_results_free(res);
    pj_parallel_free(par);
    free_tasks(tasks, N);
    pj_fn_free(fn);
}
END_TEST

/* Runs n tasks of `us` microseconds under cfg, capturing fd (1 or 2); returns the text. */
static char *run_capture_n(const pj_config *cfg, int fd, int n, int us)
{
    pj_fn *fn = work_fn();
    pj_task **tasks = malloc((size_t)n * sizeof *tasks);
    for (int i = 0; i < n; i++)
        tasks[i] = pj_delayed(fn, -1, us, 0);
    pj_parallel *par = new_par(cfg);
    struct capture c;
    capture_begin(&c, fd);
    pj_results *res;
    int rc = pj_run(par, tasks, (size_t)n, &res);
    char *text = capture_end(&c);
    ck_assert_int_eq(rc, 0);
    pj_results_free(res);
    pj_parallel_free(par);
    free_tasks(tasks, (size_t)n);
    free(tasks);
    pj_fn_free(fn);
    return text;
}

static char *run_verbose_capture(const pj_config *cfg, int fd)
{
    return run_capture_n(cfg, fd, 5, 0);
}

#define PREFIX2 "^\\[Parallel\\(n_jobs=2\\)\\]: "
#define ELAPSED " elapsed: ( {3}[0-9]| {2}[0-9]{2})\\.[0-9]s"

START_TEST(verbose_lines_threading)
{
    clear_env();
    char *text = run_capture_n(&(pj_config){ .n_jobs = 2, .backend = "threading",
                                             .batch_size = 1, .verbose = 10 }, 2, 100, 2000);
    char *lines[400];
    int n = split_lines(text, lines, 400);
    ck_assert_int_ge(n, 3);
    ck_assert_str_eq(lines[0], "[Parallel(n_jobs=2)]: Using backend ThreadingBackend with 2 "
                               "concurrent workers.");
    ck_assert_msg(matches(lines[n - 1], PREFIX2 "Done 100 out of 100 \\|" ELAPSED " finished$"),
                  "last line: %s", lines[n - 1]);
    /* joblib 1.6 prints at these counts (the square-root scale of dispatched batches, one
     * dispatched per completion beyond the 4 of pre_dispatch), and finds its iterator
     * exhausted too late for a "remaining:" line. */
    static const int joblib_k[] = { 1, 4, 9, 14, 21, 28, 37, 46, 57, 68, 81, 94 };
    ck_assert_int_eq(n, 2 + (int)(sizeof joblib_k / sizeof *joblib_k));
    for (int i = 1; i < n - 1; i++) {
        ck_assert_msg(matches(lines[i], PREFIX2 "Done ( {2}[0-9]| [0-9]{2}) out of 100 \\|"
                                        ELAPSED "$"), "unexpected line %d: \"%s\"", i, lines[i]);
        ck_assert_int_eq(atoi(strstr(lines[i], "Done ") + 5), joblib_k[i - 1]);
    }
    free(text);
}
END_TEST

/* Counts take the width of n (joblib's floor(log10(n)) + 1; 3 while n is unknown); joblib's
 * sequential path (n_jobs 1) announces no backend. */
START_TEST(verbose_count_width)
{
    clear_env();
    char *text = run_capture_n(&(pj_config){ .n_jobs = 1, .backend = "sequential",
                                             .batch_size = 1, .verbose = 10 }, 2, 1000, 0);
    char *lines[400];
    int n = split_lines(text, lines, 400);
    ck_assert_str_eq(lines[0], "[Parallel(n_jobs=1)]: Done    1 out of 1000 | elapsed:    0.0s");
    ck_assert_msg(matches(lines[n - 1], "^\\[Parallel\\(n_jobs=1\\)\\]: Done 1000 out of 1000 \\|"
                                        ELAPSED " finished$"), "last: %s", lines[n - 1]);
    for (int i = 0; i < n; i++)
        ck_assert_msg(matches(lines[i], "Done [ 0-9]{4} out of 1000 \\|"), "line %s", lines[i]);
    free(text);

    text = run_capture_n(&(pj_config){ .n_jobs = 1, .verbose = 1 }, 2, 5, 0);
    n = split_lines(text, lines, 400);
    ck_assert_msg(matches(lines[n - 1], "^\\[Parallel\\(n_jobs=1\\)\\]: Done 5 out of 5 \\|"
                                        ELAPSED " finished$"), "last: %s", lines[n - 1]);
    free(text);
}
END_TEST

/* verbose > 10 reports every batch. */
START_TEST(verbose_every_batch)
{
    clear_env();
    char *text = run_capture_n(&(pj_config){ .n_jobs = 1, .backend = "sequential",
                                             .batch_size = 1, .verbose = 11 }, 2, 20, 0);
    char *lines[100];
    int n = split_lines(text, lines, 100);
    ck_assert_int_eq(n, 21); /* 20 "Done" lines, then "finished" */
    for (int i = 0; i < 20; i++) {
        char want[64];
        snprintf(want, sizeof want, "Done %2d out of 20 |", i + 1);
        ck_assert_msg(strstr(lines[i], want), "line %d: %s", i, lines[i]);
    }
    free(text);
}
END_TEST

/* verbose >= 50 writes to stdout, nothing to stderr. */
START_TEST(verbose_50_to_stdout)
{
    clear_env();
    pj_fn *fn = work_fn();
    pj_task *tasks[10];
    for (int i = 0; i < 10; i++)
        tasks[i] = pj_delayed(fn, -1, 0, 0);
    pj_parallel *par = new_par(&(pj_config){ .n_jobs = 2, .backend = "threading",
                                             .verbose = 50 });
    struct capture out_c, err_c;
    capture_begin(&out_c, 1);
    capture_begin(&err_c, 2);
    pj_results *res;
    int rc = pj_run(par, tasks, 10, &res);
    char *err = capture_end(&err_c);
    char *out = capture_end(&out_c);
    ck_assert_int_eq(rc, 0);
    ck_assert_str_eq(err, "");
    ck_assert_msg(strstr(out, "[Parallel(n_jobs=2)]: Using backend ThreadingBackend with 2 "
                              "concurrent workers.\n") != NULL, "stdout: %s", out);
    /* Above verbose 10 every completion prints; the last says "finished" unless that
     * completion was also the one to find the source exhausted (joblib prints none then). */
    ck_assert_ptr_nonnull(strstr(out, "Done 10 out of 10 |"));
    free(err);
    free(out);
    pj_results_free(res);
    pj_parallel_free(par);
    free_tasks(tasks, 10);
    pj_fn_free(fn);
}
END_TEST

/* While the source's length is unknown (a producer), lines count tasks: "Done  k tasks". */
struct counted_source {
    pj_fn *fn;
    int left;
};

static int produce_counted(void *state, pj_task **task)
{
    struct counted_source *src = state;
    if (src->left == 0)
        return 0;
    src->left--;
    *task = pj_delayed(src->fn, -1, 0, 0);
    return 1;
}

START_TEST(verbose_unknown_total)
{
    clear_env();
    struct counted_source src = { work_fn(), 30 };
    pj_parallel *par = new_par(&(pj_config){ .n_jobs = 1, .backend = "sequential",
                                             .batch_size = 1, .verbose = 10 });
    struct capture c;
    capture_begin(&c, 2);
    pj_results *res;
    int rc = pj_run_source(par, produce_counted, &src, &res);
    char *text = capture_end(&c);
    ck_assert_int_eq(rc, 0);
    ck_assert_uint_eq(pj_results_count(res), 30);
    pj_results_free(res);
    pj_parallel_free(par);
    pj_fn_free(src.fn);
    char *lines[100];
    int n = split_lines(text, lines, 100);
    ck_assert_str_eq(lines[0], "[Parallel(n_jobs=1)]: Done   1 tasks      | elapsed:    0.0s");
    ck_assert_msg(matches(lines[n - 1], "^\\[Parallel\\(n_jobs=1\\)\\]: Done  30 out of  30 \\|"
                                        ELAPSED " finished$"), "last: %s", lines[n - 1]);
    free(text);
}
END_TEST

/* ---- an idle pool sleeps ---------------------------------------------------------------------- */

static double process_cpu_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

START_TEST(idle_pool_uses_no_cpu)
{
    pj_fn *fn = work_fn();
    pj_task *tasks[100];
    for (int i = 0; i < 100; i++)
        tasks[i] = pj_delayed(fn, -1, 100, 0);
    pj_parallel *par = new_par(&(pj_config){ .n_jobs = 4, .backend = "threading" });
    pj_results *res;
    ck_assert_int_eq(pj_run(par, tasks, 100, &res), 0);
    pj_results_free(res);
    /* The four workers are alive and idle now. */
    double cpu0 = process_cpu_s(), wall0 = now_s();
    sleep_us(200000);
    double cpu = process_cpu_s() - cpu0, wall = now_s() - wall0;
    double limit = under_valgrind() ? 0.1 : 0.02;
    ck_assert_msg(cpu < limit, "idle pool used %.1f ms of CPU in %.0f ms", cpu * 1e3, wall * 1e3);
    pj_parallel_free(par);
    free_tasks(tasks, 100);
    pj_fn_free(fn);
}
END_TEST

/* ---- suite ------------------------------------------------------------------------------------- */

static void add_test(Suite *s, const char *name, const TTest *test, int loops)
{
    TCase *tc = tcase_create(name);
    tcase_set_timeout(tc, 120);
    if (loops)
        tcase_add_loop_test(tc, test, 0, loops);
    else
        tcase_add_test(tc, test);
    suite_add_tcase(s, tc);
}

#define ADD(s, t) add_test(s, #t, t, 0)
#define ADD_LOOP(s, t, n) add_test(s, #t, t, n)

int main(void)
{
    if (getenv("PJ_TEST_PRINT_CPU_COUNT")) { /* re-executed by cpu_count_under_taskset */
        printf("%d\n", pj_cpu_count());
        return 0;
    }
    Suite *s = suite_create("parallel");
    ADD(s, n_jobs_positive);
    ADD(s, n_jobs_negative);
    ADD(s, n_jobs_zero_uses_env);
    ADD(s, n_jobs_absurd);
    ADD(s, n_jobs_more_than_cpus);
    ADD(s, cpu_count_bounds);
    ADD(s, cpu_count_one_cpu_affinity);
    ADD(s, cpu_count_under_taskset);
    ADD(s, nested_defaults_to_one_job);
    ADD(s, default_backend);
    ADD(s, env_backend);
    ADD(s, unknown_backend_lists_known);
    ADD(s, env_verbose);
    ADD(s, negative_batch_size);
    ADD(s, bad_config_fields);
    ADD(s, null_config);
    ADD(s, pre_dispatch_forms);
    ADD(s, pre_dispatch_errors);
    ADD(s, pre_dispatch_default);
    ADD(s, format_time);
    ADD(s, registered_backend_runs);
    ADD(s, registered_backend_verbose_and_listed);
    ADD(s, register_duplicate_and_malformed);
    ADD(s, run_bad_input);
    ADD(s, run_busy_from_another_thread);
    ADD(s, run_busy_with_open_iterator);
    ADD_LOOP(s, reuse_1000_runs, 2);
    ADD(s, hundred_thousand_tasks);
    ADD_LOOP(s, order_under_random_durations, 3);
    ADD(s, stop_policy_threading);
    ADD(s, stop_policy_sequential);
    ADD_LOOP(s, continue_policy, 2);
    ADD_LOOP(s, progress_callback_figures, 2);
    ADD(s, verbose_lines_threading);
    ADD(s, verbose_count_width);
    ADD(s, verbose_every_batch);
    ADD(s, verbose_50_to_stdout);
    ADD(s, verbose_unknown_total);
    ADD(s, idle_pool_uses_no_cpu);

    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_ENV);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
