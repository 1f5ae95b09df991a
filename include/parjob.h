/*
 * parjob — joblib's Parallel/delayed for C.
 *
 * Wrap an existing C function once, capture calls of it with pj_delayed(), and run them on a
 * backend chosen at run time ("sequential", "threading", "fork", "spawn" or one you register).
 *
 *     pj_fn *add_fn = PJ_FN(add, &ffi_type_sint, &ffi_type_sint, &ffi_type_sint);
 *     pj_task *tasks[50];
 *     for (int i = 0; i < 50; i++)
 *         tasks[i] = pj_delayed(add_fn, a[i], b[i]);
 *     pj_parallel *par = pj_parallel_new(&(pj_config){ .n_jobs = -1, .backend = "threading" });
 *     pj_results *res;
 *     int rc = pj_run(par, tasks, 50, &res);
 *     for (int i = 0; i < 50; i++)
 *         printf("%d\n", pj_result_int(pj_results_at(res, i)));
 *
 * Conventions (libuv's): every function that can fail returns 0 or a negative PJ_E... code, or
 * NULL for constructors; pj_strerror(code) names a code, pj_parallel_errmsg(par) tells what
 * exactly happened on a handle, pj_last_errmsg() what happened in the last failed constructor
 * of the calling thread.  No function prints unless verbose asks, none calls exit or abort.
 * Whoever creates frees: pj_fn_free, pj_task_free, pj_results_free, pj_parallel_free.
 */
#ifndef PARJOB_H
#define PARJOB_H

#include <ffi.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(PARJOB_BUILDING) && defined(__GNUC__)
#define PJ_EXPORT __attribute__((visibility("default")))
#else
#define PJ_EXPORT
#endif

#if defined(__GNUC__)
#define PJ_PRINTF(fmt, args) __attribute__((format(printf, fmt, args)))
#else
#define PJ_PRINTF(fmt, args)
#endif

#define PJ_VERSION_MAJOR 0
#define PJ_VERSION_MINOR 1
#define PJ_VERSION_PATCH 0
#define PJ_VERSION_HEX ((PJ_VERSION_MAJOR << 16) | (PJ_VERSION_MINOR << 8) | PJ_VERSION_PATCH)
/* The version of the library actually linked, as PJ_VERSION_HEX. */
PJ_EXPORT unsigned pj_version(void);

/* ------------------------------------------------------------------------------------------ */
/* Errors                                                                                     */

/* One list, three uses: the enum, pj_strerror() and pj_err_name(). */
#define PJ_ERRNO_MAP(XX)                                                                       \
    XX(EINVAL, -1, "invalid argument")                                                     \
    XX(ENOMEM, -2, "out of memory")                                                        \
    XX(EARGC, -3, "wrong number of arguments for the function")                            \
    XX(ETYPE, -4, "argument cannot be converted to the declared parameter type")          \
    XX(EBACKEND, -5, "unknown backend")                                                    \
    XX(EBUSY, -6, "parallel handle is running in another thread")                          \
    XX(ESYS, -7, "system call failed")                                                     \
    XX(EFAILED, -8, "task failed (pj_fail)")                                               \
    XX(ETIMEDOUT, -9, "task timed out")                                                    \
    XX(ECRASHED, -10, "task's worker died by a signal")                                    \
    XX(EEXITED, -11, "task called exit")                                                   \
    XX(ECANCELLED, -12, "task cancelled before it ran")                                    \
    XX(EPOINTER, -13, "raw pointer argument cannot cross a process boundary")              \
    XX(ERESOLVE, -14, "function cannot be found in a worker process")                      \
    XX(EPROTO, -15, "malformed message between processes")                                 \
    XX(EEND, -16, "no more results")                                                       \
    XX(ESHUTDOWN, -17, "executor is shut down")                                            \
    XX(ESOURCE, -18, "task source reported an error")

typedef enum pj_errno {
#define PJ__ERRNO_ENUM(name, value, text) PJ_##name = (value),
    PJ_ERRNO_MAP(PJ__ERRNO_ENUM)
#undef PJ__ERRNO_ENUM
    PJ_OK = 0
} pj_errno;

/* A static description of code ("task timed out"); "unknown error" for codes not listed. */
PJ_EXPORT const char *pj_strerror(int code);
/* The code's name ("PJ_ETIMEDOUT"). */
PJ_EXPORT const char *pj_err_name(int code);
/* Detail of the last failed pj_fn_new, pj_delayed, pj_task_new or pj_parallel_new in the
 * calling thread (thread-local, valid until that thread's next failing call). */
PJ_EXPORT const char *pj_last_errmsg(void);
PJ_EXPORT int pj_last_error(void);

/* ------------------------------------------------------------------------------------------ */
/* Functions: describe an existing C function once                                            */

typedef struct pj_fn pj_fn;

/* Describe fn: its return type and its nargs parameter types, as libffi types (structs are
 * ffi_type with FFI_TYPE_STRUCT and a NULL-terminated elements list; complex types are not
 * supported).  name appears in error messages and may be NULL.  The type objects must outlive
 * the pj_fn; atypes itself is copied.  Returns NULL (PJ_EINVAL, PJ_ETYPE, PJ_ENOMEM) with
 * pj_last_errmsg() on a NULL fn, a NULL type or a type libffi rejects.
 * A pj_fn is immutable and may be shared by any number of tasks and threads; free it with
 * pj_fn_free after the last task using it is freed. */
PJ_EXPORT pj_fn *pj_fn_new(const char *name, void (*fn)(void), ffi_type *rtype, unsigned nargs,
                           ffi_type *const *atypes);
