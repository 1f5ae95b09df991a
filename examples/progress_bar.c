/* A progress bar on a terminal: tqdm's recipe for joblib (joblib issues 972, 1063), built in.
 *
 *     Parallel(n_jobs=2)(delayed(work)(i) for i in tqdm(range(n)))
 *
 * Usage: progress_bar [backend] [array|producer|nested] [n]   (threading, array, 200)
 *  array:    n tasks of 20 ms; the bar shows count, total, percent, rate, elapsed and ETA;
 *  producer: the same from a producer, whose total is unknown until it ends;
 *  nested:   each of n / 20 tasks runs 20 tasks of its own with a bar too: only the outer
 *            bar draws. */
#include <parjob.h>

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static int work(int ms)
{
    struct timespec ts = { 0, ms * 1000000L };
    while (nanosleep(&ts, &ts) != 0)
        ;
    return ms;
}

static pj_fn *work_fn;
static int left;

static int next_task(void *state, pj_task **task)
{
    (void)state;
    if (left == 0)
        return 0;
    left--;
    *task = pj_delayed(work_fn, 20);
    return 1;
}

/* A task that runs a parallel loop of its own, with a bar that must stay quiet. */
static int inner_run(int n)
{
    pj_parallel *par = pj_parallel_new(&(pj_config){ .n_jobs = 2, .backend = "threading",
                                                     .progress = PJ_PROGRESS_BAR });
    pj_task *tasks[64];
    for (int i = 0; i < n; i++)
        tasks[i] = pj_delayed(work_fn, 20);
    pj_results *res;
    int rc = pj_run(par, tasks, (size_t)n, &res);
    pj_results_free(res);
    for (int i = 0; i < n; i++)
        pj_task_free(tasks[i]);
    pj_parallel_free(par);
    return rc;
}

int main(int argc, char **argv)
{
    const char *backend = argc > 1 ? argv[1] : "threading";
    const char *mode = argc > 2 ? argv[2] : "array";
    int n = argc > 3 ? atoi(argv[3]) : 200;
    work_fn = PJ_FN(work, &ffi_type_sint, &ffi_type_sint);
    pj_fn *inner_fn = PJ_FN(inner_run, &ffi_type_sint, &ffi_type_sint);
    pj_parallel *par = pj_parallel_new(&(pj_config){ .n_jobs = 2, .backend = backend,
                                                     .batch_size = 1,
                                                     .progress = PJ_PROGRESS_BAR });
    if (!par || n < 1) {
        fprintf(stderr, "progress_bar: %s\n", par ? "n must be positive" : pj_last_errmsg());
        return 1;
    }
    bool nested = strcmp(mode, "nested") == 0;
    int count = nested ? (n + 19) / 20 : n;
    pj_task **tasks = malloc((size_t)count * sizeof *tasks);
    for (int i = 0; i < count; i++)
        tasks[i] = nested ? pj_delayed(inner_fn, 20) : pj_delayed(work_fn, 20);
    pj_results *res;
    left = n;
    int rc = strcmp(mode, "producer") == 0 ? pj_run_source(par, next_task, NULL, &res)
                                           : pj_run(par, tasks, (size_t)count, &res);
    printf("%zu tasks, %zu succeeded\n", pj_results_count(res),
           pj_results_count_status(res, 0));
    pj_results_free(res);
    pj_parallel_free(par);
    for (int i = 0; i < count; i++)
        pj_task_free(tasks[i]);
    free(tasks);
    pj_fn_free(inner_fn);
    pj_fn_free(work_fn);
    return rc ? 1 : 0;
}
