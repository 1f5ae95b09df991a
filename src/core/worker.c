/* Running tasks: one call through ffi_call, a batch of calls with deadlines and cancellation,
 * pj_fail, and the result accessors.  In-process backends call pj_batch_run; process workers
 * call pj__execute with a cell in shared memory. */
#include "internal.h"

#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

PJ_TLS bool pj__in_worker;
bool pj__process_is_worker;

/* The task this thread is running, so pj_fail knows where to record its failure.  Failures are
 * kept here, not in the result, because a task that overran its deadline may still be running
 * when its result has been handed back. */
struct call_context {
    bool active;
    bool failed;
    char *message;
};
static PJ_TLS struct call_context current_call;

/* A batch's tasks publish their progress in a cell when the batch runs in-process: it lives as
 * long as the thread, so an abandoned thread never touches freed memory.  One per nesting level:
 * a task that runs a pj_parallel of its own must not overwrite its own entry. */
#define MAX_NESTED_CELLS 16
static PJ_TLS struct pj__cell thread_cells[MAX_NESTED_CELLS];
static PJ_TLS unsigned cell_depth;

uint64_t pj__now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

int pj_fail(const char *fmt, ...)
{
    if (!current_call.active)
        return pj__set_last_error(PJ_EINVAL, "pj_fail: the calling thread is not running a "
                                  "task");
    char *msg = NULL;
    va_list ap;
    va_start(ap, fmt);
    if (fmt && vasprintf(&msg, fmt, ap) < 0)
        msg = NULL;
    va_end(ap);
    free(current_call.message);
    current_call.message = msg;
    current_call.failed = true;
    return 0;
}

void pj__result_release(pj_result *r)
{
    if (r->message)
        free((char *)r->message);
    if (r->status == 0 && r->fn && pj__fn_result_heap(r->fn))
        free(r->value.heap);
}

void pj__result_clear(pj_result *r)
{
    free((char *)r->message);
    r->message = NULL;
    if (r->fn && pj__fn_result_heap(r->fn) && r->status == 0)
        free(r->value.heap);
    memset(&r->value, 0, sizeof r->value);
    r->status = PJ__PENDING;
    r->code = 0;
}

void pj__result_fail(pj_result *r, int status, int code, const char *fmt, ...)
{
    char *msg = NULL;
    va_list ap;
    va_start(ap, fmt);
    if (vasprintf(&msg, fmt, ap) < 0)
        msg = NULL;
    va_end(ap);
    free((char *)r->message);
    r->message = msg;
    r->status = status;
    r->code = code;
}

/* Where ffi_call writes the return value: in place when it fits, else a heap block, zeroed:
 * a call does not write every byte (a long double's 6 padding bytes, a struct's padding), and
 * a process worker sends all of them to the parent — never its own stale memory. */
static void *return_slot(const pj_fn *fn, pj_result *r)
{
    if (fn->ret_size <= sizeof r->value.bytes)
        return r->value.bytes;
    r->value.heap = calloc(1, fn->ret_size);
    return r->value.heap;
}

/* A C-string return becomes the result's own: an owned string is kept, a borrowed one copied
 * now, while what it points to still holds.  The pointer sits in value.heap already (the
 * union's first bytes, where the call wrote it).  False when the copy ran out of memory. */
static bool keep_string(pj_result *r)
{
    if (r->fn->ret_str != PJ__STR_BORROWED || !r->value.heap)
        return true;
    char *copy = strdup(r->value.heap);
    r->value.heap = copy;
    return copy != NULL;
}

static void finish_call(pj_result *r)
{
    if (!current_call.failed && r->fn->ret_str && !keep_string(r)) {
        r->status = 0; /* value.heap is NULL: nothing to free */
        pj__result_fail(r, PJ_ENOMEM, 0, "out of memory copying the returned string");
        current_call = (struct call_context){ 0 };
        return;
    }
    if (current_call.failed) {
        if (r->fn->ret_size > sizeof r->value.bytes)
            free(r->value.heap);
        memset(&r->value, 0, sizeof r->value);
        r->status = PJ_EFAILED;
        r->message = current_call.message ? current_call.message : strdup("pj_fail");
    } else {
        r->status = 0;
        r->message = NULL;
    }
    r->code = 0;
    current_call = (struct call_context){ 0 };
}