PJ_EXPORT void pj_fn_free(pj_fn *fn);
PJ_EXPORT unsigned pj_fn_nargs(const pj_fn *fn);
PJ_EXPORT const char *pj_fn_name(const pj_fn *fn);
/* Used by PJ_FN: types[0] is the return type, types[1..ntypes-1] the parameters. */
PJ_EXPORT pj_fn *pj_fn_new_list(const char *name, void (*fn)(void), unsigned ntypes,
                                ffi_type *const *types);

/* The one-line form: PJ_FN(pow, &ffi_type_double, &ffi_type_double, &ffi_type_double)
 * describes double pow(double, double) and names it "pow"; PJ_FN(f, &ffi_type_void) a
 * function of no arguments returning nothing. */
#define PJ_FN(fn, ...)                                                                         \
    pj_fn_new_list(#fn, (void (*)(void))(fn), PJ__NARG(__VA_ARGS__),                           \
                   (ffi_type *const[]){ __VA_ARGS__ })

/* ------------------------------------------------------------------------------------------ */
/* Buffers: pointer arguments that may cross a process boundary                              */

typedef enum pj_buf_kind {
    PJ_BUF_IN = 1,    /* copied to the worker; the worker's changes are not copied back */
    PJ_BUF_OUT = 2,   /* the worker's bytes are copied back into the caller's memory */
    PJ_BUF_INOUT = 3, /* both */
    PJ_BUF_CSTR = 4   /* a NUL-terminated string, copied in */
} pj_buf_kind;

/* A declared pointer argument.  Pass pj_in(p, n) (etc.) to pj_delayed where the function takes a
 * pointer: threads receive p itself; process backends receive a copy of n bytes and, for out and
 * inout, copy the worker's bytes back into p when the task succeeds.  p must stay valid until
 * the task's result is returned. */
typedef struct pj_buf {
    void *ptr;
    size_t len;
    pj_buf_kind kind;
} pj_buf;

#define pj_in(p, n) ((pj_buf){ (void *)(p), (n), PJ_BUF_IN })
#define pj_out(p, n) ((pj_buf){ (void *)(p), (n), PJ_BUF_OUT })
#define pj_inout(p, n) ((pj_buf){ (void *)(p), (n), PJ_BUF_INOUT })
#define pj_cstr(s) ((pj_buf){ (void *)(s), 0, PJ_BUF_CSTR })

/* ------------------------------------------------------------------------------------------ */
/* Tasks: delayed calls                                                                       */

typedef struct pj_task pj_task;

/* The C type of an argument given to pj_delayed, found by _Generic. */
typedef enum pj_argtag {
    PJ_ARG_BOOL = 1, PJ_ARG_CHAR, PJ_ARG_SCHAR, PJ_ARG_UCHAR, PJ_ARG_SHORT, PJ_ARG_USHORT,
    PJ_ARG_INT, PJ_ARG_UINT, PJ_ARG_LONG, PJ_ARG_ULONG, PJ_ARG_LLONG, PJ_ARG_ULLONG,
    PJ_ARG_FLOAT, PJ_ARG_DOUBLE, PJ_ARG_LDOUBLE, PJ_ARG_PTR, PJ_ARG_BUF
} pj_argtag;

/* pj_delayed(fn, args...) captures the call fn(args...) by value and returns a new task, or
 * NULL (pj_last_error(), pj_last_errmsg()) when the call cannot be made:
 *  - PJ_EARGC: the number of arguments differs from the function's (at most 16 here; use
 *    pj_task_new beyond);
 *  - PJ_ETYPE: a conversion C would refuse: a pointer (or buffer) for an arithmetic parameter,
 *    an arithmetic value for a pointer (only an integer 0 becomes NULL), a NULL struct pointer.
 * Arithmetic values convert to the declared parameter type as a C prototype converts them:
 * pj_delayed(pow_fn, 2, 10) calls pow(2.0, 10.0).
 * A struct passed by value is given as a pointer to the struct: its bytes are copied now, so
 * the struct may change or die after pj_delayed returns.  Passing a struct itself does not
 * compile (a deliberate error: C varargs cannot carry it safely).
 * Pointer arguments are captured as pointers (the pointee is not copied); declare them with
 * pj_in/pj_out/pj_inout/pj_cstr to let them cross to process backends.
 * The caller owns the task: free it with pj_task_free once no run uses it (see pj_run).
 * Not available from C++ (it needs _Generic): use pj_task_new. */
PJ_EXPORT pj_task *pj_delayed_tagged(const pj_fn *fn, int nargs, ...);
PJ_EXPORT pj_task *pj_delayed_va(const pj_fn *fn, int nargs, va_list ap);

/* pj_task_new(fn, argv): the exact form, as ffi_call takes it: argv[i] points to a value of
 * exactly the i-th parameter type (a struct's bytes for a struct).  Copies the values. */
PJ_EXPORT pj_task *pj_task_new(const pj_fn *fn, void *const *argv);
/* Declares argument i (a pointer parameter) of t as a buffer; returns 0 or PJ_EINVAL/PJ_ETYPE. */
PJ_EXPORT int pj_task_set_buf(pj_task *t, unsigned i, pj_buf buf);
PJ_EXPORT void pj_task_free(pj_task *t);
PJ_EXPORT const pj_fn *pj_task_fn(const pj_task *t);

/* Inside a running task: mark it failed with a message (printf format) and return at once from
 * your function — the value it returns is ignored.  The task's status becomes PJ_EFAILED.
 * Returns PJ_EINVAL (and does nothing) when the calling thread is not running a task. */
PJ_EXPORT int pj_fail(const char *fmt, ...) PJ_PRINTF(1, 2);

/* ------------------------------------------------------------------------------------------ */
/* Results                                                                                    */

