/* The seed tutorial's first example: ten calls of a one-second sleep, run together.
 *
 *     Parallel(n_jobs=10, verbose=10)(delayed(sleep)(1) for _ in range(10))
 *
 * Usage: seed_sleep [backend]   (default "threading"); finishes in about one second. */
#include <parjob.h>

#include <stdio.h>
#include <time.h>

static double wait_seconds(double seconds)
{
    struct timespec ts = { (time_t)seconds, (long)((seconds - (time_t)seconds) * 1e9) };
    nanosleep(&ts, NULL);
    return seconds;
}

int main(int argc, char **argv)
{
    const char *backend = argc > 1 ? argv[1] : "threading";
    pj_fn *sleep_fn = PJ_FN(wait_seconds, &ffi_type_double, &ffi_type_double);
    pj_task *tasks[10];
    for (int i = 0; i < 10; i++)
        tasks[i] = pj_delayed(sleep_fn, 1); /* the int 1 becomes the double 1.0 */

    pj_parallel *par = pj_parallel_new(&(pj_config){ .n_jobs = 10, .backend = backend,
                                                     .verbose = 10 });
    if (!par) {
        fprintf(stderr, "seed_sleep: %s\n", pj_last_errmsg());
        return 1;
    }
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    pj_results *res;
    int rc = pj_run(par, tasks, 10, &res);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    if (rc)
        fprintf(stderr, "seed_sleep: %s: %s\n", pj_strerror(rc), pj_parallel_errmsg(par));
    else
        printf("10 one-second sleeps on %s took %.2f s\n", pj_parallel_backend(par),
               (t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9);
    pj_results_free(res);
    pj_parallel_free(par);
    for (int i = 0; i < 10; i++)
        pj_task_free(tasks[i]);
    pj_fn_free(sleep_fn);
    return rc ? 1 : 0;
}
