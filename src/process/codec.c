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
 * shortcut, so both backends exercise one decoder. */
#include "process.h"

#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BATCH_MAGIC 0x54424a50u /* "PJBT" */
#define BATCH_VERSION 1
#define MAX_TYPE_DEPTH 32
#define BUF_NULL 0x100u         /* kind flag: the pointer itself was NULL */
#define FLAG_UNIFORM 0x1u       /* batch head flag: bare argument blocks, see above */
#define FLAG_RAW_POINTERS 0x2u  /* batch head flag: for a forked copy of the parent (fnref ops
                                   with raw_pointers), undeclared pointers cross as they are */
#define RUN_STATUS 1            /* record status of a run of successes (statuses are <= 0) */

struct rd {
    const unsigned char *p;
    size_t len, pos;
    bool bad;
};

struct arena_chunk {
    struct arena_chunk *next;
    _Alignas(16) unsigned char data[];
};

static int fail(char *err, size_t errlen, int code, const char *fmt, ...) PJ_PRINTF(4, 5);

static int fail(char *err, size_t errlen, int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    if (err && errlen)
        vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    return code;
}

static size_t align_to(size_t n, size_t a)
{
    return (n + a - 1) / a * a;
}

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

static void put_pad(struct pj__wbuf *w, size_t a)
{
    static const unsigned char zeros[16];
    pj__wbuf_put(w, zeros, align_to(w->len, a) - w->len);
}

static void put_u32(struct pj__wbuf *w, uint32_t v)
{
    pj__wbuf_put(w, &v, sizeof v);
}

static void put_u64(struct pj__wbuf *w, uint64_t v)
{
    pj__wbuf_put(w, &v, sizeof v);
}

/* A length-prefixed byte string, padded to 8. */
static void put_bytes(struct pj__wbuf *w, const void *p, size_t n)
{
    put_u32(w, (uint32_t)n);
    put_pad(w, 8);
    pj__wbuf_put(w, p, n);
    put_pad(w, 8);
}

/* ---- reader ------------------------------------------------------------------------------- */

static const unsigned char *rd_take(struct rd *r, size_t n)
{
    if (r->bad || n > r->len - r->pos)
        return r->bad = true, NULL;
    const unsigned char *p = r->p + r->pos;
    r->pos += n;
    return p;
}

static void rd_align(struct rd *r, size_t a)
{
    size_t to = align_to(r->pos, a);
    if (to > r->len)
        r->bad = true;
    else
        r->pos = to;
}

static uint32_t rd_u32(struct rd *r)
{
    uint32_t v = 0;
    const unsigned char *p = rd_take(r, sizeof v);
    if (p)
        memcpy(&v, p, sizeof v);
    return v;
}

static uint64_t rd_u64(struct rd *r)
{
    uint64_t v = 0;
    const unsigned char *p = rd_take(r, sizeof v);
    if (p)
        memcpy(&v, p, sizeof v);
    return v;
}

