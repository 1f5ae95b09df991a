/* The wire format round trip (codec.c), inside meson test and not only under the fuzzer
 * (tests/fuzz/): batches of every shape the codec knows are encoded as a parent encodes them
 * and decoded as a worker decodes them, and the decoded batch is compared with what was sent —
 * signatures (scalars, nested structs, a C-string return), argument bytes, every buffer kind
 * (in, out, inout, cstr, in_copy, NULL), several functions in one batch, the first index and
 * the deadline, and the uniform form of tiny scalar tasks.  Result records of every status, a
 * C-string result (and a NULL one), out and inout bytes, and runs of successes go the other
 * way, are applied to a batch as the parent applies them, and are compared too; a record seen
 * twice changes nothing. */
#include "process.h"

#include <check.h>

#include "helpers.h"
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- functions and signatures -------------------------------------------------------------- */

struct inner { short a; char b; };
struct outer { struct inner in; long long c; float d; };
struct big { double v[5]; }; /* returned through value.heap: larger than value.bytes */

static ffi_type *inner_el[] = { &ffi_type_sint16, &ffi_type_sint8, NULL };
static ffi_type inner_t = { .type = FFI_TYPE_STRUCT, .elements = inner_el };
static ffi_type *outer_el[] = { &inner_t, &ffi_type_sint64, &ffi_type_float, NULL };
static ffi_type outer_t = { .type = FFI_TYPE_STRUCT, .elements = outer_el };
static ffi_type *big_el[] = { &ffi_type_double, &ffi_type_double, &ffi_type_double,
                              &ffi_type_double, &ffi_type_double, NULL };
static ffi_type big_t = { .type = FFI_TYPE_STRUCT, .elements = big_el };

static long long scalars(signed char a, unsigned short b, int c, unsigned long long d, float e,
                         double f)
{
    return a + b + c + (long long)d + (long long)e + (long long)f;
}

static struct outer with_buffers(struct outer o, const char *s, const void *in, int *out,
                                 double *io, const void *copy)
{
    (void)s, (void)in, (void)out, (void)io, (void)copy;
    return o;
}

static struct big big_result(int x)
{
    return (struct big){ { x, x, x, x, x } };
}

static char *describe(int seconds)
{
    char *s = malloc(32);
    if (s)
        snprintf(s, 32, "Done Sleeping...%d", seconds);
    return s;
}

static int add(int a, int b)
{
    return a + b;
}

static int64_t wide(int64_t x)
{
    return x;
}

/* A value with every byte set: a byte lost on the way shows. */
#define WIDE(k) ((int64_t)0x0102030405060708 + (k))

/* ---- comparisons ---------------------------------------------------------------------------- */

static void assert_same_type(const ffi_type *sent, const ffi_type *got, const char *where)
{
    ck_assert_msg(sent->type == got->type && sent->size == got->size &&
                  sent->alignment == got->alignment,
                  "%s: type %d size %zu align %d came back as %d, %zu, %d", where, sent->type,
                  sent->size, sent->alignment, got->type, got->size, got->alignment);
    if (sent->type != FFI_TYPE_STRUCT)
        return;
    size_t k = 0;
    for (; sent->elements[k]; k++) {
        ck_assert_msg(got->elements[k] != NULL, "%s: member %zu is missing", where, k);
        assert_same_type(sent->elements[k], got->elements[k], where);
    }
    ck_assert_msg(got->elements[k] == NULL, "%s: extra member %zu", where, k);
}

