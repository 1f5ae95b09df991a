/* The mpi backend's link to MPI (mpi_link.c) and the messages its ranks exchange over it.
 * Only transport_mpi.c, supervisor_mpi.c and mpi_link.c include this. */
#ifndef PJ_MPI_LINK_H
#define PJ_MPI_LINK_H

#include "process.h"
#include "mpi_shim.h"

/* Every message between rank 0 and a worker rank: this head, then the op's payload.  slot is
 * the worker rank's local slot (its local workers are numbered 0..n-1); a and b as the op says.
 * Native byte order: a rank refuses OPEN from a rank 0 of another order (the build-id check
 * refuses other programs anyway). */
enum pj__mpi_op {
    /* rank 0 -> worker rank */
    PJ__MPI_OPEN = 1,  /* a: local slots, b: inner_max_num_threads; payload: struct
                          pj__mpi_open.  Answered by OPENED */
    PJ__MPI_START,     /* start local worker `slot` (a spawned worker process) */
    PJ__MPI_DATA,      /* bytes for slot's channel: whole messages (framing.c), BATCH_SHM
                          already turned into BATCH; a: the record half, b: bit 0 cancel,
                          bit 1 the batch has a deadline (the rank mirrors the cell) */
    PJ__MPI_CANCEL,    /* the slot's cancel flag rose */
    PJ__MPI_KILL,      /* SIGKILL the slot's worker */
    PJ__MPI_REAP,      /* end the slot's channel, answer END */
    PJ__MPI_CLOSE,     /* end every local worker, answer CLOSED */
    PJ__MPI_QUIT,      /* rank 0 is done: the worker rank exits */
    /* worker rank -> rank 0 */
    PJ__MPI_OPENED,    /* a: 0 or minus a PJ_E code; payload: the reason */
    PJ__MPI_BYTES,     /* whole messages from slot's worker; a: record half, b: bytes of
                          records of that half first in the payload (sent before a DONE) */
    PJ__MPI_CELL,      /* the slot's cell names a: (running) */
    PJ__MPI_END,       /* the slot's worker ended: a: wait status, b: its cell's running;
                          payload: the records it committed to its current half */
    PJ__MPI_CLOSED,
    /* both ways */
    PJ__MPI_PING,      /* liveness (mpi_link.c); never reaches a listener */
    /* rank 0 -> worker rank, with or without a pool open (ranks_mpi.c) */
    PJ__MPI_CPUS,      /* how many CPUs may this rank's workers use?  pool: the query's number,
                          echoed.  Answered by CPUS_ARE */
    /* worker rank -> rank 0 */
    PJ__MPI_CPUS_ARE,  /* a: pj_cpu_count() on the worker rank (affinity, cgroup quota) */
};
struct pj__mpi_head {
    uint32_t op;
    uint32_t slot;
    uint32_t pool;               /* which of rank 0's pools (OPEN's number, echoed): what a
                                    rank sends for a pool closed since is dropped */
    uint32_t unused;
    uint64_t a, b;
};
/* OPEN's payload: what every worker rank must share with rank 0. */
struct pj__mpi_open {
    uint32_t order;              /* 0x01020304 as rank 0 stores it */
    uint32_t id_len;             /* bytes of the main program's ELF build-id (0: none) */
    unsigned char id[64];
    char program[256];           /* for messages */
};
#define PJ__MPI_MAX_MESSAGE ((size_t)1 << 30)

struct pj__mpi_link;
/* Called on the link thread, for each message in the order it came from src. */
typedef void (*pj__mpi_listener)(void *ctx, int src, const struct pj__mpi_head *h,
                                 const unsigned char *payload, size_t len);

/* The process's link, opened (libparjob-mpi.so loaded, MPI initialised unless the program
 * did, the link thread started) at the first call, with first as its listener from the first
 * message on (a worker rank's: rank 0 may send at once).  0, or PJ_EBACKEND with err (no module,
 * MPI cannot start, a thread level below MPI_THREAD_MULTIPLE) — the same answer every call
 * after a failure, as MPI cannot be initialised twice. */
PJ_HIDDEN int pj__mpi_link_open(struct pj__mpi_link **out, pj__mpi_listener first, void *ctx,
                                char *err, size_t errlen);
PJ_HIDDEN int pj__mpi_rank(const struct pj__mpi_link *L);
PJ_HIDDEN int pj__mpi_size(const struct pj__mpi_link *L);
PJ_HIDDEN void pj__mpi_node_name(const struct pj__mpi_link *L, char *buf, size_t len);
/* Queues a message (copied) for dest; the link thread sends it.  0 or PJ_ENOMEM (also for a
 * message over PJ__MPI_MAX_MESSAGE).  Any thread. */
PJ_HIDDEN int pj__mpi_post(struct pj__mpi_link *L, int dest, const struct pj__mpi_head *h,
                           const void *payload, size_t len);
PJ_HIDDEN int pj__mpi_post2(struct pj__mpi_link *L, int dest, const struct pj__mpi_head *h,
                            const void *p1, size_t n1, const void *p2, size_t n2);
/* Who receives the messages (NULL: they are dropped); once it returns the old listener is
 * not running and will not be called again. */
PJ_HIDDEN void pj__mpi_listen(struct pj__mpi_link *L, pj__mpi_listener f, void *ctx);
/* How long rank has been silent (rank 0 and the worker ranks ping each other every
 * PJ__MPI_PING_NS), counted from the link's start before its first message; whether it ever
 * sent one. */
#define PJ__MPI_PING_NS (100ull * 1000000ull)
/* A rank silent this long is taken for dead (30 missed pings; a loaded machine delays pings
 * by far less). */
#define PJ__MPI_LOST_NS (3000ull * 1000000ull)
PJ_HIDDEN uint64_t pj__mpi_silent_ns(const struct pj__mpi_link *L, int rank);
PJ_HIDDEN bool pj__mpi_spoke(const struct pj__mpi_link *L, int rank);
PJ_HIDDEN void pj__mpi_wake(struct pj__mpi_link *L);
/* Ends this process and asks the MPI runtime to end the job (MPI_Abort). */
PJ_HIDDEN _Noreturn void pj__mpi_abort_job(struct pj__mpi_link *L, int code);
/* Ends the link now (rank 0: the worker ranks QUIT first), finalising MPI if parjob
 * initialised it; what exit and the program's MPI_Finalize also do. */
PJ_HIDDEN void pj__mpi_link_end(void);
/* Rank 0 at exit, when its worker ranks were taken over before main (supervisor_mpi.c): if
 * this process never opened the link, MPI is initialised (unless the program did), every
 * worker rank is sent QUIT, and MPI finalised again if parjob initialised it — so that a
 * program that ends without ever opening an mpi pool ends its whole job.  Nothing when the
 * link was opened (its own exit path releases them) or MPI was finalised already. */
PJ_HIDDEN void pj__mpi_release_unopened(void);

/* Rank 0's claim on the worker ranks (ranks_mpi.c), one pool or CPU query at a time: 0 and
 * the link, checked to be rank 0 of a job with worker ranks; PJ_EBUSY while another holds
 * them, PJ_EBACKEND (not rank 0, no worker ranks, no MPI) with err.  Released by
 * pj__mpi_ranks_release, by the one that claimed them only. */
PJ_HIDDEN int pj__mpi_ranks_claim(struct pj__mpi_link **link, char *err, size_t errlen);
PJ_HIDDEN void pj__mpi_ranks_release(void);

/* The main program's ELF build-id (fnref_buildid.c): its length, 0 when it has none. */
PJ_HIDDEN size_t pj__main_build_id(unsigned char *id, size_t cap);

#endif
