/* The conformance suite (test-backends.c) on the mpi backend: run as rank 0 of mpirun -n 3
 * (tests/mpi-run.sh), once over shared memory and once over tcp. */
#define CONFORMANCE_BACKENDS "mpi"
#include "test-backends.c"

#include "mpi-helpers.h"

int main(void)
{
    int rc = mpi_test_start();
    return rc ? rc : run_suite(backends_suite());
}
