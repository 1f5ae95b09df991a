/* A process for one delayed call: multiprocessing.Process.
 *
 * Why not the process pool with a pool of one: a pool worker outlives its tasks, is recycled
 * and replaced by the pool, and turns a worker's death into a task status; a Process *is* the
 * call's process — its pid is what terminate and kill signal, its wait status is exitcode
 * (exit(3) gives 3, a signal -signo), and it ends when the call returns.
 *
 * Two start methods, one table each (struct start_method), and one way of running the call:
 * the process is one worker of the fork or spawn backend, started with that backend's launcher
 * (pj__fork_launch, pj__spawn_launch: the same child start-up as a pool's worker, child.c) on
 * a channel and a shared region of its own, and given the task as a one-task batch
 * (pj__encode_batch, with the method's function references); then the parent shuts its side of
 * the channel, so the worker loop (pj__worker_serve) ends after that batch and the process
 * exits.  The result comes back as the pool's do: a record in the worker's shared memory (or
 * spilled to the channel as a RECORDS message), or an ERROR message when the worker refused the
 * batch (a function it cannot resolve); the parent reads records with pj__apply_records — no
 * second wire format, no second executor of tasks, no second start-up.  A worker's loop exits
 * 0 after a task that called pj_fail; exitcode is computed from the result then (1, Python's
 * code for an exception).  Everything else — join, is_alive, exitcode, terminate, kill,
 * reaping — is one code path over a pid and a descriptor.
 *
 * The child is not tied to this process's life (no PR_SET_PDEATHSIG: it would fire when the
 * *thread* that started it ends, killing a process started from a short-lived thread; the
 * worker is launched "detached" for that reason); pj_process_free kills and reaps a
 * child still running, so none outlives its handle.  A pj_process is used from one thread at
 * a time. */
#include "process.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

struct start_method;

struct pj_process {
    pj_task *task;
    const struct start_method *method;
    pid_t pid;
    int pidfd;                 /* -1 where pidfd_open is not available: poll with a tick */
    int rfd;                   /* what the child sends (non-blocking); -1 once at EOF */
    struct pj__wbuf record;    /* the bytes read from rfd */
    struct pj__shm *shm;       /* spawn: the worker's shared memory, until it has ended */
    bool started, ended;
    int wstatus;
    int exitcode;              /* Python's, set when ended */
    pj_result result;          /* set when ended */
};

/* A start method: how its worker is started and how a function crosses to it. */
struct start_method {
    const char *name;
    /* pj_process_new: 0, or refuses a task this method cannot carry (last error set). */
    int (*check)(const pj_task *t);
    pid_t (*launch)(const struct pj__launch *l, char *err, size_t errlen);
    const struct pj__fnref_ops *fnref;
};

static void close_fd(int fd)
{
    if (fd >= 0)
        close(fd);
}

/* What a re-executed program cannot receive: a raw pointer (its memory is not ours) or a
 * function no loaded module holds: the check every process backend makes (pj__task_crossing). */
static int spawn_check(const pj_task *t)
{
    const pj_fn *checked = NULL;
    char why[448];
    int rc = pj__task_crossing(PJ_BACKEND_PROCESS, t, &checked, why, sizeof why);
    if (rc == PJ_EPOINTER)
        return pj__set_last_error(rc, "pj_process_new (%s): %s (or start it with \"fork\")",
                                  pj_fn_name(t->fn), why);
    if (rc)
        return pj__set_last_error(rc, "pj_process_new (%s): %s", pj_fn_name(t->fn), why);
    return 0;
}

/* The worker's shared memory (a memfd) and channel (a socket pair), the worker launched on
 * them by the method's launcher, the task sent as a batch of one, and our side of the channel
 * shut for writing: the worker's loop sees EOF after that batch, and the process exits once
 * the call is over.  Pool workers never inherit these descriptors (the pool's launcher thread
 * starts them from a descriptor table of its own, launcher.c); a forked worker of ours closes
 * our end and the memfd (it keeps the mapping). */
