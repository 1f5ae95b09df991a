/* A bulk run's columns, checked once and compiled into a plan: for each argument how call i's
 * value reaches the argument block (copied, converted as pj_delayed converts, a buffer), the
 * broadcast constants converted once into a template block, and every refusal of the bad-input
 * list made before anything runs.  The per-call work left is bulk_gather's loads. */
#include "bulk.h"

#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>

/* A value read from a column, before it meets the parameter's type. */
enum { V_SIGNED, V_UNSIGNED, V_FLOATING, V_POINTER, V_BUFFER, V_NONE };

struct value {
    int kind;
    long long i;
    unsigned long long u;
    long double f;
};

static int tag_kind(pj_argtag tag)
{
    switch (tag) {
    case PJ_ARG_CHAR: return CHAR_MIN < 0 ? V_SIGNED : V_UNSIGNED;
    case PJ_ARG_SCHAR: case PJ_ARG_SHORT: case PJ_ARG_INT: case PJ_ARG_LONG:
    case PJ_ARG_LLONG: return V_SIGNED;
    case PJ_ARG_BOOL: case PJ_ARG_UCHAR: case PJ_ARG_USHORT: case PJ_ARG_UINT:
    case PJ_ARG_ULONG: case PJ_ARG_ULLONG: return V_UNSIGNED;
    case PJ_ARG_FLOAT: case PJ_ARG_DOUBLE: case PJ_ARG_LDOUBLE: return V_FLOATING;
    case PJ_ARG_PTR: return V_POINTER;
    case PJ_ARG_BUF: return V_BUFFER;
    default: return V_NONE;
    }
}

static size_t tag_size(pj_argtag tag)
{
    static const size_t sizes[] = {
        [PJ_ARG_BOOL] = sizeof(_Bool), [PJ_ARG_CHAR] = 1, [PJ_ARG_SCHAR] = 1,
        [PJ_ARG_UCHAR] = 1, [PJ_ARG_SHORT] = sizeof(short), [PJ_ARG_USHORT] = sizeof(short),
        [PJ_ARG_INT] = sizeof(int), [PJ_ARG_UINT] = sizeof(int), [PJ_ARG_LONG] = sizeof(long),
        [PJ_ARG_ULONG] = sizeof(long), [PJ_ARG_LLONG] = sizeof(long long),
        [PJ_ARG_ULLONG] = sizeof(long long), [PJ_ARG_FLOAT] = sizeof(float),
        [PJ_ARG_DOUBLE] = sizeof(double), [PJ_ARG_LDOUBLE] = sizeof(long double),
        [PJ_ARG_PTR] = sizeof(void *), [PJ_ARG_BUF] = sizeof(pj_buf),
    };
    return tag >= PJ_ARG_BOOL && tag <= PJ_ARG_BUF ? sizes[tag] : 0;
}

static const char *tag_name(pj_argtag tag)
{
    switch (tag_kind(tag)) {
    case V_SIGNED: return "an integer";
    case V_UNSIGNED: return "an unsigned integer";
    case V_FLOATING: return "a floating value";
    case V_POINTER: return "a pointer";
    case V_BUFFER: return "a buffer";
    default: return "of no known type";
    }
}

static bool is_floating_param(unsigned short type)
{
    return type == FFI_TYPE_FLOAT || type == FFI_TYPE_DOUBLE || type == FFI_TYPE_LONGDOUBLE;
}

static bool is_signed_param(unsigned short type)
{
    return type == FFI_TYPE_SINT8 || type == FFI_TYPE_SINT16 || type == FFI_TYPE_SINT32 ||
           type == FFI_TYPE_SINT64 || type == FFI_TYPE_INT;
}

static bool is_integer_param(unsigned short type)
{
    return is_signed_param(type) || type == FFI_TYPE_UINT8 || type == FFI_TYPE_UINT16 ||
           type == FFI_TYPE_UINT32 || type == FFI_TYPE_UINT64;
}

