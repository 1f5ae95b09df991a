/* Process workers that misbehave or are interrupted from outside, and what a worker inherits
 * and sends: code loaded after the workers were forked, functions no module holds (one check
 * for every entry point), descriptors of a pj_process, uninitialised bytes in results (under
 * valgrind), a worker stopped while it holds a batch, and pj_parallel_cancel — from another
 * thread, from a SIGINT handler, and SIGINT's default disposition, in a process group of its
 * own as a terminal's Ctrl-C reaches it. */
#include "helpers.h"

#include <parjob.h>

#include <dirent.h>
#include <dlfcn.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

/* Memory every test process, its children and their fork workers share (mapped in main). */
#define MAX_NOTED 64
struct shared {
    _Atomic int started;          /* tasks that began note_and_sleep */
    _Atomic int pids[MAX_NOTED];  /* the worker process of each */
    _Atomic pid_t main_pid;       /* the process whose SIGINT handler cancels */
    double t_signal, t_return;    /* CLOCK_MONOTONIC: the handler ran; pj_run returned */
    int rc, cancelled, total;     /* pj_run's return; tasks PJ_ECANCELLED, of total */
};
static struct shared *shared;

/* ---- task functions ------------------------------------------------------------------------ */

/* Notes its worker's pid in slot, then sleeps ms (nanosleep resumes after a signal). */
static int note_and_sleep(int slot, int ms)
{
    if (shared && slot < MAX_NOTED) {
        atomic_store(&shared->pids[slot], (int)getpid());
        atomic_fetch_add(&shared->started, 1);
    }
    sleep_us(ms * 1000L);
    return slot;
}

/* The same in a worker that ignores SIGINT, as a library might make it: such a worker must
 * still die with its parent. */
static int note_and_sleep_deaf(int slot, int ms)
{
    signal(SIGINT, SIG_IGN);
    return note_and_sleep(slot, ms);
}

static int worker_pid(void)
{
    return (int)getpid();
}

static int nap_ms(int ms)
{
    sleep_us(ms * 1000L);
    return ms;
}

/* 1 when descriptor fd of the calling process is open on the object /proc shows as link. */
static int holds(int fd, const char *link)
{
    char path[64], got[256];
    snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(path, got, sizeof got - 1);
    if (n < 0)
        return 0;
    got[n] = 0;
    return strcmp(got, link) == 0;
}

static long double half_ld(int x)
{
    return (long double)x / 2;
}

/* ---- helpers -------------------------------------------------------------------------------- */

static pj_parallel *par_new(const char *backend, int n_jobs, double timeout)
{
    pj_parallel *par = pj_parallel_new(&(pj_config){ .backend = backend, .n_jobs = n_jobs,
                                                     .timeout = timeout });
    ck_assert_msg(par, "%s", pj_last_errmsg());
    return par;
}

/* A process that has ended: gone, or a zombie nobody reaped (its parent is gone too). */
static bool alive(pid_t pid)
{
    if (kill(pid, 0) != 0)
        return false;
    char path[64], buf[512];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "re");
    if (!f)
        return false;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    const char *state = strrchr(buf, ')');
    return !(state && state[1] == ' ' && (state[2] == 'Z' || state[2] == 'X'));
}

static bool wait_until_gone(pid_t pid, double seconds)
{
    double until = now_s() + seconds;
    while (alive(pid))
        if (now_s() > until)
            return false;
        else
            sleep_us(5000);
    return true;
}

static void wait_started(int n, double seconds)
{
    double until = now_s() + seconds;
    while (atomic_load(&shared->started) < n) {
        ck_assert_msg(now_s() < until, "only %d of %d tasks started", atomic_load(&shared->started),
                      n);
        sleep_us(2000);
    }
}

static void reset_shared(void)
{
    memset(shared, 0, sizeof *shared);
}

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

/* A libffi closure for int (int): code in no loaded module, made at run time. */
static void closure_body(ffi_cif *cif, void *ret, void **args, void *data)
{
    (void)cif, (void)data;
    *(ffi_arg *)ret = (ffi_arg)(*(int *)args[0] * 3);
}

struct closure {
    ffi_closure *c;
    ffi_cif cif;
    ffi_type *atypes[1];
    void (*code)(void);
};

