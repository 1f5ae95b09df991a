/* The one start-up of a new worker process, whoever started it: a fork pool's child (fork.c),
 * a spawned program claimed before main (spawn.c), and pj_process's one-batch worker of
 * either kind (process.c): the parent-death signal, the descriptors closed, the signals at
 * their defaults, the channel above stderr.  A spawned worker's descriptors were closed by
 * posix_spawn already (it names no ranges); its signals are reset again here, which also undoes
 * what a constructor before this one installed.
 *
 * Everything here is async-signal-safe (prctl, getppid, close, close_range, sigaction,
 * sigprocmask, fcntl): a forked child runs it while the parent's other threads may hold any
 * lock. */
#include "process.h"

#include <fcntl.h>
#include <signal.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

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

/* Every signal back to its default and none blocked: the parent's handlers serve the parent
 * (a test runner's SIGTERM handler kills its process group), and a crash must reach the
 * parent as the signal that caused it. */
static void default_all_signals(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = SIG_DFL;
    for (int sig = 1; sig < NSIG; sig++)
        if (sig != SIGKILL && sig != SIGSTOP)
            sigaction(sig, &sa, NULL); /* the C library's own signals refuse: harmless */
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
}

void pj__worker_default_signals(void)
{
    static const int sigs[] = { SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGABRT, SIGPIPE };
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = SIG_DFL;
    for (size_t i = 0; i < sizeof sigs / sizeof sigs[0]; i++)
        sigaction(sigs[i], &sa, NULL);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
}

int pj__child_start(const struct pj__child_start *c)
{
    /* The parent dies, the worker follows; the check closes the race with a parent that died
     * before prctl. */
    if (c->parent > 0 && (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || getppid() != c->parent))
        return -1;
    for (size_t i = 0; i < c->n_close_ranges; i++)
        close_fds(c->close_ranges[i].first, c->close_ranges[i].last);
    if (c->program_handlers)
        pj__worker_default_signals();
    else
        default_all_signals();
    /* A task may close stdin or stdout: the channel must not be one of them.  Nor may a
     * program the task starts inherit it. */
    int fd = c->channel;
    if (fd < 3 && (fd = fcntl(c->channel, F_DUPFD_CLOEXEC, 3)) < 0)
        return -1;
    if (fcntl(fd, F_SETFD, FD_CLOEXEC) != 0)
        return -1;
    return fd;
}
