/* The few MPI calls parjob makes, behind a table of plain C types, so that libparjob itself
 * never links libmpi.  The table is the one symbol of libparjob-mpi.so (mpi_shim.c, the only
 * file built against mpi.h), which the mpi backend dlopens when a program first asks for it:
 * a program that links parjob and never asks for mpi does not need libmpi to run.
 *
 * Every call is non-blocking: Open MPI's blocking calls busy-poll a core, and rank 0's core
 * belongs to the workers; the callers wait on their own descriptors between polls (mpi_link.c).
 * All of them go to MPI_COMM_WORLD under one tag of parjob's, point to point only: parjob makes
 * no collective call, so a program that uses MPI itself keeps its communicators to itself.
 * Errors return (MPI_ERRORS_RETURN on parjob's communicator): a negative value, the reason in
 * err where the call takes one. */
#ifndef PJ_MPI_SHIM_H
#define PJ_MPI_SHIM_H

#include <stddef.h>

#define PJ_MPI_SHIM_VERSION 1
#define PJ_MPI_SHIM_SYMBOL "pj_mpi_shim"

struct pj_mpi_request;               /* an MPI_Isend in flight, the shim's */

struct pj_mpi_shim {
    int version;                     /* PJ_MPI_SHIM_VERSION */
    /* Initialises MPI with MPI_THREAD_MULTIPLE unless the program did already; *rank, *size of
     * MPI_COMM_WORLD; *ours: parjob initialised it (and alone may finalise it).  -1 with err
     * when MPI cannot start, or when the program's MPI gives less than MPI_THREAD_MULTIPLE
     * (parjob's I/O thread calls MPI while the program's threads may); *rank and *size are
     * set then too, when MPI runs. */
    int (*init)(int *rank, int *size, int *ours, char *err, size_t errlen);
    /* MPI_Send of a small message (eager: it does not wait for the receiver), from the thread
     * that calls it: for the one message rank 0 sends when it cannot run the link thread (the
     * program's MPI gives too low a thread level) — the worker ranks' QUIT.  0 or -1. */
    int (*send_now)(int dest, const void *buf, size_t len);
    /* Calls hook once when MPI_Finalize begins (an attribute on MPI_COMM_SELF): a program that
     * finalises MPI itself lets parjob end its worker ranks first. */
    int (*at_finalize)(void (*hook)(void));
    /* MPI_Finalize, for what init started. */
    void (*finalize)(void);
    /* MPI_Isend of buf[0..len) (len < 2^31) to rank dest; buf must stay untouched until test
     * says the request is done.  NULL on failure. */
    struct pj_mpi_request *(*isend)(int dest, const void *buf, size_t len);
    /* 1 (and the request freed) when the send or receive is complete, 0 when not yet, -1 on
     * an error (the request freed too). */
    int (*test)(struct pj_mpi_request *req);
    /* Cancels a send that will never complete (its peer is gone) and frees the request. */
    void (*drop)(struct pj_mpi_request *req);
    /* 1 when a message for parjob (from any rank) is matched: *src, *len, a malloc'd *buf
     * (the caller's to free) that MPI fills until test says *req is done; 0 when none waits;
     * -1 on an error.  Never waits for the bytes: a large message moves while the caller
     * goes on (MPI_Mrecv would hold the thread, and rank 0's pings, for as long). */
    int (*take)(int *src, void **buf, size_t *len, struct pj_mpi_request **req);
    /* MPI_Abort of the whole job: a worker rank whose rank 0 died, so that mpirun ends the
     * job (and exits) instead of waiting for a rank 0 that will never finalise. */
    void (*abort_job)(int code);
    /* The processor name (MPI_Get_processor_name), for messages. */
    void (*node_name)(char *buf, size_t len);
};

#endif
