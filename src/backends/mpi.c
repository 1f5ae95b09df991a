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

#include <stdio.h>

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

/* ---- what the dispatcher asks beyond the table (internal.h) --------------------------------- */

/* n_jobs < 0 counts the worker ranks' CPUs, each rank's own (ranks_mpi.c), not rank 0's. */
static int mpi_effective_n_jobs(int requested, int *out, char *err, size_t errlen)
{
    int cpus = 0;
    int rc = pj__mpi_worker_cpus(&cpus, err, errlen);
    if (rc)
        return rc;
    long n = (long)cpus + 1 + requested;
    *out = n < 1 ? 1 : n > PJ_MAX_JOBS ? PJ_MAX_JOBS : (int)n;
    return 0;
}

/* "rank 3: 2" or "ranks 1-2: 3 each" */
static int say_ranks(char *buf, size_t len, int first, int last, int workers)
{
    if (first == last)
        return snprintf(buf, len, "rank %d: %d", first, workers);
    return snprintf(buf, len, "ranks %d-%d: %d each", first, last, workers);
}

/* The transport's rule (transport_mpi.c): worker i on rank 1 + i % ranks, so the first
 * n % ranks ranks have one more; ranks past n_workers have none. */
static void mpi_describe_share(int n_workers, char *buf, size_t len)
{
    int ranks = pj__mpi_worker_ranks();
    ranks = ranks < n_workers ? ranks : n_workers;
    *buf = 0;
    if (ranks < 1)
        return;
    int each = n_workers / ranks, more = n_workers % ranks;
    if (!more) {
        say_ranks(buf, len, 1, ranks, each);
        return;
    }
    int k = say_ranks(buf, len, 1, more, each + 1);
    k += k > 0 && (size_t)k < len ? snprintf(buf + k, len - (size_t)k, ", ") : 0;
    if (k > 0 && (size_t)k < len)
        say_ranks(buf + k, len - (size_t)k, more + 1, ranks, each);
}
const struct pj__backend_hooks pj__backend_mpi_hooks = {
    .effective_n_jobs = mpi_effective_n_jobs,
    .describe_share = mpi_describe_share,
};