static struct value load(pj_argtag tag, const unsigned char *p)
{
    struct value v = { .kind = tag_kind(tag) };
    switch (tag) {
    case PJ_ARG_BOOL: v.u = *(const _Bool *)p; break;
    case PJ_ARG_CHAR: v.i = *(const char *)p, v.u = (unsigned char)*(const char *)p; break;
    case PJ_ARG_SCHAR: v.i = *(const signed char *)p; break;
    case PJ_ARG_UCHAR: v.u = *(const unsigned char *)p; break;
    case PJ_ARG_SHORT: v.i = *(const short *)p; break;
    case PJ_ARG_USHORT: v.u = *(const unsigned short *)p; break;
    case PJ_ARG_INT: v.i = *(const int *)p; break;
    case PJ_ARG_UINT: v.u = *(const unsigned *)p; break;
    case PJ_ARG_LONG: v.i = *(const long *)p; break;
    case PJ_ARG_ULONG: v.u = *(const unsigned long *)p; break;
    case PJ_ARG_LLONG: v.i = *(const long long *)p; break;
    case PJ_ARG_ULLONG: v.u = *(const unsigned long long *)p; break;
    case PJ_ARG_FLOAT: v.f = *(const float *)p; break;
    case PJ_ARG_DOUBLE: v.f = *(const double *)p; break;
    case PJ_ARG_LDOUBLE: v.f = *(const long double *)p; break;
    default: break;
    }
    return v;
}

/* Stores v as a value of the parameter type, as pj_delayed does: floating values that no
 * integer of 64 bits holds are refused rather than left undefined. */
static bool store(unsigned short type, const struct value *v, void *dst)
{
    if (is_floating_param(type)) {
        long double f = v->kind == V_SIGNED ? (long double)v->i
                        : v->kind == V_UNSIGNED ? (long double)v->u : v->f;
        if (type == FFI_TYPE_FLOAT)
            *(float *)dst = (float)f;
        else if (type == FFI_TYPE_DOUBLE)
            *(double *)dst = (double)f;
        else
            *(long double *)dst = f;
        return true;
    }
    int64_t s;
    uint64_t u;
    if (v->kind == V_FLOATING) {
        if (isnan(v->f) || v->f <= -0x1p63L - 1 || v->f >= 0x1p64L)
            return false;
        s = v->f < 0 ? (int64_t)v->f : (int64_t)(uint64_t)v->f;
        u = v->f < 0 ? (uint64_t)s : (uint64_t)v->f;
    } else if (v->kind == V_SIGNED) {
        s = v->i, u = (uint64_t)v->i;
    } else {
        s = (int64_t)v->u, u = v->u;
    }
    switch (type) {
    case FFI_TYPE_UINT8: *(uint8_t *)dst = (uint8_t)u; break;
    case FFI_TYPE_SINT8: *(int8_t *)dst = (int8_t)s; break;
    case FFI_TYPE_UINT16: *(uint16_t *)dst = (uint16_t)u; break;
    case FFI_TYPE_SINT16: *(int16_t *)dst = (int16_t)s; break;
    case FFI_TYPE_UINT32: *(uint32_t *)dst = (uint32_t)u; break;
    case FFI_TYPE_INT: case FFI_TYPE_SINT32: *(int32_t *)dst = (int32_t)s; break;
    case FFI_TYPE_UINT64: *(uint64_t *)dst = u; break;
    default: *(int64_t *)dst = s; break;
    }
    return true;
}

pj_col pj_col_const_tagged(int tag, ...)
{
    pj_col c = { .kind = PJ_COL_CONST, .type = (pj_argtag)tag };
    va_list ap;
    va_start(ap, tag);
    switch (tag) {
    case PJ_ARG_LONG: c.value.i = va_arg(ap, long); break;
    case PJ_ARG_LLONG: c.value.i = va_arg(ap, long long); break;
    case PJ_ARG_UINT: c.value.u = va_arg(ap, unsigned); break;
    case PJ_ARG_ULONG: c.value.u = va_arg(ap, unsigned long); break;
    case PJ_ARG_ULLONG: c.value.u = va_arg(ap, unsigned long long); break;
    case PJ_ARG_FLOAT: case PJ_ARG_DOUBLE: c.value.f = va_arg(ap, double); break;
    case PJ_ARG_LDOUBLE: {
        long double f = va_arg(ap, long double);
        _Static_assert(sizeof f <= sizeof c.value.ld, "a long double fits pj_col.value.ld");
        memcpy(c.value.ld, &f, sizeof f);
        break;
    }
    case PJ_ARG_PTR: c.value.p = va_arg(ap, void *); break;
    case PJ_ARG_BUF: {
        pj_buf b = va_arg(ap, pj_buf);
        c = (pj_col){ .kind = PJ_COL_BUF, .base = b.ptr, .stride = 0, .size = b.len,
                      .buf_kind = b.kind };
        break;
    }
    default:
        if (tag_kind((pj_argtag)tag) == V_UNSIGNED) /* _Bool, unsigned char/short: promoted */
            c.value.u = (unsigned)va_arg(ap, int);
        else
            c.value.i = va_arg(ap, int);
        break;
    }
    va_end(ap);
    return c;
}

