/* The process layer that fork, spawn (and an mpi backend) share: the wire format and its
 * framing, function references, the shared-memory region, the pool over its transport, the
 * launcher, the one child start-up and the process worker loop.  Only src/process/, the fork and
 * spawn backends and the tests of these pieces include it; the dispatcher, progress,
 * configuration and the in-process backends never do (tests/layers.sh checks).  Nothing here is
 * public API. */
#ifndef PJ_PROCESS_H
#define PJ_PROCESS_H

#include "internal.h"

#include <string.h>

/* ---- function references across re-execution (fnref.c) ------------------------------------ */

/* Where a function lives, in terms that survive re-executing the program (the spawn backend):
 * the module holding it, by canonical path ("" for the main program itself), and the offset of
 * the function from that module's load base.  No symbol is involved: static functions work. */
struct pj__fnref {
    const char *path;            /* interned: valid for the life of the process */
    uint64_t offset;
    uint64_t dev, ino;           /* the module's file as mapped (0 for the main program): a
                                    worker refuses a module replaced on disk since */
};
/* Parent side: the reference of fn.  PJ_ERESOLVE when no loaded module holds fn as code (an
 * anonymous mapping, a JIT buffer, data), PJ_ENOMEM; the reason in err.  Cached per address
 * (dropped when a library is unloaded): no system call after the first lookup. */
PJ_HIDDEN int pj__fnref_of(void (*fn)(void), struct pj__fnref *out, char *err, size_t errlen);
/* Worker side: the address of (path[0..path_len), offset) in this process: the main program by
 * identity, a loaded library by path, else dlopen(path, RTLD_NOW).  The offset must fall in the
 * module's code, and the file mapped must be the parent's (dev, ino; 0 skips the check).
 * PJ_ERESOLVE with the reason in err.  Cached per module. */
PJ_HIDDEN int pj__fnref_resolve(const char *path, size_t path_len, uint64_t offset,
                                uint64_t dev, uint64_t ino, void (**out)(void), char *err,
                                size_t errlen);
/* A number that changes whenever a module is loaded or unloaded (the dynamic loader's
 * dlpi_adds + dlpi_subs): a forked worker whose number differs lacks the parent's code. */
PJ_HIDDEN uint64_t pj__modules_generation(void);
/* The codec's function-reference ops over the two calls above (PJ__FNREF_MODULE), for workers
 * that re-execute the program (struct pj__fnref_ops is defined with the codec below). */
PJ_HIDDEN extern const struct pj__fnref_ops pj__fnref_module;

/* ---- process backends (codec.c, procpool.c, worker.c) --------------------------------------- */

/* The one wire format (codec.c).  Every message is a header then len bytes of body; bodies are
 * native-endian and 8-byte aligned inside (both ends are the same program on one machine; an
 * MPI backend would add a byte-order flag, not a second format). */
enum pj__msg_type {
    PJ__MSG_BATCH = 1,    /* parent -> worker: a batch to run */
    PJ__MSG_INIT,         /* parent -> worker: the initializer, a batch of one task */
    PJ__MSG_RECORDS,      /* worker -> parent: result records that did not fit shared memory */
    PJ__MSG_DONE,         /* worker -> parent: batch over (u64 exec_ns); records in shm */
    PJ__MSG_ERROR,        /* worker -> parent: batch refused (i32 code, message) */
    PJ__MSG_BATCH_SHM,    /* parent -> worker: a batch whose body is in an input half of
                             the region (u64 half, u64 length), which the parent leaves alone
                             until DONE */
    PJ__MSG_READY,        /* worker -> parent, first and once, empty: its start-up is over
                             and it reads batches (what was sent before waits in the channel) */
    PJ__MSG_SHARE,        /* parent -> worker: map a shared object (framing.c), whose
                             descriptor comes with the message (SCM_RIGHTS) */
    PJ__MSG_UNSHARE,      /* parent -> worker: unmap a shared object (u64 id): it died */
};
#define PJ__MSG_MAGIC 0x316a6270u /* "pbj1" */
struct pj__msg_header {
    uint32_t type;
    uint32_t magic;
    uint64_t len;
};
/* Largest message either side accepts: a bound, so a corrupt length is an error, not a 2^64
 * allocation. */
#define PJ__MSG_MAX ((uint64_t)1 << 36)

