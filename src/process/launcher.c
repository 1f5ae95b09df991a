/* The thread that starts a process pool's workers, from a descriptor table of its own.
 *
 * A child gets a copy of the descriptor table of the thread that forks it.  Forked from the
 * pool's I/O thread, a worker got every other worker's channel and had to close them all (a
 * quarter of the CPU time of starting 2048 fork workers, and growing with each one, although
 * the kernel did the closing with close_range); posix_spawn's child copies the table too
 * before its exec closes it.  The launcher thread calls unshare(CLONE_FILES) and closes all
 * but stdin, stdout, stderr and its request socket, so a worker starts from those, its own
 * channel and the pool's memfd, whatever the pool's size.  So a fork worker inherits no other
 * descriptor of the program (nor does a spawn worker, nor loky's).
 *
 * The I/O thread sends each start as a request (struct request; the channel end and the memfd
 * as SCM_RIGHTS) over a SOCK_SEQPACKET pair and waits for the answer: the pid, or the error.
 * The thread lives as long as the pool, as it must: PR_SET_PDEATHSIG fires when the *thread*
 * that started a worker ends.  It blocks every signal (the program's handlers run on its own
 * threads) and its children start from that mask, which the backend's launcher resets.
 *
 * Under ThreadSanitizer, which tracks descriptors by number for the whole process and so takes
 * the launcher's table and the program's for one (a descriptor closed in one and opened in the
 * other is reported as a race), the launcher shares the process's table and a forked worker
 * closes every descriptor above stderr but its channel instead: the same descriptors in the
 * end, with the start-up cost that grows with n_jobs that the own table avoids. */
#include "process.h"

#include <errno.h>
#include <limits.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#define CTL_FD 3 /* the launcher's request socket, in its own table */

#if defined(__SANITIZE_THREAD__)
#define OWN_TABLE 0
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define OWN_TABLE 0
#endif
#endif
#ifndef OWN_TABLE
#define OWN_TABLE 1
#endif

struct pj__launcher {
    pthread_t thread;
    int ctl;                     /* the I/O thread's end of the request socket */
    int their_ctl;               /* the launcher's end, until it has taken it */
    pid_t (*launch)(const struct pj__launch *l, char *err, size_t errlen);
};

struct request {                 /* the launcher is a thread of this process: pointers hold */
    struct pj__shm *shm;
    size_t shm_size, shm_offset;
    bool detached;
    const struct pj__inner *inner;
};

struct answer {
    pid_t pid;                   /* or a negative PJ_E code */
    char err[256];
};

/* Closes first .. last where the kernel has close_range (5.9), else one by one. */
static void close_range_or_loop(unsigned first, unsigned last)
{
#ifdef SYS_close_range
    if (syscall(SYS_close_range, first, last, 0u) == 0)
        return;
#endif
    struct rlimit r;
    if (getrlimit(RLIMIT_NOFILE, &r) == 0 && r.rlim_cur != RLIM_INFINITY && r.rlim_cur < last)
        last = (unsigned)r.rlim_cur;
    for (unsigned fd = first; fd <= last; fd++)
        close((int)fd);
}

/* In the launcher thread: a table of its own with stdin, stdout, stderr and ctl on CTL_FD.
 * Returns the request socket's descriptor, or -errno. */
static int own_table(int ctl)
{
    if (!OWN_TABLE)
        return ctl;
    if (unshare(CLONE_FILES))
        return -errno;
    if (ctl != CTL_FD && dup3(ctl, CTL_FD, O_CLOEXEC) < 0)
        return -errno;
    if (ctl < CTL_FD)
        close(ctl);
    close_range_or_loop(CTL_FD + 1, ~0u);
    return CTL_FD;
}

/* What a forked worker on channel fd closes: the request socket and the memfd copy — or, in
 * the process's own table (!OWN_TABLE), everything above stderr but the channel. */
static size_t to_close(struct pj__fd_range r[2], int ctl, int fd, int memfd)
{
    if (OWN_TABLE) {
        r[0] = (struct pj__fd_range){ ctl, ctl };
        r[1] = (struct pj__fd_range){ memfd, memfd };
        return 2;
    }
    if (fd < 3) {
        r[0] = (struct pj__fd_range){ 3, INT_MAX };
        return 1;
    }
    r[0] = (struct pj__fd_range){ 3, fd - 1 };
    r[1] = (struct pj__fd_range){ fd + 1, INT_MAX };
    return fd > 3 ? 2 : (r[0] = r[1], 1);
}

/* One request off the socket: 1, 0 at EOF (the pool is closing), -1 on a malformed one, -2
 * when its descriptors could not be received (the table is at RLIMIT_NOFILE). */
static int take_request(int ctl, struct request *rq, int fds[2])
{
    char control[CMSG_SPACE(2 * sizeof(int))];
    struct iovec iov = { rq, sizeof *rq };
    struct msghdr m = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = control,
                        .msg_controllen = sizeof control };
    ssize_t k;
    while ((k = recvmsg(ctl, &m, MSG_CMSG_CLOEXEC)) < 0 && errno == EINTR)
        ;
    if (k <= 0)
        return 0;
    if (m.msg_flags & MSG_CTRUNC)
        return -2; /* the kernel closed what it could not install */
    struct cmsghdr *c = CMSG_FIRSTHDR(&m);
    if ((size_t)k != sizeof *rq || !c || c->cmsg_type != SCM_RIGHTS ||
        c->cmsg_len != CMSG_LEN(2 * sizeof(int))) {
        if (c && c->cmsg_type == SCM_RIGHTS)
            for (int *fd = (int *)CMSG_DATA(c); (unsigned char *)fd < (unsigned char *)c +
                 c->cmsg_len; fd++)
                close(*fd);
        return -1;
    }
    memcpy(fds, CMSG_DATA(c), 2 * sizeof(int));
    return 1;
}