static void assert_same_fn(const pj_fn *sent, const pj_fn *got)
{
    ck_assert_ptr_eq((void *)sent->ptr, (void *)got->ptr); /* a pointer reference: as is */
    ck_assert_str_eq(got->name, sent->name);
    ck_assert_uint_eq(got->nargs, sent->nargs);
    ck_assert_uint_eq(got->ret_str, sent->ret_str);
    ck_assert_uint_eq(got->args_size, sent->args_size);
    ck_assert_uint_eq(got->ret_size, sent->ret_size);
    assert_same_type(sent->rtype, got->rtype, sent->name);
    for (unsigned a = 0; a < sent->nargs; a++) {
        assert_same_type(sent->atypes[a], got->atypes[a], sent->name);
        ck_assert_uint_eq(got->offsets[a], sent->offsets[a]);
    }
}

/* Whether two values of type t are equal member by member: padding is not compared (the
 * codec zeroes a struct's padding on the wire; pj_delayed copied the caller's as it was). */
static bool same_value(const ffi_type *t, const unsigned char *a, const unsigned char *b)
{
    if (t->type != FFI_TYPE_STRUCT)
        return memcmp(a, b, t->size) == 0;
    size_t at = 0;
    for (size_t k = 0; t->elements[k]; k++) {
        const ffi_type *e = t->elements[k];
        at = (at + e->alignment - 1) / e->alignment * e->alignment;
        if (!same_value(e, a + at, b + at))
            return false;
        at += e->size;
    }
    return true;
}

/* What the worker must see for sent's buffer of argument a. */
static void assert_same_buf(const pj_buf *sent, unsigned a, const struct pj__dbuf *got)
{
    ck_assert_uint_eq(got->arg, a);
    pj_buf_kind want = sent->kind == PJ_BUF_IN_COPY ? PJ_BUF_IN : sent->kind; /* copied */
    if (!sent->ptr) { /* the kind, marked NULL: the worker passes NULL */
        ck_assert_msg(got->null && got->kind == want,
                      "argument %u: a NULL buffer came as kind %u, null %d", a, got->kind,
                      got->null);
        ck_assert_uint_eq(got->len, 0);
        return;
    }
    ck_assert_uint_eq(got->kind, want);
    size_t len = sent->kind == PJ_BUF_CSTR ? strlen(sent->ptr) + 1 : sent->len;
    ck_assert_uint_eq(got->len, len);
    if (want == PJ_BUF_OUT)
        ck_assert_ptr_null(got->data); /* nothing crosses: the worker allocates it */
    else
        ck_assert_msg(memcmp(got->data, sent->ptr, len) == 0, "argument %u: bytes differ", a);
}

/* The decoded task k against the task sent: function, argument bytes, buffers. */
static void assert_same_task(const pj_task *sent, const struct pj__decoded *d, size_t k)
{
    const pj_task *got = d->tasks[k];
    assert_same_fn(sent->fn, got->fn);
    size_t nb = 0;
    for (unsigned a = 0; a < sent->fn->nargs; a++) {
        if (sent->bufs && sent->bufs[a].kind) {
            ck_assert_uint_lt(d->buf_at[k] + nb, d->buf_at[k + 1]);
            assert_same_buf(&sent->bufs[a], a, &d->bufs[d->buf_at[k] + nb++]);
            continue;
        }
        size_t at = sent->fn->offsets[a];
        ck_assert_msg(same_value(sent->fn->atypes[a], got->args + at, sent->args + at),
                      "task %zu argument %u: bytes differ", k, a);
    }
    ck_assert_uint_eq(d->buf_at[k + 1] - d->buf_at[k], nb);
}