/* A growing output buffer; any failed growth sets oom and later appends do nothing. */
struct pj__wbuf {
    unsigned char *p;
    size_t len, cap;
    bool oom;
    bool fixed;          /* p is not ours (a shared region): it cannot grow, overflow is oom */
};
PJ_HIDDEN void pj__wbuf_put(struct pj__wbuf *w, const void *src, size_t n);
PJ_HIDDEN void pj__wbuf_free(struct pj__wbuf *w);

/* Message framing (framing.c): every header, and the READY, DONE, ERROR and BATCH_SHM bodies,
 * written and checked there and nowhere else. */
/* The header of a message of type with len bytes of body. */
PJ_HIDDEN struct pj__msg_header pj__frame_header(uint32_t type, uint64_t len);
/* Whether either side accepts h: the magic, and a length within PJ__MSG_MAX. */
PJ_HIDDEN bool pj__frame_valid(const struct pj__msg_header *h);
/* The message starting at p[0..n): 1 with *h when header and body are all there, 0 when more
 * bytes are needed, -1 when the header is malformed (the peer broke the protocol). */
PJ_HIDDEN int pj__frame_next(const unsigned char *p, size_t n, struct pj__msg_header *h);
/* Whether a worker accepts a message of this type from its parent. */
PJ_HIDDEN bool pj__frame_to_worker(uint32_t type);
/* Appends a header of type to w and returns where it lies; pj__frame_close(w, at) then sets
 * its length to what was appended after it. */
PJ_HIDDEN size_t pj__frame_open(struct pj__wbuf *w, uint32_t type);
PJ_HIDDEN void pj__frame_close(struct pj__wbuf *w, size_t at);
/* READY has an empty body; DONE's is the batch's run time in the worker. */
#define PJ__FRAME_DONE_LEN 8
PJ_HIDDEN void pj__frame_put_done(unsigned char body[PJ__FRAME_DONE_LEN], uint64_t exec_ns);
/* False when body[0..len) is not a DONE body. */
PJ_HIDDEN bool pj__frame_done(const unsigned char *body, size_t len, uint64_t *exec_ns);
/* ERROR, a worker refusing a batch: appends the whole message (header, code, why) to w. */
PJ_HIDDEN void pj__frame_put_error(struct pj__wbuf *w, int code, const char *why);
/* An ERROR body parsed: a PJ_E code (PJ_EPROTO when the body has none or a bad one), and at
 * most PJ__FRAME_WHY_MAX bytes of reason inside the body (print with %.*s). */
#define PJ__FRAME_WHY_MAX 256
struct pj__frame_error {
    int code;
    int why_len;
    const char *why;
};
PJ_HIDDEN struct pj__frame_error pj__frame_error(const unsigned char *body, size_t len);
/* SHARE's body: u64 id, u64 size, u32 readonly, u32 0; UNSHARE's: u64 id. */
#define PJ__FRAME_SHARE_LEN 24
#define PJ__FRAME_UNSHARE_LEN 8
PJ_HIDDEN void pj__frame_put_share(unsigned char body[PJ__FRAME_SHARE_LEN], uint64_t id,
                                   uint64_t size, bool readonly);
/* False when body[0..len) is not a SHARE body (an object of size 0 included). */
PJ_HIDDEN bool pj__frame_share(const unsigned char *body, size_t len, uint64_t *id,
                               uint64_t *size, bool *readonly);
/* BATCH_SHM's body: u64 half, u64 length (pj__put_area_batch, pj__area_batch_body below). */
#define PJ__FRAME_AREA_LEN 16

/* How a function crosses: one kind per batch.  The pool of a backend picks the ops; the worker
 * refuses a batch of another kind (PJ_EPROTO).  fork sends the pointer itself; spawn sends
 * (module path, offset) and only has to provide its own ops (see pj__fnref_pointer). */
