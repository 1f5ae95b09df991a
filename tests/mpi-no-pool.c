/* Rank 0 that never opens an mpi pool (issue 12c): run by mpi-run.sh as rank 0 of mpirun -n 3
 * with the mpi backend wanted, it returns from main at once (one parjob call, so that it links
 * libparjob).  The worker ranks, taken over before main, must be told to quit: the whole job
 * ends within seconds, exit status 0, instead of the worker ranks spinning for ever in
 * MPI_Init. */
#include <parjob.h>

#include <stdio.h>

int main(void)
{
    printf("rank 0: %d CPUs, no mpi pool\n", pj_cpu_count());
    return 0;
}
