/* Signatures (ffi_cif) and delayed() task records: argument capture and conversion. */
#include "internal.h"

#include <float.h>
#include <stddef.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A value as pj_delayed received it, after C's default argument promotions. */
struct captured {
    enum { V_SIGNED, V_UNSIGNED, V_FLOATING, V_POINTER, V_BUFFER } kind;
    int64_t i;
    uint64_t u;
    long double f;
    void *p;
    pj_buf buf;
};

static PJ_TLS int last_error;
static PJ_TLS char last_errmsg[512];

static size_t align_up(size_t n, size_t a)
{
    return (n + a - 1) / a * a;
}

int pj__set_last_error(int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(last_errmsg, sizeof last_errmsg, fmt, ap);
    va_end(ap);
    last_error = code;
    return code;
}

const char *pj_last_errmsg(void)
{
    return last_errmsg;
}

int pj_last_error(void)
{
    return last_error;
}

static const char *fn_label(const pj_fn *fn)
{
    return fn->name ? fn->name : "function";
}

static bool is_integral(unsigned short type)
{
    switch (type) {
    case FFI_TYPE_INT:
    case FFI_TYPE_UINT8: case FFI_TYPE_SINT8:
    case FFI_TYPE_UINT16: case FFI_TYPE_SINT16:
    case FFI_TYPE_UINT32: case FFI_TYPE_SINT32:
    case FFI_TYPE_UINT64: case FFI_TYPE_SINT64:
        return true;
    default:
        return false;
    }
}

/* A complex member anywhere inside a struct, as the path of member numbers ("2.1") into path;
 * false when there is none (or the elements list is malformed: libffi says so later).  Members
 * are not checked beyond this depth, which no real struct reaches. */
static bool complex_member(const ffi_type *t, char *path, size_t len, int depth)
{
    if (t->type != FFI_TYPE_STRUCT || !t->elements || depth > 64)
        return false;
    for (unsigned k = 0; t->elements[k]; k++) {
        const ffi_type *e = t->elements[k];
        int used = snprintf(path, len, "%s%u", depth ? "." : "", k);
        size_t at = used > 0 && (size_t)used < len ? (size_t)used : len - 1;
        if (e->type == FFI_TYPE_COMPLEX || complex_member(e, path + at, len - at, depth + 1))
            return true;
    }
    return false;
}

static int check_type(const ffi_type *t, bool is_return, const char *name, unsigned i)
{
    const char *what = is_return ? "return" : "argument";
    if (!t)
        return pj__set_last_error(PJ_EINVAL, "%s: type of %s %u is NULL", name, what, i);
    if (t->type == FFI_TYPE_COMPLEX)
        return pj__set_last_error(PJ_ETYPE, "%s: complex types are not supported", name);
    char path[128];
    /* A worker process could not decode it either: refused here, not as a wire error later. */
    if (is_return && complex_member(t, path, sizeof path, 0))
        return pj__set_last_error(PJ_ETYPE, "%s: the returned struct has a complex member "
                                  "(member %s); complex types are not supported", name, path);
    if (!is_return && complex_member(t, path, sizeof path, 0))
        return pj__set_last_error(PJ_ETYPE, "%s: the struct of argument %u has a complex member "
                                  "(member %s); complex types are not supported", name, i, path);
    if (t->type == FFI_TYPE_VOID && !is_return)
        return pj__set_last_error(PJ_ETYPE, "%s: argument %u is void", name, i);
    if (t->type > FFI_TYPE_LAST)
        return pj__set_last_error(PJ_ETYPE, "%s: argument %u has an unknown ffi type %u", name,
                                  i, t->type);
    return 0;
}