enum pj__fnref_kind { PJ__FNREF_POINTER = 1, PJ__FNREF_MODULE = 2, PJ__FNREF_BUILDID = 3 };
struct pj__fnref_ops {
    uint8_t kind;
    /* Parent: append fn's reference to w; 0 or a PJ_E code (PJ_ERESOLVE) with err. */
    int (*encode)(struct pj__wbuf *w, void (*fn)(void), char *err, size_t errlen);
    /* Worker: the function of the reference ref[0..len); 0 or PJ_ERESOLVE/PJ_EPROTO with err.
     * Must validate, never jump: the fuzzer feeds it garbage. */
    int (*resolve)(const unsigned char *ref, size_t len, void (**fn)(void), char *err,
                   size_t errlen);
    /* Parent: the worker is forked for this one batch, a copy of this process as it is now
     * (pj_process's "fork"): undeclared pointer arguments are valid there and cross as they
     * are (a head flag that only a PJ__FNREF_POINTER worker accepts). */
    bool raw_pointers;
};
PJ_HIDDEN extern const struct pj__fnref_ops pj__fnref_pointer;
PJ_HIDDEN extern const struct pj__fnref_ops pj__fnref_pointer_copy;
/* (module path, offset) checked by the module's ELF build-id instead of its inode, for workers
 * on other machines (fnref_buildid.c; the mpi backend's). */
PJ_HIDDEN extern const struct pj__fnref_ops pj__fnref_buildid;

/* Encodes calls [begin, end) of a bulk batch (tasks NULL, range_fn: internal.h) as one uniform
 * batch message into w, each argument block built by b->range_gather; *uniform is range_fn.
 * 0 or a PJ_E code with err (the function is not uniform: PJ_EINVAL; its reference cannot be
 * encoded; ENOMEM). */
PJ_HIDDEN int pj__encode_range_batch(struct pj__wbuf *w, uint32_t type, const pj_batch *b,
                                     size_t begin, size_t end,
                                     const struct pj__fnref_ops *fnref, const pj_fn **uniform,
                                     char *err, size_t errlen);
/* Encodes tasks[begin..end) as one batch message (header included) into w: uniform (bare
 * argument blocks) when every task calls one scalar function without buffers or deadline, and
 * then *uniform (when not NULL) is that function, else NULL.
 * Returns 0 or a PJ_E code with err (a function reference that cannot be encoded, ENOMEM). */
PJ_HIDDEN int pj__encode_batch(struct pj__wbuf *w, uint32_t type, pj_task *const *tasks,
                               size_t begin, size_t end, uint64_t timeout_ns,
                               const struct pj__fnref_ops *fnref, const pj_fn **uniform,
                               char *err, size_t errlen);

/* Shared memory on the wire (sharing.c and shared.c): how the codec decides that a buffer
 * crosses as (object, offset) instead of bytes.  NULL: every buffer's bytes cross. */
struct pj__sharing {
    uint64_t run;                /* the batch's run (pj__shared_new_run); 0: no sealed copies */
    uint64_t max_nbytes;         /* inputs above this are placed in sealed copies */
};
/* Bytes of every batch encoded and of every record applied, in this process: what crosses
 * between parent and workers.  For tests and benchmarks. */
PJ_HIDDEN extern _Atomic uint64_t pj__wire_bytes;
/* pj__encode_batch with buffers placed in shared memory as sh says. */
PJ_HIDDEN int pj__encode_batch_shared(struct pj__wbuf *w, uint32_t type, pj_task *const *tasks,
                                      size_t begin, size_t end, uint64_t timeout_ns,
                                      const struct pj__fnref_ops *fnref,
                                      const struct pj__sharing *sh, const pj_fn **uniform,
                                      char *err, size_t errlen);

/* Whether buffer b crosses as a reference into shared memory a worker can map: a live
 * pj_shared_alloc allocation, or (an input above sh->max_nbytes, sh->run set) a sealed copy
 * placed once for the run.  1 with *ref; 0 when its bytes cross (sh NULL, a string, or none
 * of those); PJ_EINVAL (past an allocation's end, a freed one), PJ_ENOMEM, PJ_ESYS with err. */
PJ_HIDDEN int pj__sharing_place(const struct pj__sharing *sh, const pj_buf *b,
                                struct pj__shared_ref *ref, char *err, size_t errlen);

/* A declared buffer of a decoded task, as the worker holds it. */
struct pj__dbuf {
    uint32_t arg;
    uint32_t kind;       /* pj_buf_kind */
    uint64_t len;
    unsigned char *data; /* in/inout/cstr: inside the message; out: NULL until allocated;
                            shared: in the worker's mapping of the object */
    bool null;           /* the caller passed NULL for it: the function gets NULL */
    bool shared;         /* in a shared object: written in place, no bytes go back */
};

/* The shared objects a worker has mapped (sharing.c): what a SHARED buffer reference of a
 * batch resolves against.  NULL in pj__decode_batch_mapped: such references are refused.
 * Zero-initialise with shm set; the worker loop feeds it SHARE and UNSHARE bodies (-1: the
 * message is malformed, or the object cannot be mapped: the worker ends). */
