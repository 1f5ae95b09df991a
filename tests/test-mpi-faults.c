/* test-faults.c's fault mix on the mpi backend, as rank 0 of mpirun -n 3 (tests/mpi-run.sh):
 * segfault, abort, exit and timeout tasks among 1000 (general and uniform batches), each with
 * its exact status on a worker rank's local worker, the MPI job alive; reuse, initializer,
 * recycling.  test-faults' parent_killed forks the parent, which an MPI process cannot do:
 * test-mpi-ranks.sh kills rank 0 and a worker rank instead. */
#define CONFORMANCE_BACKENDS "mpi"
#include "test-faults.c"

#include "mpi-helpers.h"

static Suite *mpi_faults_suite(void)
{
    Suite *s = suite_create("mpi-faults");
    const struct loop_case cases[] = {
        { "faults_among_1000", faults_among_1000 }, { "crash_stops_run", crash_stops_run },
        { "reuse_cycles", reuse_cycles }, { "initializer", initializer },
        { "recycling_and_idle", recycling_and_idle },
        { "crash_after_return", crash_after_return },
        { "faults_in_uniform_batches", faults_in_uniform_batches },
    };
    add_loop_cases(s, cases, sizeof cases / sizeof cases[0], 300, N_BACKENDS);
    return s;
}

int main(void)
{
    (void)faults_suite; /* test-faults' own list, with parent_killed */
    int rc = mpi_test_start();
    return rc ? rc : run_suite(mpi_faults_suite());
}
