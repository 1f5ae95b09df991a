/* Result records, the codec's way back from a worker (the format: codec.c's opening comment):
 * a worker appends one record per task, or a run of bare values for a uniform batch, and the
 * parent applies them to the tasks still pending.  Records are idempotent on the parent's side:
 * one for a task no longer pending is skipped. */
#include "codec.h"

#include <stddef.h>
#include <stdlib.h>
#include <string.h>

struct record_head {
    uint64_t index;
    int32_t status, code;
    uint32_t msg_len, nbufs;
    uint64_t value_len;
};

void pj__encode_record(struct pj__wbuf *w, size_t index, const pj_result *r,
                       const struct pj__dbuf *bufs, size_t nbufs)
{
    const pj_fn *fn = r->fn;
    bool ok = r->status == 0;
    size_t vlen = ok && fn ? fn->ret_size : 0;
    const void *value = vlen > sizeof r->value.bytes ? r->value.heap : r->value.bytes;
    if (ok && fn && fn->ret_str) {
        value = r->value.heap;
        vlen = value ? strlen(value) + 1 : 0;
    }
    uint32_t nout = 0;
    for (size_t k = 0; ok && k < nbufs; k++) /* shared ones were written in place */
        nout += (bufs[k].kind == PJ_BUF_OUT || bufs[k].kind == PJ_BUF_INOUT) && !bufs[k].shared;
    struct record_head h = { index, r->status, r->code,
                             r->message ? (uint32_t)strlen(r->message) : 0, nout, vlen };
    pj__wbuf_put(w, &h, sizeof h);
    pj__wbuf_put(w, r->message, h.msg_len);
    put_pad(w, 8);
    pj__wbuf_put(w, value, vlen);
    put_pad(w, 8);
    for (size_t k = 0; nout && k < nbufs; k++) {
        uint32_t kind = bufs[k].kind;
        if ((kind != PJ_BUF_OUT && kind != PJ_BUF_INOUT) || bufs[k].shared)
            continue;
        put_u32(w, bufs[k].arg);
        put_u32(w, 0);
        put_u64(w, bufs[k].len);
        pj__wbuf_put(w, bufs[k].data, bufs[k].len);
        put_pad(w, 8);
    }
}

/* Out buffers of a record: each must be a declared out/inout buffer of the task, same size.
 * Validated in full before any byte reaches the caller's memory. */
static int rd_outbufs(struct rd *r, const pj_task *t, uint32_t n, bool copy)
{
    for (uint32_t k = 0; k < n; k++) {
        uint32_t arg = rd_u32(r);
        rd_u32(r);
        uint64_t len = rd_u64(r);
        const unsigned char *data = rd_take(r, len);
        rd_align(r, 8);
        if (r->bad || !t->bufs || arg >= t->fn->nargs)
            return PJ_EPROTO;
        const pj_buf *b = &t->bufs[arg];
        if ((b->kind != PJ_BUF_OUT && b->kind != PJ_BUF_INOUT) || len != (b->ptr ? b->len : 0))
            return PJ_EPROTO;
        if (copy && len)
            memcpy(b->ptr, data, len);
    }
    return 0;
}

static int apply_value(pj_result *res, const pj_fn *fn, const unsigned char *v, size_t n)
{
    if (fn->ret_str && n == 0) {
        res->value.heap = NULL; /* the function returned NULL */
    } else if (n > sizeof res->value.bytes || fn->ret_str) {
        void *heap = malloc(n);
        if (!heap)
            return PJ_ENOMEM;
        memcpy(heap, v, n);
        res->value.heap = heap;
    } else {
        memcpy(res->value.bytes, v, n);
    }
    return 0;
}

/* A return value's bytes: fixed-size copies for the common sizes, which the compiler inlines
 * (a call to memcpy per value was a tenth of a worker's time on tiny tasks). */
