/* Large data without copies (issue 13), over every backend: inputs above config.max_nbytes
 * placed once per run in read-only shared memory, pj_shared_alloc's memory read and written in
 * place, the bytes that cross per task, nothing left in /dev/shm or /tmp (after a run, after a
 * SIGKILL of the parent), and the bad inputs refused with a code and a message. */
#include <parjob.h>

#include "process.h" /* pj__wire_bytes: what crosses between parent and workers */

#include "helpers.h"

#include <dirent.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static const char *const backends[] = { "sequential", "threading", "fork", "spawn" };
#define N_BACKENDS ((int)(sizeof backends / sizeof backends[0]))
#define N_TASKS 64

static bool is_process(int i)
{
    return i >= 2;
}

/* ---- the tasks ------------------------------------------------------------------------------ */

/* A checksum that depends on every word and its place. */
static uint64_t checksum(const uint64_t *p, uint64_t n)
{
    uint64_t s = 0;
    for (uint64_t k = 0; k < n; k++)
        s = s * 31 + (p[k] ^ k);
    return s;
}

static void fill_words(uint64_t *p, uint64_t n, uint64_t first)
{
    for (uint64_t k = 0; k < n; k++)
        p[k] = first + k * 7;
}

/* Doubles every word in place (pj_inout). */
static void double_words(uint64_t *p, uint64_t n)
{
    for (uint64_t k = 0; k < n; k++)
        p[k] *= 2;
}

/* Writes one byte into what it was given as an input. */
static int scribble(unsigned char *p, uint64_t n)
{
    p[n / 2] ^= 1;
    return 0;
}

static int null_write(unsigned char *p, uint64_t n)
{
    (void)p;
    volatile unsigned char *nowhere = NULL;
    nowhere[n & 1] = 1;
    return 0;
}

static int raise_segv(unsigned char *p, uint64_t n)
{
    (void)p, (void)n;
    raise(SIGSEGV);
    return 0;
}

static pj_parallel *par_for(int i, long long max_nbytes)
{
    pj_parallel *par = pj_parallel_new(&(pj_config){
        .backend = backends[i], .n_jobs = i == 0 ? 1 : 2, .max_nbytes = max_nbytes,
        .on_error = PJ_ON_ERROR_CONTINUE });
    ck_assert_msg(par != NULL, "pj_parallel_new(%s): %s", backends[i], pj_last_errmsg());
    return par;
}

static void free_tasks(pj_task **t, size_t n)
{
    for (size_t k = 0; k < n; k++)
        pj_task_free(t[k]);
}

/* Fills words[0..n) with what fill_words(words, n, 1) writes. */
static void fill_expected(uint64_t *w, size_t n)
{
    fill_words(w, n, 1);
}

/* Task k checksums the whole input when k is a multiple of 8, else its 1/64th slice. */
static void build_checksums(pj_fn *fn, const uint64_t *words, size_t n, pj_task **tasks,
                            uint64_t *want)
{
    size_t slice = n / N_TASKS;
    for (int k = 0; k < N_TASKS; k++) {
        const uint64_t *p = k % 8 ? words + (size_t)k * slice : words;
        uint64_t len = k % 8 ? slice : n;
        tasks[k] = pj_delayed(fn, pj_in(p, len * sizeof *p), len);
        ck_assert_msg(tasks[k] != NULL, "%s", pj_last_errmsg());
        want[k] = checksum(p, len);
    }
}

static void check_sums(const pj_results *res, const uint64_t *want)
{
    ck_assert_uint_eq(pj_results_count_status(res, 0), N_TASKS);
    for (int k = 0; k < N_TASKS; k++)
        ck_assert_uint_eq(pj_result_u64(pj_results_at(res, (size_t)k)), want[k]);
}

/* ---- inputs above max_nbytes ---------------------------------------------------------------- */

/* 128 MiB of malloc'd input (and its one sealed copy: 256 MiB in all) read by 64 tasks: the
 * sums are right and, on process backends, the bytes crossing per task stay at a few
 * hundred — the input is placed once, not copied into any batch. */
