/* The local transport: worker processes on this machine, each on a stream socket (its channel)
 * and a region of one memfd that the parent maps once for the whole pool.  What the pool
 * (procpool.c) asks of "a worker somewhere" is struct pj__transport_ops; this file is the only
 * one under the pool that knows sockets, mmap, epoll, pids and the launcher thread.
 *
 * The interface, and how other transports plug in without touching the pool's policy (slots,
 * scheduling, crash attribution, re-runs, deadlines, encoding ahead):
 *  - every slot has a region (struct pj__shm) at one address for the transport's life: the
 *    pool reads the cell (the running task, for deadlines and crash attribution), the records
 *    committed to a half, and encodes batches ahead into its input halves.  Here it is memory
 *    shared with the worker; the worker writes it and no message is needed per task.
 *  - messages (framing.c) go out with send and come back with receive, per batch and per
 *    event, never per task; wait reports the slots with something to receive, tagged as start
 *    was told, and the end of a channel (receive returns 0) is how the pool learns that a
 *    worker died; reap then gives its wait status (waitpid's encoding) and kill stops it now.
 *  - an MPI transport (ranks, not child processes; messages, not a shared region): start
 *    claims a rank (its local worker processes keep crashes a task's status), send is MPI_Isend
 *    of the same bytes, receive/wait drain MPI_Irecv/MPI_Testsome.  The region stays the
 *    pool's view in the parent's memory: the transport keeps it in step — it copies the
 *    records a rank sends into the half the pool reads before it reports the slot, mirrors the
 *    rank's cell from a small message the rank sends when a task starts (only with deadlines,
 *    as the worker writes the cell only then today), and sends the cancel flag when the pool
 *    raises it; a batch the pool encoded into an input half is sent from there as its body.
 *    The rank's end (a failure the MPI library reports, or a message the rank's supervisor
 *    sends with its local worker's wait status) is receive's 0 and reap's status.
 *  - shared buffers (pj_shared_alloc's allocations and the sealed copies of inputs above
 *    config.max_nbytes; sharing.c) use the method appended to the table, share: hand slot i's
 *    worker an object's descriptor and id.  Here it is a SHARE message with the descriptor
 *    attached (SCM_RIGHTS) on the channel: the worker maps the very pages the parent wrote,
 *    and the codec sends (id, offset, length), never the bytes.  The pool calls share once
 *    per worker and object, before the first batch naming it, and sends UNSHARE when the
 *    object dies.  A message-only transport (MPI) implements share by sending the object's
 *    bytes once per rank — the SHARE message followed by `size` bytes read through a
 *    read-only mapping of fd — the first time any of the rank's slots is handed the id; the
 *    rank's supervisor places them in a memfd of its own (sealed when readonly) and hands
 *    that to its local worker processes as here, so every later batch naming the object,
 *    from any task, costs the rank (id, offset, length).  A shared allocation written by the
 *    rank's tasks is not the parent's memory there: such a transport sends the written
 *    ranges back with the records (an out buffer's bytes, as today), or refuses
 *    pj_out/pj_inout into shared allocations with PJ_EPOINTER — it must not pretend they are
 *    shared.
 *
 * Threads: everything but kill and wake runs on the pool's I/O thread (and open and close on
 * the thread that opens and closes the pool).  kill may come from the dispatcher's watchdog
 * (stop_task) while the I/O thread reaps: the pool calls it under its lock and only for a
 * slot not being reaped, so the pid cannot have been reused. */
#include "process.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#define REAP_GRACE_NS (100ull * 1000000ull) /* a worker that closed its channel may still be
                                                exiting (atexit handlers) before SIGKILL */

struct local_slot {
    pid_t pid;                   /* 0: no process */
    int fd;                      /* parent's end of the channel, -1 without a process */
    struct pj__shm *shm;         /* in the one mapping */
};

struct pj__transport {
    int n;
    struct local_slot *slots;
    int wake_fd;
    int epoll_fd;                /* the channels and wake_fd; an event's data.ptr: its tag */
    int shm_fd;                  /* one memfd for every slot's region, mapped once: one */
    unsigned char *shm_base;     /* mapping however many workers (each one a fork copies */
    size_t shm_len;              /* would make every later fork slower) */
    const struct pj__inner *inner;
    struct pj__launcher *launcher;
};

