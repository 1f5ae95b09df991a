/* What the codec's files share, private to them: codec.c (batches going out), decode.c
 * (batches as a worker reads them) and records.c (result records coming back): the format's
 * constants, the rule for a uniform batch, and the reading and writing primitives.  Writing
 * appends to a pj__wbuf (which records a failed growth as oom); reading takes from a bounded
 * struct rd that turns bad, never past its end, so every length is checked where it is read. */
#ifndef PJ_CODEC_H
#define PJ_CODEC_H

#include "process.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#define BATCH_MAGIC 0x54424a50u /* "PJBT" */
#define BATCH_VERSION 1
#define MAX_TYPE_DEPTH 32
#define BUF_NULL 0x100u         /* kind flag: the pointer itself was NULL */
#define BUF_SHARED 0x200u       /* kind flag: { id, offset } in a shared object, no bytes */
#define FLAG_UNIFORM 0x1u       /* batch head flag: bare argument blocks, see above */
#define FLAG_RAW_POINTERS 0x2u  /* batch head flag: for a forked copy of the parent (fnref ops
                                   with raw_pointers), undeclared pointers cross as they are */
#define RUN_STATUS 1            /* record status of a run of successes (statuses are <= 0) */

struct rd {
    const unsigned char *p;
    size_t len, pos;
    bool bad;
};

static inline size_t align_to(size_t n, size_t a)
{
    return (n + a - 1) / a * a;
}

static inline void put_pad(struct pj__wbuf *w, size_t a)
{
    static const unsigned char zeros[16];
    pj__wbuf_put(w, zeros, align_to(w->len, a) - w->len);
}

static inline void put_u32(struct pj__wbuf *w, uint32_t v)
{
    pj__wbuf_put(w, &v, sizeof v);
}

static inline void put_u64(struct pj__wbuf *w, uint64_t v)
{
    pj__wbuf_put(w, &v, sizeof v);
}

/* A length-prefixed byte string, padded to 8. */
static inline void put_bytes(struct pj__wbuf *w, const void *p, size_t n)
{
    put_u32(w, (uint32_t)n);
    put_pad(w, 8);
    pj__wbuf_put(w, p, n);
    put_pad(w, 8);
}

static inline const unsigned char *rd_take(struct rd *r, size_t n)
{
    if (r->bad || n > r->len - r->pos)
        return r->bad = true, NULL;
    const unsigned char *p = r->p + r->pos;
    r->pos += n;
    return p;
}

static inline void rd_align(struct rd *r, size_t a)
{
    size_t to = align_to(r->pos, a);
    if (to > r->len)
        r->bad = true;
    else
        r->pos = to;
}

static inline uint32_t rd_u32(struct rd *r)
{
    uint32_t v = 0;
    const unsigned char *p = rd_take(r, sizeof v);
    if (p)
        memcpy(&v, p, sizeof v);
    return v;
}

static inline uint64_t rd_u64(struct rd *r)
{
    uint64_t v = 0;
    const unsigned char *p = rd_take(r, sizeof v);
    if (p)
        memcpy(&v, p, sizeof v);
    return v;
}

static inline const unsigned char *rd_bytes(struct rd *r, size_t *n)
{
    *n = rd_u32(r);
    rd_align(r, 8);
    const unsigned char *p = rd_take(r, *n);
    rd_align(r, 8);
    return r->bad ? NULL : p;
}

static inline int fail(char *err, size_t errlen, int code, const char *fmt, ...) PJ_PRINTF(4, 5);

static inline int fail(char *err, size_t errlen, int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    if (err && errlen)
        vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    return code;
}

/* Whether fn's tasks can travel as bare argument blocks: nothing in them needs a pointer
 * fixed up or padding cleared, and every result fits a record of fixed size. */
static inline bool uniform_fn(const pj_fn *fn)
{
    if (fn->struct_args || fn->rtype->type == FFI_TYPE_STRUCT || fn->ret_size > 16 ||
        fn->ret_str)
        return false;
    for (unsigned a = 0; a < fn->nargs; a++)
        if (fn->atypes[a]->type == FFI_TYPE_POINTER)
            return false;
    return true;
}

/* A task's argument block is a multiple of 16 bytes (task.c), so blocks stay aligned. */
static inline size_t uniform_stride(const pj_fn *fn)
{
    return fn->args_size ? align_to(fn->args_size, 16) : 16;
}

#endif
