/* libparjob-mpi.so: the MPI calls of mpi_shim.h over the MPI library this module is built
 * against (Open MPI 4.1 here).  The only parjob file that includes mpi.h; it holds no state of
 * parjob's but the communicator and whether parjob initialised MPI. */
#include "mpi_shim.h"

#include <mpi.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define PJ_TAG 0x706a /* "pj": parjob's one tag on its communicator */

struct pj_mpi_request {
    MPI_Request r;
};

static MPI_Comm comm = MPI_COMM_NULL; /* MPI_COMM_WORLD with errors returned */
static void (*finalize_hook)(void);

static void say(char *err, size_t errlen, const char *what, int code)
{
    char s[MPI_MAX_ERROR_STRING] = "";
    int n = 0;
    MPI_Error_string(code, s, &n);
    snprintf(err, errlen, "%s: %s", what, s);
}

/* Whether a launcher (mpirun, srun) started this process. */
static bool launched(void)
{
    return getenv("OMPI_COMM_WORLD_SIZE") || getenv("PMIX_RANK") || getenv("PMI_RANK");
}

/* Whether program is an executable on $PATH: Open MPI's singleton mode starts its runtime
 * (orted) from there, and without it MPI_Init aborts the process instead of returning. */
static bool on_path(const char *program)
{
    const char *path = getenv("PATH");
    char file[4096];
    for (const char *p = path ? path : ""; *p; p += *p == ':') {
        size_t n = strcspn(p, ":");
        snprintf(file, sizeof file, "%.*s/%s", (int)n, n ? p : ".", program);
        if (access(file, X_OK) == 0)
            return true;
        p += n;
    }
    return false;
}

static int shim_init(int *rank, int *size, int *ours, char *err, size_t errlen)
{
    /* A communicator of parjob's own would take a collective call (MPI_Comm_dup) that the
     * program's ranks would have to make at the same moment; one tag on MPI_COMM_WORLD,
     * point to point, needs nothing of them.  Errors return instead of aborting the job. */
    int started = 0, finished = 0, provided = MPI_THREAD_SINGLE;
    MPI_Initialized(&started);
    MPI_Finalized(&finished);
    if (finished) { /* the program's MPI_Finalize: MPI cannot be used again */
        snprintf(err, errlen, "MPI was finalised already (MPI_Finalize)");
        return -1;
    }
    *ours = !started;
    if (!started && !launched() && !on_path("orted")) {
        snprintf(err, errlen, "no MPI worker ranks (not started by mpirun, and without orted on "
                 "PATH Open MPI cannot start at all): run the program under mpirun with at "
                 "least two ranks (mpirun -n 3 ./prog); rank 0 runs main, the others the tasks");
        return -1;
    }
    if (!started) {
        int rc = MPI_Init_thread(NULL, NULL, MPI_THREAD_MULTIPLE, &provided);
        if (rc != MPI_SUCCESS) {
            say(err, errlen, "MPI_Init_thread", rc);
            return -1;
        }
    } else {
        MPI_Query_thread(&provided);
    }
    comm = MPI_COMM_WORLD;
    MPI_Comm_set_errhandler(comm, MPI_ERRORS_RETURN);
    MPI_Comm_rank(comm, rank);
    MPI_Comm_size(comm, size);
    if (provided < MPI_THREAD_MULTIPLE) {
        snprintf(err, errlen, "MPI gives thread level %d, parjob's mpi backend needs "
                 "MPI_THREAD_MULTIPLE (%d): %s", provided, MPI_THREAD_MULTIPLE,
                 started ? "call MPI_Init_thread(..., MPI_THREAD_MULTIPLE, ...) in the program"
                         : "this MPI library was built without thread support");
        return -1;
    }
    return 0;
}

static int shim_send_now(int dest, const void *buf, size_t len)
{
    return MPI_Send(buf, (int)len, MPI_BYTE, dest, PJ_TAG, comm) == MPI_SUCCESS ? 0 : -1;
}

static int on_self_delete(MPI_Comm c, int key, void *value, void *extra)
{
    (void)c, (void)key, (void)value, (void)extra;
    if (finalize_hook)
        finalize_hook();
    return MPI_SUCCESS;
}

static int shim_at_finalize(void (*hook)(void))
{
    int key;
    finalize_hook = hook;
    if (MPI_Comm_create_keyval(MPI_COMM_NULL_COPY_FN, on_self_delete, &key, NULL) != MPI_SUCCESS)
        return -1;
    return MPI_Comm_set_attr(MPI_COMM_SELF, key, NULL) == MPI_SUCCESS ? 0 : -1;
}

static void shim_finalize(void)
{
    int done = 0;
    MPI_Finalized(&done);
    if (!done)
        MPI_Finalize();
}

static struct pj_mpi_request *shim_isend(int dest, const void *buf, size_t len)
{
    struct pj_mpi_request *q = malloc(sizeof *q);
    if (!q || len > 0x7fffffff ||
        MPI_Isend(buf, (int)len, MPI_BYTE, dest, PJ_TAG, comm, &q->r) != MPI_SUCCESS) {
        free(q);
        return NULL;
    }
    return q;
}

static int shim_test(struct pj_mpi_request *q)
{
    int done = 0;
    if (MPI_Test(&q->r, &done, MPI_STATUS_IGNORE) != MPI_SUCCESS) {
        free(q);
        return -1;
    }
    if (done)
        free(q);
    return done;
}

static void shim_drop(struct pj_mpi_request *q)
{
    MPI_Cancel(&q->r);
    MPI_Request_free(&q->r);
    free(q);
}

static int shim_take(int *src, void **buf, size_t *len, struct pj_mpi_request **req)
{
    int found = 0, count = 0;
    MPI_Message m;
    MPI_Status st;
    if (MPI_Improbe(MPI_ANY_SOURCE, PJ_TAG, comm, &found, &m, &st) != MPI_SUCCESS)
        return -1;
    if (!found)
        return 0;
    MPI_Get_count(&st, MPI_BYTE, &count);
    void *p = malloc(count ? (size_t)count : 1);
    struct pj_mpi_request *q = malloc(sizeof *q);
    if (!p || !q || MPI_Imrecv(p, count, MPI_BYTE, &m, &q->r) != MPI_SUCCESS) {
        free(p);
        free(q);
        return -1;
    }
    *src = st.MPI_SOURCE;
    *buf = p;
    *len = (size_t)count;
    *req = q;
    return 1;
}

static void shim_abort_job(int code)
{
    MPI_Abort(MPI_COMM_WORLD, code);
}

static void shim_node_name(char *buf, size_t len)
{
    char name[MPI_MAX_PROCESSOR_NAME] = "";
    int n = 0;
    MPI_Get_processor_name(name, &n);
    snprintf(buf, len, "%s", name);
}

__attribute__((visibility("default"))) const struct pj_mpi_shim pj_mpi_shim = {
    .version = PJ_MPI_SHIM_VERSION,
    .init = shim_init,
    .send_now = shim_send_now,
    .at_finalize = shim_at_finalize,
    .finalize = shim_finalize,
    .isend = shim_isend,
    .test = shim_test,
    .drop = shim_drop,
    .take = shim_take,
    .abort_job = shim_abort_job,
    .node_name = shim_node_name,
};