struct pj__mappings {
    struct mapping *at;
    size_t n, cap;
    struct pj__shm *shm;         /* where a write into a read-only one is noted */
    bool watching;               /* the SIGSEGV handler that notes it is installed */
};
PJ_HIDDEN int pj__mappings_share(struct pj__mappings *m, const unsigned char *body, size_t len,
                                 int fd);
PJ_HIDDEN int pj__mappings_unshare(struct pj__mappings *m, const unsigned char *body,
                                   size_t len);
PJ_HIDDEN void pj__mappings_free(struct pj__mappings *m);
/* The bytes [offset, offset + len) of object id as this worker maps it, or NULL when it has
 * no such object, they run past its end, or want (1) a writable one and it is read-only. */
PJ_HIDDEN unsigned char *pj__mapping_at(const struct pj__mappings *m, uint64_t id,
                                        uint64_t offset, uint64_t len, bool writable);
/* A batch decoded in a worker: tasks point into one arena and into the message body, which
 * must outlive it.  tasks[k] is the batch's task first + k. */
struct pj__decoded {
    size_t first, n;
    uint64_t timeout_ns;
    pj_task **tasks;
    struct pj__dbuf *bufs;   /* all buffers; task k owns bufs[buf_at[k] .. buf_at[k+1]) */
    size_t *buf_at;
    pj_fn **fns;
    size_t nfns;
    void *arena;             /* ffi_types and task records */
    const unsigned char *blocks; /* a uniform batch: n argument blocks of fns[0], no tasks */
    size_t stride;
    bool raw_pointers;       /* the parent forked this worker for it: pointers are valid */
    const struct pj__mappings *maps; /* what SHARED buffer references resolve against */
};
/* Decodes a batch body (after the header).  Validates every length, offset, type and count:
 * PJ_EPROTO (or PJ_ERESOLVE, PJ_ETYPE, PJ_ENOMEM) with err on anything malformed.  On error *d
 * needs no freeing. */
PJ_HIDDEN int pj__decode_batch(const unsigned char *body, size_t len,
                               const struct pj__fnref_ops *fnref, struct pj__decoded *d,
                               char *err, size_t errlen);
/* The same, with SHARED buffer references resolved against the worker's mappings m. */
PJ_HIDDEN int pj__decode_batch_mapped(const unsigned char *body, size_t len,
                                      const struct pj__fnref_ops *fnref,
                                      const struct pj__mappings *m, struct pj__decoded *d,
                                      char *err, size_t errlen);
PJ_HIDDEN void pj__decoded_free(struct pj__decoded *d);

/* One task's result as it crosses back: a record appended to w.  bufs: the task's buffers
 * (out/inout bytes are sent only when the task succeeded). */
PJ_HIDDEN void pj__encode_record(struct pj__wbuf *w, size_t index, const pj_result *r,
                                 const struct pj__dbuf *bufs, size_t nbufs);
/* A run of successes a worker is appending to its shared region (codec.c, RUN_STATUS):
 * one record head for many consecutive tasks, then their values.  Start with head SIZE_MAX
 * and vsize the function's ret_size. */
struct pj__values {
    size_t head;             /* offset of the open run's head, SIZE_MAX when none is open */
    size_t next;             /* the task index that continues it */
    uint32_t count;
    uint32_t vsize;
    unsigned char *count_at; /* the open run's count in its head (pj__values_push) */
};
struct pj__area;
/* Appends task index's value (run->vsize bytes) to the area, continuing the open run or
 * opening one, committed by its `used`; false when it does not fit (spill the area, retry). */
PJ_HIDDEN bool pj__values_append(struct pj__area *area, struct pj__values *run, size_t index,
                                 const void *value);
/* Closes the open run, padding the area to 8 so a record can follow it. */
PJ_HIDDEN void pj__values_close(struct pj__area *area, struct pj__values *run);

/* Where records land: the codec's narrow view of a batch (or of any tasks and result slots,
 * as pj_process's one call), so that it depends on no front end's type. */