static const unsigned char *rd_bytes(struct rd *r, size_t *n)
{
    *n = rd_u32(r);
    rd_align(r, 8);
    const unsigned char *p = rd_take(r, *n);
    rd_align(r, 8);
    return r->bad ? NULL : p;
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

static void put_buf(struct pj__wbuf *w, unsigned arg, const pj_buf *b)
{
    uint64_t len = b->kind == PJ_BUF_CSTR ? (b->ptr ? strlen(b->ptr) + 1 : 0) : b->len;
    /* A copied input is an input to the worker: the copy is the task's, not the wire's. */
    uint32_t kind = (b->kind == PJ_BUF_IN_COPY ? PJ_BUF_IN : b->kind) | (b->ptr ? 0 : BUF_NULL);
    if (!b->ptr)
        len = 0;
    put_u32(w, arg);
    put_u32(w, kind);
    put_u64(w, len);
    if (b->kind != PJ_BUF_OUT)
        pj__wbuf_put(w, b->ptr, len);
    put_pad(w, 16);
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

static void put_task(struct pj__wbuf *w, const pj_task *t, uint32_t fn_index)
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
    for (unsigned a = 0; nbufs && a < fn->nargs; a++)
        if (t->bufs[a].kind)
            put_buf(w, a, &t->bufs[a]);
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

/* Whether fn's tasks can travel as bare argument blocks: nothing in them needs a pointer
 * fixed up or padding cleared, and every result fits a record of fixed size. */
static bool uniform_fn(const pj_fn *fn)
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
static size_t uniform_stride(const pj_fn *fn)
{
    return fn->args_size ? align_to(fn->args_size, 16) : 16;
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
                       uint64_t timeout_ns, const struct pj__fnref_ops *fnref, char *err,
                       size_t errlen)
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
        put_task(w, tasks[i], index[i - begin]);
    free(index);
    free(fns);
    return rc;
}

int pj__encode_batch(struct pj__wbuf *w, uint32_t type, pj_task *const *tasks, size_t begin,
                     size_t end, uint64_t timeout_ns, const struct pj__fnref_ops *fnref,
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
        rc = put_general(w, tasks, begin, end, timeout_ns, fnref, err, errlen);
    }
    if (!rc && w->oom)
        rc = fail(err, errlen, PJ_ENOMEM, "out of memory encoding a batch");
    if (!rc)
        pj__frame_close(w, at);
    return rc;
}

/* ---- decoding a batch --------------------------------------------------------------------- */

static void *arena_alloc(struct pj__decoded *d, size_t n)
{
    struct arena_chunk *c = calloc(1, sizeof *c + n);
    if (!c)
        return NULL;
    c->next = d->arena;
    d->arena = c;
    return c->data;
}

static ffi_type *scalar_type(unsigned code)
{
    switch (code) {
    case FFI_TYPE_VOID: return &ffi_type_void;
    case FFI_TYPE_INT: return &ffi_type_sint;
    case FFI_TYPE_FLOAT: return &ffi_type_float;
    case FFI_TYPE_DOUBLE: return &ffi_type_double;
#if FFI_TYPE_LONGDOUBLE != FFI_TYPE_DOUBLE
    case FFI_TYPE_LONGDOUBLE: return &ffi_type_longdouble;
#endif
    case FFI_TYPE_UINT8: return &ffi_type_uint8;
    case FFI_TYPE_SINT8: return &ffi_type_sint8;
    case FFI_TYPE_UINT16: return &ffi_type_uint16;
    case FFI_TYPE_SINT16: return &ffi_type_sint16;
    case FFI_TYPE_UINT32: return &ffi_type_uint32;
    case FFI_TYPE_SINT32: return &ffi_type_sint32;
    case FFI_TYPE_UINT64: return &ffi_type_uint64;
    case FFI_TYPE_SINT64: return &ffi_type_sint64;
    case FFI_TYPE_POINTER: return &ffi_type_pointer;
    default: return NULL;
    }
}

/* A struct type as decoded: libffi lays it out (size 0 asks it to), then the layout is compared
 * with the parent's, so a mismatch is an error rather than arguments at the wrong offsets. */
struct dstruct {
    ffi_type t;
    uint64_t want_size;
    unsigned short want_align;
    struct dstruct *next;        /* the structs of the function being decoded */
    ffi_type *elements[];
};

static ffi_type *rd_type(struct rd *r, struct pj__decoded *d, struct dstruct **structs,
                         int depth)
{
    const unsigned char *p = rd_take(r, 8);
    uint64_t size = rd_u64(r);
    if (!p || depth > MAX_TYPE_DEPTH)
        return r->bad = true, NULL;
    uint16_t head[4];
    memcpy(head, p, sizeof head);
    if (head[0] != FFI_TYPE_STRUCT) {
        ffi_type *t = scalar_type(head[0]);
        if (!t || head[1] || (head[0] != FFI_TYPE_VOID && t->size != size))
            r->bad = true;
        return t;
    }
    unsigned n = head[1];
    if (n == 0 || n > (r->len - r->pos) / 16)
        return r->bad = true, NULL;
    struct dstruct *s = arena_alloc(d, sizeof *s + (n + 1) * sizeof(ffi_type *));
    if (!s)
        return r->bad = true, NULL;
    s->t.type = FFI_TYPE_STRUCT;
    s->t.elements = s->elements;
    s->want_size = size;
    s->want_align = head[2];
    s->next = *structs;
    *structs = s;
    for (unsigned i = 0; i < n; i++)
        if (!(s->elements[i] = rd_type(r, d, structs, depth + 1)) ||
            s->elements[i] == &ffi_type_void)
            return r->bad = true, NULL;
    return &s->t;
}