void pj__call(const pj_task *t, pj_result *r)
{
    const pj_fn *fn = t->fn;
    r->fn = fn;
    void *slot = return_slot(fn, r);
    if (!slot) {
        pj__result_fail(r, PJ_ENOMEM, 0, "out of memory for the return value");
        return;
    }
    current_call.active = true;
    pj__invoke(fn, t->args, slot);
    finish_call(r);
}

/* A call whose deadline the watchdog watches: the return value lands in a local buffer and is
 * copied into the result only if the watchdog has not claimed the task meanwhile. */
static int call_watched(const pj_task *t, pj_result *r, struct pj__cell *cell, uint64_t id)
{
    const pj_fn *fn = t->fn;
    _Alignas(16) unsigned char local[sizeof r->value.bytes] = { 0 }; /* see return_slot */
    void *slot = fn->ret_size <= sizeof local ? local : calloc(1, fn->ret_size);
    if (!slot) {
        pj__result_fail(r, PJ_ENOMEM, 0, "out of memory for the return value");
        return 0;
    }
    /* Once the task is published as running, the watchdog may claim it and the caller may free
     * the task and its pj_fn while this thread is still setting the call up: call from copies
     * on this stack, so an abandoned call reads nothing parjob's caller owns. */
    unsigned n = fn->nargs ? fn->nargs : 1;
    struct pj__argop ops[n];
    ffi_type *atypes[n];
    size_t offsets[n];
    _Alignas(16) unsigned char args[fn->args_size ? fn->args_size : 16];
    pj_fn copy = *fn;
    memcpy(ops, fn->ops, fn->nargs * sizeof *ops);
    memcpy(atypes, fn->atypes, fn->nargs * sizeof *atypes);
    memcpy(offsets, fn->offsets, fn->nargs * sizeof *offsets);
    memcpy(args, t->args, fn->args_size);
    copy.ops = ops, copy.atypes = atypes, copy.offsets = offsets, copy.cif.arg_types = atypes;
    atomic_store_explicit(&cell->started_ns, pj__now_ns(), memory_order_relaxed);
    atomic_store_explicit(&cell->running, id, memory_order_release);
    current_call.active = true;
    pj__invoke(&copy, args, slot);
    uint64_t expected = id;
    if (!atomic_compare_exchange_strong(&cell->running, &expected, 0)) {
        /* Claimed: the result belongs to the dispatcher now.  Touch nothing of the batch. */
        free(current_call.message);
        current_call = (struct call_context){ 0 };
        if (slot != local)
            free(slot);
        else if (copy.ret_str == PJ__STR_OWNED)
            free(*(void **)local); /* the abandoned call's string: nobody will read it */
        return PJ_ETIMEDOUT;
    }
    r->fn = fn;
    if (slot == local)
        memcpy(r->value.bytes, local, sizeof local);
    else
        r->value.heap = slot;
    finish_call(r);
    return 0;
}

int pj__execute(const struct pj__exec *ex)
{
    uint64_t limit = ex->timeout_ns;
    for (size_t i = ex->begin; i < ex->count; i++) {
        pj_result *r = &ex->results[i];
        if (ex->cancel && atomic_load_explicit(ex->cancel, memory_order_relaxed)) {
            for (; i < ex->count; i++)
                pj__result_fail(&ex->results[i], PJ_ECANCELLED, 0, "cancelled before it ran");
            break;
        }
        if (!ex->cell) {
            pj__call(ex->tasks[i], r);
            continue;
        }
        uint64_t t0 = pj__now_ns();
        if (call_watched(ex->tasks[i], r, ex->cell, i + 1))
            return PJ_ETIMEDOUT;
        uint64_t took = pj__now_ns() - t0;
        if (limit && took > limit && r->status == 0) {
            /* Finished, but after its deadline (the watchdog had not looked yet, or nobody
             * can interrupt this backend): late is timed out, whoever noticed. */
            pj__result_clear(r);
            r->fn = ex->tasks[i]->fn;
            pj__result_fail(r, PJ_ETIMEDOUT, 0, "ran %.3f s, past its timeout of %.3f s",
                            took / 1e9, limit / 1e9);
        }
    }
    return 0;
}

