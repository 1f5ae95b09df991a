/* Results as a caller reads them: the typed accessors of one pj_result, and pj_results, the
 * list a run returns. */
#include "internal.h"

#include <stdlib.h>
#include <string.h>

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

size_t pj_results_count(const pj_results *res)
{
    return res ? res->n : 0;
}

const pj_result *pj_results_at(const pj_results *res, size_t i)
{
    return res && i < res->n ? &res->r[i] : NULL;
}

size_t pj_results_count_status(const pj_results *res, int status)
{
    size_t k = 0;
    for (size_t i = 0; res && i < res->n; i++)
        k += res->r[i].status == status;
    return k;
}

void pj_results_free(pj_results *res)
{
    if (!res)
        return;
    for (size_t i = 0; res->own_memory && i < res->n; i++)
        pj__result_release(&res->r[i]); /* a pass over every result only when it frees some */
    pj__results_release(res->r, res->mapped);
    free(res);
}