/* Encodes tasks[0..n) as a batch and decodes its body as a worker does (own 16-aligned copy). */
static void round_trip(pj_task *const *tasks, size_t n, uint64_t timeout_ns,
                       const pj_fn **uniform, struct pj__decoded *d, unsigned char **body)
{
    struct pj__wbuf w = { 0 };
    char err[256] = "";
    ck_assert_msg(pj__encode_batch(&w, PJ__MSG_BATCH, tasks, 0, n, timeout_ns,
                                   &pj__fnref_pointer, uniform, err, sizeof err) == 0,
                  "encode: %s", err);
    struct pj__msg_header h;
    memcpy(&h, w.p, sizeof h);
    ck_assert_uint_eq(h.type, PJ__MSG_BATCH);
    ck_assert_uint_eq(h.magic, PJ__MSG_MAGIC);
    ck_assert_uint_eq(h.len, w.len - sizeof h);
    *body = aligned_alloc(16, (h.len + 15) / 16 * 16);
    memcpy(*body, w.p + sizeof h, h.len);
    pj__wbuf_free(&w);
    ck_assert_msg(pj__decode_batch(*body, h.len, &pj__fnref_pointer, d, err, sizeof err) == 0,
                  "decode: %s", err);
    ck_assert_uint_eq(d->n, n);
    ck_assert_uint_eq(d->first, 0);
    ck_assert_uint_eq(d->timeout_ns, timeout_ns);
}

/* ---- batches -------------------------------------------------------------------------------- */

START_TEST(batch_of_every_argument_shape)
{
    pj_fn *scalar_fn = PJ_FN(scalars, &ffi_type_sint64, &ffi_type_schar, &ffi_type_ushort,
                             &ffi_type_sint, &ffi_type_uint64, &ffi_type_float,
                             &ffi_type_double);
    pj_fn *buf_fn = PJ_FN(with_buffers, &outer_t, &outer_t, &ffi_type_pointer,
                          &ffi_type_pointer, &ffi_type_pointer, &ffi_type_pointer,
                          &ffi_type_pointer);
    pj_fn *str_fn = PJ_FN(describe, &pj_type_str_owned, &ffi_type_sint);
    ck_assert(scalar_fn && buf_fn && str_fn);
    unsigned char in_bytes[37];
    for (size_t k = 0; k < sizeof in_bytes; k++)
        in_bytes[k] = (unsigned char)(k * 7 + 1);
    int out[4];
    double io[3] = { 1.5, -2.25, 1e300 };
    char copied[] = "copied at pj_delayed";
    struct outer o = { { -3, 'x' }, 1LL << 40, 0.25f };
    pj_task *tasks[5] = {
        pj_delayed(scalar_fn, -5, 65535, -7, 1ULL << 63, 3.5f, -0.125),
        pj_delayed(buf_fn, &o, pj_cstr("a string"), pj_in(in_bytes, sizeof in_bytes),
                   pj_out(out, sizeof out), pj_inout(io, sizeof io),
                   pj_in_copy(copied, sizeof copied)),
        pj_delayed(buf_fn, &o, pj_cstr(NULL), pj_in(NULL, 0), pj_out(NULL, 0),
                   pj_inout(NULL, 0), pj_in_copy(NULL, 0)),
        pj_delayed(str_fn, 9),
        pj_delayed(scalar_fn, 1, 2, 3, 4, 5.0f, 6.0),
    };
    for (int k = 0; k < 5; k++)
        ck_assert_msg(tasks[k], "task %d: %s", k, pj_last_errmsg());
    copied[0] = 'X'; /* in_copy sends the bytes of the moment of pj_delayed */
    struct pj__decoded d;
    unsigned char *body;
    const pj_fn *uniform = scalar_fn;
    round_trip(tasks, 5, 1500000000u, &uniform, &d, &body);
    ck_assert_ptr_null(uniform); /* buffers and a deadline: not a uniform batch */
    ck_assert_ptr_null(d.blocks);
    ck_assert_uint_eq(d.nfns, 3);
    for (size_t k = 0; k < 5; k++)
        assert_same_task(tasks[k], &d, k);
    ck_assert_str_eq((const char *)d.bufs[d.buf_at[1] + 4].data, "copied at pj_delayed");
    pj__decoded_free(&d);
    free(body);
    for (int k = 0; k < 5; k++)
        pj_task_free(tasks[k]);
    pj_fn_free(scalar_fn);
    pj_fn_free(buf_fn);
    pj_fn_free(str_fn);
}
END_TEST