static void closure_make(struct closure *cl)
{
    void *code = NULL;
    cl->c = ffi_closure_alloc(sizeof(ffi_closure), &code);
    ck_assert_ptr_nonnull(cl->c);
    cl->atypes[0] = &ffi_type_sint;
    ck_assert_int_eq(ffi_prep_cif(&cl->cif, FFI_DEFAULT_ABI, 1, &ffi_type_sint, cl->atypes),
                     FFI_OK);
    ck_assert_int_eq(ffi_prep_closure_loc(cl->c, &cl->cif, closure_body, NULL, code), FFI_OK);
    cl->code = (void (*)(void))code;
}

/* ---- item 3: code that appeared after the workers were forked ------------------------------- */

START_TEST(fork_runs_a_library_dlopened_after_its_workers_started)
{
    pj_parallel *par = par_new("fork", 2, 0);
    pj_fn *pid_fn = PJ_FN(worker_pid, &ffi_type_sint);
    pj_task *warm = pj_delayed(pid_fn);
    pj_results *res;
    ck_assert_int_eq(pj_run(par, &warm, 1, &res), 0); /* the workers are forked now */
    pj_results_free(res);
    void *h = open_test_module();
    pj_fn *mul_fn = pj_fn_new_list("pjmod_mul", (void (*)(void))dlsym(h, "pjmod_mul"), 3,
                                   (ffi_type *[]){ &ffi_type_sint, &ffi_type_sint,
                                                   &ffi_type_sint });
    pj_task *tasks[8];
    for (int i = 0; i < 8; i++)
        tasks[i] = pj_delayed(mul_fn, i, 7);
    int rc = pj_run(par, tasks, 8, &res);
    ck_assert_msg(rc == 0, "%s: %s", pj_err_name(rc), pj_parallel_errmsg(par));
    for (int i = 0; i < 8; i++)
        ck_assert_int_eq(pj_result_int(pj_results_at(res, (size_t)i)), 7 * i);
    pj_results_free(res);
    pj_parallel_free(par);
    for (int i = 0; i < 8; i++)
        pj_task_free(tasks[i]);
    pj_task_free(warm);
    pj_fn_free(mul_fn);
    pj_fn_free(pid_fn);
    dlclose(h);
}
END_TEST

/* A library dlopen'ed while a fork worker runs a batch: the worker is retired at its DONE
 * and a fresh one runs the rest; the pool stays usable (its slot must not be restarted while
 * the old worker's messages are still being read). */
static void *dlopen_later(void *path)
{
    usleep(150 * 1000);
    return dlopen(path, RTLD_NOW | RTLD_LOCAL);
}