static int local_open(struct pj__transport **out, int n, const struct pj__proc_ops *ops,
                      const struct pj__inner *inner, char *err, size_t errlen);
static struct pj__shm *local_region(struct pj__transport *t, int i);
static pid_t local_start(struct pj__transport *t, int i, void *tag, char *err, size_t errlen);
static void local_send(struct pj__transport *t, int i, const void *msg, size_t len);
static ssize_t local_receive(struct pj__transport *t, int i, void *buf, size_t cap);
static int local_wait(struct pj__transport *t, void **tags, int max, int timeout_ms);
static void local_wake(struct pj__transport *t);
static void local_kill(struct pj__transport *t, int i);
static int local_reap(struct pj__transport *t, int i);
static void local_close(struct pj__transport *t);
static void local_share(struct pj__transport *t, int i, uint64_t id, int fd, uint64_t size,
                        bool readonly);

const struct pj__transport_ops pj__transport_local = {
    .name = "local",
    .open = local_open,
    .region = local_region,
    .start = local_start,
    .send = local_send,
    .receive = local_receive,
    .wait = local_wait,
    .wake = local_wake,
    .kill = local_kill,
    .reap = local_reap,
    .close = local_close,
    .share = local_share,
};

int pj__send_all(int fd, const void *buf, size_t n)
{
    const unsigned char *c = buf;
    while (n) {
        ssize_t k = send(fd, c, n, MSG_NOSIGNAL);
        if (k < 0 && errno == EINTR)
            continue;
        if (k < 0)
            return -1;
        c += k;
        n -= (size_t)k;
    }
    return 0;
}

/* ---- opening and closing ------------------------------------------------------------------ */

/* The wake-up eventfd and the epoll set, with the eventfd in it (data.ptr NULL). */
static int open_events(struct pj__transport *t, char *err, size_t errlen)
{
    t->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (t->wake_fd < 0) {
        snprintf(err, errlen, "eventfd: %s", strerror(errno));
        return PJ_ESYS;
    }
    t->epoll_fd = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event ev = { .events = EPOLLIN, .data.ptr = NULL };
    if (t->epoll_fd < 0 || epoll_ctl(t->epoll_fd, EPOLL_CTL_ADD, t->wake_fd, &ev)) {
        snprintf(err, errlen, "epoll: %s", strerror(errno));
        return PJ_ESYS;
    }
    return 0;
}

/* Every slot's region in one memfd, mapped once.  Pages are touched only when a worker uses
 * them: a slot that never starts a worker costs nothing there. */
static int open_memory(struct pj__transport *t, char *err, size_t errlen)
{
    t->shm_len = (size_t)t->n * PJ__SHM_SIZE;
    t->shm_fd = memfd_create("parjob-workers", MFD_CLOEXEC);
    if (t->shm_fd < 0 || ftruncate(t->shm_fd, (off_t)t->shm_len)) {
        snprintf(err, errlen, "cannot create the workers' shared memory: %s", strerror(errno));
        return PJ_ESYS;
    }
    void *m = mmap(NULL, t->shm_len, PROT_READ | PROT_WRITE, MAP_SHARED, t->shm_fd, 0);
    if (m == MAP_FAILED) {
        snprintf(err, errlen, "cannot map the workers' shared memory (%zu MiB for %d workers): "
                 "%s", t->shm_len >> 20, t->n, strerror(errno));
        return PJ_ESYS;
    }
    t->shm_base = m;
    for (int i = 0; i < t->n; i++)
        t->slots[i].shm = (struct pj__shm *)(t->shm_base + (size_t)i * PJ__SHM_SIZE);
    return 0;
}

static void transport_free(struct pj__transport *t)
{
    if (t->shm_base)
        munmap(t->shm_base, t->shm_len);
    if (t->shm_fd >= 0)
        close(t->shm_fd);
    pj__launcher_close(t->launcher);
    if (t->epoll_fd >= 0)
        close(t->epoll_fd);
    if (t->wake_fd >= 0)
        close(t->wake_fd);
    free(t->slots);
    free(t);
}

