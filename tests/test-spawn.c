/* The spawn backend's own promises (the shared conformance suite, test-backends.c, covers the
 * rest): functions resolve in a re-executed worker — a static function of this program, pow from
 * libm, a function of a library dlopen'ed at run time — and an unresolvable one is refused at
 * dispatch naming the task; workers get nothing of the parent but their channel; a malformed
 * worker descriptor is refused; a parent whose other threads hold locks and allocate all the
 * time never deadlocks a spawn. */
#include "internal.h"

#include <check.h>

#include "helpers.h"
#include <dirent.h>
#include <dlfcn.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

static int add(int a, int b)
{
    return a + b;
}

static long my_pid(void)
{
    return (long)getpid();
}

static long my_ppid(void)
{
    return (long)getppid();
}

/* Address of a static function as this process sees it: differs between processes under ASLR. */
static long where_is_add(void)
{
    return (long)(intptr_t)add;
}

/* Descriptors above stderr open in this process, /proc/self/fd's own excluded. */
static int count_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    if (!d)
        return -1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        if (e->d_name[0] != '.' && atoi(e->d_name) > 2 && atoi(e->d_name) != dirfd(d))
            n++;
    closedir(d);
    return n;
}

/* 1 when descriptor fd is open here. */
static int fd_open(int fd)
{
    return fcntl(fd, F_GETFD) >= 0;
}

static int worker_env_visible(void)
{
    return getenv("PARJOB_WORKER_FD") != NULL;
}

static int pdeathsig(void)
{
    int sig = 0;
    prctl(PR_GET_PDEATHSIG, &sig);
    return sig;
}

static pj_parallel *spawn_par(int n_jobs)
{
    pj_parallel *par = pj_parallel_new(&(pj_config){ .n_jobs = n_jobs, .backend = "spawn" });
    ck_assert_msg(par, "%s", pj_last_errmsg());
    return par;
}

/* Runs n copies of fn() (no arguments, long result) on spawn; results into out[]. */
static void run_nullary(pj_parallel *par, pj_fn *fn, int n, long *out)
{
    pj_task *tasks[16];
    ck_assert_int_le(n, 16);
    for (int i = 0; i < n; i++)
        tasks[i] = pj_task_new(fn, NULL);
    pj_results *res;
    int rc = pj_run(par, tasks, (size_t)n, &res);
    ck_assert_msg(rc == 0, "%s: %s", pj_err_name(rc), pj_parallel_errmsg(par));
    for (int i = 0; i < n; i++) {
        out[i] = (long)pj_result_i64(pj_results_at(res, (size_t)i));
        pj_task_free(tasks[i]);
    }
    pj_results_free(res);
}

/* ---- function resolution ------------------------------------------------------------------- */

START_TEST(static_function_of_the_program)
{
    pj_fn *fn = PJ_FN(add, &ffi_type_sint, &ffi_type_sint, &ffi_type_sint);
    pj_task *tasks[50];
    for (int i = 0; i < 50; i++)
        tasks[i] = pj_delayed(fn, i, 1000);
    pj_parallel *par = spawn_par(2);
    pj_results *res;
    ck_assert_int_eq(pj_run(par, tasks, 50, &res), 0);
    for (int i = 0; i < 50; i++)
        ck_assert_int_eq(pj_result_int(pj_results_at(res, (size_t)i)), i + 1000);
    pj_results_free(res);
    pj_parallel_free(par);
    for (int i = 0; i < 50; i++)
        pj_task_free(tasks[i]);
    pj_fn_free(fn);
}
END_TEST

START_TEST(pow_from_libm)
{
    pj_fn *fn = PJ_FN(pow, &ffi_type_double, &ffi_type_double, &ffi_type_double);
    pj_task *tasks[20];
    for (int i = 0; i < 20; i++)
        tasks[i] = pj_delayed(fn, 2, i);
    pj_parallel *par = spawn_par(2);
    pj_results *res;
    ck_assert_int_eq(pj_run(par, tasks, 20, &res), 0);
    for (int i = 0; i < 20; i++)
        ck_assert_double_eq(pj_result_double(pj_results_at(res, (size_t)i)), ldexp(1, i));
    pj_results_free(res);
    pj_parallel_free(par);
    for (int i = 0; i < 20; i++)
        pj_task_free(tasks[i]);
    pj_fn_free(fn);
}
END_TEST

