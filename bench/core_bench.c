/* Issue 2's figures: ns per pj_delayed, and tiny-task throughput of the threading backend
 * against a serial ffi_call loop over the same calls, in the same run.
 *   core_bench [n_tasks]   (default 1 000 000) */
#include <parjob.h>

#include "bench_util.h"

#include <string.h>

static int add(int a, int b)
{
    return a + b;
}

#define MAX_RUNS 32

static double serial_ffi_loop(pj_fn *fn, const int *xs, size_t n)
{
    ffi_cif cif;
    ffi_type *args[] = { &ffi_type_sint, &ffi_type_sint };
    ffi_prep_cif(&cif, FFI_DEFAULT_ABI, 2, &ffi_type_sint, args);
    ffi_arg *out = malloc(n * sizeof *out);
    (void)fn;
    double t0 = bench_now();
    for (size_t i = 0; i < n; i++) {
        int a = xs[i], b = 1;
        void *argv[] = { &a, &b };
        ffi_call(&cif, FFI_FN(add), &out[i], argv);
    }
    double t = bench_now() - t0;
    volatile ffi_arg sink = out[n - 1];
    (void)sink;
    free(out);
    return t;
}

static double run_parallel(pj_parallel *par, pj_task **tasks, size_t n)
{
    pj_results *res;
    double t0 = bench_now();
    int rc = pj_run(par, tasks, n, &res);
    double t = bench_now() - t0;
    if (rc || pj_result_int(pj_results_at(res, n - 1)) != (int)(n - 1) + 1) {
        fprintf(stderr, "core_bench: run failed: %s\n", pj_parallel_errmsg(par));
        exit(1);
    }
    pj_results_free(res);
    return t;
}

int main(int argc, char **argv)
{
    size_t n = argc > 1 ? strtoul(argv[1], NULL, 10) : 1000000;
    int runs = bench_runs(5);
    runs = runs > MAX_RUNS ? MAX_RUNS : runs;
    pj_fn *fn = PJ_FN(add, &ffi_type_sint, &ffi_type_sint, &ffi_type_sint);
    int *xs = malloc(n * sizeof *xs);
    pj_task **tasks = malloc(n * sizeof *tasks);
    for (size_t i = 0; i < n; i++)
        xs[i] = (int)i;

    double v[MAX_RUNS];
    for (int r = 0; r < runs; r++) {
        if (r)
            for (size_t i = 0; i < n; i++)
                pj_task_free(tasks[i]);
        double t0 = bench_now();
        for (size_t i = 0; i < n; i++)
            tasks[i] = pj_delayed(fn, xs[i], 1);
        v[r] = (bench_now() - t0) / (double)n * 1e9;
    }
    bench_print("core", "pj_delayed", "ns_per_task", bench_summarise(v, runs), "target=<100");

    double serial[MAX_RUNS];
    for (int r = 0; r < runs; r++)
        serial[r] = (double)n / serial_ffi_loop(fn, xs, n);
    struct bench_stat base = bench_summarise(serial, runs);
    bench_print("core", "tiny_add", "tasks_per_s", base, "peer=serial_ffi_call");

    const long sizes[] = { 64, 1024, 16384, PJ_AUTO };
    for (size_t s = 0; s < sizeof sizes / sizeof *sizes; s++) {
        pj_parallel *par = pj_parallel_new(&(pj_config){ .n_jobs = 2, .backend = "threading",
                                                         .batch_size = sizes[s] });
        run_parallel(par, tasks, n); /* warm the pool */
        for (int r = 0; r < runs; r++)
            v[r] = (double)n / run_parallel(par, tasks, n);
        struct bench_stat st = bench_summarise(v, runs);
        char extra[96];
        snprintf(extra, sizeof extra, "backend=threading n_jobs=2 batch=%ld ratio_vs_serial=%.2f",
                 sizes[s], st.median / base.median);
        bench_print("core", "tiny_add", "tasks_per_s", st, extra);
        pj_parallel_free(par);
    }
    for (size_t i = 0; i < n; i++)
        pj_task_free(tasks[i]);
    free(tasks);
    free(xs);
    pj_fn_free(fn);
    return 0;
}
