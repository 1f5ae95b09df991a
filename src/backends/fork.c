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
#include "process.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static int fork_open(void **state, int n_workers, const pj_config *config, char *errbuf,
                     size_t errlen);

static const struct pj__proc_ops fork_ops = {
    .transport = &pj__transport_local,
    .launch = pj__fork_launch,
    .fnref = &pj__fnref_pointer,
    .startup = "its start-up in the forked child",
};

const struct pj_backend pj__backend_fork = {
    .version = PJ_BACKEND_VERSION,
    .name = "fork",
    .display_name = "ForkBackend",
    .features = PJ_BACKEND_PROCESS | PJ_BACKEND_COLUMNS,
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

static _Noreturn void child_main(const struct pj__launch *l, pid_t parent,
                                 const struct pj__inner_runtimes *runtimes)
{
    /* The region's mapping is inherited; the memfd under it is one of the descriptors closed. */
    int fd = pj__child_start(&(struct pj__child_start){
        .parent = l->detached ? 0 : parent, .close_ranges = l->close_ranges,
        .n_close_ranges = l->n_close_ranges, .channel = l->fd,
        .program_handlers = !l->detached });
    if (fd < 0)
        _exit(1);
    pj__inner_apply_forked(l->inner, runtimes);
    struct pj__worker_args args = { fd, l->shm, &pj__fnref_pointer };
    _exit(pj__worker_serve(&args));
}

pid_t pj__fork_launch(const struct pj__launch *l, char *err, size_t errlen)
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