/* The test module sits next to this executable (tests/meson.build builds it there). */
static void *open_test_module(void)
{
    char path[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", path, sizeof path - 32);
    ck_assert_int_gt(n, 0);
    path[n] = 0;
    strcpy(strrchr(path, '/') + 1, "spawn-module.so");
    void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    ck_assert_msg(h, "%s", dlerror());
    return h;
}

START_TEST(function_of_a_library_dlopened_at_run_time)
{
    void *h = open_test_module();
    void (*mul)(void) = (void (*)(void))dlsym(h, "pjmod_mul");
    long (*(*hidden)(void))(long) = (long (*(*)(void))(long))dlsym(h, "pjmod_hidden");
    ck_assert(mul && hidden);
    pj_fn *mul_fn = pj_fn_new_list("pjmod_mul", mul, 3, (ffi_type *[]){ &ffi_type_sint,
                                   &ffi_type_sint, &ffi_type_sint });
    /* A static function of the module: found by offset, with no symbol to look up. */
    pj_fn *sq_fn = pj_fn_new_list("hidden_square", (void (*)(void))hidden(), 2,
                                  (ffi_type *[]){ &ffi_type_slong, &ffi_type_slong });
    pj_task *tasks[20];
    for (int i = 0; i < 10; i++) {
        tasks[i] = pj_delayed(mul_fn, i, 7);
        tasks[10 + i] = pj_delayed(sq_fn, (long)i + 100);
    }
    pj_parallel *par = spawn_par(2);
    pj_results *res;
    int rc = pj_run(par, tasks, 20, &res);
    ck_assert_msg(rc == 0, "%s", pj_parallel_errmsg(par));
    for (int i = 0; i < 10; i++) {
        ck_assert_int_eq(pj_result_int(pj_results_at(res, (size_t)i)), 7 * i);
        ck_assert_int_eq(pj_result_i64(pj_results_at(res, (size_t)i + 10)),
                         (long)(i + 100) * (i + 100));
    }
    pj_results_free(res);
    pj_parallel_free(par);
    for (int i = 0; i < 20; i++)
        pj_task_free(tasks[i]);
    pj_fn_free(mul_fn);
    pj_fn_free(sq_fn);
    dlclose(h);
}
END_TEST

static void copy_file(const char *from, const char *to)
{
    FILE *in = fopen(from, "rbe"), *out = fopen(to, "wbe");
    ck_assert(in && out);
    char buf[8192];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, in)) > 0)
        ck_assert_uint_eq(fwrite(buf, 1, n, out), n);
    fclose(in);
    ck_assert_int_eq(fclose(out), 0);
}

