/* Internal declarations every layer shares (src/core, src/process, src/backends); the process
 * layer's own are in src/process/process.h.  Nothing here is public API. */
#ifndef PJ_INTERNAL_H
#define PJ_INTERNAL_H

#include "parjob.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>

#define PJ_HIDDEN __attribute__((visibility("hidden")))
/* Thread-locals read on every task: initial-exec avoids a __tls_get_addr call per access in the
 * shared library. */
#define PJ_TLS _Thread_local __attribute__((tls_model("initial-exec")))

/* A result slot of a task that has not run (or must run again).  Process backends find the
 * slots of a batch so when they receive it, and leave so the tasks they could not run; the
 * watchdog marks so the tasks after one it stopped. */
#define PJ__PENDING 1

/* ---- functions and tasks (fn.c, task.c) ----------------------------------------------------- */

/* How an argument is loaded into a register image for the direct-call path (fn.c). */
struct pj__argop {
    uint32_t offset;    /* in the task's argument block */
    uint8_t load;       /* PJ__LOAD_* */
    uint8_t slot;       /* integer register or vector register number */
};

/* pj_fn.ret_str: how a C-string return is kept (pj_type_str_owned / _borrowed). */
enum { PJ__STR_OWNED = 1, PJ__STR_BORROWED = 2 };

struct pj_fn {
    ffi_cif cif;
    uint8_t call;       /* PJ__CALL_FFI, or a direct-call class (fn.c) */
    uint8_t ret_str;    /* 0, or PJ__STR_*: returns a C string, which its result owns (in
                           value.heap, NULL for a NULL return) once the task succeeded */
    bool struct_args;   /* a struct is passed by value: its padding needs care on the wire */
    bool pointer_args;  /* some argument is a pointer: tasks are checked before crossing */
    struct pj__argop *ops;
    void (*ptr)(void);
    ffi_type *rtype;
    ffi_type **atypes;  /* owned copy, nargs entries */
    unsigned nargs;
    size_t *offsets;    /* where argument i lives in a task's argument block */
    size_t args_size;   /* bytes of the argument block */
    size_t ret_size;    /* bytes ffi_call writes for the return value (>= sizeof(ffi_arg)
                           for integral returns), 0 for void */
    char *name;
};

struct pj_task {
    const pj_fn *fn;
    pj_buf *bufs;       /* NULL, or nargs entries where kind 0 means "not a buffer" */
    _Alignas(16) unsigned char args[];
};

/* Whether a successful result of fn owns value.heap: a return value too big for value.bytes,
 * or a C string. */
static inline bool pj__fn_result_heap(const pj_fn *fn)
{
    return fn->ret_size > sizeof(((pj_result *)0)->value.bytes) || fn->ret_str;
}

/* Calls fn with the argument block args, writing the return value to ret (fn->ret_size
 * bytes): directly for signatures the platform's calling convention lets us call without
 * libffi, through ffi_call otherwise. */
PJ_HIDDEN void pj__invoke(const pj_fn *fn, const unsigned char *args, void *ret);

/* A pointer argument a worker process cannot receive (not NULL and not a declared buffer):
 * its number + 1, or 0 when the task can cross. */
PJ_HIDDEN unsigned pj__raw_pointer_arg(const pj_task *t);
/* A parameter type as an error message names it: "double", "pointer", "integer"... (task.c,
 * for pj_delayed's and the bulk columns' conversions). */
PJ_HIDDEN const char *pj__param_type_name(const ffi_type *t);
/* For pj__raw_pointer_arg's answer a: what cannot cross, into what ("argument 2 is a raw
 * pointer", or the struct argument and the path of its pointer member, "member 1.0"), and
 * the fix, returned as a static string. */
PJ_HIDDEN const char *pj__raw_pointer_what(const pj_task *t, unsigned a, char *what, size_t len);

/* Largest argument count the stack-built argv of the executor accepts. */
#define PJ__MAX_ARGS 256

