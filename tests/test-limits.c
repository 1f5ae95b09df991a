/* Many workers (issue 18).  n_jobs above what the machine can start: a process or descriptor
 * limit that lets only some workers start.  The run still completes on the workers that
 * started, says so once (verbose), and never hangs or crashes; when no worker can start, the
 * run fails with PJ_ESYS and why.  And what a fork worker holds does not grow with n_jobs.
 *
 * Each scenario runs in a child process of the test's own (setrlimit and setuid must not reach
 * the test runner, with or without CK_FORK), with stderr on a pipe the test reads: the child's
 * exit status is its verdict on the results, the pipe holds what it said. */
#include <parjob.h>

#include "helpers.h"

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#define N_JOBS 64
#define N_TASKS 300
#define SCENARIO_S 60 /* a hang shows as the child killed by SIGALRM */
#define UNUSED_UID 61234 /* no process runs as this user: RLIMIT_NPROC counts ours only */

static const char *const backends[] = { "fork", "spawn" };

enum limit { NOFILE_SOME, NOFILE_NONE, NPROC_SOME };

/* 20 ms a task: the run lasts until the pool has tried to start every worker it will (they
 * start while the first batches run), slow starts under valgrind included, so the limit is
 * met and said before the run ends. */
static int twice(int x)
{
    usleep(20 * 1000);
    return 2 * x;
}

/* The lowest descriptor number free now: where the pool's first descriptor will go. */
static int lowest_free_fd(void)
{
    int fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    close(fd);
    return fd;
}

/* Threads of this process now (RLIMIT_NPROC counts threads too). */
static int threads_now(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[128];
    int n = 1;
    while (f && fgets(line, sizeof line, f))
        if (sscanf(line, "Threads: %d", &n) == 1)
            break;
    if (f)
        fclose(f);
    return n;
}

static void apply_limit(enum limit limit)
{
    if (limit == NPROC_SOME) {
        /* This process, the pool's two threads, and about four workers. */
        struct rlimit r = { (rlim_t)threads_now() + 2 + 4, (rlim_t)threads_now() + 2 + 4 };
        if (setgid(UNUSED_UID) || setuid(UNUSED_UID) || setrlimit(RLIMIT_NPROC, &r))
            _exit(90);
        return;
    }
    /* The pool's own five descriptors (eventfd, epoll, memfd, the launcher's socket pair),
     * then room for the channels of a few workers (two descriptors while one starts) — or
     * for none. */
    int room = limit == NOFILE_SOME ? 5 + 8 : 5;
    struct rlimit r;
    getrlimit(RLIMIT_NOFILE, &r);
    r.rlim_cur = (rlim_t)(lowest_free_fd() + room);
    if (setrlimit(RLIMIT_NOFILE, &r))
        _exit(90);
}

/* The child: a run of N_TASKS on N_JOBS workers under the limit.  Exit 0: every result right;
 * 3: the run failed with PJ_ESYS (and said why); anything else: wrong. */
static _Noreturn void scenario(const char *backend, enum limit limit)
{
    alarm(SCENARIO_S);
    pj_fn *fn = PJ_FN(twice, &ffi_type_sint, &ffi_type_sint);
    pj_task *tasks[N_TASKS];
    for (int i = 0; i < N_TASKS; i++)
        tasks[i] = pj_delayed(fn, i);
    apply_limit(limit);
    pj_parallel *par = pj_parallel_new(&(pj_config){ .n_jobs = N_JOBS, .backend = backend,
                                                     .verbose = 1 });
    if (!par)
        _exit(91);
    pj_results *res;
    int rc = pj_run(par, tasks, N_TASKS, &res);
    if (rc == PJ_ESYS) {
        fprintf(stderr, "run failed: %s\n", pj_parallel_errmsg(par));
        _exit(3);
    }
    if (rc)
        _exit(92);
    for (int i = 0; i < N_TASKS; i++)
        if (pj_result_int(pj_results_at(res, (size_t)i)) != 2 * i)
            _exit(93);
    pj_results_free(res);
    pj_parallel_free(par);
    _exit(0);
}

/* Runs the scenario in a child; returns its wait status, its stderr in out. */
static int run_scenario(const char *backend, enum limit limit, char *out, size_t cap)
{
    int pipefd[2];
    ck_assert_int_eq(pipe(pipefd), 0);
    fflush(NULL);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        dup2(pipefd[1], 2);
        close(pipefd[0]);
        close(pipefd[1]);
        scenario(backend, limit);
    }
    close(pipefd[1]);
    size_t len = 0;
    ssize_t k;
    while (len + 1 < cap && (k = read(pipefd[0], out + len, cap - 1 - len)) != 0)
        if (k > 0)
            len += (size_t)k;
        else if (errno != EINTR)
            break;
    out[len] = 0;
    close(pipefd[0]);
    int status;
    while (waitpid(pid, &status, 0) < 0)
        ck_assert_int_eq(errno, EINTR);
    return status;
}