START_TEST(a_large_input_reaches_every_task_without_copies)
{
    size_t n = ((size_t)128 << 20) / sizeof(uint64_t);
    uint64_t *words = malloc(n * sizeof *words);
    ck_assert_ptr_nonnull(words);
    fill_expected(words, n);
    pj_fn *fn = PJ_FN(checksum, &ffi_type_uint64, &ffi_type_pointer, &ffi_type_uint64);
    pj_task *tasks[N_TASKS];
    uint64_t want[N_TASKS];
    build_checksums(fn, words, n, tasks, want);
    pj_parallel *par = par_for(_i, 0);
    pj_results *res;
    uint64_t before = atomic_load(&pj__wire_bytes);
    int rc = pj_run(par, tasks, N_TASKS, &res);
    uint64_t per_task = (atomic_load(&pj__wire_bytes) - before) / N_TASKS;
    ck_assert_msg(rc == 0, "%s: %s", backends[_i], pj_last_errmsg());
    check_sums(res, want);
    if (is_process(_i))
        ck_assert_msg(per_task < 1000, "%s: %llu bytes crossed per task", backends[_i],
                      (unsigned long long)per_task);
    pj_results_free(res);
    /* A second run of the same handle and tasks: placed again, still right. */
    words[5] ^= 0xff;
    want[0] = checksum(words, n);
    ck_assert_int_eq(pj_run(par, tasks, N_TASKS, &res), 0);
    ck_assert_uint_eq(pj_result_u64(pj_results_at(res, 0)), want[0]);
    pj_results_free(res);
    pj_parallel_free(par);
    free_tasks(tasks, N_TASKS);
    pj_fn_free(fn);
    free(words);
}
END_TEST

/* max_nbytes off: every task's batch carries its input (what the counter measures), and the
 * results are the same. */
START_TEST(max_nbytes_off_copies_each_input)
{
    size_t n = ((size_t)4 << 20) / sizeof(uint64_t);
    uint64_t *words = malloc(n * sizeof *words);
    ck_assert_ptr_nonnull(words);
    fill_expected(words, n);
    pj_fn *fn = PJ_FN(checksum, &ffi_type_uint64, &ffi_type_pointer, &ffi_type_uint64);
    pj_task *tasks[N_TASKS];
    uint64_t want[N_TASKS];
    build_checksums(fn, words, n, tasks, want);
    pj_parallel *par = par_for(_i, PJ_MAX_NBYTES_OFF);
    pj_results *res;
    uint64_t before = atomic_load(&pj__wire_bytes);
    ck_assert_int_eq(pj_run(par, tasks, N_TASKS, &res), 0);
    uint64_t crossed = atomic_load(&pj__wire_bytes) - before;
    check_sums(res, want);
    if (is_process(_i)) /* 8 whole inputs and 56 slices of 1/64th */
        ck_assert_uint_ge(crossed, (8 + 56 / 64.0) * n * sizeof *words);
    pj_results_free(res);
    pj_parallel_free(par);
    free_tasks(tasks, N_TASKS);
    pj_fn_free(fn);
    free(words);
}
END_TEST

/* A task that writes into an input placed read-only dies of it, and is told why; a task that
 * crashes otherwise is not told that. */
START_TEST(a_task_writing_into_a_large_input_is_told_it_is_read_only)
{
    if (!is_process(_i))
        return; /* threads write into the caller's memory: nothing to protect there */
    size_t n = (size_t)2 << 20;
    unsigned char *in = calloc(1, n);
    ck_assert_ptr_nonnull(in);
    pj_fn *fn = PJ_FN(scribble, &ffi_type_sint, &ffi_type_pointer, &ffi_type_uint64);
    pj_fn *nf = PJ_FN(null_write, &ffi_type_sint, &ffi_type_pointer, &ffi_type_uint64);
    pj_fn *rf = PJ_FN(raise_segv, &ffi_type_sint, &ffi_type_pointer, &ffi_type_uint64);
    pj_task *tasks[4] = { pj_delayed(fn, pj_in(in, n), (uint64_t)n),
                          pj_delayed(nf, pj_in(in, n), (uint64_t)n),
                          pj_delayed(fn, pj_inout(in, n), (uint64_t)n),
                          pj_delayed(rf, pj_in(in, n), (uint64_t)n) };
    pj_parallel *par = par_for(_i, 0);
    pj_results *res;
    pj_run(par, tasks, 4, &res);
    const pj_result *r = pj_results_at(res, 0);
    ck_assert_int_eq(r->status, PJ_ECRASHED);
    ck_assert_int_eq(r->code, SIGSEGV);
    ck_assert_msg(strstr(r->message, "read-only input"), "%s", r->message);
    r = pj_results_at(res, 1);
    ck_assert_int_eq(r->status, PJ_ECRASHED);
    ck_assert_msg(!strstr(r->message, "read-only"), "%s", r->message);
    r = pj_results_at(res, 2); /* inout: the worker's copy, written, copied back */
    ck_assert_int_eq(r->status, 0);
    ck_assert_uint_eq(in[n / 2], 1);
    r = pj_results_at(res, 3); /* a SIGSEGV sent, not a fault: still the crash it is */
    ck_assert_int_eq(r->status, PJ_ECRASHED);
    ck_assert_int_eq(r->code, SIGSEGV);
    ck_assert_msg(!strstr(r->message, "read-only"), "%s", r->message);
    pj_results_free(res);
    pj_parallel_free(par);
    free_tasks(tasks, 4);
    pj_fn_free(fn);
    pj_fn_free(nf);
    pj_fn_free(rf);
    free(in);
}
END_TEST