typedef struct pj_result {
    size_t index;        /* the task's position in submission order (0-based) */
    int status;          /* 0, or PJ_EFAILED, PJ_ETIMEDOUT, PJ_ECRASHED, PJ_EEXITED,
                            PJ_ECANCELLED, or the error that stopped the task being sent */
    int code;            /* PJ_ECRASHED: the signal; PJ_EEXITED: the exit status; else 0 */
    const char *message; /* why it did not succeed, NULL when it did; owned by the results or
                            iterator it came from */
    const pj_fn *fn;     /* the function called: its return type drives the accessors below */
    union {              /* the return value, written in place; read it with the accessors */
        unsigned char bytes[32];
        long double ld;
        void *heap;      /* a struct return larger than 32 bytes lives here */
    } value;
} pj_result;

/* Typed readers.  Each converts from the function's declared return type as C would
 * (an int return read with pj_result_double gives a double); a failed task, a void return or a
 * struct return reads as 0 (NULL).  r may not be NULL. */
PJ_EXPORT int64_t pj_result_i64(const pj_result *r);
PJ_EXPORT uint64_t pj_result_u64(const pj_result *r);
PJ_EXPORT int pj_result_int(const pj_result *r);
PJ_EXPORT double pj_result_double(const pj_result *r);
PJ_EXPORT long double pj_result_ldouble(const pj_result *r);
PJ_EXPORT void *pj_result_ptr(const pj_result *r);
/* The raw bytes of the return value (a struct, say), with its size in *size; NULL for a void
 * function or a task that did not succeed. */
PJ_EXPORT const void *pj_result_value(const pj_result *r, size_t *size);

typedef struct pj_results pj_results;
PJ_EXPORT size_t pj_results_count(const pj_results *res);
/* The result of task i (submission order), or NULL past the end. */
PJ_EXPORT const pj_result *pj_results_at(const pj_results *res, size_t i);
/* Counts of each status, for a quick check: pj_results_count_status(res, 0) is the successes. */
PJ_EXPORT size_t pj_results_count_status(const pj_results *res, int status);
/* Frees res and everything its results own (messages, big return values); NULL is a no-op.
 * Result arrays of 4 MB and more are mapped: the last one freed is kept (returned to the
 * kernel with MADV_FREE, reclaimable under memory pressure) for the next run of a process
 * backend, which would otherwise pay the kernel's zeroing of 64 bytes per task again. */
PJ_EXPORT void pj_results_free(pj_results *res);

/* ------------------------------------------------------------------------------------------ */
/* Parallel                                                                                   */

typedef enum pj_return_as {
    PJ_LIST = 0,              /* pj_run: every result, submission order */
    PJ_GENERATOR,             /* pj_next yields in submission order, each as soon as it and
                                 all before it are done */
    PJ_GENERATOR_UNORDERED    /* pj_next yields in completion order */
} pj_return_as;

typedef enum pj_on_error {
    PJ_ON_ERROR_STOP = 0,     /* joblib's: the first failure stops dispatch; tasks not yet
                                 started are cancelled (PJ_ECANCELLED) */
    PJ_ON_ERROR_CONTINUE      /* run everything, report every status */
} pj_on_error;

/* batch_size = PJ_AUTO: adaptive batches from measured batch durations. */
#define PJ_AUTO 0L
/* n_jobs above this is refused (PJ_EINVAL). */
#define PJ_MAX_JOBS 4096

/* Called after each finished batch: done tasks of total (0 while the source's length is not
 * yet known), seconds since the run started.  Called from whichever thread finished the batch,
 * one call at a time; it must be quick and must not call parjob on the same handle. */
typedef void (*pj_progress_fn)(void *data, size_t done, size_t total, double elapsed);

/* Every field zeroed means unset: zero-initialise the struct and set what you need. */
typedef struct pj_config {
    int n_jobs;               /* > 0 workers; -1 every usable CPU; n < -1: max(cpus+1+n, 1);
                                 0: $PARJOB_N_JOBS, else 1 (1 inside a parjob worker).  Usable
                                 CPUs: min of online CPUs, sched_getaffinity, cgroup quota. */
    const char *backend;      /* "sequential", "threading", "fork", "spawn" or registered;
                                 NULL: $PARJOB_BACKEND, else "threading" (or "sequential" when
                                 n_jobs resolves to 1) */
    long batch_size;          /* tasks per batch, or PJ_AUTO (0, the default); < 0 PJ_EINVAL */
    const char *pre_dispatch; /* batches in flight: "all", "8", or an expression in n_jobs
                                 ("2*n_jobs", the default; + - * / // % ** ( ) unary minus) */
    pj_return_as return_as;   /* for pj_start: PJ_GENERATOR_UNORDERED yields in completion
                                 order, anything else in submission order */
    double timeout;           /* seconds each task may run from its own start; 0: none.  A
                                 late task gets PJ_ETIMEDOUT within ~50 ms of its deadline.
                                 "threading" cannot kill a thread: it abandons the late call,
                                 which keeps running to its end in the background (its result
                                 is discarded), and starts a replacement thread so the pool
                                 keeps its capacity.  Process backends kill the worker and
                                 start a fresh one.  "sequential" cannot interrupt the caller:
                                 a late task is reported when it returns. */
    int verbose;              /* 0: $PARJOB_VERBOSE, else silent; < 0 silent; > 0 joblib's
                                 progress lines (more as it grows, > 10 every batch, >= 50 to
                                 stdout instead of stderr) */
    pj_on_error on_error;
    pj_progress_fn progress;  /* optional */
    void *progress_data;
    /* Process backends ("fork", "spawn"). */
    pj_task *initializer;     /* run once in each new worker before its first task; borrowed */
    long max_tasks_per_child; /* recycle a worker after this many tasks; 0: never */
    double idle_worker_timeout; /* seconds an idle worker lives; 0: 300 (loky's) */
} pj_config;