struct pj__records {
    pj_task *const *tasks;
    pj_result *results;
    size_t count;
    const pj_fn *uniform_fn;     /* as pj_batch's: tasks [uniform_begin, uniform_end) call it */
    size_t uniform_begin, uniform_end;
    unsigned char *values_out;   /* as pj_batch's range_out: a run's values go straight here */
    size_t values_stride, values_size;
};
static inline struct pj__records pj__batch_records(const pj_batch *b)
{
    return (struct pj__records){ b->tasks, b->results, b->count, b->uniform_fn,
                                 b->uniform_begin, b->uniform_end, b->range_out,
                                 b->range_out_stride, b->range_out_size };
}
/* Parent: applies every record of p[0..len) to `to`: a record for a task no longer pending is
 * skipped (records may arrive twice: spilled, then seen again in shm after a crash).  Out
 * buffers are copied into the caller's memory.  Returns 0 or PJ_EPROTO (stops there). */
PJ_HIDDEN int pj__apply_records(struct pj__records to, const unsigned char *p, size_t len);

/* Memory shared by the parent and one worker (a memfd mapped by both): the watchdog's cell,
 * the cancel flag, and the results of the running batch, appended as records to one half of
 * data[] and committed by that half's `used` — so a crash loses no finished task, with no
 * system call per task.  Batches alternate halves: the worker can start its next batch while
 * the parent still reads the records of the last. */
struct pj__shm {
    struct pj__cell cell;
    _Atomic int cancel;          /* set by the parent: tasks not started get PJ_ECANCELLED */
    _Atomic int half;            /* set by the parent before it sends a batch: its half */
    _Atomic uint64_t used[2];    /* committed bytes of records in each half */
    uint64_t cap;                /* bytes of each half, a multiple of 16 */
    uint64_t in_cap;             /* bytes of each of the two input halves after the record
                                    halves (0: none): batches the parent encoded in place */
    _Atomic uint64_t readonly_fault; /* set by the worker as it dies of a write into a
                                    read-only input (sharing.c): 1 + the object's id */
    _Alignas(16) unsigned char data[];
};
#define PJ__SHM_SIZE ((size_t)16 << 20)
#define PJ__SHM_INPUT ((size_t)4 << 20)
#define PJ__SHM_HALF_CAP(size) \
    ((((size) - sizeof(struct pj__shm) - 2 * PJ__SHM_INPUT) / 2) & ~(uint64_t)15)
static inline unsigned char *pj__shm_input(struct pj__shm *shm, int half)
{
    return shm->data + 2 * shm->cap + (size_t)(half & 1) * shm->in_cap;
}

/* PJ__MSG_BATCH_SHM (framing.c): a message saying that a batch body lies in input half `half`
 * of the worker's region, `len` bytes from offset sizeof(struct pj__msg_header) — where
 * pj__encode_batch leaves it when the region's input half is its buffer. */
PJ_HIDDEN void pj__put_area_batch(struct pj__wbuf *w, int half, uint64_t len);
/* Worker: the batch body a PJ__MSG_BATCH_SHM body[0..n) names, with its length; NULL when
 * the message is malformed or the body would not fit the region's input half. */
PJ_HIDDEN const unsigned char *pj__area_batch_body(struct pj__shm *shm,
                                                   const unsigned char *body, size_t n,
                                                   size_t *len);

/* One half of a region's data, where one batch's records go. */
struct pj__area {
    _Atomic uint64_t *used;
    unsigned char *data;
    uint64_t cap;
};
static inline struct pj__area pj__shm_area(struct pj__shm *shm, int half)
{
    half &= 1;
    return (struct pj__area){ &shm->used[half], shm->data + (size_t)half * shm->cap, shm->cap };
}
/* pj__values_append, its common case inline (a worker's uniform batch appends one value per
 * call): the value continues the open run and fits, so only its bytes, the run's count and
 * the area's `used` are written. */
static inline bool pj__values_push(struct pj__area *area, struct pj__values *run, size_t index,
                                   const void *value)
{
    uint64_t used = atomic_load_explicit(area->used, memory_order_relaxed);
    if (run->head == SIZE_MAX || index != run->next || run->vsize > area->cap - used ||
        run->count == UINT32_MAX)
        return pj__values_append(area, run, index, value);
    unsigned char *dst = area->data + used;
    switch (run->vsize) {
    case 8: memcpy(dst, value, 8); break;
    case 4: memcpy(dst, value, 4); break;
    case 16: memcpy(dst, value, 16); break;
    default: memcpy(dst, value, run->vsize); break;
    }
    run->count++;
    run->next = index + 1;
    memcpy(run->count_at, &run->count, sizeof run->count); /* may run ahead: records.c */
    atomic_store_explicit(area->used, used + run->vsize, memory_order_release);
    return true;
}