/* One scalar function, no buffers, no deadline: bare argument blocks, one per task. */
START_TEST(uniform_batch)
{
    enum { N = 100 };
    pj_fn *fn = PJ_FN(add, &ffi_type_sint, &ffi_type_sint, &ffi_type_sint);
    pj_task *tasks[N];
    for (int k = 0; k < N; k++)
        tasks[k] = pj_delayed(fn, k, -3 * k);
    struct pj__decoded d;
    unsigned char *body;
    const pj_fn *uniform = NULL;
    round_trip(tasks, N, 0, &uniform, &d, &body);
    ck_assert_ptr_eq(uniform, fn);
    ck_assert_ptr_nonnull(d.blocks);
    ck_assert_uint_eq(d.nfns, 1);
    assert_same_fn(fn, d.fns[0]);
    ck_assert_uint_ge(d.stride, fn->args_size);
    for (int k = 0; k < N; k++)
        ck_assert_msg(memcmp(d.blocks + (size_t)k * d.stride, tasks[k]->args,
                             fn->args_size) == 0, "block %d differs", k);
    pj__decoded_free(&d);
    free(body);
    for (int k = 0; k < N; k++)
        pj_task_free(tasks[k]);
    pj_fn_free(fn);
}
END_TEST

/* A batch that cannot be decoded whole is refused whole: every truncation is PJ_EPROTO. */
START_TEST(truncated_batches_refused)
{
    pj_fn *fn = PJ_FN(describe, &pj_type_str_owned, &ffi_type_sint);
    pj_task *t = pj_delayed(fn, 1);
    struct pj__wbuf w = { 0 };
    char err[256];
    ck_assert_int_eq(pj__encode_batch(&w, PJ__MSG_BATCH, &t, 0, 1, 0, &pj__fnref_pointer, NULL,
                                      err, sizeof err), 0);
    size_t len = w.len - sizeof(struct pj__msg_header);
    unsigned char *body = aligned_alloc(16, (len + 15) / 16 * 16);
    for (size_t cut = 0; cut < len; cut++) {
        memcpy(body, w.p + sizeof(struct pj__msg_header), cut);
        struct pj__decoded d;
        ck_assert_msg(pj__decode_batch(body, cut, &pj__fnref_pointer, &d, err, sizeof err) ==
                      PJ_EPROTO, "%zu of %zu bytes decoded", cut, len);
    }
    free(body);
    pj__wbuf_free(&w);
    pj_task_free(t);
    pj_fn_free(fn);
}
END_TEST

/* ---- records -------------------------------------------------------------------------------- */

/* A batch of n tasks as the parent holds it while the worker runs them: results pending. */
static pj_batch pending_batch(pj_task **tasks, pj_result *results, size_t n)
{
    for (size_t k = 0; k < n; k++)
        results[k] = (pj_result){ .status = PJ__PENDING, .fn = tasks[k]->fn,
                                  .index = k };
    return (pj_batch){ .tasks = tasks, .results = results, .count = n };
}