/* ---- the direct-call path -------------------------------------------------------------------
 * ffi_call costs ~25 ns for int add(int, int), ten times the call itself, and tiny tasks are
 * all call.  On x86-64 System V and AArch64, integer-class and floating arguments travel in two
 * independent register files (6/8 integer, 8 vector), so any function taking at most 6 integer
 * or pointer arguments and 8 float/double arguments, returning void, an integer, a pointer, a
 * float or a double, receives exactly the right registers when called as
 *     ret f(u64 x 6, double x 8)
 * with its arguments placed in order within each file: the callee reads the registers it
 * declares and ignores the rest.  This is what libffi's own trampolines do, minus the generic
 * classification per call.  Everything else (structs, long double, more arguments, other
 * platforms, or PARJOB_NO_DIRECT_CALL=1) goes through ffi_call. */
enum { PJ__CALL_FFI, PJ__CALL_INT, PJ__CALL_DOUBLE, PJ__CALL_FLOAT };
enum { LOAD_S8, LOAD_U8, LOAD_S16, LOAD_U16, LOAD_S32, LOAD_U32, LOAD_64, LOAD_F32, LOAD_F64 };

#if (defined(__x86_64__) && !defined(_WIN32)) || defined(__aarch64__)
#define DIRECT_CALLS 1
#define INT_REGS 6
#define FP_REGS 8
#else
#define DIRECT_CALLS 0
#endif

typedef uint64_t (*int_call)(uint64_t, uint64_t, uint64_t, uint64_t, uint64_t, uint64_t, double,
                             double, double, double, double, double, double, double);
typedef double (*fp_call)(uint64_t, uint64_t, uint64_t, uint64_t, uint64_t, uint64_t, double,
                          double, double, double, double, double, double, double);

static int load_kind(unsigned short type)
{
    switch (type) {
    case FFI_TYPE_SINT8: return LOAD_S8;
    case FFI_TYPE_UINT8: return LOAD_U8;
    case FFI_TYPE_SINT16: return LOAD_S16;
    case FFI_TYPE_UINT16: return LOAD_U16;
    case FFI_TYPE_INT:
    case FFI_TYPE_SINT32: return LOAD_S32;
    case FFI_TYPE_UINT32: return LOAD_U32;
    case FFI_TYPE_SINT64:
    case FFI_TYPE_UINT64:
    case FFI_TYPE_POINTER: return LOAD_64;
    case FFI_TYPE_FLOAT: return LOAD_F32;
    case FFI_TYPE_DOUBLE: return LOAD_F64;
    default: return -1;
    }
}

static int direct_call_class(const ffi_type *rtype)
{
    switch (rtype->type) {
    case FFI_TYPE_FLOAT: return PJ__CALL_FLOAT;
    case FFI_TYPE_DOUBLE: return PJ__CALL_DOUBLE;
    case FFI_TYPE_VOID: return PJ__CALL_INT;
    default: return is_integral(rtype->type) || rtype->type == FFI_TYPE_POINTER
                        ? PJ__CALL_INT : PJ__CALL_FFI;
    }
}

/* Fills fn->call and fn->ops; leaves PJ__CALL_FFI when the signature does not qualify. */
static void plan_direct_call(pj_fn *fn)
{
    fn->call = PJ__CALL_FFI;
#if DIRECT_CALLS
    const char *off = getenv("PARJOB_NO_DIRECT_CALL");
    if ((off && *off && strcmp(off, "0") != 0) || fn->cif.abi != FFI_DEFAULT_ABI)
        return;
    int call = direct_call_class(fn->rtype);
    unsigned ints = 0, fps = 0;
    if (call == PJ__CALL_FFI)
        return;
    for (unsigned i = 0; i < fn->nargs; i++) {
        int load = load_kind(fn->atypes[i]->type);
        if (load < 0)
            return;
        unsigned *used = load >= LOAD_F32 ? &fps : &ints;
        if (*used == (load >= LOAD_F32 ? FP_REGS : INT_REGS))
            return;
        fn->ops[i] = (struct pj__argop){ (uint32_t)fn->offsets[i], (uint8_t)load,
                                         (uint8_t)(*used)++ };
    }
    fn->call = (uint8_t)call;
#endif
}