START_TEST(library_replaced_on_disk_is_refused_not_called)
{
    /* A worker loads a library from its path; were the file replaced since the parent loaded it
     * (an upgrade), the offset would point into other code.  The worker must see it and refuse. */
    char module[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", module, sizeof module - 32);
    ck_assert_int_gt(n, 0);
    module[n] = 0;
    strcpy(strrchr(module, '/') + 1, "spawn-module.so");
    char dir[] = "/tmp/pj-spawn-XXXXXX", lib[64], next[64];
    ck_assert_ptr_nonnull(mkdtemp(dir));
    snprintf(lib, sizeof lib, "%s/mod.so", dir);
    snprintf(next, sizeof next, "%s/mod.so.new", dir);
    copy_file(module, lib);
    void *h = dlopen(lib, RTLD_NOW | RTLD_LOCAL);
    ck_assert_msg(h, "%s", dlerror());
    copy_file(module, next);
    ck_assert_int_eq(rename(next, lib), 0); /* same path, another file */
    pj_fn *fn = pj_fn_new_list("pjmod_mul", (void (*)(void))dlsym(h, "pjmod_mul"), 3,
                               (ffi_type *[]){ &ffi_type_sint, &ffi_type_sint, &ffi_type_sint });
    pj_task *t = pj_delayed(fn, 6, 7);
    pj_parallel *par = spawn_par(1);
    pj_results *res;
    ck_assert_int_eq(pj_run(par, &t, 1, &res), PJ_ERESOLVE);
    const pj_result *r = pj_results_at(res, 0);
    ck_assert_int_eq(r->status, PJ_ERESOLVE);
    ck_assert_msg(strstr(r->message, "not the file the parent loaded"), "%s", r->message);
    pj_results_free(res);
    pj_parallel_free(par);
    pj_task_free(t);
    pj_fn_free(fn);
    dlclose(h);
    unlink(lib);
    rmdir(dir);
}
END_TEST

START_TEST(unresolvable_function_is_refused_at_dispatch)
{
    /* A code page no loaded object owns, as a JIT would make: never called. */
    void *page = mmap(NULL, 4096, PROT_READ | PROT_EXEC, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    ck_assert_ptr_ne(page, MAP_FAILED);
    pj_fn *jit = pj_fn_new_list("jit_fn", (void (*)(void))page, 1,
                                (ffi_type *[]){ &ffi_type_sint });
    pj_fn *ok = PJ_FN(add, &ffi_type_sint, &ffi_type_sint, &ffi_type_sint);
    pj_task *tasks[4] = { pj_delayed(ok, 1, 2), pj_delayed(ok, 3, 4), pj_task_new(jit, NULL),
                          pj_delayed(ok, 5, 6) };
    pj_parallel *par = pj_parallel_new(&(pj_config){ .n_jobs = 2, .backend = "spawn",
                                                     .batch_size = 1,
                                                     .on_error = PJ_ON_ERROR_CONTINUE });
    pj_results *res;
    int rc = pj_run(par, tasks, 4, &res);
    ck_assert_msg(rc == PJ_ERESOLVE, "%s: %s", pj_err_name(rc), pj_parallel_errmsg(par));
    const char *msg = pj_parallel_errmsg(par);
    ck_assert_msg(strstr(msg, "task 2") && strstr(msg, "jit_fn") && strstr(msg, "anonymous"),
                  "message does not name the task and the cause: %s", msg);
    if (res) {
        ck_assert_int_eq(pj_results_at(res, 2)->status, PJ_ERESOLVE);
        ck_assert_int_eq(pj_result_int(pj_results_at(res, 3)), 11);
        pj_results_free(res);
    }
    pj_parallel_free(par);
    for (int i = 0; i < 4; i++)
        pj_task_free(tasks[i]);
    pj_fn_free(jit);
    pj_fn_free(ok);
    munmap(page, 4096);
}
END_TEST

struct producer {
    pj_task **tasks;
    int n, next;
};

static int produce(void *state, pj_task **out)
{
    struct producer *p = state;
    if (p->next == p->n)
        return 0;
    *out = p->tasks[p->next++];
    return 1;
}

START_TEST(unresolvable_function_from_a_producer_fails_that_task_only)
{
    void *page = mmap(NULL, 4096, PROT_READ | PROT_EXEC, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    ck_assert_ptr_ne(page, MAP_FAILED);
    pj_fn *jit = pj_fn_new_list("jit_fn", (void (*)(void))page, 1,
                                (ffi_type *[]){ &ffi_type_sint });
    pj_fn *ok = PJ_FN(add, &ffi_type_sint, &ffi_type_sint, &ffi_type_sint);
    pj_task *tasks[5] = { pj_delayed(ok, 1, 2), pj_delayed(ok, 3, 4), pj_task_new(jit, NULL),
                          pj_delayed(ok, 5, 6), pj_delayed(ok, 7, 8) };
    struct producer prod = { tasks, 5, 0 };
    pj_parallel *par = pj_parallel_new(&(pj_config){ .n_jobs = 2, .backend = "spawn",
                                                     .batch_size = 4,
                                                     .on_error = PJ_ON_ERROR_CONTINUE });
    pj_results *res;
    int rc = pj_run_source(par, produce, &prod, &res); /* the tasks are parjob's now */
    ck_assert_msg(rc == PJ_ERESOLVE, "%s: %s", pj_err_name(rc), pj_parallel_errmsg(par));
    ck_assert_uint_eq(pj_results_count(res), 5);
    const int want[5] = { 3, 7, 0, 11, 15 };
    for (size_t i = 0; i < 5; i++) {
        const pj_result *r = pj_results_at(res, i);
        if (i == 2) {
            ck_assert_int_eq(r->status, PJ_ERESOLVE);
            ck_assert_msg(strstr(r->message, "task 2 (jit_fn)"), "%s", r->message);
        } else {
            ck_assert_int_eq(r->status, 0);
            ck_assert_int_eq(pj_result_int(r), want[i]);
        }
    }
    pj_results_free(res);
    pj_parallel_free(par);
    pj_fn_free(jit);
    pj_fn_free(ok);
    munmap(page, 4096);
}
END_TEST

/* ---- what a worker is given ---------------------------------------------------------------- */

START_TEST(worker_is_a_fresh_child_with_only_its_channel)
{
    /* A descriptor opened without O_CLOEXEC must still not cross. */
    int leaky = open("/dev/null", O_RDONLY);
    ck_assert_int_ge(leaky, 0);
    pj_fn *pid_fn = PJ_FN(my_pid, &ffi_type_slong);
    pj_fn *ppid_fn = PJ_FN(my_ppid, &ffi_type_slong);
    pj_fn *fds_fn = PJ_FN(count_fds, &ffi_type_sint);
    pj_fn *open_fn = PJ_FN(fd_open, &ffi_type_sint, &ffi_type_sint);
    pj_fn *env_fn = PJ_FN(worker_env_visible, &ffi_type_sint);
    pj_fn *sig_fn = PJ_FN(pdeathsig, &ffi_type_sint);
    pj_parallel *par = spawn_par(1);
    long v[4];
    run_nullary(par, pid_fn, 1, v);
    ck_assert_int_ne(v[0], getpid());
    run_nullary(par, ppid_fn, 1, v);
    ck_assert_int_eq(v[0], getpid());
    run_nullary(par, fds_fn, 1, v);
    ck_assert_msg(v[0] == 1, "worker has %ld descriptors above stderr, not just its channel",
                  v[0]);
    run_nullary(par, env_fn, 1, v);
    ck_assert_int_eq(v[0], 0);
    run_nullary(par, sig_fn, 1, v);
    ck_assert_int_eq(v[0], SIGKILL);
    pj_task *t = pj_delayed(open_fn, leaky);
    pj_results *res;
    ck_assert_int_eq(pj_run(par, &t, 1, &res), 0);
    ck_assert_int_eq(pj_result_int(pj_results_at(res, 0)), 0);
    pj_results_free(res);
    pj_task_free(t);
    pj_parallel_free(par);
    close(leaky);
    pj_fn *fns[] = { pid_fn, ppid_fn, fds_fn, open_fn, env_fn, sig_fn };
    for (size_t i = 0; i < sizeof fns / sizeof *fns; i++)
        pj_fn_free(fns[i]);
}
END_TEST

START_TEST(aslr_stays_on)
{
    FILE *f = fopen("/proc/sys/kernel/randomize_va_space", "re");
    int level = 0;
    if (f) {
        if (fscanf(f, "%d", &level) != 1)
            level = 0;
        fclose(f);
    }
    if (level == 0 || getenv("PARJOB_UNDER_VALGRIND"))
        return; /* nothing to show: layouts are the same everywhere */
    pj_fn *fn = PJ_FN(where_is_add, &ffi_type_slong);
    pj_parallel *par = spawn_par(2);
    long v[8];
    run_nullary(par, fn, 8, v);
    int moved = 0;
    for (int i = 0; i < 8; i++)
        moved += v[i] != (long)(intptr_t)add;
    ck_assert_msg(moved, "every worker had add at the parent's address: no ASLR?");
    pj_parallel_free(par);
    pj_fn_free(fn);
}
END_TEST

/* Starts this program as a worker with a given descriptor; returns its wait status. */
static int start_as_worker(const char *descriptor)
{
    size_t n = 0;
    while (environ[n])
        n++;
    char **env = calloc(n + 2, sizeof *env);
    memcpy(env, environ, n * sizeof *env);
    char var[128];
    snprintf(var, sizeof var, "PARJOB_WORKER_FD=%s", descriptor);
    env[n] = var;
    int devnull = open("/dev/null", O_WRONLY | O_CLOEXEC);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, devnull, 2); /* the refusal goes to stderr */
    pid_t pid;
    char *argv[] = { "test-spawn", NULL };
    /* The program's path, not /proc/self/exe, which is valgrind's launcher under valgrind. */
    char self[PATH_MAX];
    ssize_t len = readlink("/proc/self/exe", self, sizeof self - 1);
    ck_assert_int_gt(len, 0);
    self[len] = 0;
    ck_assert_int_eq(posix_spawn(&pid, self, &fa, NULL, argv, env), 0);
    posix_spawn_file_actions_destroy(&fa);
    close(devnull);
    free(env);
    int status;
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    return status;
}

START_TEST(malformed_worker_descriptor_is_refused)
{
    /* Were the program to run main instead, it would run this whole test suite again and exit
     * 0: a worker that cannot serve must exit with 125 before main. */
    const char *bad[] = { "", "garbage", "3,4", "3,4,100,1", "3,4,4194304,99999999x",
                          "-1,4,4194304,2,0", "3,4,4194304,2,7" };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        int status = start_as_worker(bad[i]);
        ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 125,
                      "descriptor \"%s\": status %#x", bad[i], status);
    }
    char other_parent[64];
    snprintf(other_parent, sizeof other_parent, "3,4,4194304,0,%ld,0", (long)getpid() + 1);
    int status = start_as_worker(other_parent);
    ck_assert(WIFEXITED(status) && WEXITSTATUS(status) == 125);
    char unaligned[64]; /* a region's offset in the memfd must be a page multiple */
    snprintf(unaligned, sizeof unaligned, "3,4,4194304,100,%ld,0", (long)getpid());
    status = start_as_worker(unaligned);
    ck_assert(WIFEXITED(status) && WEXITSTATUS(status) == 125);
}
END_TEST