static inline void copy_value_bytes(unsigned char *dst, const void *src, size_t n)
{
    switch (n) {
    case 8: memcpy(dst, src, 8); break;
    case 4: memcpy(dst, src, 4); break;
    case 16: memcpy(dst, src, 16); break;
    default: memcpy(dst, src, n); break;
    }
}

bool pj__values_append(struct pj__area *area, struct pj__values *run, size_t index,
                       const void *value)
{
    uint64_t used = atomic_load_explicit(area->used, memory_order_relaxed);
    if (run->head == SIZE_MAX || index != run->next) {
        pj__values_close(area, run);
        used = atomic_load_explicit(area->used, memory_order_relaxed);
        if (sizeof(struct record_head) + run->vsize > area->cap - used)
            return false;
        struct record_head h = { index, RUN_STATUS, 0, 0, 0, run->vsize };
        memcpy(area->data + used, &h, sizeof h);
        run->head = used;
        run->count_at = area->data + used + offsetof(struct record_head, nbufs);
        run->count = 0;
        used += sizeof h;
    } else if (run->vsize > area->cap - used || run->count == UINT32_MAX) {
        return false;
    }
    copy_value_bytes(area->data + used, value, run->vsize);
    run->count++;
    run->next = index + 1;
    /* The count may run ahead of the bytes if this process dies between the two stores; the
     * parent trusts the bytes. */
    memcpy(area->data + run->head + offsetof(struct record_head, nbufs), &run->count,
           sizeof run->count);
    atomic_store_explicit(area->used, used + run->vsize, memory_order_release);
    return true;
}

void pj__values_close(struct pj__area *area, struct pj__values *run)
{
    if (run->head == SIZE_MAX)
        return;
    run->head = SIZE_MAX;
    uint64_t used = atomic_load_explicit(area->used, memory_order_relaxed);
    uint64_t padded = align_to(used, 8);
    memset(area->data + used, 0, padded - used); /* fits: cap is a multiple of 16 */
    atomic_store_explicit(area->used, padded, memory_order_release);
}

/* One value's first size bytes into the output array: fixed sizes inline. */
static inline void store_value(unsigned char *dst, const unsigned char *v, size_t size)
{
    switch (size) {
    case 4: memcpy(dst, v, 4); break;
    case 8: memcpy(dst, v, 8); break;
    default: memcpy(dst, v, size); break;
    }
}

/* A range batch's run (values_out): each value of a call still pending straight into the
 * output array (its first values_size bytes: an int travels as an ffi_arg), its slot given
 * only the status; one copy for the whole run when values and output are packed alike and no
 * call of it has a status yet. */
static int apply_run_out(const struct pj__records *b, size_t first, size_t n,
                         const unsigned char *v, size_t vsize)
{
    size_t size = b->values_size, stride = b->values_stride;
    if (b->tasks || !b->uniform_fn || b->uniform_fn->ret_size != vsize || size > vsize)
        return PJ_EPROTO;
    pj_result *res = b->results + first;
    unsigned char *out = b->values_out + first * stride;
    size_t k = 0;
    if (stride == vsize && size == vsize) {
        while (k < n && res[k].status == PJ__PENDING)
            res[k++].status = 0;
        memcpy(out, v, k * vsize);
    }
    for (; k < n; k++)
        if (res[k].status == PJ__PENDING) {
            store_value(out + k * stride, v + k * vsize, size);
            res[k].status = 0;
        }
    return 0;
}

