/* libFuzzer target for the wire format's decoders (scripts/fuzz builds and runs it): a batch as
 * a worker receives it (pj__decode_batch) and result records as the parent receives them
 * (pj__apply_records).  Whatever the bytes, the answer is a code, never a crash, a hang or a
 * leak.  The first byte picks the decoder.
 *
 * With FUZZ_CODEC_SEEDS=dir, initialisation writes well-formed messages there first (a
 * signature with nested structs, every buffer kind, records with values and out buffers, a
 * C-string function's batch and records), so the fuzzer starts from deep inside the format.
 * Selector 'S' applies records to tasks of the C-string function; 'M' decodes a batch as a
 * worker that maps two shared objects does (ids 1 and 2, 4096 and 64 bytes, writable), so
 * that references into shared memory (codec.c's SHARED buffers) are fuzzed against real
 * mappings too. */
#include "process.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

struct inner { short a; char b; };
struct outer { struct inner in; long long c; float d; };

static long long outer_sum(struct outer o, const char *s, int *out, double *io)
{
    (void)s, (void)out, (void)io;
    return o.c;
}

static ffi_type *in_el[] = { &ffi_type_sint16, &ffi_type_sint8, NULL };
static ffi_type in_t = { .type = FFI_TYPE_STRUCT, .elements = in_el };
static ffi_type *out_el[] = { &in_t, &ffi_type_sint64, &ffi_type_float, NULL };
static ffi_type out_t = { .type = FFI_TYPE_STRUCT, .elements = out_el };

static int add(int a, int b)
{
    return a + b;
}

/* The seed tutorial's return value, as an owned C string. */
static char *describe(int seconds)
{
    char *s = malloc(32);
    if (s)
        snprintf(s, 32, "Done Sleeping...%d", seconds);
    return s;
}

static pj_fn *fn, *add_fn, *str_fn;
static pj_task *tasks[3], *add_tasks[3], *str_tasks[3], *shared_tasks[3];
static struct pj__mappings maps; /* what selector 'M' decodes against */
static int outbuf[4];
static double iobuf[2];

static void make_tasks(void)
{
    fn = PJ_FN(outer_sum, &ffi_type_sint64, &out_t, &ffi_type_pointer, &ffi_type_pointer,
               &ffi_type_pointer);
    struct outer o = { { 1, 2 }, 3, 4 };
    for (int k = 0; k < 3; k++)
        tasks[k] = pj_delayed(fn, &o, pj_cstr("seed"), pj_out(outbuf, sizeof outbuf),
                              pj_inout(iobuf, sizeof iobuf));
    add_fn = PJ_FN(add, &ffi_type_sint, &ffi_type_sint, &ffi_type_sint);
    for (int k = 0; k < 3; k++)
        add_tasks[k] = pj_delayed(add_fn, k, k);
    str_fn = PJ_FN(describe, &pj_type_str_owned, &ffi_type_sint);
    for (int k = 0; k < 3; k++)
        str_tasks[k] = pj_delayed(str_fn, k);
}

/* Two writable objects, as SHARE messages would hand them (a read-only one would install the
 * worker's SIGSEGV handler, which is libFuzzer's to keep). */
static void map_objects(void)
{
    for (uint64_t id = 1; id <= 2; id++) {
        uint64_t size = id == 1 ? 4096 : 64;
        int fd = memfd_create("fuzz-shared", MFD_CLOEXEC);
        unsigned char body[PJ__FRAME_SHARE_LEN];
        pj__frame_put_share(body, id, size, false);
        if (fd >= 0 && ftruncate(fd, (off_t)size) == 0)
            pj__mappings_share(&maps, body, sizeof body, fd);
        if (fd >= 0)
            close(fd);
    }
}

static void write_seed(const char *dir, const char *name, const void *p, size_t n)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    if (f) {
        fwrite(p, 1, n, f);
        fclose(f);
    }
}

/* Records as a worker leaves them in its region: a run of two values, a failure, a run. */
static void write_run_seed(const char *dir)
{
    _Atomic uint64_t used = 0;
    struct pj__area area = { &used, calloc(1, 512), 512 };
    struct pj__values run = { .head = SIZE_MAX, .vsize = 8 };
    long long v = 42;
    pj__values_append(&area, &run, 0, &v);
    pj__values_append(&area, &run, 1, &v);
    pj__values_close(&area, &run);
    struct pj__wbuf w = { 0 };
    pj_result f = { .status = PJ_EFAILED, .message = "failed", .fn = fn };
    pj__encode_record(&w, 1, &f, NULL, 0);
    memcpy(area.data + used, w.p, w.len);
    used += w.len;
    pj__values_append(&area, &run, 2, &v);
    unsigned char *seed = malloc(used + 1);
    seed[0] = 'R';
    memcpy(seed + 1, area.data, used);
    write_seed(dir, "runs", seed, used + 1);
    free(seed);
    pj__wbuf_free(&w);
    free(area.data);
}