START_TEST(fork_survives_a_library_dlopened_during_a_run)
{
    char path[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", path, sizeof path - 32);
    ck_assert_int_gt(n, 0);
    path[n] = 0;
    strcpy(strrchr(path, '/') + 1, "spawn-module.so");
    pj_parallel *par = pj_parallel_new(&(pj_config){ .backend = "fork", .n_jobs = 1,
                                                     .batch_size = 1 });
    ck_assert_msg(par, "%s", pj_last_errmsg());
    pj_fn *fn = PJ_FN(nap_ms, &ffi_type_sint, &ffi_type_sint);
    pj_task *tasks[6];
    for (int i = 0; i < 6; i++)
        tasks[i] = pj_delayed(fn, 100);
    pthread_t loader;
    ck_assert_int_eq(pthread_create(&loader, NULL, dlopen_later, path), 0);
    void *h = NULL;
    for (int run = 0; run < 2; run++) {
        pj_results *res;
        int rc = pj_run(par, tasks, 6, &res);
        if (run == 0)
            pthread_join(loader, &h);
        ck_assert_msg(rc == 0, "run %d: %s: %s", run, pj_err_name(rc), pj_parallel_errmsg(par));
        for (int i = 0; i < 6; i++)
            ck_assert_int_eq(pj_result_int(pj_results_at(res, (size_t)i)), 100);
        pj_results_free(res);
    }
    ck_assert_msg(h, "%s", dlerror());
    pj_parallel_free(par);
    for (int i = 0; i < 6; i++)
        pj_task_free(tasks[i]);
    pj_fn_free(fn);
    dlclose(h);
}
END_TEST

START_TEST(fork_refuses_a_closure_naming_the_function)
{
    pj_parallel *par = par_new("fork", 2, 0);
    pj_fn *pid_fn = PJ_FN(worker_pid, &ffi_type_sint);
    pj_task *warm = pj_delayed(pid_fn);
    pj_results *res;
    ck_assert_int_eq(pj_run(par, &warm, 1, &res), 0);
    pj_results_free(res);
    struct closure cl;
    closure_make(&cl); /* after the fork: the workers do not have it */
    pj_fn *fn = pj_fn_new("tripled", cl.code, &ffi_type_sint, 1, (ffi_type *[]){ &ffi_type_sint });
    pj_task *t = pj_delayed(fn, 5);
    int rc = pj_run(par, &t, 1, &res);
    ck_assert_msg(rc == PJ_ERESOLVE, "%s: %s", pj_err_name(rc), pj_parallel_errmsg(par));
    ck_assert_msg(strstr(pj_parallel_errmsg(par), "task 0 (tripled)"), "%s",
                  pj_parallel_errmsg(par));
    /* The same function runs in-process. */
    pj_parallel *threads = par_new("threading", 2, 0);
    ck_assert_int_eq(pj_run(threads, &t, 1, &res), 0);
    ck_assert_int_eq(pj_result_int(pj_results_at(res, 0)), 15);
    pj_results_free(res);
    pj_parallel_free(threads);
    pj_parallel_free(par);
    pj_task_free(t);
    pj_task_free(warm);
    pj_fn_free(fn);
    pj_fn_free(pid_fn);
    ffi_closure_free(cl.c);
}
END_TEST

/* ---- item 9: one check for every entry point ------------------------------------------------ */

START_TEST(every_entry_point_refuses_an_unresolvable_function)
{
    static const char *const backends[] = { "fork", "spawn" };
    const char *backend = backends[_i];
    struct closure cl;
    closure_make(&cl);
    pj_fn *fn = pj_fn_new("tripled", cl.code, &ffi_type_sint, 1, (ffi_type *[]){ &ffi_type_sint });
    pj_task *t = pj_delayed(fn, 5);
    pj_executor *ex = pj_executor_new(&(pj_config){ .backend = backend, .n_jobs = 1 });
    ck_assert_msg(ex, "%s", pj_last_errmsg());
    ck_assert_ptr_null(pj_submit(ex, t));
    ck_assert_int_eq(pj_last_error(), PJ_ERESOLVE);
    ck_assert_msg(strstr(pj_last_errmsg(), "pj_submit (tripled)"), "%s", pj_last_errmsg());
    int xs[3] = { 1, 2, 3 };
    ck_assert_ptr_null(pj_map_start(ex, fn, (const void *[]){ xs }, 3, 1, PJ_FOREVER));
    ck_assert_int_eq(pj_last_error(), PJ_ERESOLVE);
    pj_executor_free(ex);
    pj_parallel *par = par_new(backend, 1, 0);
    pj_results *res;
    ck_assert_int_eq(pj_run(par, &t, 1, &res), PJ_ERESOLVE);
    ck_assert_ptr_null(pj_start(par, &t, 1));
    ck_assert_int_eq(pj_last_error(), PJ_ERESOLVE);
    pj_parallel_free(par);
    ck_assert_ptr_null(pj_process_new(t, "spawn"));
    ck_assert_int_eq(pj_last_error(), PJ_ERESOLVE);
    pj_task_free(t);
    pj_fn_free(fn);
    ffi_closure_free(cl.c);
}
END_TEST

/* ---- item 8: a pj_process's descriptors stay out of pool workers ---------------------------- */

/* The descriptors of this process (fd -> /proc link text), into links[fd] ("" when closed). */
static void fd_links(char links[][128], int n)
{
    for (int fd = 0; fd < n; fd++) {
        char path[64];
        snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
        ssize_t k = readlink(path, links[fd], 127);
        links[fd][k > 0 ? k : 0] = 0;
    }
}

START_TEST(pool_worker_inherits_no_descriptor_of_a_running_process)
{
    static const char *const methods[] = { "fork", "spawn" };
    enum { NFD = 256 };
    static char before[NFD][128], after[NFD][128];
    pj_fn *nap_fn = PJ_FN(nap_ms, &ffi_type_sint, &ffi_type_sint);
    pj_task *nap = pj_delayed(nap_fn, 3000);
    fd_links(before, NFD);
    pj_process *proc = pj_process_new(nap, methods[_i]);
    ck_assert_msg(proc, "%s", pj_last_errmsg());
    ck_assert_int_eq(pj_process_start(proc), 0);
    fd_links(after, NFD);
    /* Workers forked now, while the process runs. */
    pj_parallel *par = par_new("fork", 1, 0);
    pj_fn *holds_fn = PJ_FN(holds, &ffi_type_sint, &ffi_type_sint, &ffi_type_pointer);
    int checked = 0;
    for (int fd = 0; fd < NFD; fd++) {
        if (!after[fd][0] || strcmp(before[fd], after[fd]) == 0)
            continue; /* not the process's */
        pj_task *t = pj_delayed(holds_fn, fd, pj_cstr(after[fd]));
        pj_results *res;
        ck_assert_int_eq(pj_run(par, &t, 1, &res), 0);
        ck_assert_msg(pj_result_int(pj_results_at(res, 0)) == 0,
                      "a pool worker holds descriptor %d (%s) of a pj_process", fd, after[fd]);
        pj_results_free(res);
        pj_task_free(t);
        checked++;
    }
    ck_assert_int_ge(checked, 1); /* its channel, at least */
    pj_parallel_free(par);
    pj_process_free(proc);
    pj_task_free(nap);
    pj_fn_free(holds_fn);
    pj_fn_free(nap_fn);
}
END_TEST

/* ---- item 7: results carry only initialised bytes ------------------------------------------ */

/* More long double results than a worker's shared region holds: the rest travel through the
 * channel (sendmsg), where valgrind sees each byte sent. */
#define LD_TASKS 300000

static int long_double_child(void)
{
    pj_fn *fn = PJ_FN(half_ld, &ffi_type_longdouble, &ffi_type_sint);
    pj_task **tasks = malloc(LD_TASKS * sizeof *tasks);
    for (int i = 0; i < LD_TASKS; i++)
        tasks[i] = pj_delayed(fn, i);
    pj_parallel *par = pj_parallel_new(&(pj_config){ .backend = "fork", .n_jobs = 1,
                                                     .batch_size = LD_TASKS });
    pj_results *res;
    int rc = par ? pj_run(par, tasks, LD_TASKS, &res) : -1;
    int bad = rc != 0;
    for (size_t i = 0; !bad && i < LD_TASKS; i++)
        bad = pj_result_ldouble(pj_results_at(res, i)) != (long double)i / 2;
    if (rc == 0)
        pj_results_free(res);
    pj_parallel_free(par);
    for (int i = 0; i < LD_TASKS; i++)
        pj_task_free(tasks[i]);
    free(tasks);
    pj_fn_free(fn);
    return bad ? 3 : 0;
}

static bool find_valgrind(char *out, size_t len)
{
    const char *path = getenv("PATH");
    char dirs[4096];
    snprintf(dirs, sizeof dirs, "%s", path ? path : "/usr/bin:/bin");
    for (char *save, *d = strtok_r(dirs, ":", &save); d; d = strtok_r(NULL, ":", &save)) {
        snprintf(out, len, "%s/valgrind", d);
        if (access(out, X_OK) == 0)
            return true;
    }
    return false;
}

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define SANITIZED 1
#else
#define SANITIZED 0
#endif

START_TEST(fork_worker_sends_no_uninitialised_bytes_under_valgrind)
{
    char valgrind[PATH_MAX], self[PATH_MAX], dir[] = "/tmp/pj-vg-XXXXXX", logs[PATH_MAX];
    if (SANITIZED || under_valgrind() || !find_valgrind(valgrind, sizeof valgrind)) {
        fprintf(stderr, "skipped: needs valgrind, and a build without sanitizers\n");
        return;
    }
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    ck_assert_int_gt(n, 0);
    self[n] = 0;
    ck_assert_ptr_nonnull(mkdtemp(dir));
    snprintf(logs, sizeof logs, "--log-file=%s/vg.%%p", dir);
    pid_t child = fork();
    ck_assert_int_ge(child, 0);
    if (child == 0) {
        setenv("PJ_TEST_CHILD", "long-double", 1);
        execl(valgrind, valgrind, "--quiet", "--leak-check=no", "--error-exitcode=66", logs,
              self, (char *)NULL);
        _exit(127);
    }
    int st;
    ck_assert_int_eq(waitpid(child, &st, 0), child);
    /* The parent's log and each worker's (valgrind follows a fork into the worker). */
    DIR *d = opendir(dir);
    ck_assert_ptr_nonnull(d);
    int nlogs = 0;
    char bad[2048] = "";
    for (struct dirent *e; (e = readdir(d));) {
        if (strncmp(e->d_name, "vg.", 3) != 0)
            continue;
        char path[PATH_MAX + 300], line[512];
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        FILE *f = fopen(path, "re");
        ck_assert_ptr_nonnull(f);
        while (fgets(line, sizeof line, f))
            if (strstr(line, "uninitialised") && strlen(bad) + strlen(line) < sizeof bad)
                strcat(bad, line);
        fclose(f);
        unlink(path);
        nlogs++;
    }
    closedir(d);
    rmdir(dir);
    ck_assert_msg(bad[0] == 0, "valgrind in a worker:\n%s", bad);
    ck_assert_int_ge(nlogs, 2); /* the program and at least one worker */
    ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "the valgrind run ended with %d", st);
}
END_TEST

