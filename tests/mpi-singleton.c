/* The mpi backend without mpirun (issue 12, point 6), run alone by test-mpi-singleton.sh,
 * once as Open MPI's singleton (orted on PATH) and once without orted, where Open MPI's
 * MPI_Init would abort the process: both times the backend must refuse with PJ_EBACKEND and a
 * message that says to run under mpirun, and the program go on.  Exit status 0 when all is as
 * it should be; each failure is printed. */
#include <parjob.h>

#include <stdio.h>
#include <string.h>

#define N_TASKS 100

static int twice(int x)
{
    return 2 * x;
}

/* 0 when n_jobs = asked runs every task right; else the code, the message printed. */
static int run_twice(int asked)
{
    pj_fn *fn = PJ_FN(twice, &ffi_type_sint, &ffi_type_sint);
    pj_task *t[N_TASKS];
    for (int i = 0; i < N_TASKS; i++)
        t[i] = pj_delayed(fn, i);
    pj_parallel *par = pj_parallel_new(&(pj_config){ .n_jobs = asked, .backend = "mpi" });
    pj_results *res = NULL;
    int rc = par ? pj_run(par, t, N_TASKS, &res) : pj_last_error();
    const char *msg = par ? pj_parallel_errmsg(par) : pj_last_errmsg();
    if (rc)
        fprintf(stderr, "n_jobs = %d: %s (%s)\n", asked, msg, pj_strerror(rc));
    if (rc == PJ_EBACKEND && !strstr(msg, "mpirun"))
        fprintf(stderr, "FAIL: the refusal does not say to run under mpirun\n"), rc = -1;
    for (int i = 0; !rc && i < N_TASKS; i++)
        if (pj_result_int(pj_results_at(res, i)) != 2 * i) {
            fprintf(stderr, "FAIL: task %d: %d\n", i, pj_result_int(pj_results_at(res, i)));
            rc = -1;
        }
    pj_results_free(res);
    pj_parallel_free(par);
    for (int i = 0; i < N_TASKS; i++)
        pj_task_free(t[i]);
    pj_fn_free(fn);
    return rc;
}

int main(void)
{
    int rc = run_twice(2);
    if (rc != PJ_EBACKEND)
        fprintf(stderr, "FAIL: without mpirun: %d, not PJ_EBACKEND\n", rc);
    printf("the program goes on\n");
    return rc == PJ_EBACKEND ? 0 : 1;
}