static bool layouts_match(const struct dstruct *s)
{
    for (; s; s = s->next)
        if (s->t.size != s->want_size || s->t.alignment != s->want_align)
            return false;
    return true;
}

static int rd_fn(struct rd *r, const struct pj__fnref_ops *fnref, struct pj__decoded *d,
                 pj_fn **out, char *err, size_t errlen)
{
    size_t ref_len, name_len;
    const unsigned char *ref = rd_bytes(r, &ref_len);
    const unsigned char *name = rd_bytes(r, &name_len);
    struct dstruct *structs = NULL;
    ffi_type *types[PJ__MAX_ARGS + 1];
    uint16_t str = 0;
    if (r->len - r->pos >= 8)
        memcpy(&str, r->p + r->pos + 6, sizeof str); /* the return type's str field */
    types[0] = rd_type(r, d, &structs, 0);
    if (str && (types[0] != &ffi_type_pointer || str > PJ__STR_BORROWED))
        return fail(err, errlen, PJ_EPROTO, "malformed string return type");
    if (str)
        types[0] = str == PJ__STR_OWNED ? &pj_type_str_owned : &pj_type_str_borrowed;
    uint32_t nargs = rd_u32(r);
    rd_align(r, 8);
    if (r->bad || nargs > PJ__MAX_ARGS)
        return fail(err, errlen, PJ_EPROTO, "malformed function signature");
    for (uint32_t i = 1; i <= nargs; i++)
        if (!(types[i] = rd_type(r, d, &structs, 0)) || types[i] == &ffi_type_void)
            return fail(err, errlen, PJ_EPROTO, "malformed type of argument %u", i - 1);
    if (r->bad || (name_len && memchr(name, 0, name_len)))
        return fail(err, errlen, PJ_EPROTO, "malformed function name or signature");
    void (*ptr)(void) = NULL; /* resolved only once the message is known sound (dlopen) */
    int rc = fnref->resolve(ref, ref_len, &ptr, err, errlen);
    if (rc)
        return rc;
    char label[128];
    snprintf(label, sizeof label, "%.*s", (int)(name_len < 127 ? name_len : 127),
             (const char *)name);
    pj_fn *fn = pj_fn_new(name_len ? label : NULL, ptr, types[0], nargs, types + 1);
    if (!fn)
        return fail(err, errlen, PJ_EPROTO, "signature rejected: %s", pj_last_errmsg());
    if (!layouts_match(structs)) {
        pj_fn_free(fn);
        return fail(err, errlen, PJ_EPROTO, "struct layout differs from the parent's");
    }
    *out = fn;
    return 0;
}

/* The undeclared pointer arguments of a task must be NULL: nothing else can cross. */
static bool raw_pointers_null(const pj_fn *fn, const unsigned char *args, const bool *declared)
{
    for (unsigned a = 0; a < fn->nargs; a++) {
        void *p;
        if (fn->atypes[a]->type != FFI_TYPE_POINTER || declared[a])
            continue;
        memcpy(&p, args + fn->offsets[a], sizeof p);
        if (p)
            return false;
    }
    return true;
}