/* A pointer anywhere inside struct type t (a column of such structs cannot cross). */
static bool has_pointer_member(const ffi_type *t, int depth)
{
    if (t->type == FFI_TYPE_POINTER)
        return true;
    if (t->type != FFI_TYPE_STRUCT || !t->elements || depth > 64)
        return false;
    for (unsigned k = 0; t->elements[k]; k++)
        if (has_pointer_member(t->elements[k], depth + 1))
            return true;
    return false;
}

struct checking {
    char *err;
    size_t errlen;
    const pj_fn *fn;
    bool process;            /* the backend's workers are other processes */
    struct bulk_plan *plan;
};

static int refuse(const struct checking *c, int code, unsigned j, const char *fmt, ...)
    PJ_PRINTF(4, 5);
static int refuse(const struct checking *c, int code, unsigned j, const char *fmt, ...)
{
    char why[320];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof why, fmt, ap);
    va_end(ap);
    snprintf(c->err, c->errlen, "pj_run_bulk: %s: column %u: %s", pj_fn_name(c->fn), j, why);
    return code;
}

static int fail(const struct checking *c, int code, const char *fmt, ...) PJ_PRINTF(3, 4);
static int fail(const struct checking *c, int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->err, c->errlen, fmt, ap);
    va_end(ap);
    return code;
}

/* A broadcast constant: converted once into the template block. */
static int plan_const(const struct checking *c, unsigned j, const pj_col *col)
{
    const ffi_type *ty = c->fn->atypes[j];
    unsigned char *dst = c->plan->consts + c->fn->offsets[j];
    int kind = tag_kind(col->type);
    if (ty->type == FFI_TYPE_POINTER) {
        if (kind == V_POINTER && col->value.p && c->process)
            return refuse(c, PJ_EPOINTER, j, "a raw pointer cannot cross to a worker process: "
                          "give it as a buffer (pj_col_const(pj_in(p, n)) or pj_col_buf)");
        if (kind == V_POINTER || ((kind == V_SIGNED || kind == V_UNSIGNED) &&
                                  col->value.u == 0)) {
            *(const void **)dst = kind == V_POINTER ? col->value.p : NULL;
            return 0;
        }
    } else if (ty->type == FFI_TYPE_STRUCT) {
        if (kind == V_POINTER && col->value.p) {
            if (c->process && has_pointer_member(ty, 0))
                return refuse(c, PJ_EPOINTER, j, "the struct has a pointer member, which "
                              "cannot cross to a worker process");
            memcpy(dst, col->value.p, ty->size);
            return 0;
        }
        if (kind == V_POINTER)
            return refuse(c, PJ_EINVAL, j, "a struct given as a NULL pointer");
    } else if (kind == V_SIGNED || kind == V_UNSIGNED || kind == V_FLOATING) {
        struct value v = { .kind = kind, .i = col->value.i, .u = col->value.u };
        if (col->type == PJ_ARG_LDOUBLE)
            memcpy(&v.f, col->value.ld, sizeof v.f);
        else if (kind == V_FLOATING)
            v.f = col->value.f;
        if (kind == V_SIGNED)
            v.u = (unsigned long long)v.i;
        if (!store(ty->type, &v, dst))
            return refuse(c, PJ_ETYPE, j, "%Lg does not fit the integer parameter", v.f);
        return 0;
    }
    return refuse(c, PJ_ETYPE, j, "the constant is %s, the parameter is %s", tag_name(col->type),
                  pj__param_type_name(ty));
}

static int plan_array(const struct checking *c, unsigned j, const pj_col *col,
                      struct bulk_arg *a)
{
    const ffi_type *ty = c->fn->atypes[j];
    int kind = tag_kind(col->type);
    size_t elem = tag_size(col->type);
    if (kind == V_NONE)
        return refuse(c, PJ_EINVAL, j, "unknown element type %d", (int)col->type);
    if (a->stride < elem)
        return refuse(c, PJ_EINVAL, j, "stride %zu is smaller than the element (%zu bytes)",
                      a->stride, elem);
    if (ty->type == FFI_TYPE_POINTER && kind == V_BUFFER) {
        a->load = BULK_BUF_ARRAY;
        c->plan->has_bufs = true;
        return 0;
    }
    if (ty->type == FFI_TYPE_POINTER && kind == V_POINTER) {
        if (c->process)
            return refuse(c, PJ_EPOINTER, j, "a column of raw pointers cannot cross to a worker "
                          "process: declare the buffers (pj_col_buf, or an array of pj_buf)");
        a->load = BULK_COPY, a->size = sizeof(void *);
        return 0;
    }
    bool arith = kind == V_SIGNED || kind == V_UNSIGNED || kind == V_FLOATING;
    if (!arith || !(is_integer_param(ty->type) || is_floating_param(ty->type)))
        return refuse(c, PJ_ETYPE, j, "the column is %s, the parameter is %s%s",
                      tag_name(col->type), pj__param_type_name(ty),
                      ty->type == FFI_TYPE_STRUCT ? " (use pj_col_struct)" : "");
    bool same_class = kind == V_FLOATING ? is_floating_param(ty->type)
                      : kind == V_SIGNED ? is_signed_param(ty->type)
                                         : is_integer_param(ty->type) &&
                                           !is_signed_param(ty->type);
    if (same_class && elem == ty->size && col->type != PJ_ARG_BOOL) {
        a->load = BULK_COPY, a->size = (uint32_t)elem;
        return 0;
    }
    a->load = BULK_CONVERT, a->from = (uint8_t)col->type, a->to = ty->type;
    return 0;
}