struct pj__fd_range {
    int first, last;             /* descriptors first..last, both included */
};

/* Worker process main loop: read batches on fd, run them, answer; returns the exit status
 * when the channel ends (EOF: the parent has gone or closed the pool). */
struct pj__worker_args {
    int fd;                      /* the channel (a stream socket) */
    struct pj__shm *shm;
    const struct pj__fnref_ops *fnref;
};
PJ_HIDDEN int pj__worker_serve(const struct pj__worker_args *args);
/* The one start-up of every new worker process (child.c): fork's child, a spawned program
 * claimed before main, pj_process's worker.  Async-signal-safe. */
struct pj__child_start {
    pid_t parent;                /* > 0: SIGKILL when the thread that started us ends
                                    (PR_SET_PDEATHSIG), and fail if this is no longer our
                                    parent; 0: detached (pj_process's, which ends with its
                                    channel) */
    const struct pj__fd_range *close_ranges; /* descriptors to close (a forked child holds */
    size_t n_close_ranges;       /* what the parent had) */
    int channel;                 /* the worker's channel */
    bool program_handlers;       /* a fork pool's worker, part of the program as multiprocessing's
                                    forked workers are: it keeps the program's handlers (a
                                    Ctrl-C handler) but for the crash signals
                                    (pj__worker_default_signals).  Otherwise every signal
                                    starts at its default, as in a spawned program */
};
/* Sets the parent-death signal, closes the ranges, sets the signals to their defaults with none
 * blocked, and moves the channel above stderr, close-on-exec.  Returns the channel's
 * descriptor, or -1: the process cannot serve and must _exit. */
PJ_HIDDEN int pj__child_start(const struct pj__child_start *c);
/* In a new worker process (child.c): a crash must reach the parent as the signal that caused it,
 * whatever handlers the program (or a sanitizer's runtime) installed, so the crash signals go
 * back to their defaults and nothing is blocked. */
PJ_HIDDEN void pj__worker_default_signals(void);
/* Writes all of buf to a socket (no SIGPIPE); -1 on error (a dead peer shows as EOF). */
PJ_HIDDEN int pj__send_all(int fd, const void *buf, size_t n);

/* The process pool shared by fork and spawn (procpool.c).  Everything but starting a worker is
 * common; a backend gives the launcher and its function-reference ops. */
struct pj__launch {
    int fd;                      /* the worker's end of its channel */
    int shm_fd;                  /* memfd holding the worker's pj__shm (spawn maps it in the
                                    child), at shm_offset: a pool's regions share one memfd */
    struct pj__shm *shm;         /* mapped in the parent; a forked child inherits it */
    size_t shm_size;
    size_t shm_offset;           /* of the worker's region in shm_fd (a page multiple) */
    const struct pj__fd_range *close_ranges; /* every parjob descriptor of this process but */
    size_t n_close_ranges;       /* fd: a forked child closes them (exec'd ones see O_CLOEXEC) */
    bool detached;               /* spawn: not tied to the launching thread (no
                                    PR_SET_PDEATHSIG): pj_process's one-batch worker, which
                                    ends with its channel as a forked child ends with its call */
    const struct pj__inner *inner; /* the limit on runtimes inside tasks; NULL: none */
};
struct pj__transport_ops;
struct pj__proc_ops {
    /* What carries batches to the workers and brings their records back (pj__transport_local:
     * worker processes on this machine). */
    const struct pj__transport_ops *transport;
    /* Starts one worker process; returns its pid, or a negative PJ_E code with err.  Called
     * from the local transport's launcher thread (below), whose descriptor table holds only
     * stdin, stdout, stderr, l->fd, l->shm_fd and what l->close_ranges names. */
    pid_t (*launch)(const struct pj__launch *l, char *err, size_t errlen);
    const struct pj__fnref_ops *fnref;
    /* What a new worker runs before it sends READY, for the message that says its start-up
     * failed ("the program's start-up (...)"). */
    const char *startup;
};
/* What the pool needs from "a worker somewhere" (transport_local.c says how an MPI transport
 * and shared buffers plug in).  Slots are numbered 0..n-1; per batch and per event, never per
 * task: what a task needs crosses in the slot's region. */