START_TEST(records_of_every_status)
{
    pj_fn *scalar_fn = PJ_FN(add, &ffi_type_sint, &ffi_type_sint, &ffi_type_sint);
    pj_fn *buf_fn = PJ_FN(with_buffers, &outer_t, &outer_t, &ffi_type_pointer,
                          &ffi_type_pointer, &ffi_type_pointer, &ffi_type_pointer,
                          &ffi_type_pointer);
    pj_fn *big_fn = PJ_FN(big_result, &big_t, &ffi_type_sint);
    pj_fn *str_fn = PJ_FN(describe, &pj_type_str_owned, &ffi_type_sint);
    int out[4] = { 0 };
    double io[3] = { 1, 2, 3 };
    struct outer o = { { 1, 2 }, 3, 4 };
    enum { N = 10 };
    pj_task *tasks[N] = {
        pj_delayed(scalar_fn, 1, 2),
        pj_delayed(buf_fn, &o, pj_cstr("s"), pj_in(NULL, 0), pj_out(out, sizeof out),
                   pj_inout(io, sizeof io), pj_in_copy(NULL, 0)),
        pj_delayed(big_fn, 7),
        pj_delayed(str_fn, 1),
        pj_delayed(str_fn, 2),
        pj_delayed(scalar_fn, 0, 0),
        pj_delayed(scalar_fn, 0, 0),
        pj_delayed(scalar_fn, 0, 0),
        pj_delayed(scalar_fn, 0, 0),
        pj_delayed(scalar_fn, 0, 0),
    };
    struct pj__wbuf w = { 0 };
    /* 0: an int; 1: a struct and the out/inout bytes; 2: a big struct; 3: a string; 4: NULL */
    pj_result r = { .fn = scalar_fn };
    int three = 3;
    memcpy(r.value.bytes, &three, sizeof three);
    pj__encode_record(&w, 0, &r, NULL, 0);
    struct outer back = { { -1, 'z' }, 99, -0.5f };
    int out_back[4] = { 10, 20, 30, 40 };
    double io_back[3] = { -1, -2, -3 };
    r = (pj_result){ .fn = buf_fn };
    memcpy(r.value.bytes, &back, sizeof back);
    struct pj__dbuf bufs[] = { { 1, PJ_BUF_CSTR, 2, (unsigned char *)"s", false, false },
                               { 2, PJ_BUF_IN, 0, NULL, true, false },
                               { 3, PJ_BUF_OUT, sizeof out_back, (unsigned char *)out_back,
                                 false, false },
                               { 4, PJ_BUF_INOUT, sizeof io_back, (unsigned char *)io_back,
                                 false, false },
                               { 5, PJ_BUF_IN, 0, NULL, true, false } };
    pj__encode_record(&w, 1, &r, bufs, 5);
    struct big big = big_result(7);
    r = (pj_result){ .fn = big_fn };
    r.value.heap = &big;
    pj__encode_record(&w, 2, &r, NULL, 0);
    r = (pj_result){ .fn = str_fn };
    r.value.heap = "Done Sleeping...1";
    pj__encode_record(&w, 3, &r, NULL, 0);
    r.value.heap = NULL;
    pj__encode_record(&w, 4, &r, NULL, 0);
    /* 5..9: failed, timed out, crashed, exited, cancelled */
    static const struct { int status, code; const char *message; } bad[] = {
        { PJ_EFAILED, 0, "negative input -2" }, { PJ_ETIMEDOUT, 0, "timeout of 0.2 s" },
        { PJ_ECRASHED, SIGSEGV, "signal 11" }, { PJ_EEXITED, 3, "exit status 3" },
        { PJ_ECANCELLED, 0, "cancelled before it ran" },
    };
    for (int k = 0; k < 5; k++) {
        r = (pj_result){ .status = bad[k].status, .code = bad[k].code,
                         .message = bad[k].message, .fn = scalar_fn };
        pj__encode_record(&w, 5 + (size_t)k, &r, NULL, 0);
    }
    ck_assert(!w.oom);
    pj_result results[N];
    pj_batch b = pending_batch(tasks, results, N);
    ck_assert_int_eq(pj__apply_records(pj__batch_records(&b), w.p, w.len), 0);
    ck_assert_int_eq(results[0].status, 0);
    ck_assert_int_eq(pj_result_int(&results[0]), 3);
    ck_assert_int_eq(results[1].status, 0);
    ck_assert(same_value(&outer_t, results[1].value.bytes, (const unsigned char *)&back));
    ck_assert_mem_eq(out, out_back, sizeof out); /* copied into the caller's memory */
    ck_assert_mem_eq(io, io_back, sizeof io);
    ck_assert_int_eq(results[2].status, 0);
    ck_assert_mem_eq(results[2].value.heap, &big, sizeof big);
    ck_assert_str_eq(pj_result_str(&results[3]), "Done Sleeping...1");
    ck_assert_int_eq(results[4].status, 0);
    ck_assert_ptr_null(pj_result_str(&results[4]));
    for (int k = 0; k < 5; k++) {
        ck_assert_int_eq(results[5 + k].status, bad[k].status);
        ck_assert_int_eq(results[5 + k].code, bad[k].code);
        ck_assert_str_eq(results[5 + k].message, bad[k].message);
    }
    /* Seen again (spilled, then found in shared memory after a crash): nothing changes. */
    memset(out, 0, sizeof out);
    ck_assert_int_eq(pj__apply_records(pj__batch_records(&b), w.p, w.len), 0);
    ck_assert_int_eq(pj_result_int(&results[0]), 3);
    ck_assert_str_eq(pj_result_str(&results[3]), "Done Sleeping...1");
    ck_assert_str_eq(results[5].message, bad[0].message);
    for (int k = 0; k < N; k++) {
        pj__result_release(&results[k]);
        pj_task_free(tasks[k]);
    }
    pj__wbuf_free(&w);
    pj_fn_free(scalar_fn);
    pj_fn_free(buf_fn);
    pj_fn_free(big_fn);
    pj_fn_free(str_fn);
}
END_TEST