static void direct_call(const pj_fn *fn, const unsigned char *args, void *ret)
{
    uint64_t r[6] = { 0 };
    union { double d; float f; uint64_t bits; } v[8] = { { 0 } };
    for (unsigned i = 0; i < fn->nargs; i++) {
        const struct pj__argop *op = &fn->ops[i];
        const unsigned char *p = args + op->offset;
        switch (op->load) {
        case LOAD_S8: r[op->slot] = (uint64_t)(int64_t)*(const int8_t *)p; break;
        case LOAD_U8: r[op->slot] = *(const uint8_t *)p; break;
        case LOAD_S16: r[op->slot] = (uint64_t)(int64_t)*(const int16_t *)p; break;
        case LOAD_U16: r[op->slot] = *(const uint16_t *)p; break;
        case LOAD_S32: r[op->slot] = (uint64_t)(int64_t)*(const int32_t *)p; break;
        case LOAD_U32: r[op->slot] = *(const uint32_t *)p; break;
        case LOAD_64: memcpy(&r[op->slot], p, 8); break;
        case LOAD_F32: memcpy(&v[op->slot].f, p, 4); break;
        default: memcpy(&v[op->slot].d, p, 8); break;
        }
    }
    if (fn->call == PJ__CALL_INT) {
        uint64_t x = ((int_call)(void *)fn->ptr)(r[0], r[1], r[2], r[3], r[4], r[5], v[0].d,
                                                 v[1].d, v[2].d, v[3].d, v[4].d, v[5].d,
                                                 v[6].d, v[7].d);
        if (fn->ret_size)
            memcpy(ret, &x, fn->ret_size < 8 ? fn->ret_size : 8);
        return;
    }
    union { double d; float f; } x;
    x.d = ((fp_call)(void *)fn->ptr)(r[0], r[1], r[2], r[3], r[4], r[5], v[0].d, v[1].d, v[2].d,
                                     v[3].d, v[4].d, v[5].d, v[6].d, v[7].d);
    if (fn->call == PJ__CALL_FLOAT)
        memcpy(ret, &x.f, sizeof x.f); /* a float comes back in the low half of the register */
    else
        memcpy(ret, &x.d, sizeof x.d);
}

void pj__invoke(const pj_fn *fn, const unsigned char *args, void *ret)
{
    if (fn->call != PJ__CALL_FFI) {
        direct_call(fn, args, ret);
        return;
    }
    void *argv[fn->nargs ? fn->nargs : 1];
    for (unsigned i = 0; i < fn->nargs; i++)
        argv[i] = (void *)(args + fn->offsets[i]);
    ffi_call((ffi_cif *)&fn->cif, fn->ptr, ret, argv);
}

/* A pointer member of struct type t, anywhere inside it, as the path of member numbers ("2.1")
 * into path (when not NULL).  With value NULL any pointer member counts; with the struct's
 * bytes, only one that is not NULL (a NULL pointer means the same in every process). */
static bool pointer_member(const ffi_type *t, const unsigned char *value, char *path, size_t len,
                           int depth)
{
    if (t->type != FFI_TYPE_STRUCT || !t->elements || depth > 64)
        return false;
    size_t off = 0;
    for (unsigned k = 0; t->elements[k]; k++) {
        const ffi_type *e = t->elements[k];
        off = align_up(off, e->alignment ? e->alignment : 1);
        size_t at = 0;
        if (path) {
            int used = snprintf(path, len, "%s%u", depth ? "." : "", k);
            at = used > 0 && (size_t)used < len ? (size_t)used : len - 1;
        }
        if (e->type == FFI_TYPE_POINTER &&
            (!value || *(void *const *)(const void *)(value + off) != NULL))
            return true;
        if (pointer_member(e, value ? value + off : NULL, path ? path + at : NULL, len - at,
                           depth + 1))
            return true;
        off += e->size;
    }
    return false;
}