/* Process backends.  "fork" keeps n_jobs worker processes forked from this one (all started at
 * the first run, before its first task is sent; reused by every later run of the handle,
 * retired after max_tasks_per_child tasks or idle_worker_timeout, replaced after a crash or a
 * timeout).  A
 * task that dies by a signal gets PJ_ECRASHED (code: the signal), one that calls exit
 * PJ_EEXITED (code: the status); the other tasks of its batch run again on a live worker and
 * no finished task runs twice.  Raw pointers are refused (PJ_EPOINTER) on "fork" too, although
 * a forked child could read the parent's memory as of the fork: what a worker writes there
 * would be lost silently — declare buffers.  Workers die with their parent (PR_SET_PDEATHSIG,
 * EOF on their channel) and inherit no descriptor but their own channel and stdin, stdout and
 * stderr as they were when the pool started (they are forked from a thread of parjob's with
 * a descriptor table of its own, so that starting n workers costs n times one, not more).
 * n_jobs above what the machine can start (RLIMIT_NPROC, RLIMIT_NOFILE, memory): the run goes
 * on with the workers that started, retrying the others while batches wait, and says so once
 * on stderr when verbose; only when none starts do tasks fail, with PJ_ESYS and why.
 *
 * Forking a program that runs other threads: a worker is forked from a thread of parjob's
 * while the program's threads go on.  parjob's own code in the worker uses only malloc (made
 * safe across fork by the C library — not by a sanitizer's allocator: under ASan a worker forked
 * while another thread allocates can hang, which is why workers start while the thread that
 * opened the pool waits; replacements can still meet it) and no stdio; crash signals are reset to
 * their defaults so a crash is reported as the signal.  What remains unsafe is what a *task*
 * reaches: a lock another thread held at the moment of the fork stays locked forever in the
 * worker — the program's mutexes, stdio streams (printf from a task may block; parjob flushes
 * a task's stdout/stderr after each batch only when their lock is free), and libraries with
 * threads or locks of their own (OpenMP, BLAS thread pools, gettext, dlopen).  A task that
 * blocks so shows up as a timeout when config.timeout is set.  Such programs should use
 * "spawn", whose workers start from a fresh program image.
 *
 * "spawn" is the same pool with workers started by posix_spawn of the running program
 * (/proc/self/exe, concurrently, about a millisecond each): a fresh image, so nothing the
 * parent's threads hold can deadlock a worker.  Only the worker's channel and shared memory
 * cross (every other descriptor is closed, whatever its close-on-exec flag; signals start at
 * their defaults).  The program becomes a worker in a constructor of parjob's, before main,
 * and never runs main.  Constructors that would have run after that one do not run in a
 * worker: with the shared library, the program's own and those of libraries initialised after
 * libparjob; with the static library, those of objects linked after it.  Functions cross as
 * (module, offset from its load base): static functions, functions of linked libraries and of
 * libraries dlopen'ed at run time resolve with ASLR on (a library not loaded in the worker is
 * dlopen'ed there); a function in no loaded module (an anonymous mapping, a JIT buffer) is
 * refused before it runs, PJ_ERESOLVE naming the task. */

typedef struct pj_parallel pj_parallel;

/* Validate config (NULL: every field unset), resolve n_jobs and the backend, parse
 * pre_dispatch.  Workers start at the first run and persist until pj_parallel_free.
 * NULL on error, with pj_last_error() one of PJ_EINVAL (NULL/absurd field, with the field
 * named), PJ_EBACKEND (the message lists the known backends), PJ_ENOMEM. */
PJ_EXPORT pj_parallel *pj_parallel_new(const pj_config *config);
/* Stops and joins (or kills) every worker.  Must not be called while a run or an iterator is
 * open on par. */
PJ_EXPORT void pj_parallel_free(pj_parallel *par);
/* The last detailed error on par ("task 17 (add) failed: negative input"), "" if none. */
PJ_EXPORT const char *pj_parallel_errmsg(const pj_parallel *par);
PJ_EXPORT int pj_parallel_n_jobs(const pj_parallel *par);
PJ_EXPORT const char *pj_parallel_backend(const pj_parallel *par);
/* The usable CPUs of this process, as n_jobs = -1 sees them. */
PJ_EXPORT int pj_cpu_count(void);

/* A lazy task source: store the next task in *task and return 1, return 0 at the end, or a
 * negative code to stop the run with PJ_ESOURCE.  Called only as the pre-dispatch window
 * allows, one call at a time: by pj_run_source always from the caller's thread; by a
 * generator (pj_start_source) from the caller's or a worker's thread.  parjob owns each task
 * handed over and frees it once its result is returned. */
typedef int (*pj_producer)(void *state, pj_task **task);

/* pj_run runs tasks[0..n) and stores their results, in submission order, in *results:
 *
 *     for (size_t i = 0; i < n; i++) results[i] = call(tasks[i]);
 *
 * Every task ends with exactly one status.  Returns 0 when every task succeeded; otherwise the
 * status of the first failure observed (PJ_EFAILED, PJ_ETIMEDOUT, ...) with the task's index
 * and message in pj_parallel_errmsg — *results is still set and holds every task's status.
 * Returns PJ_EINVAL (NULL argument, n == 0, a NULL task: *results NULL), PJ_EBUSY (par is
 * running in another thread or has an open iterator; the message is in pj_last_errmsg, as
 * par's own belongs to that run), PJ_EPOINTER (a raw pointer argument on a process backend),
 * PJ_ENOMEM, PJ_ESYS.
 * The tasks stay the caller's: they are not modified and can be run again or freed once
 * pj_run returns.  Free *results with pj_results_free. */
PJ_EXPORT int pj_run(pj_parallel *par, pj_task *const *tasks, size_t n, pj_results **results);
/* The same over a producer (ownership of the tasks passes to parjob). */
PJ_EXPORT int pj_run_source(pj_parallel *par, pj_producer next, void *state,
                            pj_results **results);