/* Reads one declared buffer of fn's task; out: where it goes (NULL: validation pass). */
static int rd_buf(struct rd *r, const pj_fn *fn, bool *declared, struct pj__dbuf *out,
                  char *err, size_t errlen)
{
    uint32_t arg = rd_u32(r), kind = rd_u32(r);
    uint64_t len = rd_u64(r);
    uint32_t base = kind & ~BUF_NULL;
    if (r->bad || arg >= fn->nargs || declared[arg] || base < PJ_BUF_IN || base > PJ_BUF_CSTR ||
        kind > (BUF_NULL | PJ_BUF_CSTR) || fn->atypes[arg]->type != FFI_TYPE_POINTER ||
        ((kind & BUF_NULL) && len))
        return fail(err, errlen, PJ_EPROTO, "malformed buffer declaration");
    declared[arg] = true;
    const unsigned char *data = NULL;
    if (base != PJ_BUF_OUT) {
        if (len > r->len - r->pos || !(data = rd_take(r, len)))
            return fail(err, errlen, PJ_EPROTO, "buffer of argument %u overruns the batch",
                        arg);
        if (base == PJ_BUF_CSTR && !(kind & BUF_NULL) && (len == 0 || data[len - 1] != 0))
            return fail(err, errlen, PJ_EPROTO, "string argument %u is not NUL-terminated", arg);
    }
    rd_align(r, 16);
    if (out)
        *out = (struct pj__dbuf){ arg, base, len, (unsigned char *)data,
                                  (kind & BUF_NULL) != 0 };
    return r->bad ? fail(err, errlen, PJ_EPROTO, "truncated buffer") : 0;
}

/* One task; with t == NULL only validates and counts its buffers into *nbufs. */
static int rd_task(struct rd *r, struct pj__decoded *d, pj_task *t, struct pj__dbuf *bufs,
                   size_t *nbufs, char *err, size_t errlen)
{
    uint32_t fi = rd_u32(r), nb = rd_u32(r);
    uint64_t args_len = rd_u64(r);
    if (r->bad || fi >= d->nfns)
        return fail(err, errlen, PJ_EPROTO, "task names function %u of %zu", fi, d->nfns);
    const pj_fn *fn = d->fns[fi];
    const unsigned char *args = args_len == fn->args_size ? rd_take(r, args_len) : NULL;
    rd_align(r, 16);
    if (!args || r->bad || nb > fn->nargs)
        return fail(err, errlen, PJ_EPROTO, "task arguments do not match the signature");
    bool declared[PJ__MAX_ARGS];
    memset(declared, 0, fn->nargs); /* not all 256: this runs twice per task */
    for (uint32_t k = 0; k < nb; k++) {
        int rc = rd_buf(r, fn, declared, t ? &bufs[k] : NULL, err, errlen);
        if (rc)
            return rc;
    }
    if (!d->raw_pointers && !raw_pointers_null(fn, args, declared))
        return fail(err, errlen, PJ_EPROTO, "undeclared pointer argument is not NULL");
    *nbufs += nb;
    if (t) {
        t->fn = fn;
        t->bufs = NULL;
        memcpy(t->args, args, args_len);
    }
    return 0;
}

static size_t task_bytes(const pj_fn *fn)
{
    return align_to(sizeof(pj_task) + fn->args_size, 16);
}

/* Second pass: tasks into one block, buffers into one array. */
static int fill_tasks(struct rd r, struct pj__decoded *d, size_t total, size_t nbufs,
                      char *err, size_t errlen)
{
    unsigned char *block = arena_alloc(d, total);
    d->tasks = arena_alloc(d, d->n * sizeof *d->tasks);
    d->bufs = arena_alloc(d, (nbufs ? nbufs : 1) * sizeof *d->bufs);
    d->buf_at = arena_alloc(d, (d->n + 1) * sizeof *d->buf_at);
    if (!block || !d->tasks || !d->bufs || !d->buf_at)
        return fail(err, errlen, PJ_ENOMEM, "out of memory decoding a batch");
    size_t at = 0, nb = 0;
    for (size_t k = 0; k < d->n; k++) {
        pj_task *t = (pj_task *)(block + at);
        d->buf_at[k] = nb;
        size_t before = r.pos;
        uint32_t fi;
        memcpy(&fi, r.p + before, sizeof fi); /* validated by the first pass */
        int rc = rd_task(&r, d, t, d->bufs + nb, &nb, err, errlen);
        if (rc)
            return rc;
        at += task_bytes(d->fns[fi]);
        d->tasks[k] = t;
    }
    d->buf_at[d->n] = nb;
    return 0;
}