static size_t return_slot_size(const ffi_type *rtype)
{
    if (rtype->type == FFI_TYPE_VOID)
        return 0;
    if (is_integral(rtype->type) && rtype->size < sizeof(ffi_arg))
        return sizeof(ffi_arg);
    return rtype->size;
}

/* Markers, never handed to libffi: pj_fn_new calls such functions with ffi_type_pointer. */
ffi_type pj_type_str_owned = { sizeof(char *), _Alignof(char *), FFI_TYPE_POINTER, NULL };
ffi_type pj_type_str_borrowed = { sizeof(char *), _Alignof(char *), FFI_TYPE_POINTER, NULL };

pj_fn *pj_fn_new(const char *name, void (*fnptr)(void), ffi_type *rtype, unsigned nargs,
                 ffi_type *const *atypes)
{
    const char *label = name ? name : "function";
    if (!fnptr)
        return pj__set_last_error(PJ_EINVAL, "%s: function pointer is NULL", label), NULL;
    if (nargs > PJ__MAX_ARGS)
        return pj__set_last_error(PJ_EINVAL, "%s: %u arguments, at most %d", label, nargs,
                                  PJ__MAX_ARGS), NULL;
    if (nargs > 0 && !atypes)
        return pj__set_last_error(PJ_EINVAL, "%s: argument types are NULL", label), NULL;
    if (check_type(rtype, true, label, 0))
        return NULL;
    for (unsigned i = 0; i < nargs; i++)
        if (check_type(atypes[i], false, label, i))
            return NULL;

    pj_fn *fn = calloc(1, sizeof *fn);
    if (!fn)
        return pj__set_last_error(PJ_ENOMEM, "out of memory"), NULL;
    /* A C-string return is called as the char * it is; the result keeps a string of its own. */
    fn->ret_str = rtype == &pj_type_str_owned ? PJ__STR_OWNED
                  : rtype == &pj_type_str_borrowed ? PJ__STR_BORROWED : 0;
    if (fn->ret_str)
        rtype = &ffi_type_pointer;
    fn->ptr = fnptr;
    fn->rtype = rtype;
    fn->nargs = nargs;
    fn->name = name ? strdup(name) : NULL;
    fn->atypes = calloc(nargs ? nargs : 1, sizeof *fn->atypes);
    fn->offsets = calloc(nargs ? nargs : 1, sizeof *fn->offsets);
    fn->ops = calloc(nargs ? nargs : 1, sizeof *fn->ops);
    if ((name && !fn->name) || !fn->atypes || !fn->offsets || !fn->ops) {
        pj_fn_free(fn);
        return pj__set_last_error(PJ_ENOMEM, "out of memory"), NULL;
    }
    if (nargs)
        memcpy(fn->atypes, atypes, nargs * sizeof *atypes);
    if (ffi_prep_cif(&fn->cif, FFI_DEFAULT_ABI, nargs, rtype, fn->atypes) != FFI_OK) {
        pj_fn_free(fn);
        return pj__set_last_error(PJ_ETYPE, "%s: libffi rejects this signature", label), NULL;
    }
    /* ffi_prep_cif has laid out any struct types: sizes and alignments are known now. */
    size_t off = 0;
    for (unsigned i = 0; i < nargs; i++) {
        size_t a = fn->atypes[i]->alignment ? fn->atypes[i]->alignment : 1;
        off = align_up(off, a);
        fn->offsets[i] = off;
        off += fn->atypes[i]->size;
        fn->struct_args |= fn->atypes[i]->type == FFI_TYPE_STRUCT;
        fn->pointer_args |= fn->atypes[i]->type == FFI_TYPE_POINTER ||
                            pointer_member(fn->atypes[i], NULL, NULL, 0, 0);
    }
    fn->args_size = align_up(off, 16);
    fn->ret_size = return_slot_size(rtype);
    plan_direct_call(fn);
    return fn;
}