/* ---- shared allocations --------------------------------------------------------------------- */

/* A 256 MiB shared allocation read by 64 tasks: no byte of it crosses. */
START_TEST(a_shared_allocation_is_read_in_place)
{
    size_t n = ((size_t)256 << 20) / sizeof(uint64_t);
    uint64_t *words = pj_shared_alloc(n * sizeof *words);
    ck_assert_msg(words != NULL, "%s", pj_last_errmsg());
    fill_expected(words, n);
    pj_fn *fn = PJ_FN(checksum, &ffi_type_uint64, &ffi_type_pointer, &ffi_type_uint64);
    pj_task *tasks[N_TASKS];
    uint64_t want[N_TASKS];
    build_checksums(fn, words, n, tasks, want);
    pj_parallel *par = par_for(_i, PJ_MAX_NBYTES_OFF); /* in place even so */
    pj_results *res;
    uint64_t before = atomic_load(&pj__wire_bytes);
    int rc = pj_run(par, tasks, N_TASKS, &res);
    uint64_t per_task = (atomic_load(&pj__wire_bytes) - before) / N_TASKS;
    ck_assert_msg(rc == 0, "%s: %s", backends[_i], pj_last_errmsg());
    check_sums(res, want);
    if (is_process(_i))
        ck_assert_msg(per_task < 1000, "%s: %llu bytes crossed per task", backends[_i],
                      (unsigned long long)per_task);
    pj_results_free(res);
    pj_parallel_free(par);
    free_tasks(tasks, N_TASKS);
    pj_fn_free(fn);
    ck_assert_int_eq(pj_shared_free(words), 0);
}
END_TEST

/* 64 tasks each write a disjoint slice (pj_out), then 64 double them (pj_inout): the caller
 * sees every byte, and no byte crossed back. */
START_TEST(tasks_write_disjoint_slices_of_a_shared_allocation)
{
    size_t n = ((size_t)64 << 20) / sizeof(uint64_t), slice = n / N_TASKS;
    uint64_t *words = pj_shared_alloc(n * sizeof *words);
    ck_assert_msg(words != NULL, "%s", pj_last_errmsg());
    pj_fn *fill = PJ_FN(fill_words, &ffi_type_void, &ffi_type_pointer, &ffi_type_uint64,
                        &ffi_type_uint64);
    pj_fn *dbl = PJ_FN(double_words, &ffi_type_void, &ffi_type_pointer, &ffi_type_uint64);
    pj_task *tasks[N_TASKS], *twice[N_TASKS];
    for (int k = 0; k < N_TASKS; k++) {
        uint64_t *p = words + (size_t)k * slice;
        tasks[k] = pj_delayed(fill, pj_out(p, slice * sizeof *p), (uint64_t)slice,
                              (uint64_t)(k * slice * 7 + 1));
        twice[k] = pj_delayed(dbl, pj_inout(p, slice * sizeof *p), (uint64_t)slice);
    }
    pj_parallel *par = par_for(_i, 0);
    pj_results *res;
    uint64_t before = atomic_load(&pj__wire_bytes);
    ck_assert_msg(pj_run(par, tasks, N_TASKS, &res) == 0, "%s", pj_last_errmsg());
    uint64_t per_task = (atomic_load(&pj__wire_bytes) - before) / N_TASKS;
    pj_results_free(res);
    for (size_t k = 0; k < n; k++)
        if (words[k] != 1 + k * 7)
            ck_abort_msg("%s: word %zu is %llu", backends[_i], k, (unsigned long long)words[k]);
    if (is_process(_i))
        ck_assert_msg(per_task < 1000, "%s: %llu bytes crossed per task", backends[_i],
                      (unsigned long long)per_task);
    ck_assert_int_eq(pj_run(par, twice, N_TASKS, &res), 0);
    pj_results_free(res);
    for (size_t k = 0; k < n; k++)
        if (words[k] != 2 * (1 + k * 7))
            ck_abort_msg("%s: word %zu is %llu", backends[_i], k, (unsigned long long)words[k]);
    pj_parallel_free(par);
    free_tasks(tasks, N_TASKS);
    free_tasks(twice, N_TASKS);
    pj_fn_free(fill);
    pj_fn_free(dbl);
    ck_assert_int_eq(pj_shared_free(words), 0);
}
END_TEST