bool pj__batch_start(pj_batch *b)
{
    int expected = PJ__GATE_PENDING;
    if (!b->gate || atomic_compare_exchange_strong(b->gate, &expected, PJ__GATE_STARTED) ||
        expected == PJ__GATE_STARTED)
        return true;
    for (size_t i = b->begin; i < b->count; i++)
        pj__result_fail(&b->results[i], PJ_ECANCELLED, 0, "cancelled before it ran");
    return false;
}

int pj_batch_run(pj_batch *b)
{
    if (!pj__batch_start(b))
        return 0; /* cancelled through its gate: every slot says so; hand it back */
    bool nested = pj__in_worker;
    pj__in_worker = true;
    /* Deeper than the cells go, tasks are not interrupted; a late one is still reported. */
    struct pj__cell *cell = b->timeout_ns && cell_depth < MAX_NESTED_CELLS
                            ? &thread_cells[cell_depth] : NULL;
    struct pj__exec ex = {
        .tasks = b->tasks, .results = b->results, .begin = b->begin, .count = b->count,
        .cell = cell, .timeout_ns = b->timeout_ns, .cancel = b->cancel,
    };
    if (cell) {
        atomic_store(&cell->running, 0);
        atomic_store_explicit(&b->cell, cell, memory_order_release);
    }
    cell_depth++;
    uint64_t t0 = pj__now_ns();
    int rc = pj__execute(&ex);
    cell_depth--;
    pj__in_worker = nested;
    if (rc)
        return pj__set_last_error(rc, "pj_batch_run: the running task was stopped at its "
                                  "deadline: forget the batch");
    b->exec_ns = pj__now_ns() - t0;
    return 0;
}

/* ---- result accessors ------------------------------------------------------------------- */

static const void *value_bytes(const pj_result *r)
{
    if (!r || r->status != 0 || !r->fn || r->fn->ret_size == 0)
        return NULL;
    return r->fn->ret_size > sizeof r->value.bytes ? r->value.heap : r->value.bytes;
}

/* Integral returns narrower than ffi_arg come back widened to an ffi_arg. */
static bool read_integer(const pj_result *r, int64_t *s, uint64_t *u)
{
    const void *p = value_bytes(r);
    if (!p)
        return false;
    const ffi_type *t = r->fn->rtype;
    bool wide = t->size < sizeof(ffi_arg);
    switch (t->type) {
    case FFI_TYPE_UINT8: *u = wide ? (uint8_t)*(const ffi_arg *)p : *(const uint8_t *)p; *s = (int64_t)*u; return true;
    case FFI_TYPE_SINT8: *s = wide ? (int8_t)*(const ffi_sarg *)p : *(const int8_t *)p; *u = (uint64_t)*s; return true;
    case FFI_TYPE_UINT16: *u = wide ? (uint16_t)*(const ffi_arg *)p : *(const uint16_t *)p; *s = (int64_t)*u; return true;
    case FFI_TYPE_SINT16: *s = wide ? (int16_t)*(const ffi_sarg *)p : *(const int16_t *)p; *u = (uint64_t)*s; return true;
    case FFI_TYPE_UINT32: *u = wide ? (uint32_t)*(const ffi_arg *)p : *(const uint32_t *)p; *s = (int64_t)*u; return true;
    case FFI_TYPE_INT:
    case FFI_TYPE_SINT32: *s = wide ? (int32_t)*(const ffi_sarg *)p : *(const int32_t *)p; *u = (uint64_t)*s; return true;
    case FFI_TYPE_UINT64: *u = *(const uint64_t *)p; *s = (int64_t)*u; return true;
    case FFI_TYPE_SINT64: *s = *(const int64_t *)p; *u = (uint64_t)*s; return true;
    case FFI_TYPE_POINTER: *u = (uint64_t)(uintptr_t)*(void *const *)p; *s = (int64_t)*u; return true;
    default: return false;
    }
}

static bool read_floating(const pj_result *r, long double *f)
{
    const void *p = value_bytes(r);
    if (!p)
        return false;
    switch (r->fn->rtype->type) {
    case FFI_TYPE_FLOAT: *f = *(const float *)p; return true;
    case FFI_TYPE_DOUBLE: *f = *(const double *)p; return true;
#if FFI_TYPE_LONGDOUBLE != FFI_TYPE_DOUBLE
    case FFI_TYPE_LONGDOUBLE: *f = *(const long double *)p; return true;
#endif
    default: return false;
    }
}

const char *pj_result_str(const pj_result *r)
{
    if (!r || r->status != 0 || !r->fn || !r->fn->ret_str)
        return NULL;
    return r->value.heap;
}

