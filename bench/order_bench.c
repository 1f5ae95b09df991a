/* Issue 16's figure: an early slow result in the ordered generator.
 *   order_bench [backend]   backend: threading (default), fork, spawn
 * One 1 s task, then twenty 10 ms tasks, on two workers (batch_size 1, pre_dispatch 2*n_jobs):
 * seconds to drain every result, in list, ordered-generator and unordered-generator modes.
 * The ideal is ~1.00 s in every mode: the other worker runs the twenty short tasks while the
 * long one runs.  A generator that stalls behind the unread first result takes ~1.09 s.
 * Unordered, also the milliseconds until task 2's result: ~20 ms when a task queued for the
 * busy worker goes to the free one, ~210 ms when it waits until every later task is done. */
#include <parjob.h>

#include "bench_util.h"

#include <string.h>

enum { SHORT_TASKS = 20 };

static int sleep_ms(int ms)
{
    struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };
    while (nanosleep(&ts, &ts) == -1)
        ;
    return ms;
}

static double drain_s(const char *backend, pj_return_as mode, pj_task **tasks, size_t n,
                      double *task2_s)
{
    pj_parallel *par = pj_parallel_new(&(pj_config){ .n_jobs = 2, .backend = backend,
                                                     .batch_size = 1, .return_as = mode });
    if (!par) {
        fprintf(stderr, "order_bench: %s\n", pj_last_errmsg());
        exit(1);
    }
    pj_results *warm; /* workers start outside the timing */
    pj_run(par, tasks + 1, 2, &warm);
    pj_results_free(warm);
    double took;
    if (mode == PJ_LIST) {
        took = bench_timed_run("order_bench", par, tasks, n);
    } else {
        double t0 = bench_now();
        pj_iter *it = pj_start(par, tasks, n);
        pj_result r;
        while (pj_next(it, &r) == 0)
            if (r.index == 2)
                *task2_s = bench_now() - t0;
        pj_iter_close(it);
        took = bench_now() - t0;
    }
    pj_parallel_free(par);
    return took;
}

int main(int argc, char **argv)
{
    const char *backend = argc > 1 ? argv[1] : "threading";
    static const char *const names[] = { "list", "generator", "generator_unordered" };
    static const pj_return_as modes[] = { PJ_LIST, PJ_GENERATOR, PJ_GENERATOR_UNORDERED };
    pj_fn *fn = PJ_FN(sleep_ms, &ffi_type_sint, &ffi_type_sint);
    pj_task *tasks[1 + SHORT_TASKS];
    tasks[0] = pj_delayed(fn, 1000);
    for (int i = 1; i <= SHORT_TASKS; i++)
        tasks[i] = pj_delayed(fn, 10);
    int runs = bench_runs(3);
    for (int m = 0; m < 3; m++) {
        double v[16], task2_ms[16];
        for (int r = 0; r < runs && r < 16; r++) {
            double task2_s = 0;
            v[r] = drain_s(backend, modes[m], tasks, 1 + SHORT_TASKS, &task2_s);
            task2_ms[r] = task2_s * 1e3;
        }
        char workload[64];
        snprintf(workload, sizeof workload, "slow_first_%s_%s", backend, names[m]);
        bench_print("order_bench", workload, "seconds", bench_summarise(v, runs < 16 ? runs : 16),
                    NULL);
        if (modes[m] == PJ_GENERATOR_UNORDERED)
            bench_print("order_bench", workload, "task2_ms",
                        bench_summarise(task2_ms, runs < 16 ? runs : 16), NULL);
    }
    for (int i = 0; i <= SHORT_TASKS; i++)
        pj_task_free(tasks[i]);
    pj_fn_free(fn);
    return 0;
}