static int worker_start(pj_process *p)
{
    char err[256] = "";
    struct pj__wbuf w = { 0 };
    int rc = pj__encode_batch(&w, PJ__MSG_BATCH, &p->task, 0, 1, 0, p->method->fnref, NULL,
                              err, sizeof err);
    if (rc) {
        pj__wbuf_free(&w);
        return pj__set_last_error(rc, "pj_process_start (%s): the task cannot be sent: %s",
                                  pj_fn_name(p->task->fn), err);
    }
    int sv[2] = { -1, -1 };
    int shm_fd = memfd_create("parjob-process", MFD_CLOEXEC);
    void *m = MAP_FAILED;
    if (shm_fd < 0 || ftruncate(shm_fd, PJ__SHM_SIZE) != 0 ||
        (m = mmap(NULL, PJ__SHM_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, shm_fd, 0)) ==
            MAP_FAILED ||
        socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) {
        rc = pj__set_last_error(PJ_ESYS, "pj_process_start: shared memory or channel for the "
                                "worker: %s", strerror(errno));
        goto out;
    }
    p->shm = m;
    p->shm->cap = PJ__SHM_HALF_CAP(PJ__SHM_SIZE);
    const struct pj__fd_range ours[] = { { sv[0], sv[0] }, { shm_fd, shm_fd } };
    struct pj__launch l = { .fd = sv[1], .shm_fd = shm_fd, .shm = m,
                            .shm_size = PJ__SHM_SIZE, .close_ranges = ours,
                            .n_close_ranges = 2, .detached = true };
    fflush(NULL); /* else a forked worker would print this process's buffered output again */
    pid_t pid = p->method->launch(&l, err, sizeof err);
    if (pid <= 0) {
        rc = pj__set_last_error(PJ_ESYS, "pj_process_start: %s", err);
        goto out;
    }
    p->pid = pid;
    /* A worker that died before reading shows as its exit status; nothing to do here. */
    pj__send_all(sv[0], w.p, w.len);
    shutdown(sv[0], SHUT_WR);
    fcntl(sv[0], F_SETFL, O_NONBLOCK);
    p->rfd = sv[0];
    sv[0] = -1;
out:
    if (rc && m != MAP_FAILED) {
        munmap(m, PJ__SHM_SIZE);
        p->shm = NULL;
    }
    close_fd(sv[0]);
    close_fd(sv[1]);
    close_fd(shm_fd);
    pj__wbuf_free(&w);
    return rc;
}

/* The worker's messages, as the pool reads them: RECORDS (results too big for the shared
 * memory), DONE, or ERROR (it refused the batch: code and reason); then the records committed
 * in shared memory — committed means the call returned, whatever ended the process after. */
static int worker_apply(pj_process *p, const struct pj__records *b)
{
    const unsigned char *at = p->record.p, *end = at + p->record.len;
    while ((size_t)(end - at) >= sizeof(struct pj__msg_header)) {
        struct pj__msg_header h;
        if (pj__frame_next(at, (size_t)(end - at), &h) != 1)
            return PJ_EPROTO; /* the process has ended: a message cut short is malformed */
        at += sizeof h;
        if (h.type == PJ__MSG_RECORDS && pj__apply_records(*b, at, (size_t)h.len))
            return PJ_EPROTO;
        if (h.type == PJ__MSG_ERROR) {
            struct pj__frame_error e = pj__frame_error(at, (size_t)h.len);
            pj__result_fail(&b->results[0], e.code, 0, "the worker refused the task: %.*s",
                            e.why_len, e.why);
        }
        at += h.len;
    }
    struct pj__area a = pj__shm_area(p->shm, 0); /* one batch: the first half */
    uint64_t used = atomic_load_explicit(a.used, memory_order_acquire);
    if (used > a.cap)
        return PJ_EPROTO;
    return used ? pj__apply_records(*b, a.data, (size_t)used) : 0;
}

static const struct start_method methods[] = {
    { "fork", NULL, pj__fork_launch, &pj__fnref_pointer_copy },
    { "spawn", spawn_check, pj__spawn_launch, &pj__fnref_module },
};

/* ---- parent ----------------------------------------------------------------------------- */