static int plan_struct(const struct checking *c, unsigned j, const pj_col *col,
                       struct bulk_arg *a)
{
    const ffi_type *ty = c->fn->atypes[j];
    if (ty->type != FFI_TYPE_STRUCT)
        return refuse(c, PJ_ETYPE, j, "a column of structs, the parameter is %s",
                      pj__param_type_name(ty));
    if (col->size != ty->size)
        return refuse(c, PJ_ETYPE, j, "the column's structs are %zu bytes, the parameter's "
                      "%zu", col->size, ty->size);
    if (a->stride < col->size)
        return refuse(c, PJ_EINVAL, j, "stride %zu is smaller than the struct (%zu bytes)",
                      a->stride, col->size);
    if (c->process && has_pointer_member(ty, 0))
        return refuse(c, PJ_EPOINTER, j, "the struct has a pointer member, which cannot cross "
                      "to a worker process");
    a->load = BULK_COPY, a->size = (uint32_t)ty->size;
    return 0;
}

static int plan_buf(const struct checking *c, unsigned j, const pj_col *col, struct bulk_arg *a)
{
    if (c->fn->atypes[j]->type != FFI_TYPE_POINTER)
        return refuse(c, PJ_ETYPE, j, "a buffer, the parameter is %s",
                      pj__param_type_name(c->fn->atypes[j]));
    if (col->buf_kind != PJ_BUF_IN && col->buf_kind != PJ_BUF_OUT &&
        col->buf_kind != PJ_BUF_INOUT)
        return refuse(c, PJ_EINVAL, j, "a buffer column's kind must be PJ_BUF_IN, PJ_BUF_OUT "
                      "or PJ_BUF_INOUT");
    if (col->stride && col->stride < col->size)
        return refuse(c, PJ_EINVAL, j, "stride %zu is smaller than the buffer (%zu bytes): "
                      "calls would share bytes", col->stride, col->size);
    if (col->stride == 0 && col->buf_kind != PJ_BUF_IN)
        return refuse(c, PJ_EINVAL, j, "an out buffer with stride 0 would be written by every "
                      "call");
    a->load = BULK_BUF, a->buf_len = col->size, a->buf_kind = col->buf_kind;
    c->plan->has_bufs = true;
    return 0;
}

static int plan_column(const struct checking *c, unsigned j, const pj_col *col)
{
    if (col->kind == PJ_COL_CONST)
        return plan_const(c, j, col);
    if (col->kind != PJ_COL_ARRAY && col->kind != PJ_COL_STRUCT && col->kind != PJ_COL_BUF)
        return refuse(c, PJ_EINVAL, j, "unknown column kind %d (build columns with "
                      "pj_col_array, pj_col_const, ...)", (int)col->kind);
    if (!col->base)
        return refuse(c, PJ_EINVAL, j, "the array is NULL");
    struct bulk_arg *a = &c->plan->vars[c->plan->n_vars];
    *a = (struct bulk_arg){ .base = col->base, .index = j,
                            .offset = (uint32_t)c->fn->offsets[j] };
    a->stride = col->stride ? col->stride
                : col->kind == PJ_COL_STRUCT ? col->size
                : col->kind == PJ_COL_ARRAY ? tag_size(col->type) : 0;
    int rc = col->kind == PJ_COL_ARRAY ? plan_array(c, j, col, a)
             : col->kind == PJ_COL_STRUCT ? plan_struct(c, j, col, a) : plan_buf(c, j, col, a);
    if (!rc)
        c->plan->n_vars++;
    return rc;
}