static int count_of(const char *hay, const char *needle)
{
    int n = 0;
    for (const char *at = hay; (at = strstr(at, needle)); at += strlen(needle))
        n++;
    return n;
}

/* The one notice: "only K of N_JOBS workers could start (why; limits)", K in 1..N_JOBS-1. */
static void check_one_notice(const char *said, const char *why)
{
    ck_assert_msg(count_of(said, "workers could start") == 1, "said: %s", said);
    const char *at = strstr(said, "only ");
    int k = 0, of = 0;
    ck_assert_msg(at && sscanf(at, "only %d of %d", &k, &of) == 2, "said: %s", said);
    ck_assert_int_eq(of, N_JOBS);
    ck_assert_msg(k >= 1 && k < N_JOBS, "%d workers started: %s", k, said);
    ck_assert_msg(strstr(at, "RLIMIT_NPROC") && strstr(at, "RLIMIT_NOFILE"), "said: %s", said);
    /* valgrind keeps descriptors of its own under the limit and refuses some of ours itself */
    ck_assert_msg(under_valgrind() || strstr(at, why), "said: %s", said);
}

START_TEST(descriptor_limit_runs_on_the_workers_that_started)
{
    char said[16384];
    int status = run_scenario(backends[_i], NOFILE_SOME, said, sizeof said);
    ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0, "%s: status %#x, said: %s",
                  backends[_i], status, said);
    check_one_notice(said, strerror(EMFILE));
}
END_TEST

START_TEST(descriptor_limit_for_no_worker_fails_the_run_clearly)
{
    char said[16384];
    int status = run_scenario(backends[_i], NOFILE_NONE, said, sizeof said);
    ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 3, "%s: status %#x, said: %s",
                  backends[_i], status, said);
    ck_assert_msg(under_valgrind() || strstr(said, strerror(EMFILE)), "said: %s", said);
}
END_TEST

START_TEST(process_limit_runs_on_the_workers_that_started)
{
    if (geteuid() != 0) {
        /* Only root can take a user of its own, whose process count is ours alone. */
        fprintf(stderr, "process_limit: not root, RLIMIT_NPROC scenario not run\n");
        return;
    }
    char said[16384];
    int status = run_scenario(backends[_i], NPROC_SOME, said, sizeof said);
    ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0, "%s: status %#x, said: %s",
                  backends[_i], status, said);
    check_one_notice(said, strerror(EAGAIN));
}
END_TEST

/* Descriptors above stderr open in the calling process, /proc/self/fd's own excluded. */
static int fds_above_stderr(void)
{
    DIR *d = opendir("/proc/self/fd");
    if (!d)
        return -1;
    int n = 0;
    for (struct dirent *e; (e = readdir(d));)
        n += e->d_name[0] != '.' && atoi(e->d_name) > 2 && atoi(e->d_name) != dirfd(d);
    closedir(d);
    return n;
}

START_TEST(fork_worker_holds_only_its_channel_however_many_workers)
{
    if (under_valgrind())
        return; /* valgrind's own descriptors show in a worker's /proc/self/fd */
    enum { N = 256 };
    int mine = open("/dev/null", O_RDONLY); /* not close-on-exec: fork would keep it */
    ck_assert_int_ge(mine, 0);
    pj_fn *fn = PJ_FN(fds_above_stderr, &ffi_type_sint);
    pj_task *tasks[N];
    for (int i = 0; i < N; i++)
        tasks[i] = pj_task_new(fn, NULL);
    pj_parallel *par = pj_parallel_new(&(pj_config){ .n_jobs = N, .backend = "fork" });
    pj_results *res;
    int rc = pj_run(par, tasks, N, &res);
    ck_assert_msg(rc == 0, "%s", pj_parallel_errmsg(par));
    for (int i = 0; i < N; i++)
        ck_assert_msg(pj_result_int(pj_results_at(res, (size_t)i)) == 1,
                      "task %d: its worker holds %d descriptors above stderr, not 1 (its "
                      "channel)", i, pj_result_int(pj_results_at(res, (size_t)i)));
    pj_results_free(res);
    pj_parallel_free(par);
    for (int i = 0; i < N; i++)
        pj_task_free(tasks[i]);
    pj_fn_free(fn);
    close(mine);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("limits");
    const struct loop_case cases[] = {
        { "nofile_some", descriptor_limit_runs_on_the_workers_that_started },
        { "nofile_none", descriptor_limit_for_no_worker_fails_the_run_clearly },
        { "nproc_some", process_limit_runs_on_the_workers_that_started },
    };
    add_loop_cases(s, cases, sizeof cases / sizeof *cases, SCENARIO_S + 30, 2);
    TCase *tc = tcase_create("inherited");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, fork_worker_holds_only_its_channel_however_many_workers);
    suite_add_tcase(s, tc);
    return run_suite(s);
}