typedef struct pj_iter pj_iter;

/* Generators.  pj_start begins running tasks[0..n) (borrowed, as in pj_run) and returns an
 * iterator; pj_next stores the next result in *out and returns 0, or PJ_EEND once every
 * result has been returned:
 *
 *     for (size_t i = 0; i < n; i++) { out = call(tasks[i]); yield out; }
 *
 * Order follows config.return_as.  A result's message and heap value stay valid until the next
 * pj_next or pj_iter_close.  Only pre_dispatch batches are taken from the source and not yet
 * returned, so a producer of ten million tasks runs in constant memory.
 * NULL on error: pj_last_error() as for pj_run. */
PJ_EXPORT pj_iter *pj_start(pj_parallel *par, pj_task *const *tasks, size_t n);
PJ_EXPORT pj_iter *pj_start_source(pj_parallel *par, pj_producer next, void *state);
PJ_EXPORT int pj_next(pj_iter *it, pj_result *out);
/* Ends the iteration: tasks not yet started are cancelled, the producer is not called again,
 * tasks already running are waited for (config.timeout bounds that wait, on the backends that
 * can stop a task), everything is freed.  Returns 0,
 * or the first failure as pj_run does. */
PJ_EXPORT int pj_iter_close(pj_iter *it);

/* ------------------------------------------------------------------------------------------ */
/* Backends                                                                                   */

#define PJ_BACKEND_VERSION 1

enum pj_backend_features {
    PJ_BACKEND_PROCESS = 1 << 0, /* tasks cross a process boundary: pointers must be buffers */
    PJ_BACKEND_INLINE = 1 << 1   /* runs batches in the submitting thread: a timeout cannot
                                    interrupt a task, it is reported when the task returns */
};

typedef struct pj_batch pj_batch;

/* A backend runs batches somewhere.  It knows nothing of batching policy, ordering or
 * progress: it receives whole batches, runs them (pj_batch_run, or through the wire format),
 * and hands each back with pj_batch_done.  Version 1 ends at `close`; later versions append. */
struct pj_backend {
    int version;              /* PJ_BACKEND_VERSION */
    const char *name;         /* what config.backend selects, e.g. "threading" */
    const char *display_name; /* joblib's name in progress lines, e.g. "ThreadingBackend" */
    unsigned features;        /* pj_backend_features */
    /* Make the backend's state for n_workers workers; 0 or a PJ_E... code with a message in
     * errbuf.  Workers may start now or lazily. */
    int (*open)(void **state, int n_workers, const pj_config *config, char *errbuf,
                size_t errlen);
    /* Queue a batch to run.  Must not wait for it to run.  Every accepted batch is handed
     * back exactly once with pj_batch_done, from any thread (possibly before submit returns).
     * Returns 0, or a code for a batch it could not accept (not handed back). */
    int (*submit)(void *state, pj_batch *batch);
    /* The task batch is running has overrun its deadline: abandon or kill it.  The backend
     * then hands the batch back with that task marked (pj_batch_mark_stopped) and the tasks
     * it did not run left pending; the dispatcher re-runs those.  NULL for backends that
     * cannot interrupt a task. */
    void (*stop_task)(void *state, pj_batch *batch);
    /* Stop every worker and free the state; nothing is running. */
    void (*close)(void *state);
};

/* Registers a backend under backend->name (the table must outlive its use).  PJ_EINVAL for a
 * malformed table, PJ_EBUSY when the name is taken. */
PJ_EXPORT int pj_backend_register(const struct pj_backend *backend);
PJ_EXPORT const struct pj_backend *pj_backend_find(const char *name);

/* For backends that run tasks in this process: run every task of the batch in the calling
 * thread, writing results in place (honours cancellation and deadlines).  Returns 0, then hand
 * the batch back with pj_batch_done; or PJ_ETIMEDOUT when stop_task claimed the running task
 * meanwhile: the batch is the dispatcher's again, forget it (do not call pj_batch_done) and
 * leave the thread, whose capacity stop_task has already replaced. */
PJ_EXPORT int pj_batch_run(pj_batch *batch);
/* Hand a batch back to the dispatcher.  The batch must not be touched afterwards. */
PJ_EXPORT void pj_batch_done(pj_batch *batch);

/* ------------------------------------------------------------------------------------------ */
/* pj_delayed's machinery: argument counting and type tags                                   */

#define PJ__NARG(...)                                                                          \
    PJ__NARG_(__VA_ARGS__, 17, 16, 15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0)
#define PJ__NARG_(_1, _2, _3, _4, _5, _6, _7, _8, _9, _10, _11, _12, _13, _14, _15, _16, _17,    \
                  N, ...)                                                                      \
    N
#define PJ__CAT(a, b) PJ__CAT_(a, b)
#define PJ__CAT_(a, b) a##b

#ifndef __cplusplus
#define PJ__TAG(x)                                                                             \
    _Generic((x), _Bool: PJ_ARG_BOOL, char: PJ_ARG_CHAR, signed char: PJ_ARG_SCHAR,            \
        unsigned char: PJ_ARG_UCHAR, short: PJ_ARG_SHORT, unsigned short: PJ_ARG_USHORT,        \
        int: PJ_ARG_INT, unsigned: PJ_ARG_UINT, long: PJ_ARG_LONG, unsigned long: PJ_ARG_ULONG,  \
        long long: PJ_ARG_LLONG, unsigned long long: PJ_ARG_ULLONG, float: PJ_ARG_FLOAT,         \
        double: PJ_ARG_DOUBLE, long double: PJ_ARG_LDOUBLE, pj_buf: PJ_ARG_BUF,                 \
        default: PJ_ARG_PTR)