/* Futures see shared allocations in place too (their inputs are not placed automatically). */
START_TEST(futures_write_into_a_shared_allocation)
{
    size_t n = ((size_t)8 << 20) / sizeof(uint64_t), slice = n / 8;
    uint64_t *words = pj_shared_alloc(n * sizeof *words);
    ck_assert_ptr_nonnull(words);
    pj_fn *fill = PJ_FN(fill_words, &ffi_type_void, &ffi_type_pointer, &ffi_type_uint64,
                        &ffi_type_uint64);
    pj_executor *ex = pj_executor_new(&(pj_config){ .backend = backends[_i],
                                                    .n_jobs = _i == 0 ? 1 : 2 });
    ck_assert_msg(ex != NULL, "%s", pj_last_errmsg());
    pj_task *tasks[8];
    pj_future *fs[8];
    uint64_t before = atomic_load(&pj__wire_bytes);
    for (int k = 0; k < 8; k++) {
        uint64_t *p = words + (size_t)k * slice;
        tasks[k] = pj_delayed(fill, pj_out(p, slice * sizeof *p), (uint64_t)slice,
                              (uint64_t)(k * slice * 7 + 1));
        ck_assert_ptr_nonnull(fs[k] = pj_submit(ex, tasks[k]));
    }
    for (int k = 0; k < 8; k++) {
        const pj_result *r;
        ck_assert_int_eq(pj_future_result(fs[k], PJ_FOREVER, &r), 0);
    }
    uint64_t per_task = (atomic_load(&pj__wire_bytes) - before) / 8;
    for (size_t k = 0; k < n; k++)
        if (words[k] != 1 + k * 7)
            ck_abort_msg("%s: word %zu is %llu", backends[_i], k, (unsigned long long)words[k]);
    if (is_process(_i))
        ck_assert_msg(per_task < 1000, "%llu bytes per task", (unsigned long long)per_task);
    for (int k = 0; k < 8; k++) {
        pj_future_free(fs[k]);
        pj_task_free(tasks[k]);
    }
    pj_executor_free(ex);
    pj_fn_free(fill);
    ck_assert_int_eq(pj_shared_free(words), 0);
}
END_TEST

/* How many mappings of memfds named name the process pid has ("" for either of parjob's
 * shared objects: allocations and sealed inputs, not the pool's own region). */
static int count_mappings(int pid, const char *name)
{
    if (!name[0])
        return count_mappings(pid, "memfd:parjob-shared") +
               count_mappings(pid, "memfd:parjob-input");
    char path[64], line[512];
    snprintf(path, sizeof path, "/proc/%d/maps", pid);
    FILE *f = fopen(path, "re");
    int n = 0;
    while (f && fgets(line, sizeof line, f))
        n += strstr(line, name) != NULL;
    if (f)
        fclose(f);
    return n;
}