START_TEST(long_double_padding_reaches_the_parent_as_zeros)
{
#if !defined(__x86_64__) && !defined(__i386__)
    return; /* the 80-bit x87 format, padded to 16 bytes, is what has padding */
#endif
    static const char *const backends[] = { "fork", "spawn" };
    pj_fn *fn = PJ_FN(half_ld, &ffi_type_longdouble, &ffi_type_sint);
    enum { N = 64 };
    pj_task *tasks[N];
    for (int i = 0; i < N; i++)
        tasks[i] = pj_delayed(fn, i + 1);
    pj_parallel *par = par_new(backends[_i], 2, 0);
    pj_results *res;
    ck_assert_int_eq(pj_run(par, tasks, N, &res), 0);
    for (size_t i = 0; i < N; i++) {
        const pj_result *r = pj_results_at(res, i);
        ck_assert(pj_result_ldouble(r) == (long double)(i + 1) / 2);
        for (size_t b = 10; b < sizeof(long double); b++)
            ck_assert_msg(r->value.bytes[b] == 0, "task %zu: padding byte %zu is %#x", i, b,
                          r->value.bytes[b]);
    }
    pj_results_free(res);
    pj_parallel_free(par);
    for (int i = 0; i < N; i++)
        pj_task_free(tasks[i]);
    pj_fn_free(fn);
}
END_TEST

