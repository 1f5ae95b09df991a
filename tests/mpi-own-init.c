/* A program that uses MPI itself (issue 12, point 6), run by test-mpi-own under mpirun -n 3:
 * it calls MPI_Init_thread and MPI_Finalize, and between them runs tasks on the mpi backend,
 * which must use the program's MPI and leave its finalisation to it.  With "single" as its
 * argument it asks for MPI_THREAD_SINGLE, which the mpi backend must refuse with a message
 * that says so.  Exit status 0 when all is as it should be. */
#include <parjob.h>

#include <mpi.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

static int twice(int x)
{
    return 2 * x;
}

static int run_tasks(char *why, size_t len)
{
    pj_fn *fn = PJ_FN(twice, &ffi_type_sint, &ffi_type_sint);
    pj_task *t[20];
    for (int i = 0; i < 20; i++)
        t[i] = pj_delayed(fn, i);
    pj_parallel *par = pj_parallel_new(&(pj_config){ .n_jobs = 2, .backend = "mpi" });
    pj_results *res = NULL;
    int rc = pj_run(par, t, 20, &res);
    snprintf(why, len, "%s", rc ? pj_parallel_errmsg(par) : "");
    for (int i = 0; !rc && i < 20; i++)
        if (pj_result_int(pj_results_at(res, i)) != 2 * i) {
            snprintf(why, len, "task %d: %d", i, pj_result_int(pj_results_at(res, i)));
            rc = -1;
        }
    pj_results_free(res);
    pj_parallel_free(par);
    for (int i = 0; i < 20; i++)
        pj_task_free(t[i]);
    pj_fn_free(fn);
    return rc;
}

int main(int argc, char **argv)
{
    bool single = argc > 1 && strcmp(argv[1], "single") == 0;
    int provided;
    MPI_Init_thread(&argc, &argv, single ? MPI_THREAD_SINGLE : MPI_THREAD_MULTIPLE, &provided);
    int rank;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    char why[512];
    int rc = run_tasks(why, sizeof why);
    int ok;
    if (single) {
        ok = rc == PJ_EBACKEND && strstr(why, "MPI_THREAD_MULTIPLE");
        printf("rank %d: single: %s (%s)\n", rank, ok ? "refused" : "NOT refused", why);
    } else {
        ok = rc == 0;
        printf("rank %d: %s %s\n", rank, ok ? "ran" : "FAILED", why);
    }
    /* The program's own MPI goes on after parjob's run. */
    int sum = 0, one = 1;
    MPI_Allreduce(&one, &sum, 1, MPI_INT, MPI_SUM, MPI_COMM_SELF);
    ok = ok && sum == 1;
    MPI_Finalize();
    return ok ? 0 : 1;
}