/* Thread-local error of constructors (pj_last_error). */
PJ_HIDDEN int pj__set_last_error(int code, const char *fmt, ...) PJ_PRINTF(2, 3);

/* ---- execution (worker.c; the result accessors: results.c) ---------------------------------- */

/* Where the running task of a batch is published, so the dispatcher's watchdog can see how long
 * it has run and claim it.  In the executing thread's TLS for in-process backends; in memory
 * shared with the worker for process backends. */
struct pj__cell {
    _Atomic uint64_t running;    /* 0: none; i + 1 while task i runs; PJ__CELL_STOPPED | (i+1)
                                    once the watchdog has claimed task i */
    _Atomic uint64_t started_ns; /* CLOCK_MONOTONIC start of the running task */
};
#define PJ__CELL_STOPPED (UINT64_C(1) << 63)
/* Process workers: task i returned and its result is not yet committed to shared memory.  No
 * deadline applies any more, but a crash now (a task that broke the heap) is still its own. */
#define PJ__CELL_RETURNED (UINT64_C(1) << 62)

struct pj__exec {
    pj_task *const *tasks;
    pj_result *results;
    size_t begin, count;         /* run tasks[begin..count) */
    struct pj__cell *cell;       /* NULL: no deadline tracking */
    uint64_t timeout_ns;         /* 0: none */
    const _Atomic int *cancel;   /* nonzero: tasks not started are cancelled */
};

/* Runs exec's tasks writing results[i].  Returns 0, or PJ_ETIMEDOUT when the watchdog claimed a
 * running task: the caller must then forget the batch (it was handed back already). */
PJ_HIDDEN int pj__execute(const struct pj__exec *exec);
/* One call, result written to *r (status, value, message). */
PJ_HIDDEN void pj__call(const pj_task *t, pj_result *r);
/* The task this thread is running, so pj_fail knows where to record its failure.  Failures are
 * kept here, not in the result, because a task that overran its deadline may still be running
 * when its result has been handed back.  worker.c's; here so that a call made outside pj__call
 * (the process worker's uniform batches call pj__invoke on blocks in place) costs no function
 * call: pj__call_begin before it, so that pj_fail records; then pj__call_failed says whether it
 * failed: if so pj__call_finish(r) turns the failure into r (r->fn set), else pj__call_end.
 * Either ends the call. */
struct pj__call_context {
    bool active;
    bool failed;
    char *message;
};
PJ_HIDDEN extern PJ_TLS struct pj__call_context pj__current_call;
static inline void pj__call_begin(void)
{
    pj__current_call.active = true;
}
static inline bool pj__call_failed(void)
{
    return pj__current_call.failed;
}
static inline void pj__call_end(void)
{
    pj__current_call.active = false;
}
PJ_HIDDEN void pj__call_finish(pj_result *r);
PJ_HIDDEN uint64_t pj__now_ns(void);
/* Set in threads and processes that run tasks: nested pj_parallel default to n_jobs = 1. */
PJ_HIDDEN extern PJ_TLS bool pj__in_worker;
PJ_HIDDEN extern bool pj__process_is_worker;
static inline bool pj__in_worker_context(void)
{
    return pj__in_worker || pj__process_is_worker;
}
/* Frees what a result owns (message, heap value), leaving it unusable. */
PJ_HIDDEN void pj__result_release(pj_result *r);
/* Releases what a result owns (message, heap value) and resets it. */
PJ_HIDDEN void pj__result_clear(pj_result *r);
/* Sets r to a failure with a formatted message (replacing any). */
PJ_HIDDEN void pj__result_fail(pj_result *r, int status, int code, const char *fmt, ...)
    PJ_PRINTF(4, 5);

/* ---- batches (dispatch.c) ------------------------------------------------------------------- */



/* The backend-facing batch.  It holds one owner's fields per concern; each front end keeps
 * its own bookkeeping in a struct that embeds the batch first (dispatch.c's run_batch,
 * executor.c's pj_future), reached again from the batch pj_batch_done hands back.  Backends
 * registered by users reach it only through the accessors of parjob.h (batch.c); the
 * library's own code reads the fields directly, on the hot path. */