static int local_open(struct pj__transport **out, int n, const struct pj__proc_ops *ops,
                      const struct pj__inner *inner, char *err, size_t errlen)
{
    struct pj__transport *t = calloc(1, sizeof *t);
    if (!t || !(t->slots = calloc((size_t)n, sizeof *t->slots))) {
        free(t);
        return PJ_ENOMEM;
    }
    t->n = n;
    t->inner = inner;
    t->wake_fd = t->epoll_fd = t->shm_fd = -1;
    for (int i = 0; i < n; i++)
        t->slots[i].fd = -1;
    int rc = open_events(t, err, errlen);
    if (!rc)
        rc = open_memory(t, err, errlen);
    if (!rc)
        rc = pj__launcher_open(&t->launcher, ops->launch, err, errlen);
    if (rc) {
        transport_free(t);
        return rc;
    }
    *out = t;
    return 0;
}

/* The parent's end of a channel: out of the epoll set (a forked child may hold a copy of it
 * for a moment, which would keep it there), then closed. */
static void hang_up(struct pj__transport *t, struct local_slot *s)
{
    if (s->fd < 0)
        return;
    epoll_ctl(t->epoll_fd, EPOLL_CTL_DEL, s->fd, NULL);
    close(s->fd);
    s->fd = -1;
}

/* Waits for every worker at once after their channels closed: each exits on its own EOF, in
 * parallel, so waiting for them one after the other with a grace each would add up their
 * exit times.  SIGKILL for those still there when the one grace is over.  No zombie is left. */
static void reap_all(struct pj__transport *t)
{
    uint64_t give_up = pj__now_ns() + REAP_GRACE_NS;
    for (bool left = true; left;) {
        bool late = pj__now_ns() > give_up;
        left = false;
        for (int i = 0; i < t->n; i++) {
            struct local_slot *s = &t->slots[i];
            if (!s->pid)
                continue;
            if (late)
                kill(s->pid, SIGKILL);
            int st;
            pid_t r;
            while ((r = waitpid(s->pid, &st, late ? 0 : WNOHANG)) < 0 && errno == EINTR)
                ;
            if (r == s->pid || r < 0)
                s->pid = 0;
            else
                left = true;
        }
        if (left) {
            struct timespec ts = { 0, 1000000 };
            nanosleep(&ts, NULL);
        }
    }
}

static void local_close(struct pj__transport *t)
{
    for (int i = 0; i < t->n; i++)
        hang_up(t, &t->slots[i]);
    reap_all(t);
    transport_free(t);
}

/* ---- one worker --------------------------------------------------------------------------- */

static struct pj__shm *local_region(struct pj__transport *t, int i)
{
    return t->slots[i].shm;
}

/* Waits for a worker whose channel has ended; SIGKILL when it lingers.  No zombie is left. */
static int reap_pid(pid_t pid)
{
    int st = 0;
    uint64_t give_up = pj__now_ns() + REAP_GRACE_NS;
    for (;;) {
        pid_t r = waitpid(pid, &st, WNOHANG);
        if (r == pid || (r < 0 && errno != EINTR))
            return st;
        if (pj__now_ns() > give_up)
            break;
        struct timespec ts = { 0, 1000000 };
        nanosleep(&ts, NULL);
    }
    kill(pid, SIGKILL);
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
        ;
    return st;
}

/* A process in slot i through the backend's launcher, which the launcher thread runs
 * (launcher.c), on a new socket pair and the slot's region. */