struct pj__transport;
struct pj__transport_ops {
    const char *name;
    /* n empty slots for workers that ops starts with the limit inner (which outlives the
     * transport).  0, or a PJ_E code with err. */
    int (*open)(struct pj__transport **out, int n, const struct pj__proc_ops *ops,
                const struct pj__inner *inner, char *err, size_t errlen);
    /* Slot i's region (cell, cancel flag, record halves, input halves), at one address from
     * open to close: the dispatcher's watchdog holds pointers into it. */
    struct pj__shm *(*region)(struct pj__transport *t, int i);
    /* Starts a worker in empty slot i; wait names it by tag.  Its pid (> 0), or a negative
     * PJ_E code with err. */
    pid_t (*start)(struct pj__transport *t, int i, void *tag, char *err, size_t errlen);
    /* Hands slot i's worker whole messages (framing.c).  A worker that died shows as the end
     * of its channel (receive), not here. */
    void (*send)(struct pj__transport *t, int i, const void *msg, size_t len);
    /* What slot i's worker sent, into buf[0..cap): the bytes, 0 once its channel has ended
     * (it exited or died: reap it), -1 when there is nothing now. */
    ssize_t (*receive)(struct pj__transport *t, int i, void *buf, size_t cap);
    /* Waits up to timeout_ms (-1: no limit) for workers with something to receive; their
     * tags into tags[0..max); how many (0 after wake or the timeout). */
    int (*wait)(struct pj__transport *t, void **tags, int max, int timeout_ms);
    /* Ends a wait at once.  Any thread. */
    void (*wake)(struct pj__transport *t);
    /* Kills slot i's worker now.  Any thread, while the worker has not been reaped (the
     * caller's lock says so). */
    void (*kill)(struct pj__transport *t, int i);
    /* Ends slot i's channel (the worker exits on it), waits for the worker, SIGKILL after a
     * grace; its wait status, in waitpid's encoding.  The slot is empty again. */
    int (*reap)(struct pj__transport *t, int i);
    /* Ends every worker left, in parallel (one grace for all), and frees t. */
    void (*close)(struct pj__transport *t);
    /* Optional (NULL: never).  After slot i's worker ended: a PJ_E code with the reason in err
     * when it was lost with the machine it ran on (mpi: a worker rank that stopped answering),
     * which fails the pool's run; else 0. */
    int (*lost)(struct pj__transport *t, int i, char *err, size_t errlen);
    /* Shared buffers (appended; sharing.c): hands slot i's worker shared object id, size
     * bytes (readonly: a sealed input copy, to map read-only), whose descriptor fd stays the
     * caller's.  The worker has it mapped before it reads what is sent after; UNSHARE, sent
     * as a message, drops it.  A dead worker shows as the end of its channel, not here. */
    void (*share)(struct pj__transport *t, int i, uint64_t id, int fd, uint64_t size,
                  bool readonly);
};
PJ_HIDDEN extern const struct pj__transport_ops pj__transport_local;
/* Rank 0's side of the mpi backend (transport_mpi.c): slots are local workers of MPI worker
 * ranks, each rank a supervisor (supervisor_mpi.c) over its own local transport. */
PJ_HIDDEN extern const struct pj__transport_ops pj__transport_mpi;
/* The mpi backend's worker ranks (ranks_mpi.c), for n_jobs < 0 and the "Using backend" line.
 * The CPUs the worker ranks may use, summed (each rank's pj_cpu_count(), asked over MPI and
 * waited for): 0 and *sum, PJ_EBUSY while an mpi pool is open, PJ_EBACKEND with err (no MPI
 * worker ranks, a rank that does not answer).  How many worker ranks this rank 0 has (0: MPI
 * does not start, or this is not rank 0). */
PJ_HIDDEN int pj__mpi_worker_cpus(int *sum, char *err, size_t errlen);
PJ_HIDDEN int pj__mpi_worker_ranks(void);

/* The shared objects one slot's worker has been handed (sharing.c), in the parent.  Zeroed is
 * empty.  pj__peer_hand: before tasks[begin..end) go to the worker in slot, hands it (the
 * transport's share) every object they name that it lacks, after pj__peer_sweep; 0 or a PJ_E
 * code with err (an allocation freed meanwhile).  pj__peer_sweep: tells it to unmap the
 * objects that died since (UNSHARE); cheap when none did.  pj__peer_forget: the worker is
 * gone, a new one holds nothing. */