/* A run of successes: each value applied to a task still pending. */
static int apply_run(const struct pj__records *b, struct rd *r, const struct record_head *h)
{
    size_t vsize = h->value_len, n = h->nbufs, left = r->len - r->pos;
    if (h->code || h->msg_len || vsize > sizeof b->results[0].value.bytes || h->index > b->count)
        return PJ_EPROTO;
    if (vsize && n > left / vsize)
        n = left / vsize; /* the worker died between committing the count and the bytes */
    if (n > b->count - h->index)
        return PJ_EPROTO;
    const unsigned char *v = rd_take(r, n * vsize);
    if (r->pos < r->len)
        rd_align(r, 8);
    if (r->bad)
        return PJ_EPROTO;
    if (b->values_out)
        return apply_run_out(b, h->index, n, v, vsize);
    for (size_t k = 0; k < n; k++, v += vsize) {
        size_t i = h->index + k;
        pj_result *res = &b->results[i];
        const pj_fn *fi = b->uniform_fn && i >= b->uniform_begin && i < b->uniform_end
                          ? b->uniform_fn : b->tasks ? b->tasks[i]->fn : NULL;
        if (!fi || fi->ret_size != vsize || fi->ret_str)
            return PJ_EPROTO;
        if (res->status != PJ__PENDING)
            continue;
        memset(&res->value, 0, sizeof res->value);
        copy_value_bytes(res->value.bytes, v, vsize);
        res->fn = fi;
        res->code = 0;
        res->message = NULL;
        res->status = 0;
    }
    return 0;
}

/* A range batch's success sent as a record of its own: its value into the output array as
 * a run's would go; false when the batch has no output array for it. */
static bool to_out(const struct pj__records *b, size_t i, const unsigned char *v, size_t n)
{
    if (!b->values_out || b->values_size > n)
        return false;
    store_value(b->values_out + i * b->values_stride, v, b->values_size);
    return true;
}

static int apply_one(const struct pj__records *b, struct rd *r)
{
    struct record_head h;
    const unsigned char *hp = rd_take(r, sizeof h);
    if (!hp)
        return PJ_EPROTO;
    memcpy(&h, hp, sizeof h);
    if (h.status == RUN_STATUS)
        return apply_run(b, r, &h);
    const unsigned char *msg = rd_take(r, h.msg_len);
    rd_align(r, 8);
    const unsigned char *value = rd_take(r, h.value_len);
    rd_align(r, 8);
    if (r->bad || h.index >= b->count)
        return PJ_EPROTO;
    /* A bulk batch has no tasks: its calls are all of the uniform function, no buffers. */
    const pj_task *t = b->tasks ? b->tasks[h.index] : NULL;
    const pj_fn *fn = t ? t->fn : b->uniform_fn;
    if (!fn || (!t && h.nbufs))
        return PJ_EPROTO;
    bool str = fn->ret_str;
    if ((h.status == 0 && !str && h.value_len != fn->ret_size) ||
        (str && h.value_len && value[h.value_len - 1] != 0) || (h.status && h.value_len) ||
        h.status > 0 || (h.status == 0 && h.msg_len))
        return PJ_EPROTO;
    struct rd check = *r;
    if (t && rd_outbufs(&check, t, h.nbufs, false))
        return PJ_EPROTO;
    pj_result *res = &b->results[h.index];
    bool fresh = res->status == PJ__PENDING;
    if (t)
        rd_outbufs(r, t, h.nbufs, fresh);
    if (!fresh)
        return 0;
    memset(&res->value, 0, sizeof res->value);
    res->fn = fn;
    res->code = h.code;
    res->message = NULL;
    res->status = h.status;
    if (h.status == 0 && !t && to_out(b, h.index, value, h.value_len))
        return 0;
    if (h.status == 0 && apply_value(res, fn, value, h.value_len))
        pj__result_fail(res, PJ_ENOMEM, 0, "out of memory for the return value");
    else if (h.status)
        pj__result_fail(res, h.status, h.code, "%.*s", (int)h.msg_len, (const char *)msg);
    return 0;
}

int pj__apply_records(struct pj__records to, const unsigned char *p, size_t len)
{
    struct rd r = { p, len, 0, false };
    atomic_fetch_add_explicit(&pj__wire_bytes, len, memory_order_relaxed);
    while (r.pos < r.len) {
        int rc = apply_one(&to, &r);
        if (rc)
            return rc;
    }
    return 0;
}