/* ---- item 6: a stopped worker holding a batch ------------------------------------------------ */

/* Starts par's two workers and returns their pids. */
static void worker_pids(pj_parallel *par, pid_t pids[2])
{
    pj_fn *fn = PJ_FN(note_and_sleep, &ffi_type_sint, &ffi_type_sint, &ffi_type_sint);
    pj_task *t[2] = { pj_delayed(fn, 0, 200), pj_delayed(fn, 1, 200) };
    reset_shared();
    pj_results *res;
    ck_assert_int_eq(pj_run(par, t, 2, &res), 0);
    pids[0] = atomic_load(&shared->pids[0]);
    pids[1] = atomic_load(&shared->pids[1]);
    ck_assert_int_ne(pids[0], pids[1]);
    pj_results_free(res);
    pj_task_free(t[0]);
    pj_task_free(t[1]);
    pj_fn_free(fn);
}

START_TEST(stopped_workers_batches_run_elsewhere)
{
    pj_parallel *par = par_new("fork", 2, 1.0);
    pid_t pids[2];
    worker_pids(par, pids);
    kill(pids[0], SIGSTOP); /* both: every batch first goes to a stopped worker */
    kill(pids[1], SIGSTOP);
    pj_fn *fn = PJ_FN(nap_ms, &ffi_type_sint, &ffi_type_sint);
    enum { N = 6 };
    pj_task *tasks[N];
    for (int i = 0; i < N; i++)
        tasks[i] = pj_delayed(fn, 10 + i);
    pj_results *res;
    double t0 = now_s();
    int rc = pj_run(par, tasks, N, &res);
    double took = now_s() - t0;
    ck_assert_msg(rc == 0, "%s: %s", pj_err_name(rc), pj_parallel_errmsg(par));
    for (int i = 0; i < N; i++)
        ck_assert_int_eq(pj_result_int(pj_results_at(res, (size_t)i)), 10 + i);
    ck_assert_msg(took < 10.0, "the run took %.2f s", took);
    ck_assert(wait_until_gone(pids[0], 2.0) && wait_until_gone(pids[1], 2.0));
    pj_results_free(res);
    pj_parallel_free(par);
    for (int i = 0; i < N; i++)
        pj_task_free(tasks[i]);
    pj_fn_free(fn);
}
END_TEST