struct pj__peer {
    uint64_t *ids;
    size_t n, cap;
    uint64_t gen;                /* pj__shared_generation() at the last sweep */
};
PJ_HIDDEN int pj__peer_hand(struct pj__peer *pr, const struct pj__sharing *sh,
                            pj_task *const *tasks, size_t begin, size_t end,
                            const struct pj__transport_ops *tr, struct pj__transport *t,
                            int slot, char *err, size_t errlen);
PJ_HIDDEN void pj__peer_sweep(struct pj__peer *pr, const struct pj__transport_ops *tr,
                              struct pj__transport *t, int slot);
PJ_HIDDEN void pj__peer_forget(struct pj__peer *pr);
PJ_HIDDEN void pj__peer_free(struct pj__peer *pr);

PJ_HIDDEN int pj__procpool_open(void **state, int n_workers, const pj_config *config,
                                const struct pj__proc_ops *ops, char *err, size_t errlen);
PJ_HIDDEN int pj__procpool_submit(void *state, pj_batch *batch);
PJ_HIDDEN void pj__procpool_stop_task(void *state, pj_batch *batch);
PJ_HIDDEN void pj__procpool_close(void *state);

/* The thread that runs a pool's launcher (launcher.c), from a descriptor table of its own: a
 * worker then inherits its channel and the memfd, not every other worker's channel.
 * pj__launcher_open starts it (0 or PJ_ESYS with err); pj__launcher_start hands it l (l->fd
 * and l->shm_fd are copied to it; close_ranges are its own) and returns what launch returned,
 * err filled on failure; pj__launcher_close (NULL allowed) ends it, after the workers it
 * started have been reaped (they get PR_SET_PDEATHSIG when it ends).  One caller at a time. */
struct pj__launcher;
PJ_HIDDEN int pj__launcher_open(struct pj__launcher **out,
                                pid_t (*launch)(const struct pj__launch *l, char *err,
                                                size_t errlen),
                                char *err, size_t errlen);
PJ_HIDDEN pid_t pj__launcher_start(struct pj__launcher *L, const struct pj__launch *l,
                                   char *err, size_t errlen);
PJ_HIDDEN void pj__launcher_close(struct pj__launcher *L);

/* The fork backend's launcher (fork.c), for front ends that drive one worker themselves
 * (pj_process): forks a worker serving batches with PJ__FNREF_POINTER references on l->fd,
 * with l->shm (mapped MAP_SHARED) as its region, after closing l->close_ranges.  Returns the
 * pid or a negative PJ_E code with err.  As pj__spawn_launch's, the worker is tied to the
 * calling thread unless l->detached. */
PJ_HIDDEN pid_t pj__fork_launch(const struct pj__launch *l, char *err, size_t errlen);
/* The spawn backend's launcher (spawn.c), for front ends that drive one worker themselves
 * (pj_process): starts the program re-executed as a worker serving batches with
 * PJ__FNREF_MODULE references on l->fd, l->shm_fd mapped as its pj__shm (l->shm_size bytes at
 * l->shm_offset);
 * nothing else crosses (l->close_ranges is not needed).  Returns the pid or a negative PJ_E code
 * with err.  The worker gets SIGKILL when the calling *thread* ends (PR_SET_PDEATHSIG): call it
 * from a thread that outlives the worker — or set l->detached, and the worker neither asks for
 * that signal nor checks that its parent still lives. */
PJ_HIDDEN pid_t pj__spawn_launch(const struct pj__launch *l, char *err, size_t errlen);

/* One kind of worker that a launcher starts as this program re-executed (startup.c): how the
 * new process knows it is one, and what it runs in main's place. */
struct pj__worker_entry {
    /* Whether this process was started as this kind of worker.  If so it keeps what serve
     * needs and removes its mark from the environment (a task's children must not see it); a
     * malformed mark is reported on stderr and the process _exits.  Called once, before main,
     * as early as the start-up allows. */
    bool (*claim)(void);
    /* Serves tasks until the launcher ends the worker; returns the exit status.  Called once,
     * after claim, in main's place: the program's whole start-up has run. */
    int (*serve)(void);
};
PJ_HIDDEN extern const struct pj__worker_entry pj__spawn_worker_entry;
/* An MPI rank other than 0 started for parjob's mpi backend (supervisor_mpi.c). */
PJ_HIDDEN extern const struct pj__worker_entry pj__mpi_worker_entry;

#endif
