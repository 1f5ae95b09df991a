/* Pre-forked worker processes: crash isolation and killable timeouts, with the API of threads.
 * Everything but starting a worker is the process pool's (procpool.c); a batch crosses in the
 * one wire format (codec.c) with function pointers sent as they are, valid in a child that
 * shares the parent's address space as of the fork.
 *
 * Fork safety.  The pool's launcher thread forks while the program's other threads go on.  The
 * child does only async-signal-safe work (prctl, close, sigaction, sigprocmask, fcntl) until it
 * enters the worker loop, which then needs malloc: glibc (and musl) reset the allocator's locks
 * in the child of fork(), so that is safe.  The loop itself never touches stdio.  Just before
 * it, the inner-thread limit (inner.c) mallocs the worker's environment and calls OpenMP's and
 * OpenBLAS's set-threads functions, looked up before the fork (no loader lock in the child);
 * libgomp's call only allocates, OpenBLAS's may start its threads.  What stays
 * unsafe is any lock another parent thread held at the fork, reached by a *task*: stdio streams
 * (the worker only flushes them when it can take their lock), the program's own mutexes,
 * libraries with threads or locks of their own (OpenMP, BLAS, gettext, dlopen).  parjob.h says
 * so and points to the spawn backend, whose workers start from a fresh exec. */
#include "internal.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

static int fork_open(void **state, int n_workers, const pj_config *config, char *errbuf,
                     size_t errlen);
static pid_t fork_launch(const struct pj__launch *l, char *err, size_t errlen);

static const struct pj__proc_ops fork_ops = {
    .launch = fork_launch,
    .fnref = &pj__fnref_pointer,
    .startup = "its start-up in the forked child",
};

const struct pj_backend pj__backend_fork = {
    .version = PJ_BACKEND_VERSION,
    .name = "fork",
    .display_name = "ForkBackend",
    .features = PJ_BACKEND_PROCESS,
    .open = fork_open,
    .submit = pj__procpool_submit,
    .stop_task = pj__procpool_stop_task,
    .close = pj__procpool_close,
};

static int fork_open(void **state, int n_workers, const pj_config *config, char *errbuf,
                     size_t errlen)
{
    return pj__procpool_open(state, n_workers, config, &fork_ops, errbuf, errlen);
}

/* close_range where the kernel has it (5.9): one call for a run of descriptors, however long. */
static void close_fds(int first, int last)
{
#ifdef SYS_close_range
    if (syscall(SYS_close_range, (unsigned)first, (unsigned)last, 0u) == 0)
        return;
#endif
    struct rlimit r; /* a range may end at INT_MAX: no descriptor lies above the limit */
    if (getrlimit(RLIMIT_NOFILE, &r) == 0 && r.rlim_cur != RLIM_INFINITY &&
        r.rlim_cur <= (rlim_t)last)
        last = (int)r.rlim_cur - 1;
    for (int fd = first; fd <= last; fd++)
        close(fd);
}

static _Noreturn void child_main(const struct pj__launch *l, pid_t parent,
                                 const struct pj__inner_runtimes *runtimes)
{
    /* The parent dies, the worker follows; the check closes the race with a parent that died
     * before prctl. */
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent)
        _exit(1);
    for (size_t i = 0; i < l->n_close_ranges; i++)
        close_fds(l->close_ranges[i].first, l->close_ranges[i].last);
    /* The region's mapping is inherited; the memfd under it was one of those descriptors. */
    pj__worker_default_signals();
    pj__inner_apply_forked(l->inner, runtimes);
    /* A task may close stdin or stdout: the channel must not be one of them. */
    int fd = l->fd < 3 ? fcntl(l->fd, F_DUPFD_CLOEXEC, 3) : l->fd;
    if (fd < 0)
        _exit(1);
    struct pj__worker_args args = { fd, l->shm, &pj__fnref_pointer };
    _exit(pj__worker_serve(&args));
}

static pid_t fork_launch(const struct pj__launch *l, char *err, size_t errlen)
{
    /* Output the parent buffered must not be written twice, once by each process. */
    fflush(stdout);
    fflush(stderr);
    pid_t parent = getpid();
    /* Looked up here: the child must not take the dynamic loader's lock, which another thread
     * of the parent may hold at the fork. */
    struct pj__inner_runtimes runtimes = pj__inner_find_runtimes();
    pid_t pid = fork();
    if (pid == 0)
        child_main(l, parent, &runtimes);
    if (pid < 0) {
        snprintf(err, errlen, "fork: %s", strerror(errno));
        return PJ_ESYS;
    }
    return pid;
}