static void *launcher_main(void *arg)
{
    struct pj__launcher *L = arg;
    int ctl = own_table(L->their_ctl);
    int rc = ctl < 0 ? -ctl : 0;
    ssize_t k = send(rc ? L->their_ctl : ctl, &rc, sizeof rc, MSG_NOSIGNAL);
    if (rc || k != sizeof rc)
        return NULL;
    for (;;) {
        struct request rq;
        int fds[2];
        int got = take_request(ctl, &rq, fds);
        if (got == 0)
            break;
        struct answer a = { .pid = PJ_EPROTO, .err = "malformed launch request" };
        if (got == -2) {
            a.pid = PJ_ESYS;
            snprintf(a.err, sizeof a.err, "cannot receive the worker's channel: %s",
                     strerror(EMFILE));
        }
        if (got > 0) {
            /* A forked worker closes what it must not hold, the memfd included: it inherits
             * the mapping.  (An exec'd one keeps only what posix_spawn moves.) */
            struct pj__fd_range close_them[2];
            struct pj__launch l = {
                .fd = fds[0], .shm_fd = fds[1], .shm = rq.shm, .shm_size = rq.shm_size,
                .shm_offset = rq.shm_offset, .close_ranges = close_them,
                .n_close_ranges = to_close(close_them, ctl, fds[0], fds[1]),
                .detached = rq.detached, .inner = rq.inner,
            };
            a.err[0] = 0;
            a.pid = L->launch(&l, a.err, sizeof a.err);
            close(fds[0]);
            close(fds[1]);
        }
        if (send(ctl, &a, sizeof a, MSG_NOSIGNAL) != sizeof a)
            break;
    }
    if (OWN_TABLE)
        close(ctl); /* else the opener's close(their_ctl) is the one */
    return NULL;
}

int pj__launcher_open(struct pj__launcher **out,
                      pid_t (*launch)(const struct pj__launch *l, char *err, size_t errlen),
                      char *err, size_t errlen)
{
    struct pj__launcher *L = calloc(1, sizeof *L);
    int sv[2];
    if (!L || socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv)) {
        snprintf(err, errlen, "cannot create the workers' launcher: %s", strerror(errno));
        free(L);
        return PJ_ESYS;
    }
    L->ctl = sv[0];
    L->their_ctl = sv[1];
    L->launch = launch;
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int rc = pthread_create(&L->thread, NULL, launcher_main, L);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    int ready = rc;
    if (!rc && recv(L->ctl, &ready, sizeof ready, 0) != sizeof ready)
        ready = EPROTO;
    if (OWN_TABLE || ready)
        close(L->their_ctl); /* the launcher holds its own copy now, in its own table */
    if (ready) {
        snprintf(err, errlen, "cannot start the workers' launcher thread: %s", strerror(ready));
        if (!rc)
            pthread_join(L->thread, NULL);
        close(L->ctl);
        free(L);
        return PJ_ESYS;
    }
    *out = L;
    return 0;
}

pid_t pj__launcher_start(struct pj__launcher *L, const struct pj__launch *l, char *err,
                         size_t errlen)
{
    struct request rq;
    memset(&rq, 0, sizeof rq); /* its padding crosses too */
    rq = (struct request){ l->shm, l->shm_size, l->shm_offset, l->detached, l->inner };
    char control[CMSG_SPACE(2 * sizeof(int))];
    memset(control, 0, sizeof control);
    struct iovec iov = { &rq, sizeof rq };
    struct msghdr m = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = control,
                        .msg_controllen = sizeof control };
    struct cmsghdr *c = CMSG_FIRSTHDR(&m);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(2 * sizeof(int));
    memcpy(CMSG_DATA(c), (int[]){ l->fd, l->shm_fd }, 2 * sizeof(int));
    struct answer a;
    ssize_t k;
    while ((k = sendmsg(L->ctl, &m, MSG_NOSIGNAL)) < 0 && errno == EINTR)
        ;
    if (k == (ssize_t)sizeof rq)
        while ((k = recv(L->ctl, &a, sizeof a, 0)) < 0 && errno == EINTR)
            ;
    if (k != (ssize_t)sizeof a) {
        snprintf(err, errlen, "the workers' launcher thread: %s",
                 k < 0 ? strerror(errno) : "no answer");
        return PJ_ESYS;
    }
    if (a.pid <= 0)
        snprintf(err, errlen, "%s", a.err);
    return a.pid;
}

void pj__launcher_close(struct pj__launcher *L)
{
    if (!L)
        return;
    shutdown(L->ctl, SHUT_RDWR); /* the thread reads EOF and ends */
    pthread_join(L->thread, NULL);
    close(L->ctl);
    if (!OWN_TABLE)
        close(L->their_ctl);
    free(L);
}