static int plan_output(const struct checking *c, const pj_bulk *bulk, struct bulk_plan *plan)
{
    const pj_fn *fn = bulk->fn;
    const char *name = pj_fn_name(fn);
    if (fn->ret_str)
        return fail(c, PJ_EINVAL, "pj_run_bulk: %s returns a C string: "
                                      "bulk runs write values into an array; use pj_delayed",
                                      name);
    bool is_void = fn->rtype->type == FFI_TYPE_VOID;
    if (is_void && bulk->out)
        return fail(c, PJ_EINVAL, "pj_run_bulk: %s returns void: out must "
                                      "be NULL", name);
    if (!is_void && !bulk->out)
        return fail(c, PJ_EINVAL, "pj_run_bulk: %s returns a value: out "
                                      "is NULL", name);
    plan->out = bulk->out;
    plan->out_size = is_void ? 0 : fn->rtype->size;
    plan->out_stride = bulk->out_stride ? bulk->out_stride : plan->out_size;
    if (plan->out_stride < plan->out_size)
        return fail(c, PJ_EINVAL, "pj_run_bulk: out_stride %zu is smaller "
                                      "than %s's return value (%zu bytes)", bulk->out_stride,
                                      name, plan->out_size);
    return 0;
}

int pj__bulk_plan(const pj_bulk *bulk, unsigned features, bool into_slots,
                  struct bulk_plan *plan, char *err, size_t errlen)
{
    *plan = (struct bulk_plan){ 0 };
    struct checking c = { err, errlen, bulk ? bulk->fn : NULL, features & PJ_BACKEND_PROCESS,
                          plan };
    if (!bulk || !bulk->fn)
        return fail(&c, PJ_EINVAL, "pj_run_bulk: %s is NULL", !bulk ? "bulk" : "bulk->fn");
    const pj_fn *fn = bulk->fn;
    if (bulk->n > PJ_BULK_MAX)
        return fail(&c, PJ_EINVAL, "pj_run_bulk: n = %zu is past PJ_BULK_MAX (%zu)", bulk->n,
                    PJ_BULK_MAX);
    if (fn->nargs && !bulk->cols)
        return fail(&c, PJ_EINVAL, "pj_run_bulk: %s takes %u argument%s: cols is NULL",
                    pj_fn_name(fn), fn->nargs, fn->nargs == 1 ? "" : "s");
    plan->fn = fn;
    plan->n = bulk->n;
    plan->statuses = bulk->statuses;
    int rc = into_slots ? 0 : plan_output(&c, bulk, plan);
    plan->vars = calloc(fn->nargs ? fn->nargs : 1, sizeof *plan->vars);
    plan->consts = calloc(1, fn->args_size ? fn->args_size : 1);
    if (!rc && (!plan->vars || !plan->consts))
        rc = fail(&c, PJ_ENOMEM, "out of memory");
    for (unsigned j = 0; !rc && j < fn->nargs; j++)
        rc = plan_column(&c, j, &bulk->cols[j]);
    if (!rc && bulk->n && plan->out_stride &&
        (bulk->n - 1) > (SIZE_MAX - plan->out_size) / plan->out_stride)
        rc = fail(&c, PJ_EINVAL, "pj_run_bulk: n * out_stride overflows");
    if (rc)
        pj__bulk_plan_free(plan);
    return rc;
}

void pj__bulk_plan_free(struct bulk_plan *plan)
{
    free(plan->vars);
    free(plan->consts);
    plan->vars = NULL;
    plan->consts = NULL;
}

bool pj__bulk_gather(const struct bulk_plan *plan, size_t i, unsigned char *block, char *why,
                     size_t len)
{
    for (unsigned k = 0; k < plan->n_vars; k++) {
        const struct bulk_arg *a = &plan->vars[k];
        const unsigned char *src = a->base + i * a->stride;
        unsigned char *dst = block + a->offset;
        switch (a->load) {
        case BULK_COPY:
            if (a->size == 4)
                memcpy(dst, src, 4);
            else if (a->size == 8)
                memcpy(dst, src, 8);
            else
                memcpy(dst, src, a->size);
            break;
        case BULK_CONVERT: {
            struct value v = load((pj_argtag)a->from, src);
            if (!store(a->to, &v, dst)) {
                snprintf(why, len, "argument %u: %Lg does not fit the integer parameter",
                         a->index, v.f);
                return false;
            }
            break;
        }
        case BULK_BUF:
            *(const void **)dst = src;
            break;
        default: /* BULK_BUF_ARRAY */
            *(void **)dst = ((const pj_buf *)src)->ptr;
            break;
        }
    }
    return true;
}

void pj__bulk_fail_message(pj_parallel *par, int status, size_t index, const pj_fn *fn,
                           const char *why)
{
    pj__parallel_set_error(par, status, "call %zu (%s): %s", index, pj_fn_name(fn),
                           why ? why : pj_strerror(status));
}
