/* Bulk calls (test-bulk.c) on the mpi backend: run as rank 0 of mpirun -n 3
 * (tests/mpi-run.sh), once over shared memory and once over tcp.  The mpi backend is parjob's
 * own process pool, as fork and spawn are: range batches cross a rank and its supervisor with
 * no task per call (PJ_BACKEND_COLUMNS), a crash in a range is that call's status. */
#define BULK_BACKENDS "mpi"
#include "test-bulk.c"

#include "mpi-helpers.h"

START_TEST(mpi_takes_columns)
{
    const struct pj_backend *mpi = pj_backend_find("mpi");
    ck_assert_ptr_nonnull(mpi);
    ck_assert_msg(mpi->features & PJ_BACKEND_COLUMNS,
                  "the mpi backend's pool takes range batches, as fork's and spawn's do");
}
END_TEST

int main(void)
{
    int rc = mpi_test_start();
    if (rc)
        return rc;
    Suite *s = bulk_suite();
    TCase *tc = tcase_create("mpi_takes_columns");
    tcase_add_test(tc, mpi_takes_columns);
    suite_add_tcase(s, tc);
    return run_suite(s);
}
