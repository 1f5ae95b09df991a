/* The process worker loop.
 * What a worker process of the fork and spawn backends runs: read a batch (from the channel,
 * or in place from the region's input area when the channel only says how long it is), decode
 * it (codec.c), run its tasks one by one with pj__execute watched through the cell in shared
 * memory, append each result to the shared region as soon as the task returns, then say DONE.
 * A uniform batch (one scalar function) skips the task records: its argument blocks are called
 * in place and its successes appended as runs of bare values.  Results live in shared memory,
 * not in this process, because this process may die in the next task: the parent must still
 * get every result finished before the crash, and a system call per task would cost more than
 * a tiny task.  A result that does not fit the region goes through the channel instead
 * (records are idempotent on the parent's side).
 *
 * The worker never uses stdio itself: after a fork from a threaded parent a stream's lock may
 * be held by a thread that does not exist here.  It flushes the tasks' stdout and stderr after
 * each batch only when it can take their locks (ftrylockfile), so such a stream is skipped
 * instead of deadlocking. */
#include "process.h"

#include <errno.h>
#include <malloc.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct serve {
    const struct pj__worker_args *a;
    struct pj__wbuf rec;         /* the record being built */
    struct pj__area area;        /* where the running batch's records go */
    pj_task **tasks;             /* indexed by batch position, like the parent's */
    pj_result *results;
    size_t cap;
    struct pj__mappings maps;    /* the shared objects the parent handed this worker */
};

static int read_full(int fd, void *p, size_t n)
{
    unsigned char *c = p;
    while (n) {
        ssize_t k = read(fd, c, n);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0)
            return -1;
        c += k;
        n -= (size_t)k;
    }
    return 0;
}

/* A message header, and the descriptor that came with it (SHARE's, SCM_RIGHTS), else -1:
 * recvmsg, as read would drop a descriptor.  -1 on EOF or error. */
static int read_header(int fd, struct pj__msg_header *h, int *passed)
{
    union { struct cmsghdr c; unsigned char space[CMSG_SPACE(sizeof(int))]; } ctl;
    unsigned char *c = (unsigned char *)h;
    size_t n = sizeof *h;
    *passed = -1;
    while (n) {
        struct iovec iov = { c, n };
        struct msghdr m = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl.space,
                            .msg_controllen = sizeof ctl.space };
        ssize_t k = recvmsg(fd, &m, MSG_CMSG_CLOEXEC);
        if (k < 0 && errno == EINTR)
            continue;
        for (struct cmsghdr *cm = k > 0 ? CMSG_FIRSTHDR(&m) : NULL; cm; cm = CMSG_NXTHDR(&m, cm))
            if (cm->cmsg_level == SOL_SOCKET && cm->cmsg_type == SCM_RIGHTS) {
                int got;
                memcpy(&got, CMSG_DATA(cm), sizeof got);
                if (*passed >= 0)
                    close(*passed);
                *passed = got;
            }
        if (k <= 0) {
            if (*passed >= 0)
                close(*passed);
            return -1;
        }
        c += k;
        n -= (size_t)k;
    }
    return 0;
}

/* SHARE (with its descriptor) or UNSHARE: 0, or the exit status of a broken protocol. */
static int serve_sharing(struct serve *s, const struct pj__msg_header *h, int passed)
{
    unsigned char body[PJ__FRAME_SHARE_LEN];
    int rc = 2;
    if (h->len <= sizeof body && !read_full(s->a->fd, body, (size_t)h->len))
        rc = h->type == PJ__MSG_SHARE
             ? pj__mappings_share(&s->maps, body, (size_t)h->len, passed)
             : pj__mappings_unshare(&s->maps, body, (size_t)h->len);
    if (passed >= 0)
        close(passed); /* mapped, or refused: the mapping holds the object */
    return rc ? 2 : 0;
}