/* Workers map an object once however many tasks name it, and let it go when it dies. */
START_TEST(workers_map_once_and_let_go)
{
    if (!is_process(_i))
        return;
    size_t n = (size_t)8 << 20;
    uint64_t *words = pj_shared_alloc(n);
    ck_assert_ptr_nonnull(words);
    unsigned char *in = calloc(1, n);
    pj_fn *fn = PJ_FN(checksum, &ffi_type_uint64, &ffi_type_pointer, &ffi_type_uint64);
    pj_task *tasks[N_TASKS];
    size_t slice = n / N_TASKS; /* above max_nbytes: placed, as a part of the whole's copy */
    for (int k = 0; k < N_TASKS; k++)
        tasks[k] = k % 2 ? pj_delayed(fn, pj_in(words, n), (uint64_t)(n / 8))
                 : k % 4 ? pj_delayed(fn, pj_in(in + (size_t)k * slice, slice), (uint64_t)(slice / 8))
                         : pj_delayed(fn, pj_in(in, n), (uint64_t)(n / 8));
    pj_parallel *par = pj_parallel_new(&(pj_config){ .backend = backends[_i], .n_jobs = 2,
                                                     .batch_size = 1, .max_nbytes = 1 << 16 });
    pj_iter *it = pj_start(par, tasks, N_TASKS); /* the run stays open: its copy too */
    ck_assert_ptr_nonnull(it);
    pj_result r;
    while (pj_next(it, &r) == 0)
        ck_assert_int_eq(r.status, 0);
    int kids[16], nk = pj_test_list_children(0, kids, 16), mapped = 0;
    ck_assert_int_ge(nk, 1);
    for (int k = 0; k < nk; k++) { /* 32 tasks named each object: one mapping per worker */
        ck_assert_int_le(count_mappings(kids[k], "memfd:parjob-shared"), 1);
        ck_assert_int_le(count_mappings(kids[k], "memfd:parjob-input"), 1);
        mapped += count_mappings(kids[k], "");
    }
    ck_assert_int_ge(mapped, 3);
    ck_assert_int_eq(pj_iter_close(it), 0);
    ck_assert_int_eq(pj_shared_free(words), 0);
    /* The run's sealed copy went at its end, the allocation now: the workers are told. */
    double give_up = now_s() + 10;
    for (int k = 0; k < nk; k++)
        while (count_mappings(kids[k], "") && now_s() < give_up)
            sleep_us(10000);
    for (int k = 0; k < nk; k++)
        ck_assert_int_eq(count_mappings(kids[k], ""), 0);
    pj_parallel_free(par);
    free_tasks(tasks, N_TASKS);
    pj_fn_free(fn);
    free(in);
}
END_TEST

/* ---- bad input ------------------------------------------------------------------------------ */

START_TEST(a_buffer_past_the_end_of_a_shared_allocation_is_refused)
{
    size_t n = 4096;
    unsigned char *p = pj_shared_alloc(n);
    ck_assert_ptr_nonnull(p);
    pj_fn *fn = PJ_FN(checksum, &ffi_type_uint64, &ffi_type_pointer, &ffi_type_uint64);
    pj_task *t = pj_delayed(fn, pj_in(p + n - 8, 16), (uint64_t)2);
    if (t) { /* refused at pj_run, if not at pj_delayed */
        pj_parallel *par = par_for(_i, 0);
        pj_results *res = NULL;
        ck_assert_int_eq(pj_run(par, &t, 1, &res), PJ_EINVAL);
        pj_results_free(res);
        pj_parallel_free(par);
    }
    ck_assert_int_eq(pj_last_error(), PJ_EINVAL);
    ck_assert_msg(strstr(pj_last_errmsg(), "past the end of their shared allocation"), "%s",
                  pj_last_errmsg());
    pj_task_free(t);
    pj_fn_free(fn);
    ck_assert_int_eq(pj_shared_free(p), 0);
}
END_TEST

START_TEST(a_pointer_used_after_pj_shared_free_is_refused)
{
    size_t n = 1 << 20;
    uint64_t *p = pj_shared_alloc(n);
    ck_assert_ptr_nonnull(p);
    pj_fn *fn = PJ_FN(checksum, &ffi_type_uint64, &ffi_type_pointer, &ffi_type_uint64);
    pj_task *t = pj_delayed(fn, pj_in(p + 16, 64), (uint64_t)8);
    ck_assert_ptr_nonnull(t);
    ck_assert_int_eq(pj_shared_free(p), 0);
    pj_parallel *par = par_for(_i, 0);
    pj_results *res = NULL;
    ck_assert_int_eq(pj_run(par, &t, 1, &res), PJ_EINVAL);
    ck_assert_msg(strstr(pj_last_errmsg(), "freed with pj_shared_free"), "%s",
                  pj_last_errmsg());
    pj_results_free(res);
    ck_assert_int_eq(pj_shared_free(p), PJ_EINVAL); /* twice */
    ck_assert_msg(strstr(pj_last_errmsg(), "freed already"), "%s", pj_last_errmsg());
    pj_parallel_free(par);
    pj_task_free(t);
    pj_fn_free(fn);
}
END_TEST

