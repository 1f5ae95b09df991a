/* A process for one delayed call: multiprocessing.Process.
 *
 * Why not the process pool with a pool of one: a pool worker outlives its tasks, is recycled
 * and replaced by the pool, and turns a worker's death into a task status; a Process *is* the
 * call's process — its pid is what terminate and kill signal, its wait status is exitcode
 * (exit(3) gives 3, a signal -signo), and it ends when the call returns.  So "fork" is a plain
 * fork(): the child already holds the task (it is a copy of this process), makes the call with
 * pj__call and sends back the result as one codec record (pj__encode_record, the same bytes a
 * pool worker sends), read here with pj__apply_records — no second wire format, no second
 * executor of tasks.  "spawn" needs a fresh program image, which only the spawn backend knows
 * how to start (its launcher and bootstrap); it is available when that backend is registered.
 *
 * The child is not tied to this process's life (no PR_SET_PDEATHSIG: it would fire when the
 * *thread* that started it ends, killing a process started from a short-lived thread);
 * pj_process_free kills and reaps a child still running, so none outlives its handle.
 * A pj_process is used from one thread at a time. */
#include "internal.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

enum method { METHOD_FORK = 1, METHOD_SPAWN };

struct pj_process {
    pj_task *task;
    enum method method;
    pid_t pid;
    int pidfd;                 /* -1 where pidfd_open is not available: poll with a tick */
    int rfd;                   /* the child's result record; -1 once at EOF */
    struct pj__wbuf record;
    bool started, ended, result_ready;
    int wstatus;
    pj_result result;
};

/* ---- child ------------------------------------------------------------------------------ */

/* Runs in the forked child: the call, then its result record on fd; never returns. */
static _Noreturn void child_main(const pj_task *t, int fd)
{
    pj__process_is_worker = true;
    /* The call starts with default signal handling, as a spawned one does: the parent's
     * handlers serve the parent (a test runner's SIGTERM handler kills its process group). */
    for (int sig = 1; sig < NSIG; sig++)
        signal(sig, SIG_DFL);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    pj_result r = { .status = PJ__PENDING, .fn = t->fn };
    pj__call(t, &r);
    /* Out buffers travel back as the pool's do: the child's copy of the caller's memory. */
    struct pj__dbuf bufs[t->bufs ? t->fn->nargs : 1];
    size_t nbufs = 0;
    for (unsigned a = 0; t->bufs && a < t->fn->nargs; a++) {
        const pj_buf *b = &t->bufs[a];
        if (b->kind == PJ_BUF_OUT || b->kind == PJ_BUF_INOUT)
            bufs[nbufs++] = (struct pj__dbuf){ .arg = a, .kind = b->kind,
                                               .len = b->ptr ? b->len : 0, .data = b->ptr };
    }
    struct pj__wbuf w = { 0 };
    pj__encode_record(&w, 0, &r, bufs, nbufs);
    int status = w.oom ? 2 : r.status == 0 ? 0 : 1; /* 1: Python's code for an exception */
    for (size_t off = 0; !w.oom && off < w.len;) {
        ssize_t k = write(fd, w.p + off, w.len - off);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0) {
            status = 2;
            break;
        }
        off += (size_t)k;
    }
    fflush(NULL); /* what the task printed; the parent's atexit handlers are not ours to run */
    _exit(status);
}

/* ---- parent ----------------------------------------------------------------------------- */

pj_process *pj_process_new(pj_task *task, const char *method)
{
    if (!task)
        return pj__set_last_error(PJ_EINVAL, "pj_process_new: task is NULL"), NULL;
    enum method m;
    if (!method || strcmp(method, "fork") == 0)
        m = METHOD_FORK;
    else if (strcmp(method, "spawn") == 0)
        m = METHOD_SPAWN;
    else
        return pj__set_last_error(PJ_EBACKEND, "pj_process_new: unknown start method \"%s\"; "
                                  "known: \"fork\", \"spawn\"", method), NULL;
    if (m == METHOD_SPAWN)
        return pj__set_last_error(PJ_EBACKEND, "pj_process_new: start method \"spawn\" needs "
                                  "the spawn backend's worker loop, not in this build"), NULL;
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
        return PJ_EINVAL;
    int fds[2];
    if (pipe2(fds, O_CLOEXEC) != 0)
        return PJ_ESYS;
    fflush(NULL); /* else the child would print this process's buffered output again */
    pid_t pid = fork();
    if (pid < 0) {
        close(fds[0]);
        close(fds[1]);
        return PJ_ESYS;
    }
    if (pid == 0) {
        close(fds[0]);
        child_main(p->task, fds[1]);
    }
    close(fds[1]);
    fcntl(fds[0], F_SETFL, O_NONBLOCK);
    p->rfd = fds[0];
    p->pid = pid;
    p->started = true;
#ifdef SYS_pidfd_open
    p->pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
    if (p->pidfd >= 0)
        fcntl(p->pidfd, F_SETFD, FD_CLOEXEC);
#endif
    return 0;
}