/* One message, header and body in one system call when the socket takes it whole. */
static int send_msg(int fd, uint32_t type, const void *body, size_t len)
{
    struct pj__msg_header h = pj__frame_header(type, len);
    struct iovec iov[2] = { { &h, sizeof h }, { (void *)body, len } };
    struct msghdr m = { .msg_iov = iov, .msg_iovlen = 2 };
    while (m.msg_iovlen) {
        ssize_t k = sendmsg(fd, &m, MSG_NOSIGNAL);
        if (k < 0 && errno == EINTR)
            continue;
        if (k < 0)
            return -1;
        while (m.msg_iovlen && (size_t)k >= m.msg_iov->iov_len) {
            k -= (ssize_t)m.msg_iov->iov_len;
            m.msg_iov++;
            m.msg_iovlen--;
        }
        if (m.msg_iovlen) {
            m.msg_iov->iov_base = (char *)m.msg_iov->iov_base + k;
            m.msg_iov->iov_len -= (size_t)k;
        }
    }
    return 0;
}

static void flush_stream(FILE *f)
{
    if (ftrylockfile(f) == 0) {
        fflush_unlocked(f);
        funlockfile(f);
    }
}

static int send_done(struct serve *s, uint64_t exec_ns)
{
    unsigned char body[PJ__FRAME_DONE_LEN];
    pj__frame_put_done(body, exec_ns);
    return send_msg(s->a->fd, PJ__MSG_DONE, body, sizeof body);
}

/* Publishes the record in s->rec: appended to the shared region, or spilled to the channel. */
static int commit_record(struct serve *s)
{
    struct pj__area *a = &s->area;
    uint64_t used = atomic_load_explicit(a->used, memory_order_relaxed);
    if (s->rec.len > a->cap - used && used) {
        if (send_msg(s->a->fd, PJ__MSG_RECORDS, a->data, used))
            return -1;
        atomic_store_explicit(a->used, 0, memory_order_release);
        used = 0;
    }
    if (s->rec.len > a->cap)
        return send_msg(s->a->fd, PJ__MSG_RECORDS, s->rec.p, s->rec.len);
    memcpy(a->data + used, s->rec.p, s->rec.len);
    atomic_store_explicit(a->used, used + s->rec.len, memory_order_release);
    return 0;
}

/* Points the task's pointer arguments at its buffers (out buffers are allocated here, zeroed,
 * only now: a batch of big out buffers is never all in memory at once). */
static int bind_buffers(pj_task *t, struct pj__dbuf *bufs, size_t n)
{
    for (size_t k = 0; k < n; k++) {
        struct pj__dbuf *b = &bufs[k];
        if (b->kind == PJ_BUF_OUT && !b->null && !b->shared &&
            !(b->data = calloc(1, b->len ? b->len : 1)))
            return -1;
        void *p = b->null ? NULL : b->data;
        memcpy(t->args + t->fn->offsets[b->arg], &p, sizeof p);
    }
    return 0;
}

static void unbind_buffers(struct pj__dbuf *bufs, size_t n)
{
    for (size_t k = 0; k < n; k++)
        if (bufs[k].kind == PJ_BUF_OUT && !bufs[k].shared) {
            free(bufs[k].data);
            bufs[k].data = NULL;
        }
}

static int grow_arrays(struct serve *s, size_t n)
{
    if (n <= s->cap)
        return 0;
    if (n > SIZE_MAX / sizeof *s->results)
        return -1;
    free(s->tasks);
    free(s->results);
    s->tasks = malloc(n * sizeof *s->tasks);
    s->results = malloc(n * sizeof *s->results);
    s->cap = s->tasks && s->results ? n : 0;
    return s->cap ? 0 : -1;
}

