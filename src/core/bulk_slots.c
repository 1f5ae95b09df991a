/* Bulk calls into result slots: the executor's map (pj_map_start) over C arrays of fn's exact
 * parameter types, on backends that run batches in this process.  A chunk is a batch of no
 * tasks whose body (run_ranges) calls fn straight from the arrays into the chunk's pj_result
 * slots — the map's API hands out results, but it needs no task record per item.  Process
 * backends keep the map's tasks (executor.c). */
#include "bulk.h"

#include <stdlib.h>

/* The column of an array of exactly the type t. */
static pj_col exact_column(const ffi_type *t, const void *array)
{
    pj_argtag tag;
    switch (t->type) {
    case FFI_TYPE_STRUCT:
        return (pj_col){ .kind = PJ_COL_STRUCT, .base = array, .stride = t->size,
                         .size = t->size };
    case FFI_TYPE_FLOAT: tag = PJ_ARG_FLOAT; break;
    case FFI_TYPE_DOUBLE: tag = PJ_ARG_DOUBLE; break;
#if FFI_TYPE_LONGDOUBLE != FFI_TYPE_DOUBLE
    case FFI_TYPE_LONGDOUBLE: tag = PJ_ARG_LDOUBLE; break;
#endif
    case FFI_TYPE_POINTER: tag = PJ_ARG_PTR; break;
    case FFI_TYPE_SINT8: tag = PJ_ARG_SCHAR; break;
    case FFI_TYPE_UINT8: tag = PJ_ARG_UCHAR; break;
    case FFI_TYPE_SINT16: tag = PJ_ARG_SHORT; break;
    case FFI_TYPE_UINT16: tag = PJ_ARG_USHORT; break;
    case FFI_TYPE_UINT32: tag = PJ_ARG_UINT; break;
    case FFI_TYPE_SINT64: tag = PJ_ARG_LLONG; break;
    case FFI_TYPE_UINT64: tag = PJ_ARG_ULLONG; break;
    default: tag = PJ_ARG_INT; break; /* FFI_TYPE_INT, FFI_TYPE_SINT32 */
    }
    return (pj_col){ .kind = PJ_COL_ARRAY, .type = tag, .base = array, .stride = t->size };
}

int pj__bulk_slots_plan(const pj_fn *fn, const void *const *arrays, size_t n,
                        struct bulk_plan **out, char *err, size_t errlen)
{
    pj_col *cols = calloc(fn->nargs ? fn->nargs : 1, sizeof *cols);
    struct bulk_plan *plan = calloc(1, sizeof *plan);
    if (!cols || !plan) {
        free(cols), free(plan);
        snprintf(err, errlen, "out of memory");
        return PJ_ENOMEM;
    }
    for (unsigned j = 0; j < fn->nargs; j++)
        cols[j] = exact_column(fn->atypes[j], arrays[j]);
    pj_bulk bulk = { .fn = fn, .n = n, .cols = cols };
    int rc = pj__bulk_plan(&bulk, 0, true, plan, err, errlen);
    free(cols);
    if (rc) {
        free(plan);
        return rc;
    }
    *out = plan;
    return 0;
}

void pj__bulk_slots_free(struct bulk_plan *plan)
{
    if (plan) {
        pj__bulk_plan_free(plan);
        free(plan);
    }
}

/* One call into its slot, as pj__call writes a task's result. */
static void call_into(const struct bulk_plan *p, size_t i, unsigned char *block, pj_result *r)
{
    const pj_fn *fn = p->fn;
    char why[160];
    r->fn = fn;
    if (!pj__bulk_gather(p, i, block, why, sizeof why)) {
        pj__result_fail(r, PJ_ETYPE, 0, "%s", why);
        return;
    }
    void *slot = r->value.bytes;
    if (fn->ret_size > sizeof r->value.bytes && !(slot = r->value.heap =
                                                  calloc(1, fn->ret_size))) {
        pj__result_fail(r, PJ_ENOMEM, 0, "out of memory for the return value");
        return;
    }
    pj__call_begin();
    pj__invoke(fn, block, slot);
    pj__call_finish(r);
}

int pj__bulk_run_slots(pj_batch *b)
{
    const struct bulk_plan *p = b->range_plan;
    _Alignas(16) unsigned char block[p->fn->args_size ? p->fn->args_size : 16];
    memcpy(block, p->consts, p->fn->args_size);
    for (size_t k = b->begin; k < b->count; k++)
        call_into(p, b->range_first + k, block, &b->results[k]);
    return 0;
}
