/* The bulk hot loop for signatures the direct-call path takes (task.c: at most 6 integer or
 * pointer and 8 floating arguments, an integer, pointer, float, double or void return, on
 * x86-64 System V and AArch64): the registers are loaded straight from the columns — the
 * constants once per range — and the function called as ret f(u64 x 6[, double x 8]), with
 * no argument block and no libffi in between.  bench/bulk_bench measured int add(int, int) at
 * about twice the calls per second of the generic path (gather into a block, pj__invoke).
 * Columns that need a conversion, structs by value, or any other signature take the generic
 * path (bulk_ranges.c). */
#include "bulk.h"

enum { L_S8, L_U8, L_S16, L_U16, L_S32, L_U32, L_64, L_F32, L_F64, L_ADDR, L_BUFPTR };

typedef uint64_t (*int6)(uint64_t, uint64_t, uint64_t, uint64_t, uint64_t, uint64_t);
typedef uint64_t (*int_fp)(uint64_t, uint64_t, uint64_t, uint64_t, uint64_t, uint64_t, double,
                           double, double, double, double, double, double, double);
typedef double (*fp_fp)(uint64_t, uint64_t, uint64_t, uint64_t, uint64_t, uint64_t, double,
                        double, double, double, double, double, double, double);

#if (defined(__x86_64__) && !defined(_WIN32)) || defined(__aarch64__)
static int load_of(unsigned short type)
{
    switch (type) {
    case FFI_TYPE_SINT8: return L_S8;
    case FFI_TYPE_UINT8: return L_U8;
    case FFI_TYPE_SINT16: return L_S16;
    case FFI_TYPE_UINT16: return L_U16;
    case FFI_TYPE_INT: case FFI_TYPE_SINT32: return L_S32;
    case FFI_TYPE_UINT32: return L_U32;
    case FFI_TYPE_SINT64: case FFI_TYPE_UINT64: case FFI_TYPE_POINTER: return L_64;
    case FFI_TYPE_FLOAT: return L_F32;
    case FFI_TYPE_DOUBLE: return L_F64;
    default: return -1;
    }
}

static uint64_t load_int(int how, const unsigned char *p)
{
    switch (how) {
    case L_S8: return (uint64_t)(int64_t)*(const int8_t *)p;
    case L_U8: return *(const uint8_t *)p;
    case L_S16: return (uint64_t)(int64_t)*(const int16_t *)p;
    case L_U16: return *(const uint16_t *)p;
    case L_S32: return (uint64_t)(int64_t)*(const int32_t *)p;
    case L_U32: return *(const uint32_t *)p;
    default: {
        uint64_t v;
        memcpy(&v, p, 8);
        return v;
    }
    }
}

static const struct bulk_arg *var_of(const struct bulk_plan *p, unsigned j)
{
    for (unsigned k = 0; k < p->n_vars; k++)
        if (p->vars[k].index == j)
            return &p->vars[k];
    return NULL;
}

/* One parameter: a constant into its register now, or a load per call. */
static bool plan_param(const struct bulk_plan *p, unsigned j, struct bulk_direct *d)
{
    const pj_fn *fn = p->fn;
    int how = load_of(fn->atypes[j]->type);
    bool fp = how == L_F32 || how == L_F64;
    unsigned slot = fn->ops[j].slot;
    const struct bulk_arg *a = var_of(p, j);
    if (how < 0 || (a && a->load == BULK_CONVERT))
        return false;
    if (!a) {
        const unsigned char *c = p->consts + fn->offsets[j];
        if (fp && how == L_F32)
            memcpy(&d->v[slot], c, 4);
        else if (fp)
            memcpy(&d->v[slot], c, 8);
        else
            d->r[slot] = load_int(how, c);
        return true;
    }
    if (a->load == BULK_BUF)
        how = L_ADDR;
    else if (a->load == BULK_BUF_ARRAY)
        how = L_BUFPTR;
    d->loads[d->n_loads++] = (struct bulk_load_op){ a->base, a->stride, (uint8_t)how,
                                                    (uint8_t)slot };
    return true;
}