/* ---- a multithreaded parent ---------------------------------------------------------------- */

struct churn {
    pthread_mutex_t lock;
    _Atomic bool stop;
    _Atomic long rounds;
};

/* Holds and releases a mutex, allocates and frees, writes through stdio: the locks a fork could
 * copy held. */
static void *churn_main(void *arg)
{
    struct churn *c = arg;
    FILE *sink = fopen("/dev/null", "we");
    unsigned seed = (unsigned)(uintptr_t)&seed;
    while (!atomic_load(&c->stop)) {
        pthread_mutex_lock(&c->lock);
        void *p = malloc(1 + rand_r(&seed) % 65536);
        if (sink)
            fprintf(sink, "%p", p);
        free(p);
        pthread_mutex_unlock(&c->lock);
        atomic_fetch_add(&c->rounds, 1);
    }
    if (sink)
        fclose(sink);
    return NULL;
}

START_TEST(multithreaded_parent_never_deadlocks)
{
    enum { THREADS = 4 };
    int runs = getenv("PARJOB_UNDER_VALGRIND") ? 10 : 300;
    struct churn c = { .lock = PTHREAD_MUTEX_INITIALIZER };
    pthread_t th[THREADS];
    for (int i = 0; i < THREADS; i++)
        ck_assert_int_eq(pthread_create(&th[i], NULL, churn_main, &c), 0);
    pj_fn *fn = PJ_FN(add, &ffi_type_sint, &ffi_type_sint, &ffi_type_sint);
    pj_task *tasks[8];
    for (int i = 0; i < 8; i++)
        tasks[i] = pj_delayed(fn, i, i);
    for (int r = 0; r < runs; r++) {
        /* A fresh handle each time: every run spawns its workers while the threads churn. */
        pj_parallel *par = spawn_par(2);
        pj_results *res;
        int rc = pj_run(par, tasks, 8, &res);
        ck_assert_msg(rc == 0, "run %d: %s", r, pj_parallel_errmsg(par));
        ck_assert_int_eq(pj_result_int(pj_results_at(res, 7)), 14);
        pj_results_free(res);
        pj_parallel_free(par);
    }
    atomic_store(&c.stop, true);
    for (int i = 0; i < THREADS; i++)
        pthread_join(th[i], NULL);
    ck_assert_int_gt(atomic_load(&c.rounds), runs);
    for (int i = 0; i < 8; i++)
        pj_task_free(tasks[i]);
    pj_fn_free(fn);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("spawn");
    TCase *resolve = tcase_create("resolve");
    tcase_add_test(resolve, static_function_of_the_program);
    tcase_add_test(resolve, pow_from_libm);
    tcase_add_test(resolve, function_of_a_library_dlopened_at_run_time);
    tcase_add_test(resolve, library_replaced_on_disk_is_refused_not_called);
    tcase_add_test(resolve, unresolvable_function_is_refused_at_dispatch);
    tcase_add_test(resolve, unresolvable_function_from_a_producer_fails_that_task_only);
    suite_add_tcase(s, resolve);
    TCase *worker = tcase_create("worker");
    tcase_add_test(worker, worker_is_a_fresh_child_with_only_its_channel);
    tcase_add_test(worker, aslr_stays_on);
    tcase_add_test(worker, malformed_worker_descriptor_is_refused);
    suite_add_tcase(s, worker);
    TCase *threads = tcase_create("threads");
    tcase_set_timeout(threads, 120);
    tcase_add_test(threads, multithreaded_parent_never_deadlocks);
    suite_add_tcase(s, threads);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
