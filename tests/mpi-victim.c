/* The program test-mpi-ranks.sh runs as rank 0 under mpirun -n 3 and then kills processes of:
 * a run of sleeping tasks on the mpi backend.  Prints "running" once the run is under way, then,
 * when the run returns, "returned <code> after <seconds>: <message>".
 * Built twice: mpi-victim-other (PJ_OTHER_BUILD) differs in code, so in ELF build-id.
 *   usage: mpi-victim SECONDS_PER_TASK TASKS */
#include <parjob.h>

#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

static int nap(int ms)
{
#ifdef PJ_OTHER_BUILD
    ms += 0; /* another build of the same program: other code, another ELF build-id */
    if (ms < 0)
        puts("the other build");
#endif
    struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };
    while (nanosleep(&ts, &ts) != 0)
        ;
    return ms;
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
    int ms = argc > 1 ? (int)(atof(argv[1]) * 1000) : 1000;
    int n = argc > 2 ? atoi(argv[2]) : 100;
    pj_fn *fn = PJ_FN(nap, &ffi_type_sint, &ffi_type_sint);
    pj_task **tasks = calloc((size_t)n, sizeof *tasks);
    for (int i = 0; i < n; i++)
        tasks[i] = pj_delayed(fn, ms);
    pj_parallel *par = pj_parallel_new(&(pj_config){ .n_jobs = 4, .backend = "mpi",
                                                     .batch_size = 1 });
    pj_iter *it = par ? pj_start(par, tasks, (size_t)n) : NULL;
    if (!it) {
        printf("returned %d after 0: %s\n", pj_last_error(), pj_last_errmsg());
        return 1;
    }
    printf("running\n");
    fflush(stdout);
    double t0 = now();
    pj_result r;
    int rc;
    while ((rc = pj_next(it, &r)) == 0)
        ;
    int closed = pj_iter_close(it);
    printf("returned %d after %.1f: %s\n", closed ? closed : rc == PJ_EEND ? 0 : rc, now() - t0,
           pj_parallel_errmsg(par));
    fflush(stdout);
    pj_parallel_free(par);
    for (int i = 0; i < n; i++)
        pj_task_free(tasks[i]);
    free(tasks);
    pj_fn_free(fn);
    return 0;
}