bool pj__bulk_direct_plan(const struct bulk_plan *p, struct bulk_direct *d)
{
    const pj_fn *fn = p->fn;
    *d = (struct bulk_direct){ .ptr = fn->ptr };
    /* fn->call is task.c's verdict: 0 (its PJ__CALL_FFI) where the platform, the signature or
     * PARJOB_NO_DIRECT_CALL rule the direct call out; fn->ops then hold no register plan. */
    if (fn->call == 0 || fn->nargs > 14)
        return false;
    switch (fn->rtype->type) {
    case FFI_TYPE_DOUBLE: d->ret = BULK_RET_DOUBLE; break;
    case FFI_TYPE_FLOAT: d->ret = BULK_RET_FLOAT; break;
    default: d->ret = BULK_RET_INT; break; /* integers, pointers, void: task.c's PJ__CALL_INT */
    }
    for (unsigned j = 0; j < fn->nargs; j++) {
        int how = load_of(fn->atypes[j]->type);
        d->any_fp |= how == L_F32 || how == L_F64;
        if (!plan_param(p, j, d))
            return false;
    }
    d->any_fp |= d->ret != BULK_RET_INT;
    return true;
}

static inline void load_call(const struct bulk_direct *d, size_t i, uint64_t *r, double *v)
{
    for (unsigned k = 0; k < d->n_loads; k++) {
        const struct bulk_load_op *op = &d->loads[k];
        const unsigned char *src = op->base + i * op->stride;
        switch (op->how) {
        case L_S32: r[op->slot] = (uint64_t)(int64_t)*(const int32_t *)src; break;
        case L_64: memcpy(&r[op->slot], src, 8); break;
        case L_F64: memcpy(&v[op->slot], src, 8); break;
        case L_F32: memcpy(&v[op->slot], src, 4); break;
        case L_ADDR: r[op->slot] = (uint64_t)(uintptr_t)src; break;
        case L_BUFPTR: r[op->slot] = (uint64_t)(uintptr_t)((const pj_buf *)src)->ptr; break;
        default: r[op->slot] = load_int(op->how, src); break;
        }
    }
}

/* Calls with the registers loaded; the raw return register(s) in *x. */
static inline void call(const struct bulk_direct *d, const uint64_t *r, const double *v,
                        union bulk_ret *x)
{
    if (d->ret == BULK_RET_INT && !d->any_fp)
        x->u = ((int6)(void *)d->ptr)(r[0], r[1], r[2], r[3], r[4], r[5]);
    else if (d->ret == BULK_RET_INT)
        x->u = ((int_fp)(void *)d->ptr)(r[0], r[1], r[2], r[3], r[4], r[5], v[0], v[1], v[2],
                                        v[3], v[4], v[5], v[6], v[7]);
    else
        x->d = ((fp_fp)(void *)d->ptr)(r[0], r[1], r[2], r[3], r[4], r[5], v[0], v[1], v[2],
                                       v[3], v[4], v[5], v[6], v[7]);
}

/* ---- the integer fast loop --------------------------------------------------------------
 * The common case — integer and pointer arguments only (32 or 64 bits), an integer or void
 * return of 4 or 8 bytes — with the argument count fixed per loop, so that the compiler keeps
 * each argument's source in a register: a constant is a column of stride 0.  The stop flags
 * are looked at every FAST_BLOCK calls: a stop lets at most that many more calls start. */
#define FAST_BLOCK 256

struct int_src {
    const unsigned char *base;
    size_t stride;
    int how;            /* L_S32, L_U32 or L_64 */
};

static inline uint64_t fetch(const struct int_src *s, size_t i)
{
    const unsigned char *p = s->base + i * s->stride;
    if (s->how == L_64) {
        uint64_t v;
        memcpy(&v, p, 8);
        return v;
    }
    int32_t v;
    memcpy(&v, p, 4);
    return s->how == L_S32 ? (uint64_t)(int64_t)v : (uint64_t)(uint32_t)v;
}

/* Whether d takes the integer fast loop; fills src[0..nargs). */
static bool int_sources(const struct bulk_direct *d, const struct bulk_plan *p,
                        struct int_src *src)
{
    unsigned nargs = p->fn->nargs;
    if (d->any_fp || d->ret != BULK_RET_INT || nargs > 6 ||
        (p->out_size != 0 && p->out_size != 4 && p->out_size != 8))
        return false;
    for (unsigned j = 0; j < nargs; j++)
        src[j] = (struct int_src){ (const unsigned char *)&d->r[j], 0, L_64 };
    for (unsigned k = 0; k < d->n_loads; k++) {
        const struct bulk_load_op *op = &d->loads[k];
        if (op->how != L_S32 && op->how != L_U32 && op->how != L_64)
            return false;
        src[op->slot] = (struct int_src){ op->base, op->stride, op->how };
    }
    return true;
}