pj_process *pj_process_new(pj_task *task, const char *method)
{
    if (!task)
        return pj__set_last_error(PJ_EINVAL, "pj_process_new: task is NULL"), NULL;
    const struct start_method *m = NULL;
    for (size_t i = 0; i < sizeof methods / sizeof methods[0] && !m; i++)
        if (!method || strcmp(method, methods[i].name) == 0)
            m = &methods[i]; /* NULL: the first, "fork" */
    if (!m)
        return pj__set_last_error(PJ_EBACKEND, "pj_process_new: unknown start method \"%s\"; "
                                  "known: \"fork\", \"spawn\"", method), NULL;
    if (m->check && m->check(task))
        return NULL;
    pj_process *p = calloc(1, sizeof *p);
    if (!p)
        return pj__set_last_error(PJ_ENOMEM, "pj_process_new: out of memory"), NULL;
    p->task = task;
    p->method = m;
    p->pidfd = p->rfd = -1;
    return p;
}

int pj_process_start(pj_process *p)
{
    if (!p || p->started)
        return pj__set_last_error(PJ_EINVAL, "pj_process_start: %s", !p ? "process is NULL"
                                  : "the process was started already");
    int rc = worker_start(p);
    if (rc)
        return rc;
    p->started = true;
#ifdef SYS_pidfd_open
    p->pidfd = (int)syscall(SYS_pidfd_open, p->pid, 0);
    if (p->pidfd >= 0)
        fcntl(p->pidfd, F_SETFD, FD_CLOEXEC);
#endif
    return 0;
}

/* Reads what the worker has written so far; the channel is non-blocking. */
static void drain(pj_process *p)
{
    unsigned char buf[4096];
    while (p->rfd >= 0) {
        ssize_t k = read(p->rfd, buf, sizeof buf);
        if (k > 0) {
            pj__wbuf_put(&p->record, buf, (size_t)k);
            continue;
        }
        if (k < 0 && errno == EINTR)
            continue;
        if (k == 0) {
            close_fd(p->rfd);
            p->rfd = -1;
        }
        break; /* EAGAIN: nothing more for now */
    }
}

static void finish(pj_process *p);

/* Reaps the child if it has ended; true once it has. */
static bool poll_end(pj_process *p)
{
    if (p->ended || !p->started)
        return p->ended;
    drain(p);
    int st;
    pid_t r = waitpid(p->pid, &st, WNOHANG);
    if (r == p->pid) {
        p->wstatus = st;
        p->ended = true;
        drain(p); /* everything it wrote is in the channel by now */
        close_fd(p->pidfd);
        p->pidfd = -1;
        finish(p);
    }
    return p->ended;
}

int pj_process_join(pj_process *p, double timeout)
{
    if (!p || !p->started || timeout != timeout)
        return pj__set_last_error(PJ_EINVAL, "pj_process_join: %s", !p ? "process is NULL"
                                  : !p->started ? "the process was not started"
                                  : "timeout is NaN");
    uint64_t deadline = timeout < 0 || timeout > 1e9 ? UINT64_MAX
                                                     : pj__now_ns() + (uint64_t)(timeout * 1e9);
    while (!poll_end(p)) {
        uint64_t now = pj__now_ns();
        if (now >= deadline)
            return pj__set_last_error(PJ_ETIMEDOUT, "pj_process_join: process %d still runs "
                                      "after %g s", (int)p->pid, timeout);
        uint64_t left_ms = deadline == UINT64_MAX ? 1000 : (deadline - now + 999999) / 1000000;
        struct pollfd fds[2] = { { .fd = p->rfd, .events = POLLIN },
                                 { .fd = p->pidfd, .events = POLLIN } };
        /* Without a pidfd, nothing signals the end: look every 10 ms. */
        int ms = (int)(left_ms < 1000 ? left_ms : 1000);
        if (p->pidfd < 0 && ms > 10)
            ms = 10;
        poll(fds, 2, ms); /* negative fds are ignored */
    }
    return 0;
}

int pj_process_is_alive(pj_process *p)
{
    if (!p)
        return pj__set_last_error(PJ_EINVAL, "pj_process_is_alive: process is NULL");
    return p->started && !poll_end(p);
}