static int one_task(void *state, pj_task **task)
{
    pj_task **left = state;
    *task = *left;
    *left = NULL;
    return *task != NULL;
}

/* The same through a producer and through the executor, on every backend: a thread would
 * fault on the unmapped bytes, a worker map none. */
START_TEST(a_freed_allocation_is_refused_from_a_producer_and_an_executor)
{
    size_t n = 1 << 20;
    uint64_t *p = pj_shared_alloc(n);
    ck_assert_ptr_nonnull(p);
    pj_fn *fn = PJ_FN(checksum, &ffi_type_uint64, &ffi_type_pointer, &ffi_type_uint64);
    pj_task *produced = pj_delayed(fn, pj_in(p + 16, 64), (uint64_t)8);
    pj_task *submitted = pj_delayed(fn, pj_in(p + 16, 64), (uint64_t)8);
    ck_assert_ptr_nonnull(produced);
    ck_assert_ptr_nonnull(submitted);
    ck_assert_int_eq(pj_shared_free(p), 0);

    pj_parallel *par = par_for(_i, 0);
    pj_results *res = NULL;
    ck_assert_int_eq(pj_run_source(par, one_task, &produced, &res), PJ_EINVAL);
    ck_assert_msg(strstr(pj_last_errmsg(), "freed with pj_shared_free"), "%s",
                  pj_last_errmsg());
    ck_assert_uint_eq(pj_results_count(res), 1);
    ck_assert_int_eq(pj_results_at(res, 0)->status, PJ_EINVAL);
    pj_results_free(res);
    pj_parallel_free(par);

    pj_executor *ex = pj_executor_new(&(pj_config){ .backend = backends[_i],
                                                    .n_jobs = _i == 0 ? 1 : 2 });
    ck_assert_msg(ex != NULL, "%s", pj_last_errmsg());
    ck_assert_ptr_null(pj_submit(ex, submitted));
    ck_assert_int_eq(pj_last_error(), PJ_EINVAL);
    ck_assert_msg(strstr(pj_last_errmsg(), "freed with pj_shared_free"), "%s",
                  pj_last_errmsg());
    pj_executor_free(ex);
    pj_task_free(submitted);
    pj_fn_free(fn);
}
END_TEST

START_TEST(an_allocation_the_machine_cannot_give_is_refused)
{
    errno = 0;
    ck_assert_ptr_null(pj_shared_alloc((size_t)1 << 52));
    ck_assert_int_eq(pj_last_error(), PJ_ENOMEM);
    ck_assert_msg(strstr(pj_last_errmsg(), "more than this"), "%s", pj_last_errmsg());
    ck_assert_ptr_null(pj_shared_alloc(0));
    ck_assert_int_eq(pj_last_error(), PJ_EINVAL);
    int local;
    ck_assert_int_eq(pj_shared_free(&local), PJ_EINVAL);
    ck_assert_int_eq(pj_shared_free(NULL), 0);
}
END_TEST

/* ---- nothing left behind -------------------------------------------------------------------- */

/* The names in dir, newline-separated, into buf. */
static void list_dir(const char *dir, char *buf, size_t len)
{
    buf[0] = 0;
    DIR *d = opendir(dir);
    struct dirent *e;
    size_t at = 0;
    while (d && (e = readdir(d)) && at + 300 < len)
        at += (size_t)snprintf(buf + at, len - at, "%s\n", e->d_name);
    if (d)
        closedir(d);
}

/* Names in `after` that `before` lacks, into out ("" when none).  Only names made by this
 * test's processes are ours: others share /tmp, so a name is counted when it says parjob (the
 * other tests name their temporary files pjtest-...). */
