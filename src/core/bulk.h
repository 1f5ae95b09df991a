/* Bulk runs (pj_run_bulk, pj_start_bulk): what their files share.  bulk_plan.c checks a
 * pj_bulk once and compiles it into a plan; bulk_ranges.c runs a plan in ranges of calls,
 * claimed by workers in this process (bulk_direct.c their hot loop) or sent to parjob's
 * process pool as batches of no tasks (bulk_pool.c); bulk_tasks.c runs it everywhere else,
 * one task per call built as the dispatcher's window allows; bulk_slots.c serves the
 * executor's map.  Nothing here is public API. */
#ifndef PJ_BULK_H
#define PJ_BULK_H

#include "internal.h"

#include <string.h>

/* How one column's value for call i reaches the argument block. */
enum bulk_load {
    BULK_COPY,      /* size bytes as they are: the parameter's own type, a struct, a pointer */
    BULK_CONVERT,   /* an arithmetic value converted to the parameter's type, as C would */
    BULK_BUF,       /* a buffer per call: base + i * stride, buf_len bytes */
    BULK_BUF_ARRAY  /* an array of pj_buf: element i is call i's buffer */
};

struct bulk_arg {
    const unsigned char *base;
    size_t stride;
    uint32_t offset;    /* in the argument block */
    uint32_t size;      /* BULK_COPY: bytes */
    uint8_t load;       /* enum bulk_load */
    uint8_t from;       /* BULK_CONVERT: the column's pj_argtag */
    unsigned short to;  /* BULK_CONVERT: the parameter's FFI_TYPE_* */
    unsigned index;     /* the parameter's number */
    size_t buf_len;
    pj_buf_kind buf_kind;
};

struct bulk_plan {
    const pj_fn *fn;
    size_t n;
    unsigned char *out;       /* NULL for a void function */
    size_t out_stride, out_size;
    int *statuses;
    struct bulk_arg *vars;    /* the columns that vary per call */
    unsigned n_vars;
    unsigned char *consts;    /* an argument block holding the broadcast constants (and zeroes
                                 elsewhere): each call's block starts as a copy */
    bool has_bufs;            /* some argument is a buffer: tasks declare it (bulk_tasks.c) */
};

/* Checks bulk for a backend of these features and compiles it into *plan: 0, or a PJ_E...
 * code with the message in err.  into_slots: the values go to result slots (bulk_slots.c),
 * bulk->out and out_stride are not looked at.  Free the plan with pj__bulk_plan_free. */
PJ_HIDDEN int pj__bulk_plan(const pj_bulk *bulk, unsigned features, bool into_slots,
                            struct bulk_plan *plan, char *err, size_t errlen);
PJ_HIDDEN void pj__bulk_plan_free(struct bulk_plan *plan);
/* Fills block (fn->args_size bytes, already holding plan->consts) with call i's varying
 * arguments.  False when a value cannot convert (a floating value no integer holds): then
 * why says which argument. */
PJ_HIDDEN bool pj__bulk_gather(const struct bulk_plan *plan, size_t i, unsigned char *block,
                               char *why, size_t len);
/* Stores a return value (fn->ret_size bytes at ret) as call i's output. */
static inline void pj__bulk_store(const struct bulk_plan *plan, size_t i, const void *ret)
{
    if (!plan->out)
        return;
    unsigned char *dst = plan->out + i * plan->out_stride;
    switch (plan->out_size) {
    case 4: memcpy(dst, ret, 4); break;
    case 8: memcpy(dst, ret, 8); break;
    default: memcpy(dst, ret, plan->out_size); break;
    }
}

/* The direct hot loop (bulk_direct.c): registers loaded from the columns, no libffi. */
struct bulk_load_op {
    const unsigned char *base;
    size_t stride;
    uint8_t how;            /* bulk_direct.c's L_* */
    uint8_t slot;           /* integer or vector register number */
};
enum { BULK_RET_INT, BULK_RET_DOUBLE, BULK_RET_FLOAT };
union bulk_ret {
    uint64_t u;
    double d;
    float f;
};
struct bulk_direct {
    void (*ptr)(void);
    int ret;                /* BULK_RET_* */
    bool any_fp;            /* some argument or the return is floating */
    uint64_t r[6];          /* the constants' registers */
    double v[8];
    struct bulk_load_op loads[14];
    unsigned n_loads;
};
/* Whether plan can take the direct loop; fills d. */
PJ_HIDDEN bool pj__bulk_direct_plan(const struct bulk_plan *plan, struct bulk_direct *d);
/* Runs calls [lo, hi) until one fails (*failed: pj_fail was called, its message in
 * pj__current_call) or stop/cancel rise (the call returned has not run); returns where it
 * ended: hi when every call ran and succeeded. */
PJ_HIDDEN size_t pj__bulk_direct_run(const struct bulk_direct *d, const struct bulk_plan *plan,
                                     size_t lo, size_t hi, const _Atomic int *stop,
                                     const _Atomic int *cancel, bool *failed);

/* The run's first failure, as pj_run words it ("call 17 (add): why"). */
PJ_HIDDEN void pj__bulk_fail_message(pj_parallel *par, int status, size_t index,
                                     const pj_fn *fn, const char *why);

/* The two engines.  Each takes the plan (owned from then on) and either runs it to the end
 * (iter NULL: list mode) or returns an iterator in *iter. */
PJ_HIDDEN bool pj__bulk_in_process(const pj_parallel *par);
/* Whether plan runs on par's process pool as range batches (bulk_ranges.c). */
PJ_HIDDEN bool pj__bulk_pool_takes(const pj_parallel *par, const struct bulk_plan *plan);
PJ_HIDDEN int pj__bulk_ranges_open(pj_parallel *par, struct bulk_plan *plan, bool list,
                                   pj_bulk_iter **iter);
PJ_HIDDEN int pj__bulk_tasks_open(pj_parallel *par, struct bulk_plan *plan, bool list,
                                  pj_bulk_iter **iter);

/* The executor's map on in-process backends (bulk_slots.c): a plan over C arrays of fn's
 * exact parameter types (no conversion, as pj_map_start documents), and the body of a chunk
 * batch (run_ranges) that runs its calls into its result slots.  0 or PJ_E... with err. */
PJ_HIDDEN int pj__bulk_slots_plan(const pj_fn *fn, const void *const *arrays, size_t n,
                                  struct bulk_plan **plan, char *err, size_t errlen);
PJ_HIDDEN void pj__bulk_slots_free(struct bulk_plan *plan);
PJ_HIDDEN int pj__bulk_run_slots(pj_batch *b);

/* What pj_bulk_next and pj_bulk_close call: the engine's own. */
struct pj_bulk_iter {
    int (*next)(pj_bulk_iter *it, pj_range *out);
    int (*close)(pj_bulk_iter *it);
    pj_parallel *par;
};

#endif
