/* Bulk runs on parjob's process pool ("fork", "spawn", "mpi": PJ_BACKEND_COLUMNS): ranges
 * travel as batches of no tasks.  The codec encodes each batch's calls straight from the
 * columns (range_gather, pj__encode_range_batch) as a uniform batch; the worker runs it like
 * any other; the values come back as a run that the pool's records code copies straight into
 * the output array (range_out), the slots getting only statuses; here, on the pool's thread,
 * the failures are recorded and the next range claimed — never waiting, so that it keeps
 * serving every worker.  A crash leaves the rest of its batch pending: it
 * goes again (pj__batch_rerun), the crashed call keeps its PJ_ECRASHED. */
#include "bulk_ranges.h"

#include <stdlib.h>

/* A pool's auto ranges carry a 64-byte result slot per call: at most this many calls, 1 MiB of
 * slots a range in flight (the dispatcher's AUTO_MAX_BATCH for the same reason). */
#define POOL_MAX_RANGE 16384

size_t pj__bulk_pool_max_range(void)
{
    return POOL_MAX_RANGE;
}

/* Whether plan can travel as range batches: the pool takes them (PJ_BACKEND_COLUMNS), no
 * deadline, and calls the codec sends as bare argument blocks — scalars only, each column
 * copied as it is (process.h's uniform rule, checked again when the batch is encoded). */
bool pj__bulk_pool_takes(const pj_parallel *par, const struct bulk_plan *p)
{
    const pj_fn *fn = p->fn;
    if (!(par->backend->features & PJ_BACKEND_COLUMNS) || par->cfg.timeout != 0 ||
        fn->struct_args || fn->rtype->type == FFI_TYPE_STRUCT || fn->ret_size > 16 ||
        fn->ret_str)
        return false;
    for (unsigned j = 0; j < fn->nargs; j++)
        if (fn->atypes[j]->type == FFI_TYPE_POINTER)
            return false;
    for (unsigned k = 0; k < p->n_vars; k++)
        if (p->vars[k].load != BULK_COPY)
            return false;
    return true;
}

/* Every byte of n blocks stride apart: the constants (zeroes where columns go and in the
 * padding) and zeroes to the stride.  The encoder does not zero the memory first: for add
 * over ints that memset was a fifth of the parent's instructions per call (callgrind). */
static void fill_constants(const struct bulk_plan *p, size_t n, unsigned char *blocks,
                           size_t stride)
{
    size_t size = p->fn->args_size;
    _Alignas(16) unsigned char one[64] = { 0 };
    if (stride > sizeof one) {
        for (size_t k = 0; k < n; k++) {
            memcpy(blocks + k * stride, p->consts, size);
            memset(blocks + k * stride + size, 0, stride - size);
        }
        return;
    }
    memcpy(one, p->consts, size);
    if (stride == 16)
        for (size_t k = 0; k < n; k++)
            memcpy(blocks + k * 16, one, 16);
    else
        for (size_t k = 0; k < n; k++)
            memcpy(blocks + k * stride, one, stride);
}

/* The argument blocks of calls range_first + [begin, end), as the codec encodes the batch:
 * the constants and padding into every block, then each column copied as it is
 * (pool_takes), a column at a time so that each copy loop has one size and one stride. */
static void gather_calls(const pj_batch *b, size_t begin, size_t end, unsigned char *blocks,
                         size_t stride)
{
    const struct bulk_plan *p = &((const struct range_batch *)b)->run->plan;
    size_t n = end - begin, first = b->range_first + begin;
    fill_constants(p, n, blocks, stride);
    for (unsigned v = 0; v < p->n_vars; v++) {
        const struct bulk_arg *a = &p->vars[v];
        const unsigned char *src = a->base + first * a->stride;
        unsigned char *dst = blocks + a->offset;
        if (a->size == 4)
            for (size_t k = 0; k < n; k++)
                memcpy(dst + k * stride, src + k * a->stride, 4);
        else if (a->size == 8)
            for (size_t k = 0; k < n; k++)
                memcpy(dst + k * stride, src + k * a->stride, 8);
        else
            for (size_t k = 0; k < n; k++)
                memcpy(dst + k * stride, src + k * a->stride, a->size);
    }
}