static void new_names(const char *before, char *after, char *out, size_t len)
{
    out[0] = 0;
    for (char *save, *name = strtok_r(after, "\n", &save); name; name = strtok_r(NULL, "\n", &save)) {
        char line[300];
        snprintf(line, sizeof line, "\n%s\n", name);
        char with[302];
        snprintf(with, sizeof with, "\n%s", before);
        if (!strstr(with, line) && strstr(name, "parjob") &&
            strlen(out) + strlen(name) + 2 < len) {
            strcat(out, name);
            strcat(out, " ");
        }
    }
}

static void run_everything(int i)
{
    size_t n = (size_t)2 << 20;
    uint64_t *words = pj_shared_alloc(n);
    unsigned char *in = calloc(1, n);
    pj_fn *fn = PJ_FN(checksum, &ffi_type_uint64, &ffi_type_pointer, &ffi_type_uint64);
    pj_task *tasks[8];
    for (int k = 0; k < 8; k++)
        tasks[k] = pj_delayed(fn, pj_in(k % 2 ? (void *)words : in, n), (uint64_t)(n / 8));
    pj_parallel *par = par_for(i, 0);
    pj_results *res;
    ck_assert_int_eq(pj_run(par, tasks, 8, &res), 0);
    pj_results_free(res);
    pj_parallel_free(par);
    free_tasks(tasks, 8);
    pj_fn_free(fn);
    free(in);
    pj_shared_free(words);
}

START_TEST(no_file_is_left_after_a_run)
{
    static char shm0[1 << 16], tmp0[1 << 16], shm1[1 << 16], tmp1[1 << 16], extra[4096];
    list_dir("/dev/shm", shm0, sizeof shm0);
    list_dir("/tmp", tmp0, sizeof tmp0);
    run_everything(_i);
    list_dir("/dev/shm", shm1, sizeof shm1);
    list_dir("/tmp", tmp1, sizeof tmp1);
    new_names(shm0, shm1, extra, sizeof extra);
    ck_assert_msg(!extra[0], "left in /dev/shm: %s", extra);
    new_names(tmp0, tmp1, extra, sizeof extra);
    ck_assert_msg(!extra[0], "left in /tmp: %s", extra);
}
END_TEST

static void sleep_then_sum(const uint64_t *p, uint64_t n)
{
    (void)p, (void)n;
    sleep_us(10 * 1000 * 1000);
}

/* A parent killed by SIGKILL in the middle of a run: its workers die with it, and neither a
 * file nor a mapping of its shared memory stays. */
START_TEST(no_file_or_mapping_is_left_after_sigkill)
{
    if (!is_process(_i))
        return;
    static char shm0[1 << 16], tmp0[1 << 16], shm1[1 << 16], tmp1[1 << 16], extra[4096];
    list_dir("/dev/shm", shm0, sizeof shm0);
    list_dir("/tmp", tmp0, sizeof tmp0);
    int ready[2];
    ck_assert_int_eq(pipe(ready), 0);
    pid_t child = fork();
    if (child == 0) {
        close(ready[0]);
        size_t n = (size_t)4 << 20;
        uint64_t *words = pj_shared_alloc(n);
        unsigned char *in = calloc(1, n);
        pj_fn *fn = PJ_FN(sleep_then_sum, &ffi_type_void, &ffi_type_pointer, &ffi_type_uint64);
        pj_task *tasks[2] = { pj_delayed(fn, pj_in(words, n), (uint64_t)1),
                              pj_delayed(fn, pj_in(in, n), (uint64_t)1) };
        pj_parallel *par = pj_parallel_new(&(pj_config){ .backend = backends[_i], .n_jobs = 2,
                                                         .batch_size = 1 });
        pj_iter *it = pj_start(par, tasks, 2);
        (void)it;
        ssize_t k = write(ready[1], "x", 1);
        (void)k;
        pause();
        _exit(0);
    }
    close(ready[1]);
    char c;
    ck_assert_int_eq(read(ready[0], &c, 1), 1);
    close(ready[0]);
    /* Once both objects are mapped in the workers, the run is under way: kill. */
    int workers[16], nw = 0, mapped = 0;
    for (double give_up = now_s() + 30; mapped < 2 && now_s() < give_up; sleep_us(10000)) {
        nw = pj_test_list_children(child, workers, 16);
        mapped = 0;
        for (int k = 0; k < nw; k++)
            mapped += count_mappings(workers[k], "");
    }
    kill(child, SIGKILL);
    int st;
    ck_assert_int_eq(waitpid(child, &st, 0), child);
    double give_up = now_s() + 10;
    for (int k = 0; k < nw; k++)
        while (kill(workers[k], 0) == 0 && now_s() < give_up)
            sleep_us(10000);
    for (int k = 0; k < nw; k++)
        ck_assert_msg(kill(workers[k], 0) != 0, "worker %d outlived its parent", workers[k]);
    ck_assert_int_ge(mapped, 2); /* the test saw the memory in use */
    list_dir("/dev/shm", shm1, sizeof shm1);
    list_dir("/tmp", tmp1, sizeof tmp1);
    new_names(shm0, shm1, extra, sizeof extra);
    ck_assert_msg(!extra[0], "left in /dev/shm: %s", extra);
    new_names(tmp0, tmp1, extra, sizeof extra);
    ck_assert_msg(!extra[0], "left in /tmp: %s", extra);
}
END_TEST

