/* What the mpi test programs share (test-mpi-*.c): they run as rank 0 under tests/mpi-run.sh. */
#ifndef PJ_MPI_HELPERS_H
#define PJ_MPI_HELPERS_H

#include "mpi_link.h"

#include <stdio.h>
#include <stdlib.h>

/* MPI is started before the first test case, so that the descriptors and threads MPI keeps
 * for the life of the process are not taken for a case's leak (fixture.h).  77 (skipped)
 * when there is no MPI to start. */
static inline int mpi_test_start(void)
{
    struct pj__mpi_link *link;
    char err[320];
    if (pj__mpi_link_open(&link, NULL, NULL, err, sizeof err)) {
        fprintf(stderr, "skipped: %s\n", err);
        return 77;
    }
    return 0;
}

#endif
