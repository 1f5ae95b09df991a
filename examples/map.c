/* The tutorial's Executor.map cell: the same five sleeps of 0 to 4 seconds, but results come
 * back in submission order — each waits for the ones before it.
 *
 *     with ThreadPoolExecutor(max_workers=5) as ex:
 *         for r in ex.map(sleep_and_return, (3, 1, 4, 0, 2)):
 *             print(r)
 *
 * Usage: map [backend]   (default "threading"; "fork", "spawn" where built) */
#include <parjob.h>

#include <stdio.h>
#include <time.h>

static double wait_seconds(double seconds)
{
    struct timespec ts = { (time_t)seconds, (long)((seconds - (time_t)seconds) * 1e9) };
    while (nanosleep(&ts, &ts) != 0)
        ;
    return seconds;
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
    const double secs[N] = { 3, 1, 4, 0, 2 };
    pj_executor *ex = pj_executor_new(&(pj_config){ .n_jobs = N, .backend = backend });
    if (!ex) {
        fprintf(stderr, "map: %s\n", pj_last_errmsg());
        return 1;
    }
    pj_fn *sleep_fn = PJ_FN(wait_seconds, &ffi_type_double, &ffi_type_double);
    double t0 = now();
    /* One argument array per parameter, each of the parameter's exact type. */
    pj_map *m = pj_map_start(ex, sleep_fn, (const void *[]){ secs }, N, 1, PJ_FOREVER);
    if (!m) {
        fprintf(stderr, "map: %s\n", pj_last_errmsg());
        return 1;
    }
    printf("mapped sleeps of %g, %g, %g, %g, %g s on %s\n", secs[0], secs[1], secs[2],
           secs[3], secs[4], pj_executor_backend(ex));
    const pj_result *r;
    int status, rc = 0;
    while ((status = pj_map_next(m, &r)) != PJ_EEND) {
        if (status)
            rc = 1, printf("item %zu: %s\n", r ? r->index : 0, r ? r->message
                                                                   : pj_strerror(status));
        else
            printf("item %zu slept %g s   (at %.2f s)\n", r->index, pj_result_double(r),
                   now() - t0);
        if (!r)
            break;
    }
    pj_map_free(m);
    pj_executor_free(ex);
    pj_fn_free(sleep_fn);
    return rc;
}