/* A producer's tasks, each with its own copied input above max_nbytes (pj_in_copy): parjob
 * frees each task as its result comes back, so a later task's copy may be allocated where an
 * earlier one lay.  Every task must read its own bytes, not the sealed copy of a task that
 * lay at that address before. */
struct copies {
    int k, n;
    pj_fn *fn;
    uint64_t *want;
};

static int next_copy(void *state, pj_task **task)
{
    struct copies *c = state;
    if (c->k == c->n)
        return 0;
    uint64_t words[512]; /* 4 KiB: above max_nbytes, and reused for every task */
    fill_words(words, 512, (uint64_t)c->k * 1000);
    c->want[c->k] = checksum(words, 512);
    *task = pj_delayed(c->fn, pj_in_copy(words, sizeof words), (uint64_t)512);
    c->k++;
    return *task ? 1 : -1;
}

START_TEST(copied_inputs_of_a_producer_each_reach_their_task)
{
    pj_fn *fn = PJ_FN(checksum, &ffi_type_uint64, &ffi_type_pointer, &ffi_type_uint64);
    uint64_t want[N_TASKS];
    struct copies c = { 0, N_TASKS, fn, want };
    pj_parallel *par = pj_parallel_new(&(pj_config){
        .backend = backends[_i], .n_jobs = _i == 0 ? 1 : 2, .max_nbytes = 1024, .batch_size = 1,
        .pre_dispatch = "2", .on_error = PJ_ON_ERROR_CONTINUE });
    ck_assert_msg(par != NULL, "%s", pj_last_errmsg());
    pj_results *res;
    int rc = pj_run_source(par, next_copy, &c, &res);
    ck_assert_msg(rc == 0, "%s: %s", backends[_i], pj_last_errmsg());
    check_sums(res, want);
    pj_results_free(res);
    pj_parallel_free(par);
    pj_fn_free(fn);
}
END_TEST

static Suite *shared_suite(void)
{
    Suite *s = suite_create("shared");
    const struct loop_case cases[] = {
        { "large_input", a_large_input_reaches_every_task_without_copies },
        { "max_nbytes_off", max_nbytes_off_copies_each_input },
        { "read_only", a_task_writing_into_a_large_input_is_told_it_is_read_only },
        { "shared_read", a_shared_allocation_is_read_in_place },
        { "shared_write", tasks_write_disjoint_slices_of_a_shared_allocation },
        { "map_once", workers_map_once_and_let_go },
        { "futures", futures_write_into_a_shared_allocation },
        { "past_the_end", a_buffer_past_the_end_of_a_shared_allocation_is_refused },
        { "after_free", a_pointer_used_after_pj_shared_free_is_refused },
        { "after_free_lazy", a_freed_allocation_is_refused_from_a_producer_and_an_executor },
        { "no_file", no_file_is_left_after_a_run },
        { "sigkill", no_file_or_mapping_is_left_after_sigkill },
        { "producer_copies", copied_inputs_of_a_producer_each_reach_their_task },
    };
    add_loop_cases(s, cases, sizeof cases / sizeof cases[0], 300, N_BACKENDS);
    TCase *tc = tcase_create("too_large");
    tcase_add_test(tc, an_allocation_the_machine_cannot_give_is_refused);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return run_suite(shared_suite());
}