/* The sizeof term refuses a struct passed by value at compile time (it is not a scalar). */
#define PJ__ARG(x) (int)(PJ__TAG(x) + 0 * sizeof((_Generic((x), pj_buf: 0, default: (x))) == 0)), (x)
#define PJ__ARGS_1(f) f, 0
#define PJ__ARGS_1_(a) PJ__ARG(a)
#define PJ__ARGS_2_(a, ...) PJ__ARG(a), PJ__ARGS_1_(__VA_ARGS__)
#define PJ__ARGS_3_(a, ...) PJ__ARG(a), PJ__ARGS_2_(__VA_ARGS__)
#define PJ__ARGS_4_(a, ...) PJ__ARG(a), PJ__ARGS_3_(__VA_ARGS__)
#define PJ__ARGS_5_(a, ...) PJ__ARG(a), PJ__ARGS_4_(__VA_ARGS__)
#define PJ__ARGS_6_(a, ...) PJ__ARG(a), PJ__ARGS_5_(__VA_ARGS__)
#define PJ__ARGS_7_(a, ...) PJ__ARG(a), PJ__ARGS_6_(__VA_ARGS__)
#define PJ__ARGS_8_(a, ...) PJ__ARG(a), PJ__ARGS_7_(__VA_ARGS__)
#define PJ__ARGS_9_(a, ...) PJ__ARG(a), PJ__ARGS_8_(__VA_ARGS__)
#define PJ__ARGS_10_(a, ...) PJ__ARG(a), PJ__ARGS_9_(__VA_ARGS__)
#define PJ__ARGS_11_(a, ...) PJ__ARG(a), PJ__ARGS_10_(__VA_ARGS__)
#define PJ__ARGS_12_(a, ...) PJ__ARG(a), PJ__ARGS_11_(__VA_ARGS__)
#define PJ__ARGS_13_(a, ...) PJ__ARG(a), PJ__ARGS_12_(__VA_ARGS__)
#define PJ__ARGS_14_(a, ...) PJ__ARG(a), PJ__ARGS_13_(__VA_ARGS__)
#define PJ__ARGS_15_(a, ...) PJ__ARG(a), PJ__ARGS_14_(__VA_ARGS__)
#define PJ__ARGS_16_(a, ...) PJ__ARG(a), PJ__ARGS_15_(__VA_ARGS__)
#define PJ__ARGS_2(f, ...) f, 1, PJ__ARGS_1_(__VA_ARGS__)
#define PJ__ARGS_3(f, ...) f, 2, PJ__ARGS_2_(__VA_ARGS__)
#define PJ__ARGS_4(f, ...) f, 3, PJ__ARGS_3_(__VA_ARGS__)
#define PJ__ARGS_5(f, ...) f, 4, PJ__ARGS_4_(__VA_ARGS__)
#define PJ__ARGS_6(f, ...) f, 5, PJ__ARGS_5_(__VA_ARGS__)
#define PJ__ARGS_7(f, ...) f, 6, PJ__ARGS_6_(__VA_ARGS__)
#define PJ__ARGS_8(f, ...) f, 7, PJ__ARGS_7_(__VA_ARGS__)
#define PJ__ARGS_9(f, ...) f, 8, PJ__ARGS_8_(__VA_ARGS__)
#define PJ__ARGS_10(f, ...) f, 9, PJ__ARGS_9_(__VA_ARGS__)
#define PJ__ARGS_11(f, ...) f, 10, PJ__ARGS_10_(__VA_ARGS__)
#define PJ__ARGS_12(f, ...) f, 11, PJ__ARGS_11_(__VA_ARGS__)
#define PJ__ARGS_13(f, ...) f, 12, PJ__ARGS_12_(__VA_ARGS__)
#define PJ__ARGS_14(f, ...) f, 13, PJ__ARGS_13_(__VA_ARGS__)
#define PJ__ARGS_15(f, ...) f, 14, PJ__ARGS_14_(__VA_ARGS__)
#define PJ__ARGS_16(f, ...) f, 15, PJ__ARGS_15_(__VA_ARGS__)
#define PJ__ARGS_17(f, ...) f, 16, PJ__ARGS_16_(__VA_ARGS__)

/* pj_delayed(fn, args...): see pj_delayed_tagged above. */
#define pj_delayed(...)                                                                        \
    pj_delayed_tagged(PJ__CAT(PJ__ARGS_, PJ__NARG(__VA_ARGS__))(__VA_ARGS__))
#endif

/* ========================================================================================== */
/* Futures and processes: Python's concurrent.futures and multiprocessing.Process, in C.      */
/* Front ends over the same tasks, backends, worker pools and wire format as pj_run.          */
/* ========================================================================================== */

/* A timeout that never expires (Python's None). */
#define PJ_FOREVER (-1.0)

typedef struct pj_executor pj_executor;
typedef struct pj_future pj_future;

/* An executor: ProcessPoolExecutor / ThreadPoolExecutor over any backend.
 *
 *     with Executor(max_workers=4) as ex:          pj_executor *ex = pj_executor_new(&cfg);
 *         f = ex.submit(fn, x)                     pj_future *f = pj_submit(ex, task);
 *         print(f.result())                        pj_future_result(f, PJ_FOREVER, &r);
 *                                                  pj_future_free(f); pj_executor_free(ex);
 *
 * config is read as pj_parallel_new reads it (NULL: every field unset): n_jobs is the number of
 * workers, backend picks "threading", "fork", "spawn", "sequential" (runs each task inside
 * pj_submit) or a registered one; initializer, max_tasks_per_child and idle_worker_timeout
 * apply to process backends; batch_size, pre_dispatch, return_as, on_error, verbose and
 * progress are ignored (every future is its own batch; map's chunksize sets chunks).
 * config.timeout must be 0: futures have no per-task kill deadline (wait with a timeout).
 * Workers start now.  NULL on error with pj_last_error(): PJ_EINVAL, PJ_EBACKEND, PJ_ENOMEM,
 * PJ_ESYS (the backend could not start), with pj_last_errmsg(). */