struct pj_batch {
    /* Set by the front end before submit; read by the backend. */
    pj_task *const *tasks;
    pj_result *results;
    size_t count;
    size_t begin;              /* first task still to run: > 0 when re-submitted after a
                                  crash or timeout stopped part of it */
    size_t first_index;        /* submission index of tasks[0] */
    uint64_t timeout_ns;
    const _Atomic int *cancel; /* 0, or PJ__CANCEL_STOP / PJ__CANCEL_KILL (below) */
    _Atomic int *gate;         /* NULL, or a front end's start gate (futures): pj__batch_start */
    void (*on_done)(pj_batch *b); /* what pj_batch_done calls: the front end's handler */
    uint64_t run_id;           /* the run it belongs to (pj__shared_new_run): a process pool
                                  places its large inputs once per run; 0: none (futures) */
    /* The front ends' re-run bookkeeping (pj__batch_rerun). */
    size_t sent_begin;         /* begin when last handed back to the backend, to tell progress */
    int resubmits;
    /* Written by whoever runs it. */
    _Atomic(struct pj__cell *) cell; /* set by whoever runs it; read by the watchdog */
    uint64_t exec_ns;          /* measured run time, set by the executor */
    struct pj_batch *backend_next; /* free for the backend (its queue) */
    bool slots_ready;          /* pj_batch_start made the slots from begin whole: the public
                                  accessors may read and write them (batch.c) */
    /* The process pool's (procpool.c), read back by the codec through pj__records. */
    const pj_fn *uniform_fn;   /* the one function of tasks [uniform_begin, uniform_end) when
                                  last sent as a uniform batch (codec.c), else NULL: their
                                  results need not look each task up */
    size_t uniform_begin, uniform_end;
    bool not_ahead;            /* a process pool could not encode it ahead (too big): don't
                                  try again */
    /* Bulk runs (bulk_ranges.c): a batch of no tasks whose body claims ranges of calls itself.
     * pj_batch_run calls it instead of running tasks; only backends that declare
     * PJ_BACKEND_BATCH_RUN are given such batches. */
    int (*run_ranges)(pj_batch *b);
    /* Bulk calls into result slots (bulk_slots.c, the executor's map): the plan whose calls
     * range_first + [begin, count) this batch runs with run_ranges = pj__bulk_run_slots. */
    const struct bulk_plan *range_plan;
    size_t range_first;
    /* Bulk calls on parjob's process pool (PJ_BACKEND_COLUMNS; bulk_ranges.c): a batch with
     * no tasks (tasks NULL) of calls range_first + [0, count) of range_fn, whose argument
     * blocks for calls [begin, end) range_gather writes, stride bytes apart from blocks, when
     * the batch is encoded — every byte of each stride, padding as zeroes (the memory holds
     * old bytes); results in the slots as usual. */
    const pj_fn *range_fn;
    void (*range_gather)(const pj_batch *b, size_t begin, size_t end, unsigned char *blocks,
                         size_t stride);
    /* When not NULL (a range batch whose output holds the return type as it is): the first
     * range_out_size bytes of a success's value go straight to range_out + i *
     * range_out_stride for batch position i as its record is applied, and its slot gets only
     * the status — no copy through the slot. */
    unsigned char *range_out;
    size_t range_out_stride, range_out_size;
};

/* A batch's cancel flag.  STOP: start no more of its tasks (they get PJ_ECANCELLED); the tasks
 * running finish.  KILL (pj_parallel_cancel): the same, and a backend that can stop a running
 * task at once does — a process pool kills the worker, and the task it ran is PJ_ECANCELLED.
 * The flag only ever rises during a run. */
enum { PJ__CANCEL_STOP = 1, PJ__CANCEL_KILL = 2 };

