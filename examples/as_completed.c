/* The tutorial's concurrent.futures cell: five sleeps of 0 to 4 seconds, printed as they
 * complete — out of submission order.
 *
 *     with ThreadPoolExecutor(max_workers=5) as ex:
 *         futures = [ex.submit(do_something, s) for s in (3, 1, 4, 0, 2)]
 *         for f in as_completed(futures):
 *             print(f.result())
 *
 * Usage: as_completed [backend]   (default "threading"; "fork", "spawn" where built) */
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

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
    const char *backend = argc > 1 ? argv[1] : "threading";
    enum { N = 5 };
    const int secs[N] = { 3, 1, 4, 0, 2 };
    pj_executor *ex = pj_executor_new(&(pj_config){ .n_jobs = N, .backend = backend });
    if (!ex) {
        fprintf(stderr, "as_completed: %s\n", pj_last_errmsg());
        return 1;
    }
    pj_fn *sleep_fn = PJ_FN(do_something, &pj_type_str_owned, &ffi_type_sint);
    pj_task *tasks[N];
    pj_future *futures[N];
    double t0 = now();
    for (int i = 0; i < N; i++) {
        tasks[i] = pj_delayed(sleep_fn, secs[i]);
        futures[i] = pj_submit(ex, tasks[i]);
        if (!futures[i]) {
            fprintf(stderr, "as_completed: %s\n", pj_last_errmsg());
            return 1;
        }
    }
    pj_completed *it = pj_as_completed(futures, N, PJ_FOREVER);
    pj_future *f;
    int rc = 0;
    while (pj_completed_next(it, &f) == 0) {
        const pj_result *r;
        int status = pj_future_result(f, 0, &r);
        if (status)
            rc = 1, printf("task %zu: %s\n", pj_future_index(f), r->message);
        else
            puts(pj_result_str(r));
    }
    printf("Finished in %.2f second(s) on %s\n", now() - t0, pj_executor_backend(ex));
    pj_completed_free(it);
    pj_executor_free(ex);
    for (int i = 0; i < N; i++) {
        pj_future_free(futures[i]);
        pj_task_free(tasks[i]);
    }
    pj_fn_free(sleep_fn);
    return rc;
}