START_TEST(closing_an_iterator_on_stopped_workers_is_bounded)
{
    pj_parallel *par = par_new("fork", 2, 1.0);
    pid_t pids[2];
    worker_pids(par, pids);
    kill(pids[0], SIGSTOP);
    kill(pids[1], SIGSTOP);
    pj_fn *fn = PJ_FN(nap_ms, &ffi_type_sint, &ffi_type_sint);
    pj_task *tasks[4];
    for (int i = 0; i < 4; i++)
        tasks[i] = pj_delayed(fn, 10);
    pj_iter *it = pj_start(par, tasks, 4);
    ck_assert_msg(it, "%s", pj_last_errmsg());
    sleep_us(100000); /* the batches are with the stopped workers */
    double t0 = now_s();
    pj_iter_close(it);
    double took = now_s() - t0;
    ck_assert_msg(took < 5.0, "pj_iter_close took %.2f s", took);
    t0 = now_s();
    pj_parallel_free(par);
    ck_assert_msg(now_s() - t0 < 2.0, "pj_parallel_free took %.2f s", now_s() - t0);
    ck_assert(wait_until_gone(pids[0], 2.0) && wait_until_gone(pids[1], 2.0));
    for (int i = 0; i < 4; i++)
        pj_task_free(tasks[i]);
    pj_fn_free(fn);
}
END_TEST

/* ---- item 11: pj_parallel_cancel ----------------------------------------------------------- */

struct canceller {
    pj_parallel *par;
    int wait_for;                 /* tasks started first */
    double at;                    /* when it cancelled */
};

static void *cancel_later(void *arg)
{
    struct canceller *c = arg;
    double until = now_s() + 30;
    while (atomic_load(&shared->started) < c->wait_for && now_s() < until)
        sleep_us(2000);
    sleep_us(c->wait_for ? 50000 : 500000); /* unnoted (spawn): time for the tasks to start */
    c->at = now_s();
    pj_parallel_cancel(c->par);
    return NULL;
}

static pj_task **sleepers(pj_fn *fn, int n, int ms)
{
    pj_task **t = malloc((size_t)n * sizeof *t);
    for (int i = 0; i < n; i++)
        t[i] = pj_delayed(fn, i, ms);
    return t;
}

static void free_tasks(pj_task **t, int n)
{
    for (int i = 0; i < n; i++)
        pj_task_free(t[i]);
    free(t);
}

/* fork (worker pids noted in shared memory), spawn (they are not), threading with a timeout
 * (running tasks abandoned). */
static const char *const cancel_backends[] = { "fork", "spawn", "threading" };

START_TEST(cancel_ends_a_run_within_100_ms)
{
    const char *backend = cancel_backends[_i];
    bool noted = strcmp(backend, "spawn") != 0;
    reset_shared();
    pj_parallel *par = par_new(backend, 2, strcmp(backend, "threading") == 0 ? 60.0 : 0);
    pj_fn *fn = PJ_FN(note_and_sleep, &ffi_type_sint, &ffi_type_sint, &ffi_type_sint);
    enum { N = 8 };
    pj_task **tasks = sleepers(fn, N, 20000);
    struct canceller c = { par, noted ? 2 : 0, 0 };
    pthread_t th;
    pthread_create(&th, NULL, cancel_later, &c);
    pj_results *res;
    int rc = pj_run(par, tasks, N, &res);
    double returned = now_s();
    pthread_join(th, NULL);
    ck_assert_msg(rc == PJ_ECANCELLED, "%s: %s", pj_err_name(rc), pj_parallel_errmsg(par));
    ck_assert_msg(strstr(pj_parallel_errmsg(par), "cancelled"), "%s", pj_parallel_errmsg(par));
    double limit = under_valgrind() ? 2.0 : 0.1;
    ck_assert_msg(returned - c.at < limit, "pj_run returned %.3f s after the cancel",
                  returned - c.at);
    ck_assert_uint_eq(pj_results_count(res), N);
    ck_assert_uint_eq(pj_results_count_status(res, PJ_ECANCELLED), N);
    pj_results_free(res);
    for (int i = 0; noted && strcmp(backend, "fork") == 0 && i < MAX_NOTED; i++) {
        pid_t pid = atomic_load(&shared->pids[i]);
        ck_assert_msg(!pid || !alive(pid), "worker %d that ran task %d lives on", (int)pid, i);
    }
    /* The handle runs again, with fresh workers where they were killed. */
    pj_fn *nap_fn = PJ_FN(nap_ms, &ffi_type_sint, &ffi_type_sint);
    pj_task *again = pj_delayed(nap_fn, 1);
    ck_assert_int_eq(pj_run(par, &again, 1, &res), 0);
    pj_results_free(res);
    pj_parallel_free(par);
    pj_task_free(again);
    pj_fn_free(nap_fn);
    free_tasks(tasks, N);
    pj_fn_free(fn);
}
END_TEST