pj_fn *pj_fn_new_list(const char *name, void (*fnptr)(void), unsigned ntypes,
                      ffi_type *const *types)
{
    if (ntypes == 0 || !types)
        return pj__set_last_error(PJ_EINVAL, "%s: no return type given", name ? name : "?"),
               NULL;
    return pj_fn_new(name, fnptr, types[0], ntypes - 1, types + 1);
}

void pj_fn_free(pj_fn *fn)
{
    if (!fn)
        return;
    free(fn->atypes);
    free(fn->offsets);
    free(fn->ops);
    free(fn->name);
    free(fn);
}

unsigned pj_fn_nargs(const pj_fn *fn)
{
    return fn ? fn->nargs : 0;
}

const char *pj_fn_name(const pj_fn *fn)
{
    return fn && fn->name ? fn->name : "";
}

static pj_task *task_alloc(const pj_fn *fn)
{
    size_t size = align_up(sizeof(pj_task) + fn->args_size, 16);
    /* malloc's own alignment covers the argument block where it is 16 (x86-64, aarch64): it is
     * faster than aligned_alloc, which a task is made with once per call. */
    pj_task *t = _Alignof(max_align_t) >= 16 ? malloc(size) : aligned_alloc(16, size);
    if (!t)
        return pj__set_last_error(PJ_ENOMEM, "out of memory"), NULL;
    t->fn = fn;
    t->bufs = NULL;
    /* The block crosses to worker processes whole (codec.c): no uninitialised padding. */
    memset(t->args, 0, fn->args_size);
    return t;
}

pj_task *pj_task_new(const pj_fn *fn, void *const *argv)
{
    if (!fn)
        return pj__set_last_error(PJ_EINVAL, "pj_task_new: function is NULL"), NULL;
    if (fn->nargs && !argv)
        return pj__set_last_error(PJ_EINVAL, "pj_task_new: %s: argv is NULL", fn_label(fn)),
               NULL;
    for (unsigned i = 0; i < fn->nargs; i++)
        if (!argv[i])
            return pj__set_last_error(PJ_EINVAL, "pj_task_new: %s: argv[%u] is NULL",
                                      fn_label(fn), i), NULL;
    pj_task *t = task_alloc(fn);
    if (!t)
        return NULL;
    for (unsigned i = 0; i < fn->nargs; i++)
        memcpy(t->args + fn->offsets[i], argv[i], fn->atypes[i]->size);
    return t;
}

static struct captured capture(pj_argtag tag, va_list *ap, bool *ok)
{
    struct captured v = { 0 };
    *ok = true;
    switch (tag) {
    case PJ_ARG_BOOL: case PJ_ARG_CHAR: case PJ_ARG_SCHAR: case PJ_ARG_UCHAR:
    case PJ_ARG_SHORT: case PJ_ARG_USHORT: case PJ_ARG_INT:
        v.kind = V_SIGNED, v.i = va_arg(*ap, int);
        break;
    case PJ_ARG_LONG:
        v.kind = V_SIGNED, v.i = va_arg(*ap, long);
        break;
    case PJ_ARG_LLONG:
        v.kind = V_SIGNED, v.i = va_arg(*ap, long long);
        break;
    case PJ_ARG_UINT:
        v.kind = V_UNSIGNED, v.u = va_arg(*ap, unsigned);
        break;
    case PJ_ARG_ULONG:
        v.kind = V_UNSIGNED, v.u = va_arg(*ap, unsigned long);
        break;
    case PJ_ARG_ULLONG:
        v.kind = V_UNSIGNED, v.u = va_arg(*ap, unsigned long long);
        break;
    case PJ_ARG_FLOAT: case PJ_ARG_DOUBLE:
        v.kind = V_FLOATING, v.f = va_arg(*ap, double);
        break;
    case PJ_ARG_LDOUBLE:
        v.kind = V_FLOATING, v.f = va_arg(*ap, long double);
        break;
    case PJ_ARG_PTR:
        v.kind = V_POINTER, v.p = va_arg(*ap, void *);
        break;
    case PJ_ARG_BUF:
        v.kind = V_BUFFER, v.buf = va_arg(*ap, pj_buf);
        break;
    default:
        *ok = false;
    }
    return v;
}