/* Runs of successes as a worker appends them to its region, a record between two runs. */
START_TEST(runs_of_successes)
{
    enum { N = 7 };
    pj_fn *fn = PJ_FN(wide, &ffi_type_sint64, &ffi_type_sint64);
    pj_task *tasks[N];
    for (int k = 0; k < N; k++)
        tasks[k] = pj_delayed(fn, (int64_t)k);
    _Atomic uint64_t used = 0;
    struct pj__area area = { &used, aligned_alloc(16, 1024), 1024 };
    struct pj__values run = { .head = SIZE_MAX, .vsize = (uint32_t)fn->ret_size };
    for (int k = 0; k < 3; k++) {
        int64_t v = WIDE(k);
        ck_assert(pj__values_append(&area, &run, (size_t)k, &v));
    }
    pj__values_close(&area, &run);
    struct pj__wbuf w = { 0 };
    pj_result f = { .status = PJ_EFAILED, .message = "task 3 fails", .fn = fn };
    pj__encode_record(&w, 3, &f, NULL, 0);
    memcpy(area.data + used, w.p, w.len);
    used += w.len;
    for (int k = 4; k < N; k++) {
        int64_t v = WIDE(k);
        ck_assert(pj__values_append(&area, &run, (size_t)k, &v));
    }
    pj_result results[N];
    pj_batch b = pending_batch(tasks, results, N);
    ck_assert_int_eq(pj__apply_records(pj__batch_records(&b), area.data, used), 0);
    for (int k = 0; k < N; k++) {
        if (k == 3) {
            ck_assert_int_eq(results[k].status, PJ_EFAILED);
            ck_assert_str_eq(results[k].message, "task 3 fails");
        } else {
            ck_assert_int_eq(results[k].status, 0);
            ck_assert_int_eq(pj_result_i64(&results[k]), WIDE(k));
        }
        pj__result_release(&results[k]);
        pj_task_free(tasks[k]);
    }
    pj__wbuf_free(&w);
    free(area.data);
    pj_fn_free(fn);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("codec");
    TCase *batches = tcase_create("batches");
    tcase_add_test(batches, batch_of_every_argument_shape);
    tcase_add_test(batches, uniform_batch);
    tcase_add_test(batches, truncated_batches_refused);
    suite_add_tcase(s, batches);
    TCase *records = tcase_create("records");
    tcase_add_test(records, records_of_every_status);
    tcase_add_test(records, runs_of_successes);
    suite_add_tcase(s, records);
    return run_suite(s);
}