static int rd_tasks(struct rd *r, struct pj__decoded *d, char *err, size_t errlen)
{
    struct rd start = *r;
    size_t total = 0, nbufs = 0;
    for (size_t k = 0; k < d->n; k++) {
        size_t before = r->pos;
        int rc = rd_task(r, d, NULL, NULL, &nbufs, err, errlen);
        if (rc)
            return rc;
        uint32_t fi;
        memcpy(&fi, r->p + before, sizeof fi);
        total += task_bytes(d->fns[fi]);
    }
    if (r->pos != r->len)
        return fail(err, errlen, PJ_EPROTO, "%zu stray bytes after the last task",
                    r->len - r->pos);
    return fill_tasks(start, d, total ? total : 16, nbufs, err, errlen);
}

static int rd_head(struct rd *r, const struct pj__fnref_ops *fnref, struct pj__decoded *d,
                   uint32_t *nfns, uint8_t *flags, char *err, size_t errlen)
{
    uint32_t magic = rd_u32(r);
    const unsigned char *v = rd_take(r, 4);
    *nfns = rd_u32(r);
    uint32_t ntasks = rd_u32(r);
    d->first = rd_u64(r);
    d->timeout_ns = rd_u64(r);
    if (r->bad || magic != BATCH_MAGIC || v[0] != BATCH_VERSION || v[1] ||
        (v[3] & ~(FLAG_UNIFORM | FLAG_RAW_POINTERS)))
        return fail(err, errlen, PJ_EPROTO, "not a parjob batch (magic or version)");
    if (v[2] != fnref->kind)
        return fail(err, errlen, PJ_EPROTO, "function references of kind %u, this worker "
                    "resolves kind %u", v[2], fnref->kind);
    *flags = v[3];
    /* Only a worker that shares the parent's addresses can use the parent's pointers. */
    if ((*flags & FLAG_RAW_POINTERS) && fnref->kind != PJ__FNREF_POINTER)
        return fail(err, errlen, PJ_EPROTO, "raw pointers sent to a worker of another program");
    d->raw_pointers = (*flags & FLAG_RAW_POINTERS) != 0;
    if ((*flags & FLAG_UNIFORM) && (*nfns != 1 || d->timeout_ns))
        return fail(err, errlen, PJ_EPROTO, "uniform batch with %u functions or a deadline",
                    *nfns);
    /* Each function takes at least 40 bytes and each task 16 (8 in a uniform batch): bounds
     * before allocating. */
    size_t left = r->len - r->pos;
    if (*nfns == 0 || ntasks == 0 || *nfns > left / 40 || ntasks > left / (*flags & FLAG_UNIFORM ? 8 : 16) ||
        d->first > UINT32_MAX) /* an index within a batch, which counts tasks in a u32 */
        return fail(err, errlen, PJ_EPROTO, "batch counts do not fit its length");
    d->n = ntasks;
    return 0;
}

/* The argument blocks of a uniform batch, used in place. */
static int rd_blocks(struct rd *r, struct pj__decoded *d, char *err, size_t errlen)
{
    const pj_fn *fn = d->fns[0];
    if (!uniform_fn(fn))
        return fail(err, errlen, PJ_EPROTO, "uniform batch of a function that is not");
    d->stride = uniform_stride(fn);
    rd_align(r, 16);
    if (r->bad || (r->len - r->pos) / d->stride != d->n || (r->len - r->pos) % d->stride)
        return fail(err, errlen, PJ_EPROTO, "uniform batch of %zu bytes for %zu tasks",
                    r->len - r->pos, d->n);
    d->blocks = r->p + r->pos;
    return 0;
}