int64_t pj_result_i64(const pj_result *r)
{
    int64_t s;
    uint64_t u;
    long double f;
    if (read_integer(r, &s, &u))
        return s;
    return read_floating(r, &f) ? (int64_t)f : 0;
}

uint64_t pj_result_u64(const pj_result *r)
{
    int64_t s;
    uint64_t u;
    long double f;
    if (read_integer(r, &s, &u))
        return u;
    return read_floating(r, &f) ? (uint64_t)f : 0;
}

int pj_result_int(const pj_result *r)
{
    return (int)pj_result_i64(r);
}

long double pj_result_ldouble(const pj_result *r)
{
    int64_t s;
    uint64_t u;
    long double f;
    if (read_floating(r, &f))
        return f;
    if (read_integer(r, &s, &u))
        return r->fn->rtype->type == FFI_TYPE_UINT64 ? (long double)u : (long double)s;
    return 0;
}

double pj_result_double(const pj_result *r)
{
    return (double)pj_result_ldouble(r);
}

void *pj_result_ptr(const pj_result *r)
{
    const void *p = value_bytes(r);
    if (!p || r->fn->rtype->type != FFI_TYPE_POINTER)
        return NULL;
    return *(void *const *)p;
}

const void *pj_result_value(const pj_result *r, size_t *size)
{
    const void *p = value_bytes(r);
    /* Narrow integers sit in the low bytes of their widened slot: this library assumes a
     * little-endian machine here (x86-64, aarch64). */
    if (size)
        *size = p ? r->fn->rtype->size : 0;
    return p;
}

int pj_result_struct(const pj_result *r, void *out, size_t size)
{
    if (!r || !out)
        return pj__set_last_error(PJ_EINVAL, "pj_result_struct: %s is NULL", r ? "out" : "r");
    if (r->status != 0)
        return pj__set_last_error(r->status, "pj_result_struct: task %zu did not succeed: %s",
                                  r->index, r->message ? r->message : pj_strerror(r->status));
    if (!r->fn || r->fn->rtype->type != FFI_TYPE_STRUCT)
        return pj__set_last_error(PJ_ETYPE, "pj_result_struct: %s does not return a struct "
                                  "(read its value with pj_result_i64, pj_result_double, ...)",
                                  r->fn ? pj_fn_name(r->fn) : "the function");
    if (size != r->fn->rtype->size)
        return pj__set_last_error(PJ_ETYPE, "pj_result_struct: %s returns a struct of %zu "
                                  "bytes, out is %zu bytes", pj_fn_name(r->fn),
                                  r->fn->rtype->size, size);
    memcpy(out, value_bytes(r), size);
    return 0;
}

/* ---- process worker loop -------------------------------------------------------------------
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
#include <errno.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

struct serve {
    const struct pj__worker_args *a;
    struct pj__wbuf rec;         /* the record being built */
    struct pj__area area;        /* where the running batch's records go */
    pj_task **tasks;             /* indexed by batch position, like the parent's */
    pj_result *results;
    size_t cap;
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
        if (b->kind == PJ_BUF_OUT && !b->null && !(b->data = calloc(1, b->len ? b->len : 1)))
            return -1;
        void *p = b->null ? NULL : b->data;
        memcpy(t->args + t->fn->offsets[b->arg], &p, sizeof p);
    }
    return 0;
}

static void unbind_buffers(struct pj__dbuf *bufs, size_t n)
{
    for (size_t k = 0; k < n; k++)
        if (bufs[k].kind == PJ_BUF_OUT) {
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
    finish_call(&r);
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
    if (pj__values_append(a, run, i, value))
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
        current_call.active = true;
        pj__invoke(fn, d->blocks + k * d->stride, value);
        int rc;
        if (current_call.failed) {
            pj__values_close(&s->area, &run);
            rc = commit_failure(s, fn, i);
        } else {
            current_call.active = false;
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
    int rc = pj__decode_batch(body, len, s->a->fnref, &d, err, sizeof err);
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
    struct serve s = { .a = a };
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
        if (read_full(a->fd, &h, sizeof h))
            break; /* EOF: the pool is closing or the parent is gone */
        if (!pj__frame_valid(&h) || !pj__frame_to_worker(h.type)) {
            status = 2;
            break;
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
    return status;
}
