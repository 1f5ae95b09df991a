/* The tutorial's multiprocessing cell: ten processes that each sleep one second.
 *
 *     procs = [Process(target=sleep, args=(1,)) for _ in range(10)]
 *     for p in procs: p.start()
 *     for p in procs: p.join()          # about 1 s: they all sleep at once
 *
 * against the classic mistake of joining inside the start loop (about 10 s: each process is
 * waited for before the next one starts).
 *
 * Usage: processes [fork|spawn]   (default "fork") */
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

enum { N = 10 };

/* Starts N processes running task; joins each right after starting it when join_in_loop.
 * Returns the seconds it took, or -1. */
static double run(pj_task *task, const char *method, int join_in_loop)
{
    pj_process *procs[N] = { 0 };
    double t0 = now(), took = -1;
    int i;
    for (i = 0; i < N; i++) {
        procs[i] = pj_process_new(task, method);
        if (!procs[i] || pj_process_start(procs[i]) != 0)
            goto out;
        if (join_in_loop)
            pj_process_join(procs[i], PJ_FOREVER);
    }
    for (i = 0; i < N; i++)
        pj_process_join(procs[i], PJ_FOREVER);
    took = now() - t0;
out:
    if (took < 0)
        fprintf(stderr, "processes: %s\n", procs[i] ? "cannot start a process"
                                                    : pj_last_errmsg());
    for (i = 0; i < N; i++)
        pj_process_free(procs[i]);
    return took;
}

int main(int argc, char **argv)
{
    const char *method = argc > 1 ? argv[1] : "fork";
    pj_fn *sleep_fn = PJ_FN(wait_seconds, &ffi_type_double, &ffi_type_double);
    pj_task *task = pj_delayed(sleep_fn, 1.0);
    double together = run(task, method, 0);
    double one_by_one = together < 0 ? -1 : run(task, method, 1);
    if (together >= 0 && one_by_one >= 0) {
        printf("%-34s %-34s\n", "start all, then join all", "join inside the start loop");
        printf("%-34s %-34s\n", "for p in procs: p.start()", "for p in procs:");
        printf("%-34s %-34s\n", "for p in procs: p.join()", "    p.start(); p.join()");
        printf("%-34.2f %-34.2f  seconds, %d one-second sleeps (%s)\n", together, one_by_one,
               N, method);
    }
    pj_task_free(task);
    pj_fn_free(sleep_fn);
    return together >= 0 && one_by_one >= 0 ? 0 : 1;
}
