/* The one wire format between a parent and its worker processes: batches going out, result
 * records coming back.
 *
 * A batch body:
 *     head     u32 magic, u16 version, u8 fnref kind, u8 flags, u32 nfns, u32 ntasks,
 *              u64 first (index of the first task in the batch), u64 timeout_ns;
 *              flags UNIFORM (below) and RAW_POINTERS (a forked copy of the parent:
 *              undeclared pointer arguments are sent as they are, not refused)
 *     fns      nfns x { u32 ref_len, ref, u32 name_len, name, type(return), u32 nargs,
 *                       nargs x type }
 *              type = { u16 ffi type code, u16 nelems, u16 alignment, u16 str, u64 size }
 *                     followed by nelems element types when it is a struct; str is 0 but in
 *                     a pointer return type that is a C string: 1 owned, 2 borrowed
 *     tasks    ntasks x { u32 fn, u32 nbufs, u64 args_len, args (16-aligned),
 *                         nbufs x { u32 arg, u32 kind, u64 len, bytes (16-aligned) } }
 *              a buffer with kind flag SHARED carries { u64 object id, u64 offset } instead
 *              of its bytes: they lie in a shared object the worker was handed before the
 *              batch (PJ__MSG_SHARE), a pj_shared_alloc allocation or a sealed input copy
 *              (config.max_nbytes); an out or inout buffer there is written in place and
 *              sends no bytes back either
 *              or, with flag UNIFORM (one function taking and returning only scalars, no
 *              buffers, no deadline): ntasks argument blocks back to back (16-aligned), each
 *              `stride` bytes - what most batches of tiny tasks are, at a memcpy per task
 * A batch body may also lie in an input half of the worker's shared region, where it was
 * encoded in place; the channel then carries a PJ__MSG_BATCH_SHM saying where.  Message
 * headers and the small bodies (READY, DONE, ERROR, BATCH_SHM) are framing.c's.
 * A result record:
 *     u64 index, i32 status, i32 code, u32 msg_len, u32 nbufs, u64 value_len, message, value,
 *     nbufs x { u32 arg, u32 0, u64 len, bytes }
 *     where the value of a C-string function is the string's bytes with its NUL (value_len 0
 *     for a NULL return): the parent's result owns a copy, the worker frees its own
 * or a run of successes of tasks index, index + 1, ...: the same head with status RUN_STATUS,
 * nbufs the count and value_len the size of each value, then the values back to back (padded
 * to 8 once the run is closed by a record after it); never for a C-string function.
 * Every variable-length field is padded to 8 bytes (buffer bytes and argument blocks to 16, so
 * a worker can hand them to a function in place).  Lengths are validated before any use: the
 * decoder is a fuzzing target, and a malformed message is PJ_EPROTO, never a crash.
 *
 * Signatures travel with every batch, structs included, so a worker that shares no memory
 * with the parent (spawn) rebuilds the ffi_cif; fork uses the same format rather than a
 * shortcut, so both backends exercise one decoder.
 *
 * This file encodes batches; decode.c decodes them, records.c writes and applies result
 * records, codec.h holds what the three share. */
#include "codec.h"

#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

_Atomic uint64_t pj__wire_bytes;

/* ---- writer ------------------------------------------------------------------------------- */

static bool wbuf_reserve(struct pj__wbuf *w, size_t n)
{
    if (w->oom)
        return false;
    if (n <= w->cap - w->len)
        return true;
    if (w->fixed)
        return w->oom = true, false;
    size_t cap = w->cap ? w->cap : 4096;
    while (cap - w->len < n) {
        if (cap > SIZE_MAX / 2)
            return w->oom = true, false;
        cap *= 2;
    }
    unsigned char *p = realloc(w->p, cap);
    if (!p)
        return w->oom = true, false;
    w->p = p;
    w->cap = cap;
    return true;
}

void pj__wbuf_put(struct pj__wbuf *w, const void *src, size_t n)
{
    if (!n || !wbuf_reserve(w, n))
        return;
    memcpy(w->p + w->len, src, n);
    w->len += n;
}

void pj__wbuf_free(struct pj__wbuf *w)
{
    if (!w->fixed)
        free(w->p);
    *w = (struct pj__wbuf){ 0 };
}

/* ---- function references: fork's pointers ------------------------------------------------- */

static int pointer_encode(struct pj__wbuf *w, void (*fn)(void), char *err, size_t errlen)
{
    (void)err, (void)errlen;
    uint64_t v = (uint64_t)(uintptr_t)fn;
    pj__wbuf_put(w, &v, sizeof v);
    return 0;
}

