/* The mpi backend: the same tasks on the ranks of an MPI job (mpirun, srun), each task in a
 * worker process of its rank's own, so that a task that crashes is one task's status and not
 * the job's death.
 *
 * Everything but the transport is the process pool shared with fork and spawn (procpool.c):
 * slots, crash attribution, re-runs, deadlines, encoding ahead.  The transport
 * (transport_mpi.c) makes every local worker of every worker rank one slot of rank 0's pool;
 * each worker rank is a supervisor (supervisor_mpi.c) that starts its slots' workers as spawn
 * does, over the local transport, and relays batches and records.  Ranks other than 0 become
 * supervisors before main, as spawn's workers do (startup.c's table).  Functions cross as
 * (module path, offset), checked by ELF build-id on the rank (fnref_buildid.c).
 *
 * libmpi is not linked into libparjob: mpi_link.c dlopens libparjob-mpi.so at the first mpi
 * pool, so programs that never ask for mpi never load it. */
#include "process.h"

static int mpi_open(void **state, int n_workers, const pj_config *config, char *errbuf,
                    size_t errlen);

const struct pj_backend pj__backend_mpi = {
    .version = PJ_BACKEND_VERSION,
    .name = "mpi",
    .display_name = "MPIBackend",
    .features = PJ_BACKEND_PROCESS | PJ_BACKEND_COLUMNS,
    .open = mpi_open,
    .submit = pj__procpool_submit,
    .stop_task = pj__procpool_stop_task,
    .close = pj__procpool_close,
};

static const struct pj__proc_ops mpi_ops = {
    .transport = &pj__transport_mpi,
    .launch = NULL, /* the worker ranks start their workers (supervisor_mpi.c) */
    .fnref = &pj__fnref_buildid,
    .startup = "the program's start-up on an MPI worker rank (every constructor; main never "
               "runs in a worker)",
};

static int mpi_open(void **state, int n_workers, const pj_config *config, char *errbuf,
                    size_t errlen)
{
    return pj__procpool_open(state, n_workers, config, &mpi_ops, errbuf, errlen);
}