static pid_t local_start(struct pj__transport *t, int i, void *tag, char *err, size_t errlen)
{
    struct local_slot *s = &t->slots[i];
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv)) {
        snprintf(err, errlen, "socketpair: %s", strerror(errno));
        return PJ_ESYS;
    }
    struct pj__launch l = {
        .fd = sv[1], .shm_fd = t->shm_fd, .shm = s->shm, .shm_size = PJ__SHM_SIZE,
        .shm_offset = (size_t)((unsigned char *)s->shm - t->shm_base), .inner = t->inner,
    };
    pid_t pid = pj__launcher_start(t->launcher, &l, err, errlen);
    close(sv[1]);
    struct epoll_event ev = { .events = EPOLLIN, .data.ptr = tag };
    if (pid > 0 && epoll_ctl(t->epoll_fd, EPOLL_CTL_ADD, sv[0], &ev)) {
        snprintf(err, errlen, "epoll_ctl: %s", strerror(errno));
        close(sv[0]); /* the worker sees EOF */
        reap_pid(pid);
        return PJ_ESYS;
    }
    if (pid <= 0) {
        close(sv[0]);
        return pid ? pid : PJ_ESYS;
    }
    s->pid = pid;
    s->fd = sv[0];
    return pid;
}

static void local_send(struct pj__transport *t, int i, const void *msg, size_t len)
{
    pj__send_all(t->slots[i].fd, msg, len); /* a dead worker shows as EOF */
}

static ssize_t local_receive(struct pj__transport *t, int i, void *buf, size_t cap)
{
    for (;;) {
        ssize_t k = recv(t->slots[i].fd, buf, cap, MSG_DONTWAIT);
        if (k < 0 && errno == EINTR)
            continue;
        if (k < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return -1;
        return k < 0 ? 0 : k; /* an error ends the channel as EOF does */
    }
}

static void local_kill(struct pj__transport *t, int i)
{
    kill(t->slots[i].pid, SIGKILL);
}

static int local_reap(struct pj__transport *t, int i)
{
    struct local_slot *s = &t->slots[i];
    hang_up(t, s);
    int st = reap_pid(s->pid);
    s->pid = 0;
    return st;
}

/* ---- events ------------------------------------------------------------------------------- */

/* The work done here is in proportion to the ready channels, not to the pool's size (epoll,
 * where poll would have walked every channel twice per wake-up). */
static int local_wait(struct pj__transport *t, void **tags, int max, int timeout_ms)
{
    struct epoll_event ev[64];
    int k = epoll_wait(t->epoll_fd, ev, max < 64 ? max : 64, timeout_ms);
    int n = 0;
    for (int i = 0; i < k; i++) {
        if (ev[i].data.ptr) {
            tags[n++] = ev[i].data.ptr;
        } else {
            uint64_t v;
            ssize_t r = read(t->wake_fd, &v, sizeof v);
            (void)r;
        }
    }
    return n;
}

static void local_wake(struct pj__transport *t)
{
    uint64_t one = 1;
    ssize_t k = write(t->wake_fd, &one, sizeof one);
    (void)k; /* a full counter already wakes the thread */
}

/* ---- shared objects ------------------------------------------------------------------------ */

/* One SHARE message with the object's descriptor attached: the kernel gives the worker a
 * descriptor of the same memfd, delivered with the message's first byte. */
static void local_share(struct pj__transport *t, int i, uint64_t id, int fd, uint64_t size,
                        bool readonly)
{
    struct { struct pj__msg_header h; unsigned char body[PJ__FRAME_SHARE_LEN]; } msg;
    msg.h = pj__frame_header(PJ__MSG_SHARE, PJ__FRAME_SHARE_LEN);
    pj__frame_put_share(msg.body, id, size, readonly);
    union { struct cmsghdr c; unsigned char space[CMSG_SPACE(sizeof(int))]; } ctl;
    memset(&ctl, 0, sizeof ctl);
    struct iovec iov = { &msg, sizeof msg };
    struct msghdr m = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl.space,
                        .msg_controllen = sizeof ctl.space };
    struct cmsghdr *c = CMSG_FIRSTHDR(&m);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(c), &fd, sizeof fd);
    ssize_t k;
    while ((k = sendmsg(t->slots[i].fd, &m, MSG_NOSIGNAL)) < 0 && errno == EINTR)
        ;
    /* The descriptor went with the first byte; what is left of the message goes as bytes
     * (a dead worker shows as EOF). */
    if (k >= 0 && (size_t)k < sizeof msg)
        pj__send_all(t->slots[i].fd, (unsigned char *)&msg + k, sizeof msg - (size_t)k);
}