/* A forked worker has the parent's address space as of the fork: the pointer is the function.
 * Only its shape is checked (the fuzzer never calls it). */
static int pointer_resolve(const unsigned char *ref, size_t len, void (**fn)(void), char *err,
                           size_t errlen)
{
    uint64_t v;
    if (len != sizeof v)
        return fail(err, errlen, PJ_EPROTO, "function reference of %zu bytes, expected 8", len);
    memcpy(&v, ref, sizeof v);
    if (!v)
        return fail(err, errlen, PJ_ERESOLVE, "function reference is NULL");
    *fn = (void (*)(void))(uintptr_t)v;
    return 0;
}

const struct pj__fnref_ops pj__fnref_pointer = {
    .kind = PJ__FNREF_POINTER,
    .encode = pointer_encode,
    .resolve = pointer_resolve,
};

const struct pj__fnref_ops pj__fnref_pointer_copy = {
    .kind = PJ__FNREF_POINTER,
    .encode = pointer_encode,
    .resolve = pointer_resolve,
    .raw_pointers = true,
};

/* ---- encoding a batch --------------------------------------------------------------------- */

static void put_type(struct pj__wbuf *w, const ffi_type *t, uint16_t str)
{
    unsigned n = 0;
    if (t->type == FFI_TYPE_STRUCT)
        while (t->elements && t->elements[n])
            n++;
    uint16_t head[4] = { t->type, (uint16_t)n, t->alignment, str };
    pj__wbuf_put(w, head, sizeof head);
    put_u64(w, t->size);
    for (unsigned i = 0; i < n; i++)
        put_type(w, t->elements[i], 0);
}

static int put_fn(struct pj__wbuf *w, const pj_fn *fn, const struct pj__fnref_ops *fnref,
                  char *err, size_t errlen)
{
    size_t at = w->len;
    put_u32(w, 0);
    put_pad(w, 8);
    size_t start = w->len;
    int rc = fnref->encode(w, fn->ptr, err, errlen);
    if (rc)
        return rc;
    if (!w->oom) {
        uint32_t n = (uint32_t)(w->len - start);
        memcpy(w->p + at, &n, sizeof n);
    }
    put_pad(w, 8);
    put_bytes(w, fn->name, fn->name ? strlen(fn->name) : 0);
    put_type(w, fn->rtype, fn->ret_str);
    put_u32(w, fn->nargs);
    put_pad(w, 8);
    for (unsigned i = 0; i < fn->nargs; i++)
        put_type(w, fn->atypes[i], 0);
    return 0;
}

/* One rule for the codec and for the pool handing objects to workers (sharing.c): the two
 * must agree on which buffers are references. */
int pj__sharing_place(const struct pj__sharing *sh, const pj_buf *b, struct pj__shared_ref *ref,
                      char *err, size_t errlen)
{
    if (!sh || !b->ptr || !b->kind || b->kind == PJ_BUF_CSTR)
        return 0;
    char why[200];
    int rc = pj__shared_find(b->ptr, b->len, ref, why, sizeof why);
    if (rc < 0)
        return fail(err, errlen, rc, "%s", why);
    if (rc || b->kind == PJ_BUF_OUT || b->kind == PJ_BUF_INOUT || !sh->run ||
        b->len <= sh->max_nbytes)
        return rc;
    rc = pj__shared_seal(sh->run, b->ptr, b->len, ref, err, errlen);
    return rc ? rc : 1;
}

static int put_buf(struct pj__wbuf *w, unsigned arg, const pj_buf *b, const struct pj__sharing *sh,
                   char *err, size_t errlen)
{
    uint64_t len = b->kind == PJ_BUF_CSTR ? (b->ptr ? strlen(b->ptr) + 1 : 0) : b->len;
    /* A copied input is an input to the worker: the copy is the task's, not the wire's. */
    uint32_t kind = (b->kind == PJ_BUF_IN_COPY ? PJ_BUF_IN : b->kind) | (b->ptr ? 0 : BUF_NULL);
    if (!b->ptr)
        len = 0;
    struct pj__shared_ref ref;
    int placed = pj__sharing_place(sh, b, &ref, err, errlen);
    if (placed < 0)
        return placed;
    put_u32(w, arg);
    put_u32(w, kind | (placed ? BUF_SHARED : 0));
    put_u64(w, len);
    if (placed) {
        put_u64(w, ref.id);
        put_u64(w, ref.offset);
    } else if (b->kind != PJ_BUF_OUT) {
        pj__wbuf_put(w, b->ptr, len);
    }
    put_pad(w, 16);
    return 0;
}

/* Copies a value of type t leaving its padding zero: padding is never initialised by the
 * caller, and neither its bytes nor valgrind's complaints should cross to the worker. */