/* Start gate, for front ends that let a caller cancel a queued batch (futures): b->gate points
 * at an int set to PJ__GATE_PENDING.  Whoever is about to run the batch's first task —
 * pj_batch_run, or a process pool about to hand the batch to a worker process — calls
 * pj__batch_start: it moves the gate to STARTED and returns true, or finds it CANCELLED, marks
 * the batch's tasks PJ_ECANCELLED and returns false: hand the batch back unrun.  A NULL gate
 * always passes; a STARTED one too (a batch re-submitted after a crash). */
enum { PJ__GATE_PENDING = 0, PJ__GATE_STARTED = 1, PJ__GATE_CANCELLED = 2 };
PJ_HIDDEN bool pj__batch_start(pj_batch *b);

struct pj_results {
    size_t n;
    pj_result *r;
    size_t mapped;             /* bytes mapped for r, 0 when malloc'd */
    bool own_memory;           /* some result holds a message or heap value: free them */
};

/* A run's result array: zeroed, or with recycled_ok possibly the last array freed, holding its
 * old bytes (the caller writes every slot before anything reads it).  *mapped: bytes mapped,
 * 0 when malloc'd. */
PJ_HIDDEN pj_result *pj__results_alloc(size_t n, size_t *mapped, bool recycled_ok);
PJ_HIDDEN void pj__results_release(pj_result *r, size_t mapped);

/* Where a run's tasks come from: an array (borrowed) or a producer (tasks handed over). */
struct pj__source {
    pj_task *const *array;
    size_t n;                  /* the array's length; for a producer, how many tasks it will
                                  hand over when it knows (bulk runs: joblib's len()), else 0 */
    pj_producer producer;
    void *state;
    size_t hold_windows;       /* a generator's finished batches held for a lagging consumer,
                                  in windows; 0: PJ__HELD_WINDOWS.  A bulk run's consumer only
                                  copies values out: one window bounds its memory */
};

/* A run is the iterator: pj_run opens one in list mode and collects it. */
PJ_HIDDEN int pj__run_open(pj_parallel *par, const struct pj__source *src, bool list,
                           pj_iter **out);
PJ_HIDDEN int pj__run_collect(pj_iter *run, pj_results **out);
PJ_HIDDEN int pj__run_next(pj_iter *run, pj_result *out);
PJ_HIDDEN int pj__run_close(pj_iter *run);
PJ_HIDDEN pj_parallel *pj__run_parallel(const pj_iter *run);

/* A batch came back from its backend.  True when some of its tasks have not run (a worker
 * died, or the watchdog stopped a task before them) and it should go back to the backend:
 * begin then points at the first of them.  False when every task has its status — also when
 * cancelled (the pending tasks get PJ_ECANCELLED) or after three hand-backs without progress
 * (the backend evidently cannot run the first pending task: PJ_ESYS). */
PJ_HIDDEN bool pj__batch_rerun(pj_batch *b, bool cancelled);
/* Fails tasks[from..count) of b with status and why. */
PJ_HIDDEN void pj__batch_fail_from(pj_batch *b, size_t from, int status, const char *why);

/* ---- backends ------------------------------------------------------------------------------ */

PJ_HIDDEN extern const struct pj_backend pj__backend_sequential;
PJ_HIDDEN extern const struct pj_backend pj__backend_threading;
PJ_HIDDEN extern const struct pj_backend pj__backend_spawn;
PJ_HIDDEN extern const struct pj_backend pj__backend_mpi;
PJ_HIDDEN extern const struct pj_backend pj__backend_fork;
/* What a built-in backend whose workers are not this process's CPUs tells the dispatcher
 * beyond struct pj_backend, as joblib's backends do with effective_n_jobs (registry.c finds
 * them; NULL for a backend without).  Either hook may be NULL. */