static void pool_batch_done(pj_batch *b);

/* Claims a range and hands it to the pool as rb: false when nothing is left to claim. */
static bool pool_submit(struct ranges *r, struct range_batch *rb)
{
    size_t lo, hi;
    if (!pj__ranges_claim(r, &lo, &hi))
        return false;
    size_t k = hi - lo;
    if (k > rb->cap) {
        free(rb->slots);
        rb->cap = 0;
        if (!(rb->slots = malloc(k * sizeof *rb->slots))) {
            for (size_t i = lo; i < hi; i++)
                pj__ranges_record_failure(r, i, PJ_ENOMEM, "out of memory for a batch's results");
            pj__ranges_complete(r, lo, hi, PJ_ENOMEM);
            return pool_submit(r, rb);
        }
        rb->cap = k;
    }
    for (size_t j = 0; j < k; j++) { /* the value stays unset: range_out or a run fills it */
        pj_result *res = &rb->slots[j];
        res->index = lo + j, res->status = PJ__PENDING, res->code = 0;
        res->message = NULL, res->fn = NULL;
    }
    rb->lo = lo, rb->hi = hi;
    rb->batch = (struct pj_batch){ .results = rb->slots, .count = k, .first_index = lo,
                                   .cancel = r->cancel, .on_done = pool_batch_done,
                                   .range_fn = r->plan.fn, .range_gather = gather_calls,
                                   .range_plan = &r->plan, .range_first = lo };
    if (r->plan.out && r->plan.out_size <= r->plan.fn->ret_size) { /* values straight to out */
        rb->batch.range_out = r->plan.out + lo * r->plan.out_stride;
        rb->batch.range_out_stride = r->plan.out_stride;
        rb->batch.range_out_size = r->plan.out_size;
    }
    int rc = r->par->backend->submit(r->par->backend_state, &rb->batch);
    if (rc == 0)
        return true;
    for (size_t i = lo; i < hi; i++)
        pj__ranges_record_failure(r, i, rc, "the backend could not take the batch");
    pj__ranges_complete(r, lo, hi, rc);
    return pool_submit(r, rb);
}

/* A range batch is back (the pool's thread): what a crash left pending goes again; then the
 * values into the output array, the failures recorded, and the next range claimed. */
static void pool_batch_done(pj_batch *b)
{
    struct range_batch *rb = (struct range_batch *)b;
    struct ranges *r = rb->run;
    if (pj__batch_rerun(b, stopping(r))) {
        int rc = r->par->backend->submit(r->par->backend_state, b);
        if (rc == 0)
            return;
        pj__batch_fail_from(b, b->begin, rc, "the backend could not take the batch again");
    }
    int first = 0;
    for (size_t j = 0; j < b->count; j++) {
        pj_result *res = &rb->slots[j];
        size_t i = rb->lo + j;
        if (res->status == 0) {
            if (!b->range_out)
                pj__bulk_store(&r->plan, i, res->value.bytes);
            if (r->plan.statuses)
                r->plan.statuses[i] = 0;
        } else {
            pj__ranges_record_failure(r, i, res->status, res->message);
            first = first ? first : res->status;
        }
        if (res->message)
            free((char *)res->message); /* scalars only: no heap value */
    }
    if (b->exec_ns)
        pj__ranges_adapt(r, b->count, b->exec_ns);
    pj__ranges_complete(r, rb->lo, rb->hi, first);
    if (pool_submit(r, rb))
        return;
    pthread_mutex_lock(&r->lock);
    r->out--;
    pthread_cond_broadcast(&r->cond);
    pthread_mutex_unlock(&r->lock); /* r may be freed by the consumer from here on */
}

void pj__ranges_pool_start(struct ranges *r)
{
    for (size_t c = 0; c < r->n_claimers; c++) {
        r->batches[c].run = r;
        pthread_mutex_lock(&r->lock);
        r->out++;
        pthread_mutex_unlock(&r->lock);
        if (!pool_submit(r, &r->batches[c])) {
            pthread_mutex_lock(&r->lock);
            r->out--;
            pthread_mutex_unlock(&r->lock);
            return;
        }
    }
}