static const char *kind_name(const struct captured *v)
{
    static const char *const names[] = { "an integer", "an unsigned integer",
                                         "a floating value", "a pointer", "a buffer" };
    return names[v->kind];
}

static const char *type_name(const ffi_type *t)
{
    switch (t->type) {
    case FFI_TYPE_FLOAT: return "float";
    case FFI_TYPE_DOUBLE: return "double";
#if FFI_TYPE_LONGDOUBLE != FFI_TYPE_DOUBLE
    case FFI_TYPE_LONGDOUBLE: return "long double";
#endif
    case FFI_TYPE_POINTER: return "pointer";
    case FFI_TYPE_STRUCT: return "struct";
    default: return "integer";
    }
}

/* Integer parameters: the value converted as C converts it, with floating values that do not
 * fit refused rather than left undefined. */
static bool store_integer(const ffi_type *t, const struct captured *v, void *dst)
{
    int64_t s;
    uint64_t u;
    if (v->kind == V_FLOATING) {
        long double f = v->f;
        if (isnan(f) || f <= -0x1p63L - 1 || f >= 0x1p64L)
            return false;
        if (f < 0) {
            s = (int64_t)f;
            u = (uint64_t)s;
        } else {
            u = (uint64_t)f;
            s = (int64_t)u;
        }
    } else if (v->kind == V_SIGNED) {
        s = v->i, u = (uint64_t)v->i;
    } else {
        s = (int64_t)v->u, u = v->u;
    }
    switch (t->type) {
    case FFI_TYPE_UINT8: *(uint8_t *)dst = (uint8_t)u; break;
    case FFI_TYPE_SINT8: *(int8_t *)dst = (int8_t)s; break;
    case FFI_TYPE_UINT16: *(uint16_t *)dst = (uint16_t)u; break;
    case FFI_TYPE_SINT16: *(int16_t *)dst = (int16_t)s; break;
    case FFI_TYPE_UINT32: *(uint32_t *)dst = (uint32_t)u; break;
    case FFI_TYPE_INT:
    case FFI_TYPE_SINT32: *(int32_t *)dst = (int32_t)s; break;
    case FFI_TYPE_UINT64: *(uint64_t *)dst = u; break;
    case FFI_TYPE_SINT64: *(int64_t *)dst = s; break;
    default: return false;
    }
    return true;
}

static long double as_floating(const struct captured *v)
{
    if (v->kind == V_SIGNED)
        return (long double)v->i;
    if (v->kind == V_UNSIGNED)
        return (long double)v->u;
    return v->f;
}

static bool is_arithmetic(const struct captured *v)
{
    return v->kind == V_SIGNED || v->kind == V_UNSIGNED || v->kind == V_FLOATING;
}