START_TEST(cancel_ends_a_waiting_pj_next)
{
    reset_shared();
    pj_parallel *par = par_new("fork", 2, 0);
    pj_fn *fn = PJ_FN(note_and_sleep, &ffi_type_sint, &ffi_type_sint, &ffi_type_sint);
    enum { N = 6 };
    pj_task **tasks = sleepers(fn, N, 20000);
    pj_iter *it = pj_start(par, tasks, N);
    ck_assert_msg(it, "%s", pj_last_errmsg());
    struct canceller c = { par, 2, 0 };
    pthread_t th;
    pthread_create(&th, NULL, cancel_later, &c);
    pj_result r;
    int rc = pj_next(it, &r);
    double returned = now_s();
    pthread_join(th, NULL);
    ck_assert_int_eq(rc, PJ_ECANCELLED);
    ck_assert_msg(returned - c.at < (under_valgrind() ? 2.0 : 0.1),
                  "pj_next returned %.3f s after the cancel", returned - c.at);
    ck_assert_int_eq(pj_next(it, &r), PJ_ECANCELLED);
    ck_assert_int_eq(pj_iter_close(it), PJ_ECANCELLED);
    for (int i = 0; i < MAX_NOTED; i++) {
        pid_t pid = atomic_load(&shared->pids[i]);
        ck_assert_msg(!pid || !alive(pid), "worker %d that ran task %d lives on", (int)pid, i);
    }
    pj_parallel_free(par);
    free_tasks(tasks, N);
    pj_fn_free(fn);
}
END_TEST

START_TEST(cancel_with_no_run_is_dropped)
{
    pj_parallel *par = par_new("fork", 1, 0);
    ck_assert_int_eq(pj_parallel_cancel(NULL), PJ_EINVAL);
    ck_assert_int_eq(pj_parallel_cancel(par), 0);
    pj_fn *fn = PJ_FN(nap_ms, &ffi_type_sint, &ffi_type_sint);
    pj_task *t = pj_delayed(fn, 1);
    pj_results *res;
    ck_assert_int_eq(pj_run(par, &t, 1, &res), 0);
    pj_results_free(res);
    pj_parallel_free(par);
    pj_task_free(t);
    pj_fn_free(fn);
}
END_TEST

/* SIGINT as a terminal sends it: to every process of the foreground group. */
static pj_parallel *sigint_par;

static void on_sigint(int sig)
{
    (void)sig;
    if (getpid() != atomic_load(&shared->main_pid))
        return; /* a fork worker inherits the handler: only the program cancels */
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    shared->t_signal = (double)ts.tv_sec + ts.tv_nsec / 1e9;
    pj_parallel_cancel(sigint_par);
}

/* The program in its own process group: a run of sleepers, cancelled (handler) or killed
 * (default) by SIGINT.  Reports through shared memory. */
static _Noreturn void sigint_program(bool handler)
{
    setpgid(0, 0);
    atomic_store(&shared->main_pid, getpid());
    if (handler)
        sigaction(SIGINT, &(struct sigaction){ .sa_handler = on_sigint }, NULL);
    else
        signal(SIGINT, SIG_DFL);
    sigint_par = pj_parallel_new(&(pj_config){ .backend = "fork", .n_jobs = 2 });
    pj_fn *fn = handler ? PJ_FN(note_and_sleep, &ffi_type_sint, &ffi_type_sint, &ffi_type_sint)
                        : PJ_FN(note_and_sleep_deaf, &ffi_type_sint, &ffi_type_sint,
                                &ffi_type_sint);
    enum { N = 6 };
    pj_task **tasks = sleepers(fn, N, 20000);
    pj_results *res;
    int rc = pj_run(sigint_par, tasks, N, &res);
    shared->t_return = now_s();
    shared->rc = rc;
    shared->total = (int)pj_results_count(res);
    shared->cancelled = (int)pj_results_count_status(res, PJ_ECANCELLED);
    pj_results_free(res);
    pj_parallel_free(sigint_par);
    free_tasks(tasks, N);
    pj_fn_free(fn);
    _exit(0);
}

