/* What the mpi test programs share (test-mpi-*.c): they run as rank 0 under tests/mpi-run.sh. */
#ifndef PJ_MPI_HELPERS_H
#define PJ_MPI_HELPERS_H

#include "mpi_link.h"

#include <parjob.h>

#include <stdio.h>
#include <stdlib.h>

static inline int mpi_test_identity(int x)
{
    return x;
}

/* MPI is started, and a first run made on every worker rank, before the first test case, so
 * that the descriptors and threads MPI keeps for the life of the process (over tcp, a
 * connection per peer, made at the first message) are not taken for a case's leak
 * (fixture.h).  77 (skipped) when there is no MPI to start. */
static inline int mpi_test_start(void)
{
    struct pj__mpi_link *link;
    char err[320];
    if (pj__mpi_link_open(&link, NULL, NULL, err, sizeof err)) {
        fprintf(stderr, "skipped: %s\n", err);
        return 77;
    }
    pj_fn *fn = PJ_FN(mpi_test_identity, &ffi_type_sint, &ffi_type_sint);
    pj_task *t[8];
    for (int i = 0; i < 8; i++)
        t[i] = pj_delayed(fn, i);
    pj_parallel *par = pj_parallel_new(&(pj_config){ .n_jobs = 8, .backend = "mpi" });
    pj_results *res = NULL;
    int rc = par ? pj_run(par, t, 8, &res) : pj_last_error();
    if (rc)
        fprintf(stderr, "the first mpi run failed: %s\n", par ? pj_parallel_errmsg(par)
                                                             : pj_last_errmsg());
    pj_results_free(res);
    pj_parallel_free(par);
    for (int i = 0; i < 8; i++)
        pj_task_free(t[i]);
    pj_fn_free(fn);
    return rc ? 1 : 0;
}

#endif