struct pj__backend_hooks {
    /* n_jobs < 0 by joblib's rule (cpus + 1 + n_jobs, at least 1) with cpus the backend's
     * workers may use: 0 and *out (1..PJ_MAX_JOBS), or a PJ_E code with a message in err. */
    int (*effective_n_jobs)(int requested, int *out, char *err, size_t errlen);
    /* How n_workers are spread, for the "Using backend" line ("ranks 1-2: 3 each"); "" when
     * there is nothing to say. */
    void (*describe_share)(int n_workers, char *buf, size_t len);
};
PJ_HIDDEN extern const struct pj__backend_hooks pj__backend_mpi_hooks;
PJ_HIDDEN const struct pj__backend_hooks *pj__backend_hooks(const struct pj_backend *backend);
/* Whether a backend of these features can carry t to a worker: on every backend PJ_EINVAL
 * for a buffer past the end of a shared allocation or in a freed one; on process backends
 * also PJ_EPOINTER (a raw pointer argument) or PJ_ERESOLVE (a function no loaded module
 * holds: a closure, JIT code); 0 otherwise; why says which and the fix, without naming the
 * task (the caller says where it came from).  The one check of pj_run, pj_start, pj_submit,
 * pj_map_start and pj_process_new, made before anything runs.  *checked caches the last
 * function found good (start with NULL; one per caller, not shared between threads). */
PJ_HIDDEN int pj__task_crossing(unsigned features, const pj_task *t, const pj_fn **checked,
                                char *why, size_t len);

/* ---- inner threads: the limit on runtimes inside tasks (inner.c) ----------------------------- */

#define PJ__INNER_NVARS 8
struct pj__inner {
    int threads;                 /* each worker's share; 0: leave runtimes and environment be */
    int omp_threads;             /* what omp_set_num_threads is given; 0: not called */
    int blas_threads;            /* what openblas_set_num_threads is given (fork); 0: not called */
    bool keep_set;               /* joblib's default: a variable the parent sets keeps its value */
    char vars[PJ__INNER_NVARS][32]; /* "OMP_NUM_THREADS=2", ... */
};
/* The limit of a pool of n_workers configured by cfg (inner_max_num_threads already resolved
 * from the environment by pj_parallel_new).  Reads this process's environment and CPUs. */
PJ_HIDDEN void pj__inner_init(struct pj__inner *in, const pj_config *cfg, int n_workers);
/* A worker's environment: env with in's variables set (in NULL or inactive: env as is), in a
 * new NULL-terminated array with room for extra more entries before the NULL.  The strings stay
 * env's and in's: free only the array.  NULL when out of memory. */
PJ_HIDDEN char **pj__inner_environ(const struct pj__inner *in, char *const *env, size_t extra);
/* The set-threads functions of the runtimes loaded in this process (NULL: not loaded).  dlsym:
 * look them up before fork, never in the child. */
struct pj__inner_runtimes {
    void *omp_set;               /* omp_set_num_threads */
    void *openblas_set;          /* openblas_set_num_threads */
};
PJ_HIDDEN struct pj__inner_runtimes pj__inner_find_runtimes(void);
PJ_HIDDEN extern char **pj__forked_environ; /* inner.c: a forked worker's environ, kept */
/* In a forked worker, before its first task: environ becomes pj__inner_environ's, and the
 * runtimes rt found in the parent get the limit.  in NULL: nothing. */
PJ_HIDDEN void pj__inner_apply_forked(const struct pj__inner *in,
                                      const struct pj__inner_runtimes *rt);
/* In a pool thread, before its first task: this thread's OpenMP nthreads ICV gets the limit. */
PJ_HIDDEN void pj__inner_apply_thread(const struct pj__inner *in);

/* ---- progress (progress.c) ----------------------------------------------------------------- */

/* What a run's progress starts from. */
struct pj__progress_setup {
    int verbose;
    const char *n_jobs_label;  /* n_jobs as asked: "-1", "2", "None" (joblib's repr) */
    int workers;               /* resolved; 1 is joblib's sequential path */
    const char *backend_display;
    const char *share;         /* how the workers are spread (describe_share); NULL or "" */
    bool total_known;          /* an array: joblib's len(iterable) */
    size_t n_tasks;
    size_t pre_dispatch;       /* the evaluated pre_dispatch, in tasks as joblib counts it */
    bool dispatch_all;         /* pre_dispatch "all": the source counts as exhausted at once */
    FILE *out;                 /* NULL: stderr, stdout at verbose >= 50 (tests set a stream) */
    pj_progress_fn callback;   /* PJ_PROGRESS_BAR: the bar (bar.c) instead of a callback */
    void *callback_data;
    FILE *bar_out;             /* NULL: stderr (tests set a stream) */
    int bar_tty;               /* -1: ask isatty; tests force 0 or 1 */
};