static pid_t start_sigint_program(bool handler)
{
    reset_shared();
    pid_t child = fork();
    ck_assert_int_ge(child, 0);
    if (child == 0)
        sigint_program(handler);
    setpgid(child, child); /* either side may get there first */
    wait_started(2, 30);
    sleep_us(50000);
    ck_assert_int_eq(kill(-child, SIGINT), 0);
    return child;
}

START_TEST(sigint_handler_cancels_the_run)
{
    pid_t child = start_sigint_program(true);
    int st;
    ck_assert_int_eq(waitpid(child, &st, 0), child);
    ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "the program ended with %#x", st);
    ck_assert_int_eq(shared->rc, PJ_ECANCELLED);
    ck_assert_int_eq(shared->total, 6);
    ck_assert_int_eq(shared->cancelled, 6);
    double took = shared->t_return - shared->t_signal;
    ck_assert_msg(took >= 0 && took < (under_valgrind() ? 2.0 : 0.1),
                  "pj_run returned %.3f s after the handler ran", took);
    for (int i = 0; i < MAX_NOTED; i++) {
        pid_t pid = atomic_load(&shared->pids[i]);
        ck_assert_msg(!pid || !alive(pid), "worker %d that ran task %d lives on", (int)pid, i);
    }
}
END_TEST

START_TEST(sigint_default_disposition_leaves_no_worker)
{
    pid_t child = start_sigint_program(false);
    int st;
    ck_assert_int_eq(waitpid(child, &st, 0), child);
    ck_assert_msg(WIFSIGNALED(st) && WTERMSIG(st) == SIGINT, "the program ended with %#x", st);
    for (int i = 0; i < MAX_NOTED; i++) {
        pid_t pid = atomic_load(&shared->pids[i]);
        ck_assert_msg(!pid || wait_until_gone(pid, 2.0), "worker %d that ran task %d (and "
                      "ignores SIGINT) outlived the program", (int)pid, i);
    }
}
END_TEST

int main(void)
{
    if (getenv("PJ_TEST_CHILD") && strcmp(getenv("PJ_TEST_CHILD"), "long-double") == 0)
        return long_double_child();
    shared = mmap(NULL, sizeof *shared, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1,
                  0);
    if (shared == MAP_FAILED)
        return EXIT_FAILURE;
    Suite *s = suite_create("worker-faults");
    TCase *code = tcase_create("code");
    tcase_set_timeout(code, 60);
    tcase_add_test(code, fork_runs_a_library_dlopened_after_its_workers_started);
    tcase_add_test(code, fork_survives_a_library_dlopened_during_a_run);
    tcase_add_test(code, fork_refuses_a_closure_naming_the_function);
    tcase_add_loop_test(code, every_entry_point_refuses_an_unresolvable_function, 0, 2);
    suite_add_tcase(s, code);
    TCase *bytes = tcase_create("bytes");
    tcase_set_timeout(bytes, 300);
    tcase_add_loop_test(bytes, pool_worker_inherits_no_descriptor_of_a_running_process, 0, 2);
    tcase_add_loop_test(bytes, long_double_padding_reaches_the_parent_as_zeros, 0, 2);
    tcase_add_test(bytes, fork_worker_sends_no_uninitialised_bytes_under_valgrind);
    suite_add_tcase(s, bytes);
    TCase *stopped = tcase_create("stopped");
    tcase_set_timeout(stopped, 30);
    tcase_add_test(stopped, stopped_workers_batches_run_elsewhere);
    tcase_add_test(stopped, closing_an_iterator_on_stopped_workers_is_bounded);
    suite_add_tcase(s, stopped);
    /* Before "cancel": with CK_FORK=no (valgrind) a program forked after the threading case
     * would hold the records of its abandoned threads, which that copy never frees. */
    TCase *sigint = tcase_create("sigint");
    tcase_set_timeout(sigint, 60);
    tcase_add_test(sigint, sigint_handler_cancels_the_run);
    tcase_add_test(sigint, sigint_default_disposition_leaves_no_worker);
    suite_add_tcase(s, sigint);
    TCase *cancel = tcase_create("cancel");
    tcase_set_timeout(cancel, 60);
    tcase_add_loop_test(cancel, cancel_ends_a_run_within_100_ms, 0, 3);
    tcase_add_test(cancel, cancel_ends_a_waiting_pj_next);
    tcase_add_test(cancel, cancel_with_no_run_is_dropped);
    suite_add_tcase(s, cancel);
    return run_suite(s);
}
