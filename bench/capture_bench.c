/* What capturing an input at pj_delayed costs (issue 15, item 1): ns per pj_delayed of a
 * function of one 64-byte input declared with pj_in (the caller's memory, read when the task
 * runs), with pj_in_copy (copied now) and of a 16-character pj_cstr (copied now), against a
 * scalar argument; then whole runs of those tasks on threading and fork.
 *   capture_bench [n_tasks]   (default 200 000) */
#include <parjob.h>

#include "bench_util.h"

#include <string.h>

#define MAX_RUNS 32
#define INPUT_INTS 16 /* 64 bytes */

static int sum16(const int *v)
{
    int s = 0;
    for (int k = 0; k < INPUT_INTS; k++)
        s += v[k];
    return s;
}

static int first_char(const char *s) { return s[0]; }
static int ident(int x) { return x; }

enum form { SCALAR, IN, IN_COPY, CSTR };
static const char *const form_names[] = { "scalar", "pj_in_64B", "pj_in_copy_64B",
                                          "pj_cstr_16B" };

static pj_task *build(enum form f, pj_fn *const *fns, int *input, const char *str, int i)
{
    switch (f) {
    case SCALAR: return pj_delayed(fns[0], i);
    case IN: return pj_delayed(fns[1], pj_in(input, INPUT_INTS * sizeof *input));
    case IN_COPY: return pj_delayed(fns[1], pj_in_copy(input, INPUT_INTS * sizeof *input));
    default: return pj_delayed(fns[2], pj_cstr(str));
    }
}

int main(int argc, char **argv)
{
    size_t n = argc > 1 ? strtoul(argv[1], NULL, 10) : 200000;
    int runs = bench_runs(5);
    runs = runs > MAX_RUNS ? MAX_RUNS : runs;
    pj_fn *fns[3] = { PJ_FN(ident, &ffi_type_sint, &ffi_type_sint),
                      PJ_FN(sum16, &ffi_type_sint, &ffi_type_pointer),
                      PJ_FN(first_char, &ffi_type_sint, &ffi_type_pointer) };
    int input[INPUT_INTS];
    for (int k = 0; k < INPUT_INTS; k++)
        input[k] = k;
    const char *str = "fifteen chars!!";
    pj_task **tasks = malloc(n * sizeof *tasks);
    const char *backends[] = { "threading", "fork" };
    pj_parallel *pars[2];
    for (int b = 0; b < 2; b++)
        pars[b] = pj_parallel_new(&(pj_config){ .n_jobs = 2, .backend = backends[b] });

    for (int f = SCALAR; f <= CSTR; f++) {
        double build_ns[MAX_RUNS], rate[2][MAX_RUNS];
        for (int r = 0; r < runs; r++) {
            double t0 = bench_now();
            for (size_t i = 0; i < n; i++)
                tasks[i] = build((enum form)f, fns, input, str, (int)i);
            build_ns[r] = (bench_now() - t0) / (double)n * 1e9;
            for (int b = 0; b < 2; b++)
                rate[b][r] = (double)n / bench_timed_run("capture_bench", pars[b], tasks, n);
            for (size_t i = 0; i < n; i++)
                pj_task_free(tasks[i]);
        }
        bench_print("capture", form_names[f], "ns_per_pj_delayed", bench_summarise(build_ns, runs),
                    NULL);
        for (int b = 0; b < 2; b++) {
            char workload[64];
            snprintf(workload, sizeof workload, "%s_%s", form_names[f], backends[b]);
            bench_print("capture", workload, "tasks_per_s", bench_summarise(rate[b], runs), NULL);
        }
    }
    for (int b = 0; b < 2; b++)
        pj_parallel_free(pars[b]);
    for (int k = 0; k < 3; k++)
        pj_fn_free(fns[k]);
    free(tasks);
    return 0;
}
