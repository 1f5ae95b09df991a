/* The futures executor's suite (test-futures.c) on the mpi backend, as rank 0 of mpirun -n 3
 * (tests/mpi-run.sh). */
#define CONFORMANCE_BACKENDS "mpi"
#include "test-futures.c"

#include "mpi-helpers.h"

int main(void)
{
    int rc = mpi_test_start();
    return rc ? rc : run_suite(futures_suite());
}
