/* The tutorial's Executor.map cell: the same five sleeps of 0 to 4 seconds, but results come
 * back in submission order — each waits for the ones before it.
 *
 *     with ThreadPoolExecutor(max_workers=5) as ex:
 *         for r in ex.map(do_something, (3, 1, 4, 0, 2)):
 *             print(r)
 *
 * Usage: map [backend]   (default "threading"; "fork", "spawn" where built) */
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
        fprintf(stderr, "map: %s\n", pj_last_errmsg());
        return 1;
    }
    pj_fn *sleep_fn = PJ_FN(do_something, &pj_type_str_owned, &ffi_type_sint);
    double t0 = now();
    /* One argument array per parameter, each of the parameter's exact type. */
    pj_map *m = pj_map_start(ex, sleep_fn, (const void *[]){ secs }, N, 1, PJ_FOREVER);
    if (!m) {
        fprintf(stderr, "map: %s\n", pj_last_errmsg());
        return 1;
    }
    const pj_result *r;
    int status, rc = 0;
    while ((status = pj_map_next(m, &r)) != PJ_EEND) {
        if (status)
            rc = 1, printf("item %zu: %s\n", r ? r->index : 0, r ? r->message
                                                                   : pj_strerror(status));
        else
            puts(pj_result_str(r));
        if (!r)
            break;
    }
    printf("Finished in %.2f second(s) on %s\n", now() - t0, pj_executor_backend(ex));
    pj_map_free(m);
    pj_executor_free(ex);
    pj_fn_free(sleep_fn);
    return rc;
}