#define FAST_LOOP(CALL)                                                                        \
    for (size_t i = lo; i < end; i++) {                                                        \
        pj__call_begin();                                                                      \
        uint64_t x = (CALL);                                                                   \
        if (pj__call_failed()) {                                                               \
            *failed = true;                                                                    \
            return i;                                                                          \
        }                                                                                      \
        pj__call_end();                                                                        \
        if (out4)                                                                              \
            memcpy(out + i * ostride, &x, 4);                                                  \
        else if (out8)                                                                         \
            memcpy(out + i * ostride, &x, 8);                                                  \
        if (statuses)                                                                          \
            statuses[i] = 0;                                                                   \
    }

static size_t run_ints(const struct bulk_direct *d, const struct bulk_plan *p,
                       const struct int_src *s, size_t lo, size_t end, bool *failed)
{
    int6 f = (int6)(void *)d->ptr;
    unsigned char *out = p->out;
    size_t ostride = p->out_stride;
    bool out4 = out && p->out_size == 4, out8 = out && p->out_size == 8;
    int *statuses = p->statuses;
    switch (p->fn->nargs) {
    case 0: FAST_LOOP(f(0, 0, 0, 0, 0, 0)); break;
    case 1: FAST_LOOP(f(fetch(&s[0], i), 0, 0, 0, 0, 0)); break;
    case 2: FAST_LOOP(f(fetch(&s[0], i), fetch(&s[1], i), 0, 0, 0, 0)); break;
    case 3: FAST_LOOP(f(fetch(&s[0], i), fetch(&s[1], i), fetch(&s[2], i), 0, 0, 0)); break;
    case 4:
        FAST_LOOP(f(fetch(&s[0], i), fetch(&s[1], i), fetch(&s[2], i), fetch(&s[3], i), 0, 0));
        break;
    case 5:
        FAST_LOOP(f(fetch(&s[0], i), fetch(&s[1], i), fetch(&s[2], i), fetch(&s[3], i),
                    fetch(&s[4], i), 0));
        break;
    default:
        FAST_LOOP(f(fetch(&s[0], i), fetch(&s[1], i), fetch(&s[2], i), fetch(&s[3], i),
                    fetch(&s[4], i), fetch(&s[5], i)));
        break;
    }
    return end;
}

static size_t run_ints_checked(const struct bulk_direct *d, const struct bulk_plan *p,
                               const struct int_src *s, size_t lo, size_t hi,
                               const _Atomic int *stop, const _Atomic int *cancel, bool *failed)
{
    *failed = false;
    while (lo < hi) {
        if (atomic_load_explicit(stop, memory_order_relaxed) |
            atomic_load_explicit(cancel, memory_order_relaxed))
            return lo;
        size_t end = hi - lo > FAST_BLOCK ? lo + FAST_BLOCK : hi;
        size_t at = run_ints(d, p, s, lo, end, failed);
        if (*failed)
            return at;
        lo = end;
    }
    return hi;
}

size_t pj__bulk_direct_run(const struct bulk_direct *d, const struct bulk_plan *p, size_t lo,
                           size_t hi, const _Atomic int *stop, const _Atomic int *cancel,
                           bool *failed)
{
    struct int_src src[6];
    if (int_sources(d, p, src))
        return run_ints_checked(d, p, src, lo, hi, stop, cancel, failed);
    uint64_t r[6];
    double v[8];
    memcpy(r, d->r, sizeof r);
    memcpy(v, d->v, sizeof v);
    *failed = false;
    for (size_t i = lo; i < hi; i++) {
        if (atomic_load_explicit(stop, memory_order_relaxed) |
            atomic_load_explicit(cancel, memory_order_relaxed))
            return i;
        load_call(d, i, r, v);
        union bulk_ret x;
        pj__call_begin();
        call(d, r, v, &x);
        if (pj__call_failed()) {
            *failed = true; /* the caller takes the message; nothing is stored */
            return i;
        }
        pj__call_end();
        /* a float comes back in the low half of the register, as in task.c */
        pj__bulk_store(p, i, d->ret == BULK_RET_FLOAT ? (const void *)&x.f : (const void *)&x);
        if (p->statuses)
            p->statuses[i] = 0;
    }
    return hi;
}
#else
bool pj__bulk_direct_plan(const struct bulk_plan *p, struct bulk_direct *d)
{
    (void)p, (void)d;
    return false;
}

size_t pj__bulk_direct_run(const struct bulk_direct *d, const struct bulk_plan *p, size_t lo,
                           size_t hi, const _Atomic int *stop, const _Atomic int *cancel,
                           bool *failed)
{
    (void)d, (void)p, (void)lo, (void)stop, (void)cancel, (void)failed;
    return hi;
}
#endif
