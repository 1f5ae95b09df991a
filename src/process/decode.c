/* Decoding a batch in a worker (the format: codec.c's opening comment): every length, offset,
 * type and count is validated before use, signatures are rebuilt as pj_fn, and the tasks point
 * into one arena and into the message body.  The decoder is a fuzzing target (tests/fuzz). */
#include "codec.h"

#include <stdlib.h>
#include <string.h>

struct arena_chunk {
    struct arena_chunk *next;
    _Alignas(16) unsigned char data[];
};

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

/* A SHARED buffer reference: { u64 id, u64 offset } into an object this worker maps. */
static int rd_shared(struct rd *r, const struct pj__decoded *d, uint32_t arg, uint32_t base,
                     uint64_t len, unsigned char **data, char *err, size_t errlen)
{
    uint64_t id = rd_u64(r), offset = rd_u64(r);
    if (r->bad || base == PJ_BUF_CSTR)
        return fail(err, errlen, PJ_EPROTO, "malformed shared buffer of argument %u", arg);
    *data = d->maps ? pj__mapping_at(d->maps, id, offset, len, base != PJ_BUF_IN) : NULL;
    if (!*data)
        return fail(err, errlen, PJ_EPROTO, "argument %u names %llu bytes at offset %llu of "
                    "shared object %llu, which this worker does not map so", arg,
                    (unsigned long long)len, (unsigned long long)offset,
                    (unsigned long long)id);
    return 0;
}

/* Reads one declared buffer of fn's task; out: where it goes (NULL: validation pass). */
static int rd_buf(struct rd *r, const struct pj__decoded *d, const pj_fn *fn, bool *declared,
                  struct pj__dbuf *out, char *err, size_t errlen)
{
    uint32_t arg = rd_u32(r), kind = rd_u32(r);
    uint64_t len = rd_u64(r);
    bool shared = (kind & BUF_SHARED) != 0;
    kind &= ~BUF_SHARED;
    uint32_t base = kind & ~BUF_NULL;
    if (r->bad || arg >= fn->nargs || declared[arg] || base < PJ_BUF_IN || base > PJ_BUF_CSTR ||
        kind > (BUF_NULL | PJ_BUF_CSTR) || fn->atypes[arg]->type != FFI_TYPE_POINTER ||
        ((kind & BUF_NULL) && (len || shared)))
        return fail(err, errlen, PJ_EPROTO, "malformed buffer declaration");
    declared[arg] = true;
    unsigned char *data = NULL;
    if (shared) {
        int rc = rd_shared(r, d, arg, base, len, &data, err, errlen);
        if (rc)
            return rc;
    } else if (base != PJ_BUF_OUT) {
        if (len > r->len - r->pos || !(data = (unsigned char *)rd_take(r, len)))
            return fail(err, errlen, PJ_EPROTO, "buffer of argument %u overruns the batch",
                        arg);
        if (base == PJ_BUF_CSTR && !(kind & BUF_NULL) && (len == 0 || data[len - 1] != 0))
            return fail(err, errlen, PJ_EPROTO, "string argument %u is not NUL-terminated", arg);
    }
    rd_align(r, 16);
    if (out)
        *out = (struct pj__dbuf){ arg, base, len, data, (kind & BUF_NULL) != 0, shared };
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
        int rc = rd_buf(r, d, fn, declared, t ? &bufs[k] : NULL, err, errlen);
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
    return pj__decode_batch_mapped(body, len, fnref, NULL, d, err, errlen);
}

int pj__decode_batch_mapped(const unsigned char *body, size_t len,
                            const struct pj__fnref_ops *fnref, const struct pj__mappings *m,
                            struct pj__decoded *d, char *err, size_t errlen)
{
    *d = (struct pj__decoded){ .maps = m };
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
