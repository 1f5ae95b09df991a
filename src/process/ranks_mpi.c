/* Rank 0's view of the MPI worker ranks as a whole, beside the slots on them
 * (transport_mpi.c): that this process is rank 0 of a job with worker ranks, the claim that
 * lets one pool at a time use them, and how many CPUs each rank may use — what n_jobs < 0
 * counts (joblib's effective_n_jobs), asked over the link and answered by supervisor_mpi.c
 * with pj_cpu_count() on the rank (affinity and cgroup quota there, not here). */
#include "mpi_link.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define CPUS_ANSWER_NS (30000ull * 1000000ull) /* as the transport waits for OPENED */
#define QUERY_POOL 0x80000000u                 /* no pool of the transport's has this bit */

static atomic_bool claimed;      /* the worker ranks serve one pool (or query) at a time */
static _Atomic uint32_t queries;

/* This process's link, on rank 0 of a job with worker ranks: 0, or PJ_EBACKEND with err. */
static int link_to_ranks(struct pj__mpi_link **link, char *err, size_t errlen)
{
    int rc = pj__mpi_link_open(link, NULL, NULL, err, errlen);
    if (!rc && pj__mpi_rank(*link) != 0) {
        snprintf(err, errlen, "the mpi backend runs its dispatcher on MPI rank 0 only (this is "
                 "rank %d)", pj__mpi_rank(*link));
        rc = PJ_EBACKEND;
    }
    if (!rc && pj__mpi_size(*link) < 2) {
        snprintf(err, errlen, "no MPI worker ranks: run the program under mpirun with at least "
                 "two ranks (mpirun -n 3 ./prog); rank 0 runs main, the others the tasks");
        rc = PJ_EBACKEND;
    }
    return rc;
}

int pj__mpi_ranks_claim(struct pj__mpi_link **link, char *err, size_t errlen)
{
    bool was = false;
    if (!atomic_compare_exchange_strong(&claimed, &was, true)) {
        snprintf(err, errlen, "another pj_parallel holds the MPI worker ranks: free it first "
                 "(one mpi pool at a time)");
        return PJ_EBUSY;
    }
    int rc = link_to_ranks(link, err, errlen);
    if (rc)
        atomic_store(&claimed, false);
    return rc;
}

void pj__mpi_ranks_release(void)
{
    atomic_store(&claimed, false);
}

int pj__mpi_worker_ranks(void)
{
    struct pj__mpi_link *link;
    char err[320];
    if (pj__mpi_link_open(&link, NULL, NULL, err, sizeof err) || pj__mpi_rank(link) != 0)
        return 0;
    return pj__mpi_size(link) - 1;
}

/* ---- how many CPUs the worker ranks may use ---------------------------------------------- */

struct cpus_query {
    pthread_mutex_t lock;
    pthread_cond_t heard;
    uint32_t id;
    int ranks, answered;
    int *cpus;                   /* per rank (1..ranks); 0: not answered yet */
};

/* The link thread, for every message while the query listens. */
static void cpus_heard(void *ctx, int src, const struct pj__mpi_head *h, const unsigned char *p,
                       size_t len)
{
    struct cpus_query *q = ctx;
    (void)p, (void)len;
    if (h->op != PJ__MPI_CPUS_ARE || h->pool != q->id || src < 1 || src > q->ranks)
        return;
    pthread_mutex_lock(&q->lock);
    if (!q->cpus[src]) {
        q->cpus[src] = h->a >= 1 && h->a <= PJ_MAX_JOBS ? (int)h->a : 1;
        q->answered++;
        pthread_cond_signal(&q->heard);
    }
    pthread_mutex_unlock(&q->lock);
}

/* The first rank that has not answered and is silent (dead), or past the deadline: 0 when
 * every rank answered.  Under q->lock. */
static int unanswered(struct cpus_query *q, struct pj__mpi_link *link, uint64_t give_up)
{
    for (int r = 1; r <= q->ranks; r++)
        if (!q->cpus[r] && (pj__now_ns() > give_up || pj__mpi_silent_ns(link, r) >=
                                                           PJ__MPI_LOST_NS))
            return r;
    return 0;
}

static int await_cpus(struct cpus_query *q, struct pj__mpi_link *link, char *err,
                      size_t errlen)
{
    uint64_t give_up = pj__now_ns() + CPUS_ANSWER_NS;
    int silent = 0;
    pthread_mutex_lock(&q->lock);
    while (q->answered < q->ranks && !(silent = unanswered(q, link, give_up))) {
        struct timespec at;
        clock_gettime(CLOCK_REALTIME, &at);
        at.tv_nsec += 100 * 1000000L; /* a lost rank is seen within 0.1 s of PJ__MPI_LOST_NS */
        at.tv_sec += at.tv_nsec / 1000000000L;
        at.tv_nsec %= 1000000000L;
        pthread_cond_timedwait(&q->heard, &q->lock, &at);
    }
    pthread_mutex_unlock(&q->lock);
    if (!silent)
        return 0;
    snprintf(err, errlen, "MPI rank %d did not say how many CPUs it may use, for n_jobs < 0 "
             "(is it running parjob's worker? every rank but 0 must be started with the same "
             "program, PARJOB_MPI=1 or PARJOB_BACKEND=mpi in its environment, or `mpi` among "
             "its arguments)", silent);
    return PJ_EBACKEND;
}

int pj__mpi_worker_cpus(int *sum, char *err, size_t errlen)
{
    struct pj__mpi_link *link;
    int rc = pj__mpi_ranks_claim(&link, err, errlen);
    if (rc)
        return rc;
    struct cpus_query q = { .id = QUERY_POOL | (atomic_fetch_add(&queries, 1) + 1),
                            .ranks = pj__mpi_size(link) - 1 };
    q.cpus = calloc((size_t)q.ranks + 1, sizeof *q.cpus);
    if (!q.cpus) {
        pj__mpi_ranks_release();
        return PJ_ENOMEM;
    }
    pthread_mutex_init(&q.lock, NULL);
    pthread_cond_init(&q.heard, NULL);
    pj__mpi_listen(link, cpus_heard, &q);
    for (int r = 1; r <= q.ranks; r++)
        pj__mpi_post(link, r, &(struct pj__mpi_head){ .op = PJ__MPI_CPUS, .pool = q.id }, NULL,
                     0);
    rc = await_cpus(&q, link, err, errlen);
    pj__mpi_listen(link, NULL, NULL); /* cpus_heard is not running past this */
    pj__mpi_ranks_release();
    *sum = 0;
    for (int r = 1; !rc && r <= q.ranks; r++)
        *sum += q.cpus[r];
    pthread_cond_destroy(&q.heard);
    pthread_mutex_destroy(&q.lock);
    free(q.cpus);
    return rc;
}
