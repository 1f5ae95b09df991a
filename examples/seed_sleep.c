/* The seed tutorial's first example: ten calls of do_something(1), run together.
 *
 *     results = Parallel(n_jobs=10, verbose=10)(delayed(do_something)(1) for _ in range(10))
 *     for result in results:
 *         print(result)
 *
 * Usage: seed_sleep [backend]   (default "threading"); finishes in about one second. */
#include <parjob.h>

#include <stdio.h>
#include <stdlib.h>
#include <time.h>

/* The tutorial's do_something: says what it does, sleeps, and returns a string (malloc'd:
 * the results own it, declared with pj_type_str_owned). */
static char *do_something(int seconds)
{
    printf("Sleeping %d second(s)...\n", seconds);
    fflush(stdout);
    struct timespec ts = { seconds, 0 };
    while (nanosleep(&ts, &ts) != 0)
        ;
    char *done = malloc(32);
    if (done)
        snprintf(done, 32, "Done Sleeping...%d", seconds);
    return done;
}

int main(int argc, char **argv)
{
    const char *backend = argc > 1 ? argv[1] : "threading";
    pj_fn *sleep_fn = PJ_FN(do_something, &pj_type_str_owned, &ffi_type_sint);
    pj_task *tasks[10];
    for (int i = 0; i < 10; i++)
        tasks[i] = pj_delayed(sleep_fn, 1);

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
    for (size_t i = 0; !rc && i < pj_results_count(res); i++)
        puts(pj_result_str(pj_results_at(res, i)));
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