static void copy_value(unsigned char *dst, const unsigned char *src, const ffi_type *t)
{
    if (t->type != FFI_TYPE_STRUCT) {
        memcpy(dst, src, t->size);
        return;
    }
    size_t off = 0;
    for (ffi_type **e = t->elements; *e; e++) {
        off = align_to(off, (*e)->alignment ? (*e)->alignment : 1);
        copy_value(dst + off, src + off, *e);
        off += (*e)->size;
    }
}

static void put_args(struct pj__wbuf *w, const pj_task *t)
{
    const pj_fn *fn = t->fn;
    if (!wbuf_reserve(w, fn->args_size))
        return;
    unsigned char *dst = w->p + w->len;
    if (fn->struct_args) {
        memset(dst, 0, fn->args_size);
        for (unsigned a = 0; a < fn->nargs; a++)
            copy_value(dst + fn->offsets[a], t->args + fn->offsets[a], fn->atypes[a]);
    } else {
        memcpy(dst, t->args, fn->args_size); /* the gaps of a task's block are zero already */
    }
    w->len += fn->args_size;
}

static int put_task(struct pj__wbuf *w, const pj_task *t, uint32_t fn_index,
                    const struct pj__sharing *sh, char *err, size_t errlen)
{
    const pj_fn *fn = t->fn;
    uint32_t nbufs = 0;
    for (unsigned a = 0; t->bufs && a < fn->nargs; a++)
        nbufs += t->bufs[a].kind != 0;
    struct { uint32_t fn_index, nbufs; uint64_t args_size; } head = { fn_index, nbufs,
                                                                       fn->args_size };
    pj__wbuf_put(w, &head, sizeof head);
    put_args(w, t);
    put_pad(w, 16);
    int rc = 0;
    for (unsigned a = 0; nbufs && a < fn->nargs && !rc; a++)
        if (t->bufs[a].kind)
            rc = put_buf(w, a, &t->bufs[a], sh, err, errlen);
    return rc;
}

/* The distinct functions of tasks[begin..end), in first-use order. */
static int collect_fns(pj_task *const *tasks, size_t begin, size_t end, const pj_fn ***out,
                       size_t *nout, uint32_t *index)
{
    const pj_fn **fns = NULL;
    size_t n = 0, cap = 0, last = 0;
    for (size_t i = begin; i < end; i++) {
        const pj_fn *fn = tasks[i]->fn;
        size_t k = n && fns[last] == fn ? last : 0;
        while (k < n && fns[k] != fn)
            k++;
        if (k == n) {
            if (n == cap) {
                cap = cap ? cap * 2 : 4;
                const pj_fn **grown = realloc(fns, cap * sizeof *fns);
                if (!grown)
                    return free(fns), PJ_ENOMEM;
                fns = grown;
            }
            fns[n++] = fn;
        }
        index[i - begin] = (uint32_t)k;
        last = k;
    }
    *out = fns;
    *nout = n;
    return 0;
}

static void put_head(struct pj__wbuf *w, const struct pj__fnref_ops *fnref, uint8_t flags,
                     size_t nfns, size_t ntasks, size_t first, uint64_t timeout_ns)
{
    put_u32(w, BATCH_MAGIC);
    uint8_t v[4] = { BATCH_VERSION & 0xff, BATCH_VERSION >> 8, fnref->kind, flags };
    pj__wbuf_put(w, v, sizeof v);
    put_u32(w, (uint32_t)nfns);
    put_u32(w, (uint32_t)ntasks);
    put_u64(w, first);
    put_u64(w, timeout_ns);
}

/* The argument blocks of tasks[begin..end) back to back, when every task is a call of one
 * uniform function without buffers.  Returns 1 when they are not (w is then rewritten by the
 * general encoder), else 0 or a PJ_E code. */
static int put_uniform(struct pj__wbuf *w, pj_task *const *tasks, size_t begin, size_t end,
                       uint64_t timeout_ns, const struct pj__fnref_ops *fnref, char *err,
                       size_t errlen)
{
    const pj_fn *fn = tasks[begin]->fn;
    if (timeout_ns || !uniform_fn(fn))
        return 1;
    put_head(w, fnref, FLAG_UNIFORM, 1, end - begin, begin, 0);
    int rc = put_fn(w, fn, fnref, err, errlen);
    put_pad(w, 16);
    size_t stride = uniform_stride(fn), size = fn->args_size;
    if (rc)
        return rc;
    if ((end - begin) > SIZE_MAX / stride)
        return fail(err, errlen, PJ_ENOMEM, "batch too large to encode");
    if (!wbuf_reserve(w, (end - begin) * stride))
        return 0; /* w->oom says it */
    unsigned char *dst = w->p + w->len;
    for (size_t i = begin; i < end; i++, dst += stride) {
        const pj_task *t = tasks[i];
        if (t->fn != fn || t->bufs)
            return 1;
        if (stride == 16 && size == 16) { /* up to two scalars: no call to memcpy */
            memcpy(dst, t->args, 16);
        } else {
            memcpy(dst, t->args, size);
            memset(dst + size, 0, stride - size);
        }
    }
    w->len += (end - begin) * stride;
    return 0;
}