/* joblib's print_progress state: its counters and whether its task iterator is still open. */
struct pj__progress {
    int verbose;
    char n_jobs_label[16];
    bool sequential;
    bool total_known;
    size_t n_tasks;
    size_t pre_dispatch;
    bool dispatch_open;
    size_t dispatched_batches, dispatched_tasks, completed_tasks;
    uint64_t start_ns;
    FILE *out;
    pj_progress_fn callback;
    void *callback_data;
    bool bar;                  /* config.progress is PJ_PROGRESS_BAR */
    bool bar_owner;            /* this run draws the bar (bar.c) */
    bool bar_tty;
    FILE *bar_out;
    uint64_t bar_drawn_ns;
    size_t bar_lines;          /* lines or redraws written */
};

/* Prints joblib's "Using backend" line (not on the sequential path). */
PJ_HIDDEN void pj__progress_begin(struct pj__progress *p, const struct pj__progress_setup *s);
/* A batch is being taken from the source: joblib counts it at once.  The dispatcher takes it
 * with the lock released, and a completion that prints meanwhile must see it counted, as
 * joblib's lock would have it.  Then dispatch_end with its task count (0: the source had
 * nothing, the batch does not count). */
PJ_HIDDEN void pj__progress_dispatch_begin(struct pj__progress *p);
PJ_HIDDEN void pj__progress_dispatch_end(struct pj__progress *p, size_t tasks);
/* A batch of `tasks` is back: its line, if joblib would print one now, then the callback with
 * total_so_far (0 while unknown).  Called before the dispatcher tries to take more. */
PJ_HIDDEN void pj__progress_completed(struct pj__progress *p, size_t tasks,
                                      size_t total_so_far);
/* A dispatch attempt after a completion found the source exhausted (joblib's iterator set to
 * None).  Idempotent. */
PJ_HIDDEN void pj__progress_exhausted(struct pj__progress *p);
/* The run is over: the sequential path's last line. */
PJ_HIDDEN void pj__progress_end(struct pj__progress *p);
/* The bar (bar.c): begin claims the terminal unless another run's bar holds it (a nested
 * run) or this is a process worker; update redraws at most ~10 times a second (every 10 s
 * when not a terminal); end draws the last state with a newline and lets the terminal go.
 * tty: 1 or 0 forces, -1 asks isatty(out). */
PJ_HIDDEN void pj__bar_begin(struct pj__progress *p, FILE *out, int tty);
PJ_HIDDEN void pj__bar_update(struct pj__progress *p, size_t done, size_t total,
                              double elapsed);
PJ_HIDDEN void pj__bar_end(struct pj__progress *p, size_t done, size_t total, double elapsed);

/* joblib's short_format_time, into buf. */
PJ_HIDDEN void pj__format_time(char *buf, size_t len, double seconds);

/* A generator keeps workers busy past results the consumer has not taken yet (an early slow
 * task in order, a slow consumer): up to this many windows of finished batches are held while
 * pre_dispatch batches keep running (dispatch.c).  Memory stays bounded by 1 + this windows. */
#define PJ__HELD_WINDOWS 16

/* ---- configuration (parallel.c, cpus.c, pre_dispatch.c, registry.c) -------------------------- */

struct pj_parallel {
    pj_config cfg;             /* strings point into owned copies below */
    char *backend_name;
    char *pre_dispatch_expr;
    int n_jobs;
    char n_jobs_label[16];     /* n_jobs as asked, as joblib's prefix shows it ("-1", "None") */
    size_t window;             /* batches in flight; SIZE_MAX for "all" */
    const struct pj_backend *backend;
    void *backend_state;
    bool backend_open;
    char worker_share[96];     /* the backend's describe_share, made when it opened */
    _Atomic int busy;
    _Atomic int run_cancel;    /* the cancel flag of the run in progress (PJ__CANCEL_*), here so
                                  that pj_parallel_cancel, called from a signal handler, needs
                                  no pointer to a run that another thread may be freeing */
    char errmsg[512];
};