static int store_arg(pj_task *t, unsigned i, const struct captured *v)
{
    const pj_fn *fn = t->fn;
    const ffi_type *ty = fn->atypes[i];
    void *dst = t->args + fn->offsets[i];
    switch (ty->type) {
    case FFI_TYPE_FLOAT:
    case FFI_TYPE_DOUBLE:
#if FFI_TYPE_LONGDOUBLE != FFI_TYPE_DOUBLE
    case FFI_TYPE_LONGDOUBLE:
#endif
        if (!is_arithmetic(v))
            break;
        if (ty->type == FFI_TYPE_FLOAT)
            *(float *)dst = (float)as_floating(v);
        else if (ty->type == FFI_TYPE_DOUBLE)
            *(double *)dst = (double)as_floating(v);
        else
            *(long double *)dst = as_floating(v);
        return 0;
    case FFI_TYPE_POINTER:
        if (v->kind == V_POINTER) {
            *(void **)dst = v->p;
            return 0;
        }
        if (v->kind == V_BUFFER) {
            *(void **)dst = v->buf.ptr;
            return pj_task_set_buf(t, i, v->buf);
        }
        if ((v->kind == V_SIGNED && v->i == 0) || (v->kind == V_UNSIGNED && v->u == 0)) {
            *(void **)dst = NULL; /* a null pointer constant, as C accepts 0 for a pointer */
            return 0;
        }
        break;
    case FFI_TYPE_STRUCT:
        if (v->kind == V_POINTER && v->p) {
            memcpy(dst, v->p, ty->size);
            return 0;
        }
        if (v->kind == V_POINTER)
            return pj__set_last_error(PJ_ETYPE, "%s: argument %u is a struct passed as a NULL "
                                      "pointer", fn_label(fn), i);
        break;
    default:
        if (is_arithmetic(v)) {
            if (store_integer(ty, v, dst))
                return 0;
            return pj__set_last_error(PJ_ETYPE, "%s: argument %u: %Lg does not fit the integer "
                                      "parameter", fn_label(fn), i, v->f);
        }
        break;
    }
    return pj__set_last_error(PJ_ETYPE, "%s: argument %u is %s, the parameter is %s%s",
                              fn_label(fn), i, kind_name(v), type_name(ty),
                              ty->type == FFI_TYPE_STRUCT ? " (pass a pointer to the struct)" : "");
}

pj_task *pj_delayed_va(const pj_fn *fn, int nargs, va_list ap)
{
    if (!fn)
        return pj__set_last_error(PJ_EINVAL, "pj_delayed: function is NULL (did pj_fn_new "
                                  "fail?)"), NULL;
    if (nargs < 0 || (unsigned)nargs != fn->nargs)
        return pj__set_last_error(PJ_EARGC, "pj_delayed: %s takes %u argument%s, %d given",
                                  fn_label(fn), fn->nargs, fn->nargs == 1 ? "" : "s", nargs),
               NULL;
    pj_task *t = task_alloc(fn);
    if (!t)
        return NULL;
    va_list args;
    va_copy(args, ap);
    for (unsigned i = 0; i < fn->nargs; i++) {
        bool ok;
        int tag = va_arg(args, int);
        struct captured v = capture((pj_argtag)tag, &args, &ok);
        if (!ok) {
            pj__set_last_error(PJ_EINVAL, "pj_delayed: %s: argument %u has no type tag (call "
                               "pj_delayed, not pj_delayed_tagged)", fn_label(fn), i);
            goto fail;
        }
        if (store_arg(t, i, &v))
            goto fail;
    }
    va_end(args);
    return t;
fail:
    va_end(args);
    pj_task_free(t);
    return NULL;
}

pj_task *pj_delayed_tagged(const pj_fn *fn, int nargs, ...)
{
    va_list ap;
    va_start(ap, nargs);
    pj_task *t = pj_delayed_va(fn, nargs, ap);
    va_end(ap);
    return t;
}

/* Frees what the task owns of a buffer: the copy of a C string or a copied input. */
static void release_buf(pj_buf *b)
{
    if (b->kind == PJ_BUF_CSTR || b->kind == PJ_BUF_IN_COPY)
        free(b->ptr);
    b->kind = 0;
}