/* A batch of the C-string function, and records of it: a string, a NULL return, a failure. */
static void write_string_seeds(const char *dir, struct pj__wbuf *w)
{
    char err[256];
    if (pj__encode_batch(w, PJ__MSG_BATCH, str_tasks, 0, 3, 0, &pj__fnref_pointer, NULL, err,
                         sizeof err) == 0) {
        w->p[sizeof(struct pj__msg_header) - 1] = 'B';
        write_seed(dir, "string-batch", w->p + sizeof(struct pj__msg_header) - 1,
                   w->len - sizeof(struct pj__msg_header) + 1);
    }
    w->len = 0;
    unsigned char sel = 'S';
    pj__wbuf_put(w, &sel, 1);
    pj_result r = { .status = 0, .fn = str_fn };
    r.value.heap = "Done Sleeping...1";
    pj__encode_record(w, 0, &r, NULL, 0);
    r.value.heap = NULL;
    pj__encode_record(w, 1, &r, NULL, 0);
    pj_result f = { .status = PJ_EFAILED, .message = "failed", .fn = str_fn };
    pj__encode_record(w, 2, &f, NULL, 0);
    write_seed(dir, "string-records", w->p, w->len);
}

/* A batch whose out and inout buffers lie in a shared allocation (object 1: the first one this
 * process makes), for selector 'M'. */
static void write_shared_seed(const char *dir, struct pj__wbuf *w)
{
    unsigned char *mem = pj_shared_alloc(4096);
    char err[256];
    struct outer o = { { 1, 2 }, 3, 4 };
    for (int k = 0; k < 3; k++)
        shared_tasks[k] = pj_delayed(fn, &o, pj_cstr("seed"), pj_out(mem + 64 * k, 16),
                                     pj_inout(mem + 1024 + 16 * k, 16));
    struct pj__sharing sh = { .run = 0, .max_nbytes = UINT64_MAX };
    if (mem && pj__encode_batch_shared(w, PJ__MSG_BATCH, shared_tasks, 0, 3, 0,
                                       &pj__fnref_pointer, &sh, NULL, err, sizeof err) == 0) {
        w->p[sizeof(struct pj__msg_header) - 1] = 'M';
        write_seed(dir, "shared-batch", w->p + sizeof(struct pj__msg_header) - 1,
                   w->len - sizeof(struct pj__msg_header) + 1);
    }
    for (int k = 0; k < 3; k++)
        pj_task_free(shared_tasks[k]);
    pj_shared_free(mem);
}

static void write_seeds(const char *dir)
{
    struct pj__wbuf w = { 0 };
    char err[256];
    if (pj__encode_batch(&w, PJ__MSG_BATCH, tasks, 0, 3, 1000, &pj__fnref_pointer, NULL, err,
                         sizeof err) == 0) {
        w.p[sizeof(struct pj__msg_header) - 1] = 'B'; /* the selector byte */
        write_seed(dir, "batch", w.p + sizeof(struct pj__msg_header) - 1,
                   w.len - sizeof(struct pj__msg_header) + 1);
    }
    if (pj__encode_batch(&w, PJ__MSG_BATCH, add_tasks, 0, 3, 0, &pj__fnref_pointer, NULL, err,
                         sizeof err) == 0) { /* a uniform batch: bare argument blocks */
        w.p[sizeof(struct pj__msg_header) - 1] = 'B';
        write_seed(dir, "uniform", w.p + sizeof(struct pj__msg_header) - 1,
                   w.len - sizeof(struct pj__msg_header) + 1);
    }
    write_run_seed(dir);
    w.len = 0;
    unsigned char sel = 'R';
    pj__wbuf_put(&w, &sel, 1);
    pj_result r = { .status = 0, .fn = fn };
    memset(r.value.bytes, 7, 8);
    struct pj__dbuf bufs[2] = { { 2, PJ_BUF_OUT, sizeof outbuf, (unsigned char *)outbuf },
                                { 3, PJ_BUF_INOUT, sizeof iobuf, (unsigned char *)iobuf } };
    pj__encode_record(&w, 1, &r, bufs, 2);
    pj_result f = { .status = PJ_EFAILED, .message = "failed", .fn = fn };
    pj__encode_record(&w, 2, &f, NULL, 0);
    write_seed(dir, "records", w.p, w.len);
    write_string_seeds(dir, &w);
    write_shared_seed(dir, &w);
    pj__wbuf_free(&w);
}

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    make_tasks();
    map_objects();
    const char *dir = getenv("FUZZ_CODEC_SEEDS");
    if (dir)
        write_seeds(dir);
    return 0;
}

static void fuzz_batch(const unsigned char *p, size_t n, const struct pj__mappings *m)
{
    /* The worker reads a body into its own 16-aligned buffer: so does the fuzzer. */
    unsigned char *body = malloc(n ? n : 1);
    memcpy(body, p, n);
    struct pj__decoded d;
    char err[256];
    if (pj__decode_batch_mapped(body, n, &pj__fnref_pointer, m, &d, err, sizeof err) == 0)
        pj__decoded_free(&d);
    free(body);
}

static void fuzz_records(const unsigned char *p, size_t n, pj_task **of, const pj_fn *f)
{
    pj_result results[3];
    for (int k = 0; k < 3; k++)
        results[k] = (pj_result){ .status = PJ__PENDING, .fn = f };
    struct pj__records b = { .tasks = of, .results = results, .count = 3 };
    pj__apply_records(b, p, n);
    for (int k = 0; k < 3; k++)
        pj__result_release(&results[k]);
}

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size);
int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size)
{
    if (size == 0)
        return 0;
    if (data[0] == 'R')
        fuzz_records(data + 1, size - 1, tasks, fn);
    else if (data[0] == 'S')
        fuzz_records(data + 1, size - 1, str_tasks, str_fn);
    else
        fuzz_batch(data + 1, size - 1, data[0] == 'M' ? &maps : NULL);
    return 0;
}