PJ_HIDDEN int pj__parallel_set_error(pj_parallel *par, int code, const char *fmt, ...)
    PJ_PRINTF(3, 4);
PJ_HIDDEN int pj__parallel_acquire(pj_parallel *par);
PJ_HIDDEN void pj__parallel_release(pj_parallel *par);
/* Parses a pre_dispatch expression; 0 and *out, or PJ_EINVAL with a message in err. */
PJ_HIDDEN int pj__eval_pre_dispatch(const char *expr, int n_jobs, size_t *out, char *err,
                                    size_t errlen);
/* The registered backends' names, quoted, comma-separated, into buf (registry.c). */
PJ_HIDDEN void pj__known_backends(char *buf, size_t len);
/* An integer environment variable: 1 and *out when set, 0 when unset or empty, PJ_EINVAL when
 * not an integer (parallel.c). */
PJ_HIDDEN int pj__parse_int_env(const char *name, int *out);
PJ_HIDDEN int pj__resolve_n_jobs(int requested, int *out, char *err, size_t errlen);

/* ---- shared memory objects (shared.c) -------------------------------------------------------- */

/* Where a buffer lies in a shared object: the codec sends this instead of the bytes. */
struct pj__shared_ref {
    uint64_t id;                 /* the object, never reused within the process */
    uint64_t offset;             /* of the buffer in it */
    uint64_t size;               /* of the whole object */
    bool readonly;               /* a sealed input copy: workers map it read-only */
};
/* p[0..len) in a live allocation of pj_shared_alloc: 1 with *out.  0 when p is in none (or
 * NULL).  PJ_EINVAL with why when it runs past the end of its allocation, or lies in one
 * freed with pj_shared_free.  Costs nothing until the first allocation. */
PJ_HIDDEN int pj__shared_find(const void *p, size_t len, struct pj__shared_ref *out,
                              char *why, size_t n);
/* The task's declared buffers, checked with pj__shared_find: 0, or PJ_EINVAL with why naming
 * the argument.  Every entry point runs it, on every backend. */
PJ_HIDDEN int pj__shared_check_task(const pj_task *t, char *why, size_t n);
/* A sealed copy of src[0..len) for run (placed once: the same run, src and len, or a slice
 * of a copy placed already, find it again at an offset); 0 with *out, or PJ_ENOMEM/PJ_ESYS
 * with err. */
PJ_HIDDEN int pj__shared_seal(uint64_t run, const void *src, size_t len,
                              struct pj__shared_ref *out, char *err, size_t errlen);
/* The memory p[0..len) is about to be freed (a task's pj_in_copy): a sealed copy made from it
 * is no longer found by address, since a later buffer of the run may be allocated there. */
PJ_HIDDEN void pj__shared_forget_src(const void *p, size_t len);
/* A number for a new run (never 0); pj__shared_run_end(run) drops its sealed copies (0: none). */
PJ_HIDDEN uint64_t pj__shared_new_run(void);
PJ_HIDDEN void pj__shared_run_end(uint64_t run);
/* A new descriptor (close-on-exec) of live object id, for a worker; -1 once it died. */
PJ_HIDDEN int pj__shared_fd(uint64_t id);
PJ_HIDDEN bool pj__shared_live(uint64_t id);
/* Changes whenever an object dies; fn(arg) is called then too (with the registry's lock held:
 * it may only wake a thread).  pj__shared_listen: 0 or PJ_ENOMEM. */
PJ_HIDDEN uint64_t pj__shared_generation(void);
PJ_HIDDEN int pj__shared_listen(void (*fn)(void *), void *arg);
PJ_HIDDEN void pj__shared_unlisten(void (*fn)(void *), void *arg);

#endif