int pj_task_set_buf(pj_task *t, unsigned i, pj_buf buf)
{
    if (!t || i >= t->fn->nargs)
        return t ? pj__set_last_error(PJ_EINVAL, "pj_task_set_buf: %s has %u arguments, not "
                                      "%u", fn_label(t->fn), t->fn->nargs, i + 1)
                 : pj__set_last_error(PJ_EINVAL, "pj_task_set_buf: task is NULL");
    const pj_fn *fn = t->fn;
    if (fn->atypes[i]->type != FFI_TYPE_POINTER)
        return pj__set_last_error(PJ_ETYPE, "%s: argument %u is a buffer, the parameter is %s",
                                  fn_label(fn), i, type_name(fn->atypes[i]));
    if (buf.kind < PJ_BUF_IN || buf.kind > PJ_BUF_IN_COPY || (!buf.ptr && buf.len))
        return pj__set_last_error(PJ_EINVAL, "%s: argument %u: malformed buffer", fn_label(fn),
                                  i);
    if (!t->bufs) {
        t->bufs = calloc(fn->nargs, sizeof *t->bufs);
        if (!t->bufs)
            return pj__set_last_error(PJ_ENOMEM, "out of memory");
    }
    /* A C string (and an input asked for so) is captured now, as every other argument is:
     * the task owns its copy, which every backend passes (threads too), so the caller's
     * memory may change right after. */
    if ((buf.kind == PJ_BUF_CSTR || buf.kind == PJ_BUF_IN_COPY) && buf.ptr) {
        if (buf.kind == PJ_BUF_CSTR)
            buf.len = strlen(buf.ptr) + 1;
        void *copy = malloc(buf.len ? buf.len : 1);
        if (!copy)
            return pj__set_last_error(PJ_ENOMEM, "%s: argument %u: out of memory for a copy "
                                      "of %zu bytes", fn_label(fn), i, buf.len);
        buf.ptr = memcpy(copy, buf.ptr, buf.len);
    }
    release_buf(&t->bufs[i]);
    t->bufs[i] = buf;
    *(void **)(t->args + fn->offsets[i]) = buf.ptr;
    return 0;
}

unsigned pj__raw_pointer_arg(const pj_task *t)
{
    const pj_fn *fn = t->fn;
    for (unsigned a = 0; fn->pointer_args && a < fn->nargs; a++) {
        const unsigned char *arg = t->args + fn->offsets[a];
        if (fn->atypes[a]->type == FFI_TYPE_POINTER && !(t->bufs && t->bufs[a].kind) &&
            *(void *const *)(const void *)arg != NULL)
            return a + 1;
        /* A struct crosses as its bytes: a pointer in it would point nowhere in the worker
         * (spawn), or at the memory of the moment the worker was forked (fork). */
        if (fn->atypes[a]->type == FFI_TYPE_STRUCT &&
            pointer_member(fn->atypes[a], arg, NULL, 0, 0))
            return a + 1;
    }
    return 0;
}

const char *pj__raw_pointer_what(const pj_task *t, unsigned a, char *what, size_t len)
{
    const pj_fn *fn = t->fn;
    char path[128];
    if (a == 0 || a > fn->nargs || fn->atypes[a - 1]->type != FFI_TYPE_STRUCT ||
        !pointer_member(fn->atypes[a - 1], t->args + fn->offsets[a - 1], path, sizeof path, 0)) {
        snprintf(what, len, "argument %u is a raw pointer", a - 1);
        return "declare it with pj_in, pj_out, pj_inout or pj_cstr";
    }
    snprintf(what, len, "argument %u is a struct passed by value whose member %s is a pointer",
             a - 1, path);
    return "a struct crosses as its bytes, so pass what the member points to as an argument of "
           "its own, declared with pj_in, pj_out, pj_inout or pj_cstr (or use \"threading\")";
}

void pj_task_free(pj_task *t)
{
    if (!t)
        return;
    for (unsigned a = 0; t->bufs && a < t->fn->nargs; a++)
        release_buf(&t->bufs[a]);
    free(t->bufs);
    free(t);
}

const pj_fn *pj_task_fn(const pj_task *t)
{
    return t ? t->fn : NULL;
}