PJ_EXPORT pj_executor *pj_executor_new(const pj_config *config);

/* Submit a task: returns its future at once, the task queued to the workers.  The task stays
 * the caller's and must stay valid, unchanged, until the future is done (free the task after
 * pj_future_result, a done-callback, or pj_executor_shutdown(ex, 1, ...)).  The future is the
 * caller's: free it with pj_future_free.  Safe from any thread.
 * NULL on error with pj_last_error(): PJ_EINVAL (NULL argument), PJ_ESHUTDOWN (after
 * pj_executor_shutdown), PJ_EPOINTER (a raw pointer argument on a process backend: declare it
 * with pj_in/pj_out/...), PJ_ENOMEM, or the backend's refusal. */
PJ_EXPORT pj_future *pj_submit(pj_executor *ex, pj_task *task);

/* Waits up to timeout seconds (PJ_FOREVER: no limit; 0: just look) for f to be done.
 *  - done: *out is f's result (owned by f, valid until pj_future_free) and the return value is
 *    its status: 0, or PJ_EFAILED (pj_fail), PJ_ECRASHED (the signal in code), PJ_EEXITED,
 *    PJ_ECANCELLED (cancelled: *out says so), ...;
 *  - not done in time: PJ_ETIMEDOUT with *out NULL; the task keeps running (ask again later);
 *  - PJ_EINVAL: NULL f or out, NaN timeout. */
PJ_EXPORT int pj_future_result(pj_future *f, double timeout, const pj_result **out);
/* 1 or 0 (PJ_EINVAL for NULL).  done: finished or cancelled.  running: a worker has started the
 * task (for process backends: handed it to a worker process) and it is not done. */
PJ_EXPORT int pj_future_done(const pj_future *f);
PJ_EXPORT int pj_future_running(const pj_future *f);
PJ_EXPORT int pj_future_cancelled(const pj_future *f);
/* Cancels f if its task has not started: returns 1 (also when it was already cancelled), and
 * f is done at once with PJ_ECANCELLED, its callbacks run in this thread.  Returns 0 when the
 * task has started or finished: it is never interrupted (as in Python). */
PJ_EXPORT int pj_future_cancel(pj_future *f);

typedef void (*pj_future_cb)(pj_future *f, void *data);
/* fn(f, data) runs exactly once when f is done, in the submitting process: on the thread that
 * finished or cancelled f (a worker thread, or the thread receiving a process worker's
 * result), or at once in this thread if f is already done.
 * A callback may read f (pj_future_result with timeout 0) and free other handles; it must not
 * free f, call pj_executor_shutdown with wait or pj_executor_free (a worker thread would wait
 * for itself).  Callbacks added while f is pending run in the order added; one added once f is
 * done runs at once, in the adding thread.  0, PJ_EINVAL, PJ_ENOMEM. */
PJ_EXPORT int pj_future_add_done_callback(pj_future *f, pj_future_cb fn, void *data);
/* The task's submission number on its executor (0, 1, ...), the index in its result. */
PJ_EXPORT size_t pj_future_index(const pj_future *f);
/* Drops the caller's future.  A task still queued or running is not cancelled: it finishes,
 * and its result is discarded. */
PJ_EXPORT void pj_future_free(pj_future *f);

typedef struct pj_completed pj_completed;
/* as_completed: yields futures[0..n) as they finish, already-done ones first, each once (a
 * future listed twice is yielded once), within one overall deadline of timeout seconds from
 * this call (PJ_FOREVER: none):
 *
 *     for f in as_completed(fs, timeout):          pj_completed *it = pj_as_completed(fs, n, t);
 *         use(f)                                   while (pj_completed_next(it, &f) == 0) use(f);
 *                                                  pj_completed_free(it);
 *
 * The futures (of any executors) must outlive the iterator.  NULL with pj_last_error()
 * (PJ_EINVAL: NULL array or element, NaN timeout; PJ_ENOMEM). */
PJ_EXPORT pj_completed *pj_as_completed(pj_future *const *futures, size_t n, double timeout);
/* 0 and the next finished future in *out; PJ_EEND once all were yielded; PJ_ETIMEDOUT (*out
 * NULL) when the deadline passed first: the iterator may be asked again, and yields futures
 * that finished in the meantime. */
PJ_EXPORT int pj_completed_next(pj_completed *it, pj_future **out);
PJ_EXPORT void pj_completed_free(pj_completed *it);

typedef enum pj_return_when {
    PJ_FIRST_COMPLETED = 1,   /* any future done */
    PJ_FIRST_EXCEPTION,       /* any future finished with a non-zero status (not cancelled),
                                 else all done */
    PJ_ALL_COMPLETED          /* every future done */
} pj_return_when;

/* wait: blocks until the condition holds or timeout seconds pass (PJ_FOREVER: no limit), then
 * reorders futures[0..n) in place: the done ones first ((*n_done of them), then those not done,
 * each group in its given order.  Returns 0 when the condition held, PJ_ETIMEDOUT when the
 * deadline came first (the split is made either way), PJ_EINVAL (NULL, bad `when`, NaN),
 * PJ_ENOMEM. */
PJ_EXPORT int pj_wait(pj_future **futures, size_t n, double timeout, pj_return_when when,
                      size_t *n_done);