/* Reads what the child has written so far; the pipe is non-blocking. */
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
            close(p->rfd);
            p->rfd = -1;
        }
        break; /* EAGAIN: nothing more for now */
    }
}

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
        drain(p); /* everything it wrote is in the pipe by now */
        if (p->pidfd >= 0)
            close(p->pidfd);
        p->pidfd = -1;
    }
    return p->ended;
}

int pj_process_join(pj_process *p, double timeout)
{
    if (!p || !p->started || timeout != timeout)
        return PJ_EINVAL;
    uint64_t deadline = timeout < 0 || timeout > 1e9 ? UINT64_MAX
                                                     : pj__now_ns() + (uint64_t)(timeout * 1e9);
    while (!poll_end(p)) {
        uint64_t now = pj__now_ns();
        if (now >= deadline)
            return PJ_ETIMEDOUT;
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
        return PJ_EINVAL;
    return p->started && !poll_end(p);
}

int pj_process_exitcode(pj_process *p, int *exitcode)
{
    if (!p || !exitcode)
        return PJ_EINVAL;
    if (!poll_end(p))
        return 0;
    *exitcode = WIFSIGNALED(p->wstatus) ? -WTERMSIG(p->wstatus) : WEXITSTATUS(p->wstatus);
    return 1;
}

int pj_process_pid(const pj_process *p)
{
    return p ? (int)p->pid : 0;
}

static int send_signal(pj_process *p, int sig)
{
    if (!p || !p->started)
        return PJ_EINVAL;
    if (poll_end(p))
        return 0;
    /* Not reaped yet, so the pid cannot have been reused. */
    return kill(p->pid, sig) == 0 ? 0 : PJ_ESYS;
}

int pj_process_terminate(pj_process *p)
{
    return send_signal(p, SIGTERM);
}

int pj_process_kill(pj_process *p)
{
    return send_signal(p, SIGKILL);
}

/* The result from the record the child sent, or from how it ended when it sent none. */
static void read_result(pj_process *p)
{
    pj_result *r = &p->result;
    *r = (pj_result){ .status = PJ__PENDING, .fn = p->task->fn };
    /* A complete record means the call returned, whatever ended the process afterwards. */
    if (p->record.len && !p->record.oom) {
        pj_task *tasks[1] = { p->task };
        pj_batch b = { .tasks = tasks, .results = r, .count = 1 };
        if (pj__apply_records(&b, p->record.p, p->record.len) != 0) {
            pj__result_clear(r);
            pj__result_fail(r, PJ_EPROTO, 0, "the process sent a malformed result");
        }
    }
    if (r->status != PJ__PENDING)
        return;
    if (WIFSIGNALED(p->wstatus)) {
        int sig = WTERMSIG(p->wstatus);
        pj__result_fail(r, PJ_ECRASHED, sig, "process %d was killed by signal %d (%s)",
                        (int)p->pid, sig, strsignal(sig));
    } else {
        int code = WEXITSTATUS(p->wstatus);
        pj__result_fail(r, PJ_EEXITED, code, "process %d exited with status %d before "
                        "returning a result", (int)p->pid, code);
    }
}

int pj_process_result(pj_process *p, const pj_result **out)
{
    if (out)
        *out = NULL;
    if (!p || !out)
        return PJ_EINVAL;
    if (!poll_end(p))
        return PJ_EBUSY;
    if (!p->result_ready) {
        read_result(p);
        p->result_ready = true;
    }
    *out = &p->result;
    return p->result.status;
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
    if (p->rfd >= 0)
        close(p->rfd);
    if (p->pidfd >= 0)
        close(p->pidfd);
    if (p->result_ready)
        pj__result_clear(&p->result);
    pj__wbuf_free(&p->record);
    free(p);
}