/* Runs task i; 1 when the watchdog claimed it (the parent is about to kill this process). */
static int run_one(struct serve *s, const struct pj__decoded *d, size_t k)
{
    size_t i = d->first + k;
    pj_result *r = &s->results[i];
    memset(r, 0, sizeof *r);
    r->fn = d->tasks[k]->fn;
    struct pj__dbuf *bufs = d->bufs + d->buf_at[k];
    size_t nb = d->buf_at[k + 1] - d->buf_at[k];
    if (bind_buffers(d->tasks[k], bufs, nb)) {
        pj__result_fail(r, PJ_ENOMEM, 0, "out of memory for the out buffers in the worker");
    } else {
        /* Without a deadline nobody claims tasks: the cell only has to name the running one
         * for crash attribution, which spares the watched path's clock reads. */
        struct pj__cell *cell = &s->a->shm->cell;
        struct pj__exec ex = {
            .tasks = s->tasks, .results = s->results, .begin = i, .count = i + 1,
            .cell = d->timeout_ns ? cell : NULL, .timeout_ns = d->timeout_ns,
            .cancel = &s->a->shm->cancel,
        };
        if (!ex.cell)
            atomic_store_explicit(&cell->running, i + 1, memory_order_relaxed);
        if (pj__execute(&ex))
            return 1;
        /* Until the record is committed a crash (a task that broke the heap, seen by free
         * below) is still this task's: the cell keeps naming it. */
        atomic_store_explicit(&cell->running, (i + 1) | PJ__CELL_RETURNED, memory_order_relaxed);
    }
    s->rec.len = 0;
    pj__encode_record(&s->rec, i, r, bufs, nb);
    pj__result_release(r);
    unbind_buffers(bufs, nb);
    if (s->rec.oom) {
        pj__wbuf_free(&s->rec);
        pj__result_fail(r, PJ_ENOMEM, 0, "out of memory encoding the result in the worker");
        pj__encode_record(&s->rec, i, r, NULL, 0);
        pj__result_release(r);
    }
    int rc = commit_record(s) ? -1 : 0;
    atomic_store_explicit(&s->a->shm->cell.running, 0, memory_order_release);
    return rc;
}

static int refuse(struct serve *s, int code, const char *why)
{
    struct pj__wbuf w = { 0 };
    pj__frame_put_error(&w, code, why);
    int rc = w.oom ? -1 : pj__send_all(s->a->fd, w.p, w.len);
    pj__wbuf_free(&w);
    return rc;
}

static int run_batch(struct serve *s, const struct pj__decoded *d)
{
    if (grow_arrays(s, d->first + d->n))
        return refuse(s, PJ_ENOMEM, "out of memory for the batch in the worker");
    for (size_t k = 0; k < d->n; k++)
        s->tasks[d->first + k] = d->tasks[k];
    uint64_t t0 = pj__now_ns();
    for (size_t k = 0; k < d->n; k++) {
        int rc = run_one(s, d, k);
        if (rc > 0)
            for (;;)
                pause(); /* claimed by the watchdog: SIGKILL is on its way */
        if (rc < 0)
            return -1;
    }
    uint64_t took = pj__now_ns() - t0;
    flush_stream(stdout);
    flush_stream(stderr);
    return send_done(s, took);
}

/* A result that is not a plain success (pj_fail) as a record of its own. */
static int commit_failure(struct serve *s, const pj_fn *fn, size_t i)
{
    pj_result r = { .fn = fn };
    pj__call_finish(&r);
    s->rec.len = 0;
    pj__encode_record(&s->rec, i, &r, NULL, 0);
    pj__result_release(&r);
    if (s->rec.oom) { /* the message did not fit in memory: say that instead */
        pj__wbuf_free(&s->rec);
        r = (pj_result){ .fn = fn };
        pj__result_fail(&r, PJ_ENOMEM, 0, "out of memory encoding the result in the worker");
        pj__encode_record(&s->rec, i, &r, NULL, 0);
        pj__result_release(&r);
    }
    return commit_record(s);
}

/* Appends task i's value to the run, spilling the region to the channel when it is full. */
static int commit_value(struct serve *s, struct pj__values *run, size_t i, const void *value)
{
    struct pj__area *a = &s->area;
    if (pj__values_push(a, run, i, value))
        return 0;
    pj__values_close(a, run);
    uint64_t used = atomic_load_explicit(a->used, memory_order_relaxed);
    if (send_msg(s->a->fd, PJ__MSG_RECORDS, a->data, used))
        return -1;
    atomic_store_explicit(a->used, 0, memory_order_release);
    return pj__values_append(a, run, i, value) ? 0 : -1;
}

/* A uniform batch (codec.c): one function, argument blocks in the message, every success
 * appended to a run of values.  No deadline comes with such a batch, so the cell only names
 * the running task for crash attribution, and a task is done once its value is committed. */