typedef struct pj_map pj_map;
/* Executor.map: runs fn(arrays[0][i], arrays[1][i], ...) for i in [0, n), in chunks of
 * chunksize calls (0 means 1; each chunk is one batch to a worker), and yields results in
 * submission order:
 *
 *     for r in ex.map(fn, xs, ys, chunksize=c):    pj_map *m = pj_map_start(ex, fn,
 *         use(r)                                           (const void *[]){ xs, ys }, n, c, t);
 *                                                  while (pj_map_next(m, &r) != PJ_EEND) use(r);
 *                                                  pj_map_free(m);
 *
 * arrays[j] is a C array of n values of fn's j-th parameter type exactly (double[] for a
 * double parameter: no conversion here), read now: every task is built and submitted by this
 * call.  timeout: one deadline for the whole iteration, from this call (PJ_FOREVER: none).
 * NULL with pj_last_error(): PJ_EINVAL, PJ_EARGC, PJ_EPOINTER (pointer parameters on a process
 * backend), PJ_ESHUTDOWN, PJ_ENOMEM. */
PJ_EXPORT pj_map *pj_map_start(pj_executor *ex, const pj_fn *fn, const void *const *arrays,
                               size_t n, size_t chunksize, double timeout);
/* Waits for the next result in order: its status, with *out pointing at it (owned by the map,
 * valid until pj_map_free); PJ_EEND after the last (*out NULL); PJ_ETIMEDOUT (*out NULL) when
 * the map's deadline passed first (the same item may be asked for again); PJ_EINVAL. */
PJ_EXPORT int pj_map_next(pj_map *m, const pj_result **out);
/* Cancels the chunks not started, waits for those running, frees everything. */
PJ_EXPORT void pj_map_free(pj_map *m);

/* Executor.shutdown: no more submissions (PJ_ESHUTDOWN).  cancel_futures: every future whose
 * task has not started is cancelled (PJ_ECANCELLED, callbacks run); a running task is never
 * cancelled.  wait: returns once every submitted task has finished; otherwise at once (the
 * workers finish the queue meanwhile).  Safe to call again.  0 or PJ_EINVAL. */
PJ_EXPORT int pj_executor_shutdown(pj_executor *ex, int wait, int cancel_futures);
/* pj_executor_shutdown(ex, 1, 0), then stops the workers.  Futures stay readable: free each
 * with pj_future_free, before or after. */
PJ_EXPORT void pj_executor_free(pj_executor *ex);
PJ_EXPORT const char *pj_executor_backend(const pj_executor *ex);
PJ_EXPORT int pj_executor_n_workers(const pj_executor *ex);

/* ------------------------------------------------------------------------------------------ */
/* A process for one delayed call: multiprocessing.Process                                    */

typedef struct pj_process pj_process;

/*     p = Process(target=f, args=(x,))              pj_process *p = pj_process_new(task, "fork");
 *     p.start(); p.join()                           pj_process_start(p); pj_process_join(p, PJ_FOREVER);
 *     p.exitcode                                    pj_process_exitcode(p, &code);
 *
 * method: "fork" (NULL means it: the child is a copy of this process, so it reads this
 * process's memory as of the start — raw pointers work, but what the call writes through them
 * stays in the child: declare pj_out/pj_inout buffers to get it back) or "spawn" (one worker of
 * the spawn backend: this program re-executed, a worker before main, sent the task with the
 * codec — the function found again by module and offset, pointer arguments only as declared
 * buffers — ending once the call is over; what the spawn backend says of its workers holds).
 * Both behave alike from here on: join, is_alive, exitcode, terminate, kill and the result.
 * The task stays the caller's and must outlive pj_process_start.  NULL with pj_last_error():
 * PJ_EINVAL (NULL task), PJ_EBACKEND (unknown method), PJ_EPOINTER ("spawn": a raw pointer
 * argument), PJ_ERESOLVE ("spawn": a function no loaded module holds), PJ_ENOMEM. */
PJ_EXPORT pj_process *pj_process_new(pj_task *task, const char *method);
/* Starts the process.  0, PJ_EINVAL (started already), PJ_ESYS (fork/spawn failed), or why the
 * task could not be encoded for a spawned process (PJ_ERESOLVE, PJ_ENOMEM); pj_last_errmsg()
 * says more. */
PJ_EXPORT int pj_process_start(pj_process *p);
/* Waits up to timeout seconds (PJ_FOREVER: no limit) for the process to end.  0 once it has
 * ended (reaped: no zombie), PJ_ETIMEDOUT while it runs, PJ_EINVAL if not started. */
PJ_EXPORT int pj_process_join(pj_process *p, double timeout);
/* 1 while started and not ended, else 0; PJ_EINVAL for NULL. */
PJ_EXPORT int pj_process_is_alive(pj_process *p);
/* Python's exitcode: returns 1 with *exitcode set once the process has ended — 0 after the call
 * returned, the status given to exit(), or minus the signal number that killed it (-9 for
 * SIGKILL); 1 if the task called pj_fail — and 0 while it has not ended (not started, or
 * running).  PJ_EINVAL for NULL. */
PJ_EXPORT int pj_process_exitcode(pj_process *p, int *exitcode);
/* The child's pid, 0 before start. */
PJ_EXPORT int pj_process_pid(const pj_process *p);
/* Send SIGTERM / SIGKILL (nothing if it has ended).  0, PJ_EINVAL (not started), PJ_ESYS. */
PJ_EXPORT int pj_process_terminate(pj_process *p);
PJ_EXPORT int pj_process_kill(pj_process *p);
/* After the process has ended: the call's result in *out (owned by p) and its status — 0, or
 * PJ_EFAILED (pj_fail, with the message); PJ_EEXITED (code: the exit status) or PJ_ECRASHED
 * (code: the signal) when the process ended without returning a result.  PJ_EBUSY (*out NULL)
 * while it runs or before start; PJ_EINVAL. */
PJ_EXPORT int pj_process_result(pj_process *p, const pj_result **out);
/* Kills a process still running (SIGKILL), reaps it, frees p. */
PJ_EXPORT void pj_process_free(pj_process *p);

#ifdef __cplusplus
}
#endif
#endif /* PARJOB_H */