static int put_general(struct pj__wbuf *w, pj_task *const *tasks, size_t begin, size_t end,
                       uint64_t timeout_ns, const struct pj__fnref_ops *fnref,
                       const struct pj__sharing *sh, char *err, size_t errlen)
{
    uint32_t *index = malloc((end - begin + 1) * sizeof *index);
    const pj_fn **fns = NULL;
    size_t nfns = 0;
    if (!index || collect_fns(tasks, begin, end, &fns, &nfns, index)) {
        free(index);
        return fail(err, errlen, PJ_ENOMEM, "out of memory encoding a batch");
    }
    put_head(w, fnref, fnref->raw_pointers ? FLAG_RAW_POINTERS : 0, nfns, end - begin, begin,
             timeout_ns);
    int rc = 0;
    for (size_t k = 0; k < nfns && !rc; k++)
        rc = put_fn(w, fns[k], fnref, err, errlen);
    for (size_t i = begin; i < end && !rc; i++)
        rc = put_task(w, tasks[i], index[i - begin], sh, err, errlen);
    free(index);
    free(fns);
    return rc;
}

int pj__encode_batch(struct pj__wbuf *w, uint32_t type, pj_task *const *tasks, size_t begin,
                     size_t end, uint64_t timeout_ns, const struct pj__fnref_ops *fnref,
                     const pj_fn **uniform, char *err, size_t errlen)
{
    return pj__encode_batch_shared(w, type, tasks, begin, end, timeout_ns, fnref, NULL, uniform,
                                   err, errlen);
}

int pj__encode_batch_shared(struct pj__wbuf *w, uint32_t type, pj_task *const *tasks,
                            size_t begin, size_t end, uint64_t timeout_ns,
                            const struct pj__fnref_ops *fnref, const struct pj__sharing *sh,
                            const pj_fn **uniform, char *err, size_t errlen)
{
    w->len = 0;
    size_t at = pj__frame_open(w, type);
    size_t body = w->len;
    int rc = put_uniform(w, tasks, begin, end, timeout_ns, fnref, err, errlen);
    if (uniform)
        *uniform = rc == 0 ? tasks[begin]->fn : NULL;
    if (rc == 1) {
        w->len = body;
        rc = put_general(w, tasks, begin, end, timeout_ns, fnref, sh, err, errlen);
    }
    if (!rc && w->oom)
        rc = fail(err, errlen, PJ_ENOMEM, "out of memory encoding a batch");
    if (!rc) {
        pj__frame_close(w, at);
        atomic_fetch_add_explicit(&pj__wire_bytes, w->len, memory_order_relaxed);
    }
    return rc;
}

/* A bulk batch's calls, encoded as a uniform batch: the worker cannot tell them from tasks. */
int pj__encode_range_batch(struct pj__wbuf *w, uint32_t type, const pj_batch *b, size_t begin,
                           size_t end, const struct pj__fnref_ops *fnref, const pj_fn **uniform,
                           char *err, size_t errlen)
{
    const pj_fn *fn = b->range_fn;
    *uniform = NULL;
    if (!uniform_fn(fn))
        return fail(err, errlen, PJ_EINVAL, "a bulk batch of a function that is not uniform");
    w->len = 0;
    size_t at = pj__frame_open(w, type);
    put_head(w, fnref, FLAG_UNIFORM, 1, end - begin, begin, 0);
    int rc = put_fn(w, fn, fnref, err, errlen);
    put_pad(w, 16);
    size_t stride = uniform_stride(fn);
    if (rc)
        return rc;
    if ((end - begin) > SIZE_MAX / stride)
        return fail(err, errlen, PJ_ENOMEM, "batch too large to encode");
    if (wbuf_reserve(w, (end - begin) * stride)) {
        unsigned char *dst = w->p + w->len;
        b->range_gather(b, begin, end, dst, stride); /* every byte, padding zeroed */
        w->len += (end - begin) * stride;
    }
    if (w->oom)
        return fail(err, errlen, PJ_ENOMEM, "out of memory encoding a batch");
    pj__frame_close(w, at);
    *uniform = fn;
    return 0;
}
