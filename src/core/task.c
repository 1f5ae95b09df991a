/* delayed() task records: a call captured as its arguments, converted to the function's
 * parameter types (pj_delayed, pj_task_new), with the buffers it owns; and the thread's last
 * error.  Function descriptions (pj_fn) are in fn.c; what the two share, in task.h. */
#include "task.h"
#include "taskmem.h"

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

static pj_task *task_alloc(const pj_fn *fn)
{
    size_t size = align_up(sizeof(pj_task) + fn->args_size, 16);
    pj_task *t = pj__taskmem_alloc(size);
    if (!t)
        return pj__set_last_error(PJ_ENOMEM, "out of memory"), NULL;
    t->fn = fn;
    t->bufs = NULL;
    /* The block crosses to worker processes whole (codec.c): no uninitialised padding.  Its
     * size is a multiple of 16 (pj_fn_new): stores the compiler writes inline, not a call of
     * memset, for a block that is 16 or 32 bytes most of the time. */
    static const unsigned char zeros[16];
    for (size_t at = 0; at < fn->args_size; at += 16)
        memcpy(t->args + at, zeros, 16);
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

const char *pj__param_type_name(const ffi_type *t)
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
                              fn_label(fn), i, kind_name(v), pj__param_type_name(ty),
                              ty->type == FFI_TYPE_STRUCT ? " (pass a pointer to the struct)" : "");
}

/* An integer value stored into an integer parameter of ffi type `type`, as C converts it. */
static void store_int_bits(unsigned short type, uint64_t u, void *dst)
{
    switch (type) {
    case FFI_TYPE_UINT8: case FFI_TYPE_SINT8: *(uint8_t *)dst = (uint8_t)u; break;
    case FFI_TYPE_UINT16: case FFI_TYPE_SINT16: *(uint16_t *)dst = (uint16_t)u; break;
    case FFI_TYPE_UINT64: case FFI_TYPE_SINT64: *(uint64_t *)dst = u; break;
    default: *(uint32_t *)dst = (uint32_t)u; break; /* INT, SINT32, UINT32 */
    }
}

/* The common cases of capture + store_arg without their general value: an integer for an
 * integer parameter, an integer or a double for a float or double one.  capture's value (64
 * bytes with a long double) and store_arg's dispatch were most of a pj_delayed's 250
 * instructions (callgrind, bench/delayed_bench).  Converts as store_arg would; false, having
 * read nothing, for every other case. */
static bool store_plain(const pj_fn *fn, unsigned char *args, unsigned i, int tag, va_list *ap)
{
    unsigned short type = fn->atypes[i]->type;
    void *dst = args + fn->offsets[i];
    bool floating = type == FFI_TYPE_DOUBLE || type == FFI_TYPE_FLOAT;
    if (!floating && !is_integral(type))
        return false;
    int64_t s = 0;
    uint64_t u = 0;
    bool is_unsigned = false;
    switch (tag) {
    case PJ_ARG_BOOL: case PJ_ARG_CHAR: case PJ_ARG_SCHAR: case PJ_ARG_UCHAR:
    case PJ_ARG_SHORT: case PJ_ARG_USHORT: case PJ_ARG_INT:
        s = va_arg(*ap, int);
        break;
    case PJ_ARG_LONG: s = va_arg(*ap, long); break;
    case PJ_ARG_LLONG: s = va_arg(*ap, long long); break;
    case PJ_ARG_UINT: u = va_arg(*ap, unsigned), is_unsigned = true; break;
    case PJ_ARG_ULONG: u = va_arg(*ap, unsigned long), is_unsigned = true; break;
    case PJ_ARG_ULLONG: u = va_arg(*ap, unsigned long long), is_unsigned = true; break;
    case PJ_ARG_FLOAT: case PJ_ARG_DOUBLE: {
        if (!floating)
            return false; /* a double for an integer: its range is checked (store_integer) */
        double d = va_arg(*ap, double);
        if (type == FFI_TYPE_FLOAT)
            *(float *)dst = (float)d;
        else
            *(double *)dst = d;
        return true;
    }
    default:
        return false;
    }
    if (!floating)
        store_int_bits(type, is_unsigned ? u : (uint64_t)s, dst);
    else if (type == FFI_TYPE_FLOAT) /* one rounding, as store_arg's through long double */
        *(float *)dst = is_unsigned ? (float)u : (float)s;
    else
        *(double *)dst = is_unsigned ? (double)u : (double)s;
    return true;
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
        if (store_plain(fn, t->args, i, tag, &args))
            continue;
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
    if (b->kind == PJ_BUF_IN_COPY) /* its address may be a later copy's, within one run */
        pj__shared_forget_src(b->ptr, b->len);
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
                                  fn_label(fn), i, pj__param_type_name(fn->atypes[i]));
    if (buf.kind < PJ_BUF_IN || buf.kind > PJ_BUF_IN_COPY || (!buf.ptr && buf.len))
        return pj__set_last_error(PJ_EINVAL, "%s: argument %u: malformed buffer", fn_label(fn),
                                  i);
    struct pj__shared_ref ref;
    char why[200];
    if (buf.kind <= PJ_BUF_INOUT && pj__shared_find(buf.ptr, buf.len, &ref, why, sizeof why) < 0)
        return pj__set_last_error(PJ_EINVAL, "%s: argument %u: %s", fn_label(fn), i, why);
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
            pj__pointer_member(fn->atypes[a], arg, NULL, 0, 0))
            return a + 1;
    }
    return 0;
}

const char *pj__raw_pointer_what(const pj_task *t, unsigned a, char *what, size_t len)
{
    const pj_fn *fn = t->fn;
    char path[128];
    if (a == 0 || a > fn->nargs || fn->atypes[a - 1]->type != FFI_TYPE_STRUCT ||
        !pj__pointer_member(fn->atypes[a - 1], t->args + fn->offsets[a - 1], path, sizeof path,
                            0)) {
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
    pj__taskmem_free(t, sizeof(pj_task) + t->fn->args_size);
}

const pj_fn *pj_task_fn(const pj_task *t)
{
    return t ? t->fn : NULL;
}