int pj__decode_batch(const unsigned char *body, size_t len, const struct pj__fnref_ops *fnref,
                     struct pj__decoded *d, char *err, size_t errlen)
{
    *d = (struct pj__decoded){ 0 };
    struct rd r = { body, len, 0, false };
    uint32_t nfns;
    uint8_t flags = 0;
    int rc = rd_head(&r, fnref, d, &nfns, &flags, err, errlen);
    if (!rc && !(d->fns = calloc(nfns, sizeof *d->fns)))
        rc = fail(err, errlen, PJ_ENOMEM, "out of memory decoding a batch");
    for (uint32_t k = 0; !rc && k < nfns; k++, d->nfns++)
        rc = rd_fn(&r, fnref, d, &d->fns[k], err, errlen);
    if (!rc)
        rc = flags & FLAG_UNIFORM ? rd_blocks(&r, d, err, errlen) : rd_tasks(&r, d, err, errlen);
    if (rc)
        pj__decoded_free(d);
    return rc;
}

void pj__decoded_free(struct pj__decoded *d)
{
    for (size_t k = 0; k < d->nfns; k++)
        pj_fn_free(d->fns[k]);
    free(d->fns);
    for (struct arena_chunk *c = d->arena, *next; c; c = next) {
        next = c->next;
        free(c);
    }
    *d = (struct pj__decoded){ 0 };
}

/* ---- result records ----------------------------------------------------------------------- */

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
    for (size_t k = 0; ok && k < nbufs; k++)
        nout += bufs[k].kind == PJ_BUF_OUT || bufs[k].kind == PJ_BUF_INOUT;
    struct record_head h = { index, r->status, r->code,
                             r->message ? (uint32_t)strlen(r->message) : 0, nout, vlen };
    pj__wbuf_put(w, &h, sizeof h);
    pj__wbuf_put(w, r->message, h.msg_len);
    put_pad(w, 8);
    pj__wbuf_put(w, value, vlen);
    put_pad(w, 8);
    for (size_t k = 0; nout && k < nbufs; k++) {
        uint32_t kind = bufs[k].kind;
        if (kind != PJ_BUF_OUT && kind != PJ_BUF_INOUT)
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
    for (size_t k = 0; k < n; k++, v += vsize) {
        size_t i = h->index + k;
        pj_result *res = &b->results[i];
        const pj_fn *fi = b->uniform_fn && i >= b->uniform_begin && i < b->uniform_end
                          ? b->uniform_fn : b->tasks[i]->fn;
        if (fi->ret_size != vsize || fi->ret_str)
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
    const pj_task *t = b->tasks[h.index];
    bool str = t->fn->ret_str;
    if ((h.status == 0 && !str && h.value_len != t->fn->ret_size) ||
        (str && h.value_len && value[h.value_len - 1] != 0) || (h.status && h.value_len) ||
        h.status > 0 || (h.status == 0 && h.msg_len))
        return PJ_EPROTO;
    struct rd check = *r;
    if (rd_outbufs(&check, t, h.nbufs, false))
        return PJ_EPROTO;
    pj_result *res = &b->results[h.index];
    bool fresh = res->status == PJ__PENDING;
    rd_outbufs(r, t, h.nbufs, fresh);
    if (!fresh)
        return 0;
    memset(&res->value, 0, sizeof res->value);
    res->fn = t->fn;
    res->code = h.code;
    res->message = NULL;
    res->status = h.status;
    if (h.status == 0 && apply_value(res, t->fn, value, h.value_len))
        pj__result_fail(res, PJ_ENOMEM, 0, "out of memory for the return value");
    else if (h.status)
        pj__result_fail(res, h.status, h.code, "%.*s", (int)h.msg_len, (const char *)msg);
    return 0;
}

int pj__apply_records(struct pj__records to, const unsigned char *p, size_t len)
{
    struct rd r = { p, len, 0, false };
    while (r.pos < r.len) {
        int rc = apply_one(&to, &r);
        if (rc)
            return rc;
    }
    return 0;
}