static int run_uniform(struct serve *s, const struct pj__decoded *d)
{
    const pj_fn *fn = d->fns[0];
    struct pj__shm *shm = s->a->shm;
    struct pj__values run = { .head = SIZE_MAX, .vsize = (uint32_t)fn->ret_size };
    /* Zeroed once: every call writes the same bytes of it, and the rest (a long double's 6
     * padding bytes) must not carry this stack's old contents to the parent. */
    _Alignas(16) unsigned char value[32] = { 0 };
    uint64_t t0 = pj__now_ns();
    for (size_t k = 0; k < d->n; k++) {
        if (atomic_load_explicit(&shm->cancel, memory_order_relaxed))
            break; /* the parent fails what is left as cancelled */
        size_t i = d->first + k;
        atomic_store_explicit(&shm->cell.running, i + 1, memory_order_relaxed);
        pj__call_begin();
        pj__invoke(fn, d->blocks + k * d->stride, value);
        int rc;
        if (pj__call_failed()) {
            pj__values_close(&s->area, &run);
            rc = commit_failure(s, fn, i);
        } else {
            pj__call_end();
            rc = commit_value(s, &run, i, value);
        }
        atomic_store_explicit(&shm->cell.running, 0, memory_order_release);
        if (rc)
            return -1;
    }
    pj__values_close(&s->area, &run);
    uint64_t took = pj__now_ns() - t0;
    flush_stream(stdout);
    flush_stream(stderr);
    return send_done(s, took);
}

static int serve_one(struct serve *s, const unsigned char *body, size_t len)
{
    struct pj__decoded d;
    char err[256] = "";
    int rc = pj__decode_batch_mapped(body, len, s->a->fnref, &s->maps, &d, err, sizeof err);
    if (rc)
        return refuse(s, rc, err);
    s->area = pj__shm_area(s->a->shm, atomic_load_explicit(&s->a->shm->half,
                                                          memory_order_relaxed));
    atomic_store_explicit(s->area.used, 0, memory_order_relaxed);
    rc = d.blocks ? run_uniform(s, &d) : run_batch(s, &d);
    pj__decoded_free(&d);
    return rc;
}

/* A batch the parent wrote into the region's input half: run in place (the parent leaves the
 * half alone until DONE).  0, or the worker's exit status. */
static int serve_in_area(struct serve *s, const struct pj__msg_header *h)
{
    unsigned char at[PJ__FRAME_AREA_LEN];
    size_t len;
    const unsigned char *body = h->len == sizeof at && !read_full(s->a->fd, at, sizeof at)
                                ? pj__area_batch_body(s->a->shm, at, sizeof at, &len) : NULL;
    if (!body)
        return 2;
    return serve_one(s, body, len) ? 4 : 0;
}

int pj__worker_serve(const struct pj__worker_args *a)
{
    struct serve s = { .a = a, .maps = { .shm = a->shm } };
    pj__process_is_worker = true;
    /* Each batch's message, decoded tasks and results are large blocks freed after it: left
     * to glibc's defaults they are fresh mmaps, and zeroing their pages cost more than the
     * tasks (perf: clear_page 19% of a tiny-task run).  This process only serves batches, so
     * keep such blocks in the heap for the next batch. */
    mallopt(M_MMAP_THRESHOLD, 256 << 20);
    mallopt(M_TRIM_THRESHOLD, 512 << 20);
    /* The parent counts a worker that ends before this as one whose start-up failed. */
    if (send_msg(a->fd, PJ__MSG_READY, NULL, 0))
        return 0; /* the parent is gone */
    int status = 0;
    for (;;) {
        struct pj__msg_header h;
        int passed;
        if (read_header(a->fd, &h, &passed))
            break; /* EOF: the pool is closing or the parent is gone */
        if (!pj__frame_valid(&h) || !pj__frame_to_worker(h.type) ||
            (passed >= 0 && h.type != PJ__MSG_SHARE)) {
            if (passed >= 0)
                close(passed);
            status = 2;
            break;
        }
        if (h.type == PJ__MSG_SHARE || h.type == PJ__MSG_UNSHARE) {
            if ((status = serve_sharing(&s, &h, passed)))
                break;
            continue;
        }
        if (h.type == PJ__MSG_BATCH_SHM) {
            if ((status = serve_in_area(&s, &h)))
                break;
            continue;
        }
        unsigned char *body = malloc(h.len ? h.len : 1);
        if (!body || read_full(a->fd, body, h.len)) {
            free(body);
            status = body ? 0 : 3;
            break;
        }
        int rc = serve_one(&s, body, h.len);
        free(body);
        if (rc) {
            status = 4;
            break;
        }
    }
    free(s.tasks);
    free(s.results);
    pj__wbuf_free(&s.rec);
    pj__mappings_free(&s.maps);
    return status;
}