int pj_process_exitcode(pj_process *p, int *exitcode)
{
    if (!p || !exitcode)
        return pj__set_last_error(PJ_EINVAL, "pj_process_exitcode: %s is NULL",
                                  !p ? "process" : "exitcode");
    if (!poll_end(p))
        return 0;
    *exitcode = p->exitcode;
    return 1;
}

int pj_process_pid(const pj_process *p)
{
    return p ? (int)p->pid : 0;
}

static int send_signal(pj_process *p, int sig)
{
    if (!p || !p->started)
        return pj__set_last_error(PJ_EINVAL, "pj_process_%s: %s",
                                  sig == SIGKILL ? "kill" : "terminate",
                                  !p ? "process is NULL" : "the process was not started");
    if (poll_end(p))
        return 0;
    /* Not reaped yet, so the pid cannot have been reused. */
    if (kill(p->pid, sig) == 0)
        return 0;
    return pj__set_last_error(PJ_ESYS, "pj_process_%s: kill(%d): %s",
                              sig == SIGKILL ? "kill" : "terminate", (int)p->pid,
                              strerror(errno));
}

int pj_process_terminate(pj_process *p)
{
    return send_signal(p, SIGTERM);
}

int pj_process_kill(pj_process *p)
{
    return send_signal(p, SIGKILL);
}

/* Once reaped: the result from what the child sent, or from how it ended when it sent none;
 * then exitcode. */
static void finish(pj_process *p)
{
    pj_result *r = &p->result;
    *r = (pj_result){ .status = PJ__PENDING, .fn = p->task->fn };
    pj_task *tasks[1] = { p->task };
    struct pj__records b = { .tasks = tasks, .results = r, .count = 1 };
    if (p->record.oom || worker_apply(p, &b) != 0) {
        pj__result_clear(r);
        pj__result_fail(r, PJ_EPROTO, 0, "the process sent a malformed result");
    }
    if (p->shm)
        munmap(p->shm, PJ__SHM_SIZE);
    p->shm = NULL;
    pj__wbuf_free(&p->record);
    int st = p->wstatus;
    p->exitcode = WIFSIGNALED(st) ? -WTERMSIG(st) : WEXITSTATUS(st);
    if (r->status != PJ__PENDING) {
        /* The call returned (or its task was refused): a failure is Python's exception. */
        if (r->status != 0 && p->exitcode == 0)
            p->exitcode = 1;
        return;
    }
    if (WIFSIGNALED(st)) {
        int sig = WTERMSIG(st);
        pj__result_fail(r, PJ_ECRASHED, sig, "process %d was killed by signal %d (%s)",
                        (int)p->pid, sig, strsignal(sig));
    } else {
        int code = WEXITSTATUS(st);
        pj__result_fail(r, PJ_EEXITED, code, "process %d exited with status %d before "
                        "returning a result", (int)p->pid, code);
    }
}

int pj_process_result(pj_process *p, const pj_result **out)
{
    if (out)
        *out = NULL;
    if (!p || !out)
        return pj__set_last_error(PJ_EINVAL, "pj_process_result: %s is NULL",
                                  !p ? "process" : "out");
    if (!poll_end(p))
        return pj__set_last_error(PJ_EBUSY, "pj_process_result: the process %s",
                                  p->started ? "has not ended" : "was not started");
    *out = &p->result;
    if (p->result.status)
        return pj__set_last_error(p->result.status, "pj_process_result: %s",
                                  p->result.message ? p->result.message
                                                    : pj_strerror(p->result.status));
    return 0;
}

void pj_process_free(pj_process *p)
{
    if (!p)
        return;
    if (p->started && !poll_end(p)) {
        kill(p->pid, SIGKILL);
        while (waitpid(p->pid, NULL, 0) < 0 && errno == EINTR)
            ;
    }
    close_fd(p->rfd);
    close_fd(p->pidfd);
    if (p->shm)
        munmap(p->shm, PJ__SHM_SIZE);
    if (p->ended)
        pj__result_clear(&p->result);
    pj__wbuf_free(&p->record);
    free(p);
}
