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
 * NULL for constructors; pj_strerror(code) names a code and pj_last_errmsg() says what exactly
 * happened (the one rule is under "Errors" below).  No function prints unless verbose asks,
 * none calls exit or abort.
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

/* PJ_VERSION_MAJOR, PJ_VERSION_MINOR, PJ_VERSION_PATCH: the version of this header, which the
 * library is built with (meson checks that it is the project's); PJ_VERSION_HEX packs them
 * as 0xMMmmpp.  The SONAME changes with every release that breaks the ABI: see README. */
#define PJ_VERSION_MAJOR 0
#define PJ_VERSION_MINOR 1
#define PJ_VERSION_PATCH 0
#define PJ_VERSION_HEX ((PJ_VERSION_MAJOR << 16) | (PJ_VERSION_MINOR << 8) | PJ_VERSION_PATCH)
/* The version of the library actually linked, as PJ_VERSION_HEX. */
PJ_EXPORT unsigned pj_version(void);
/* The same as a static string, "MAJOR.MINOR.PATCH" ("0.1.0"). */
PJ_EXPORT const char *pj_version_string(void);

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

/* Where error text lives, one rule for every function: a call that fails — returns a negative
 * PJ_E... code, or NULL instead of the handle it makes (pj_fn_new, pj_delayed, pj_start,
 * pj_submit, ...) — leaves that code in pj_last_error() and why in pj_last_errmsg(), in the
 * calling thread, valid until that thread's next failing call.  It holds for a run's failure
 * (pj_run returning the first failed task's status: its index and message), for a task's
 * status returned as a call's value (pj_future_result, pj_map_next, pj_process_result), for
 * PJ_EBUSY, PJ_ETIMEDOUT and PJ_EEND alike.  Calls that succeed leave it alone.
 * Besides, and as before: pj_parallel_errmsg(par) keeps the last run error of a handle
 * (readable from another thread), and each result carries its own message. */

/* A static description of code ("task timed out"); "unknown error" for codes not listed. */
PJ_EXPORT const char *pj_strerror(int code);
/* The code's name ("PJ_ETIMEDOUT"). */
PJ_EXPORT const char *pj_err_name(int code);
/* The message and code of the calling thread's last failing call ("" and 0 before any). */
PJ_EXPORT const char *pj_last_errmsg(void);
/* The code (PJ_E...) of that same failure; 0 while the thread has had none. */
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
/* The number of parameters fn was described with (0 for NULL). */
PJ_EXPORT unsigned pj_fn_nargs(const pj_fn *fn);
/* The name given to pj_fn_new ("" when none, or for NULL); owned by fn. */
PJ_EXPORT const char *pj_fn_name(const pj_fn *fn);
/* Used by PJ_FN: types[0] is the return type, types[1..ntypes-1] the parameters. */
PJ_EXPORT pj_fn *pj_fn_new_list(const char *name, void (*fn)(void), unsigned ntypes,
                                ffi_type *const *types);

/* C-string returns.  Give one of these as the return type of a function returning char *
 * (a NUL-terminated string, or NULL), and its results hold the string on every backend, a
 * process worker sending its bytes:
 *  - &pj_type_str_owned: the function returns a string it allocated with malloc (strdup,
 *    asprintf...); the result takes it, and pj_results_free (or the iterator, future, map or
 *    process the result belongs to) frees it;
 *  - &pj_type_str_borrowed: the function returns a string it keeps (a literal, static storage);
 *    it is copied as soon as the call returns, and the copy is the result's.
 *     pj_fn *describe_fn = PJ_FN(describe, &pj_type_str_owned, &ffi_type_sint);
 *     ...  puts(pj_result_str(pj_results_at(res, i)));
 * A task that calls pj_fail gets no string (the pointer it returns is ignored, not freed).
 * These two objects only mark the return type: never hand them to libffi yourself. */
PJ_EXPORT extern ffi_type pj_type_str_owned;
PJ_EXPORT extern ffi_type pj_type_str_borrowed;

/* The one-line form: PJ_FN(pow, &ffi_type_double, &ffi_type_double, &ffi_type_double)
 * describes double pow(double, double) and names it "pow"; PJ_FN(f, &ffi_type_void) a
 * function of no arguments returning nothing.  At most 16 parameter types, as pj_delayed
 * takes at most 16 arguments: more is a compile error (in C) that says to use pj_fn_new. */
#define PJ_FN(fn, ...)                                                                         \
    pj_fn_new_list(#fn, (void (*)(void))(fn), PJ__NTYPES(__VA_ARGS__),                         \
                   (ffi_type *const[]){ __VA_ARGS__ })

/* ------------------------------------------------------------------------------------------ */
/* Buffers: pointer arguments that may cross a process boundary                              */

typedef enum pj_buf_kind {
    PJ_BUF_IN = 1,    /* copied to the worker; the worker's changes are not copied back */
    PJ_BUF_OUT = 2,   /* the worker's bytes are copied back into the caller's memory */
    PJ_BUF_INOUT = 3, /* both */
    PJ_BUF_CSTR = 4,  /* a NUL-terminated string, copied by pj_delayed / pj_task_set_buf */
    PJ_BUF_IN_COPY = 5 /* n bytes copied by pj_delayed / pj_task_set_buf, then an input */
} pj_buf_kind;

/* A declared pointer argument.  Pass pj_in(p, n) (etc.) to pj_delayed where the function takes a
 * pointer: threads receive p itself; process backends receive a copy of n bytes and, for out and
 * inout, copy the worker's bytes back into p when the task succeeds.
 *
 * When the bytes are read and written:
 *  - pj_cstr(s) and pj_in_copy(p, n) are copied when the task is built (pj_delayed,
 *    pj_task_set_buf), like every other argument: s and p may change or be freed right after.
 *    Every backend, threads included, passes the task's copy to the function (a task run again
 *    sees what the last run left there).  The task owns the copy; pj_task_free frees it.
 *  - pj_in, pj_out and pj_inout are not copied: p is read and written by every run of the task,
 *    so p must stay valid, and its in/inout bytes unchanged, from the start of each run that
 *    uses the task until that run ends (pj_run returns, pj_iter_close, the future is done).
 *    The function reads them itself on in-process backends; process backends copy them when
 *    the task's batch is encoded for a worker, which may be at any moment of the run (batches
 *    are encoded ahead).  Out and inout bytes are written while the task runs (threads) or when
 *    its result arrives from the worker (processes): in both cases before that result is
 *    returned (pj_next, pj_run, pj_future_result), and only if the task succeeded on a process
 *    backend.
 * Large data: a pj_in buffer above config.max_nbytes, and any buffer inside a pj_shared_alloc
 * allocation, is not copied per task on process backends (see "Large data" below).
 * pj_in_copy costs a malloc and a copy per task: a pj_delayed of one 64-byte input took
 * 64 ns with pj_in_copy, 55 ns with pj_in, 21 ns for an int (bench/capture_bench, best of 15).
 * It is meant for small inputs built in a loop; large ones are better left in place (pj_in). */
typedef struct pj_buf {
    void *ptr;
    size_t len;
    pj_buf_kind kind;
} pj_buf;

/* pj_in(p, n), pj_out(p, n), pj_inout(p, n), pj_cstr(s), pj_in_copy(p, n): the five kinds of
 * pj_buf, to pass to pj_delayed in place of the pointer. */
#define pj_in(p, n) ((pj_buf){ (void *)(p), (n), PJ_BUF_IN })
#define pj_out(p, n) ((pj_buf){ (void *)(p), (n), PJ_BUF_OUT })
#define pj_inout(p, n) ((pj_buf){ (void *)(p), (n), PJ_BUF_INOUT })
#define pj_cstr(s) ((pj_buf){ (void *)(s), 0, PJ_BUF_CSTR })
#define pj_in_copy(p, n) ((pj_buf){ (void *)(p), (n), PJ_BUF_IN_COPY })

/* ------------------------------------------------------------------------------------------ */
/* Large data: shared memory instead of copies                                                */

/* Memory that every backend's workers see in place, joblib's writable memmaps:
 *
 *     double *x = pj_shared_alloc(n * sizeof *x);      // fill it, then
 *     tasks[i] = pj_delayed(f_fn, pj_in(x + lo, len), pj_out(x + lo2, len2), ...);
 *     pj_run(par, tasks, k, &res);                     // tasks read and write x in place
 *     pj_shared_free(x);
 *
 * A pj_in, pj_out or pj_inout buffer that lies inside an allocation (any pointer into it, any
 * length that stays inside) crosses to "fork" and "spawn" workers as (object, offset,
 * length): no byte is copied either way, and tasks write their results straight into it — an
 * out buffer there is written even when its task then fails.  Each worker maps the allocation
 * once, the first time one of its tasks needs it.  "threading" and "sequential" share memory
 * anyway.  The memory is a memfd: it has no name in /dev/shm or /tmp and needs neither; its
 * pages come when first written and are charged to the memory cgroup of the process that
 * touches them first — this process's, which its workers share — as any memory this process
 * allocates; they go back when the last process mapping them lets go (pj_shared_free, then
 * each worker on its next message), and with the processes if this one is killed.
 * Size 0 is PJ_EINVAL; a size larger than this machine's memory or than its memory cgroup
 * allows (memory.max) is PJ_ENOMEM at once, not a task killed later (NULL, pj_last_error()
 * and pj_last_errmsg() say which); PJ_ESYS if the kernel refuses the memfd or mapping.
 * The memory is zeroed, read-write, page-aligned, and not inherited by processes forked later
 * (MADV_DONTFORK: pj_process(task, "fork") receives it only through declared buffers).
 * Safe from any thread. */
PJ_EXPORT void *pj_shared_alloc(size_t size);
/* Frees an allocation of pj_shared_alloc: p must be what it returned (NULL is a no-op, 0).
 * No run may use it any more.  Workers that mapped it let it go before their next batch.  The
 * addresses are not reused by later allocations of this process (they stay reserved, with no
 * memory behind them), so that a task naming them afterwards is refused instead of a worker
 * faulting: PJ_EINVAL ("argument 0: it points into a shared allocation freed with
 * pj_shared_free") on every backend, from pj_run and pj_start over arrays, producers (the
 * task's own status) and pj_submit, and from pj_map_start on "fork" and "spawn" and from
 * pj_process_new.  A buffer running past the end of an allocation is refused at pj_delayed
 * already (PJ_EINVAL).  Returns 0, or PJ_EINVAL for a pointer that is not the start of a live
 * allocation (one freed already included). */
PJ_EXPORT int pj_shared_free(void *p);

/* config.max_nbytes: joblib's automatic memmapping.  On "fork" and "spawn", within pj_run,
 * pj_run_source and pj_start, a pj_in (or pj_in_copy) buffer larger than max_nbytes is placed
 * once per run in a sealed memfd (F_SEAL_WRITE, GROW, SHRINK: nobody can change it any more)
 * and each worker that runs a task naming it maps it read-only, once: a buffer given to many
 * tasks is one copy for the whole run, not one per task, and each task's message carries
 * (object, offset, length).  The copy goes at the run's end.  A task that writes into such an
 * input dies of the write and is reported PJ_ECRASHED (code SIGSEGV) with a message saying it
 * wrote into a read-only input (declare the buffer pj_inout, or use a shared allocation, to
 * write).  Futures (pj_submit) and pj_process copy as before; buffers in a shared allocation
 * are never copied.  0 means PJ_MAX_NBYTES_DEFAULT, 1 MiB (joblib's '1M'); PJ_MAX_NBYTES_OFF
 * (any negative value): every input is copied into its task's batch as before (joblib's
 * max_nbytes=None; 0 cannot mean off here, as a zeroed config field means unset). */
#define PJ_MAX_NBYTES_DEFAULT ((long long)1 << 20)
#define PJ_MAX_NBYTES_OFF (-1LL)

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
 * pj_in/pj_out/pj_inout/pj_cstr to let them cross to process backends.  pj_cstr strings and
 * pj_in_copy inputs are copied now, as values are (see pj_buf for when the others are read).
 * The caller owns the task: free it with pj_task_free once no run uses it (see pj_run).
 * Not available from C++ (it needs _Generic): use pj_task_new. */
PJ_EXPORT pj_task *pj_delayed_tagged(const pj_fn *fn, int nargs, ...);
/* pj_delayed_tagged with its nargs (pj_argtag as int, value) pairs in a va_list. */
PJ_EXPORT pj_task *pj_delayed_va(const pj_fn *fn, int nargs, va_list ap);

/* pj_task_new(fn, argv): the exact form, as ffi_call takes it: argv[i] points to a value of
 * exactly the i-th parameter type (a struct's bytes for a struct).  Copies the values. */
PJ_EXPORT pj_task *pj_task_new(const pj_fn *fn, void *const *argv);
/* Declares argument i (a pointer parameter) of t as a buffer, copying a pj_cstr string or a
 * pj_in_copy input now (t owns the copy); returns 0 or PJ_EINVAL/PJ_ETYPE/PJ_ENOMEM. */
PJ_EXPORT int pj_task_set_buf(pj_task *t, unsigned i, pj_buf buf);
/* Frees t and its copies of the arguments (not what pointer arguments point to); NULL is a
 * no-op.  t must not be in a run, an open iterator or a pending future. */
PJ_EXPORT void pj_task_free(pj_task *t);
/* The function t calls (NULL for NULL); owned by the caller of pj_fn_new, as always. */
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
 * struct return reads as 0 (NULL).  r may not be NULL.  The readers: pj_result_i64,
 * pj_result_u64, pj_result_int, pj_result_double, pj_result_ldouble, pj_result_ptr. */
PJ_EXPORT int64_t pj_result_i64(const pj_result *r);
PJ_EXPORT uint64_t pj_result_u64(const pj_result *r);
PJ_EXPORT int pj_result_int(const pj_result *r);
PJ_EXPORT double pj_result_double(const pj_result *r);
PJ_EXPORT long double pj_result_ldouble(const pj_result *r);
PJ_EXPORT void *pj_result_ptr(const pj_result *r);
/* The string a C-string function (pj_type_str_owned/_borrowed) returned, owned by the results,
 * iterator, future, map or process r came from and valid as long as r's message is; NULL for
 * a NULL return, a task that did not succeed, or a function of another return type. */
PJ_EXPORT const char *pj_result_str(const pj_result *r);
/* The raw bytes of the return value (a struct, say), with its size in *size; NULL for a void
 * function or a task that did not succeed. */
PJ_EXPORT const void *pj_result_value(const pj_result *r, size_t *size);
/* A struct return value copied into out, which must be the struct's size exactly:
 *     struct point p; if (pj_result_struct(r, &p, sizeof p) == 0) use(p);
 * Returns 0; PJ_EINVAL (NULL r or out); PJ_ETYPE (the function does not return a struct, or
 * size differs from the struct type's: both sizes in the message); or the task's own status
 * when it did not succeed.  Nothing is written to out on error. */
PJ_EXPORT int pj_result_struct(const pj_result *r, void *out, size_t size);

typedef struct pj_results pj_results;
/* The number of results: the number of tasks run (0 for NULL). */
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
/* Longest pre_dispatch expression accepted (joblib evaluates Python; parjob parses a little
 * arithmetic, and a bound keeps its messages whole). */
#define PJ_PRE_DISPATCH_MAX 30

/* Called after each finished batch: done tasks of total (0 while the source's length is not
 * yet known), seconds since the run started.  Called from whichever thread finished the batch,
 * one call at a time; it must be quick and must not call parjob on the same handle. */
typedef void (*pj_progress_fn)(void *data, size_t done, size_t total, double elapsed);

/* A progress bar, as config.progress: one line on stderr with the count, the total, the
 * percentage, the rate, the elapsed time and the time left, and a bar when the total is known
 * (a producer's once it has ended).  Redrawn in place at most about ten times a second when
 * stderr is a terminal; otherwise a plain line at most every 10 s.  The run's end draws the
 * last state and a newline.  Only one bar draws at a time in a process: a run started while
 * another's bar is up (nested in its tasks, or beside it) and process workers draw none.
 * progress_data is unused.  It does not replace verbose: set both to have both.
 *     pj_parallel_new(&(pj_config){ .n_jobs = -1, .progress = PJ_PROGRESS_BAR });
 * (The function itself does nothing when called directly.) */
PJ_EXPORT void pj_progress_bar(void *data, size_t done, size_t total, double elapsed);
#define PJ_PROGRESS_BAR pj_progress_bar

/* Every field zeroed means unset: zero-initialise the struct and set what you need. */
typedef struct pj_config {
    int n_jobs;               /* > 0 workers; -1 every usable CPU; n < -1: max(cpus+1+n, 1);
                                 0: $PARJOB_N_JOBS, else 1 (1 inside a parjob worker).  Usable
                                 CPUs: min of online CPUs, sched_getaffinity, cgroup quota.
                                 On "mpi": the worker ranks' usable CPUs, summed. */
    const char *backend;      /* "sequential", "threading", "fork", "spawn" or registered;
                                 NULL: $PARJOB_BACKEND, else "threading" (or "sequential" when
                                 n_jobs resolves to 1) */
    long batch_size;          /* tasks per batch, or PJ_AUTO (0, the default); < 0 PJ_EINVAL */
    const char *pre_dispatch; /* batches in flight: "all", "8", or an expression in n_jobs
                                 ("2*n_jobs", the default; + - * / // % ** ( ) unary minus)
                                 of at most PJ_PRE_DISPATCH_MAX characters; longer, or not
                                 at least 1: PJ_EINVAL */
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
                                 stdout instead of stderr), the lines joblib 1.6 prints for
                                 the same dispatches and completions, prefixed with n_jobs
                                 as asked ("Parallel(n_jobs=-1)", "None" when unset) */
    pj_on_error on_error;
    pj_progress_fn progress;  /* optional; PJ_PROGRESS_BAR draws a bar */
    void *progress_data;
    /* Process backends ("fork", "spawn"). */
    pj_task *initializer;     /* run once in each new worker before its first task; borrowed */
    long max_tasks_per_child; /* recycle a worker after this many tasks; 0: never */
    double idle_worker_timeout; /* seconds an idle worker lives; 0: 300 (loky's) */
    /* Threads the parallel runtimes inside each worker's tasks may use (joblib's
     * inner_max_num_threads): > 0 that many; 0: $PARJOB_INNER_MAX_NUM_THREADS, else joblib's
     * default, usable CPUs / n_jobs (at least 1), where a variable this process's environment
     * already sets keeps its value; < 0: runtimes and environment left as they are.  See
     * "Inner threads" below; "sequential" changes nothing. */
    int inner_max_num_threads;
    double worker_start_timeout; /* seconds a new worker may take to be ready ("spawn":
                                    the program's start-up, its constructors); past it the
                                    run fails with PJ_ETIMEDOUT; 0: 60 */
    long long max_nbytes;     /* process backends: pj_in buffers above this many bytes are
                                 placed once per run in read-only shared memory (see
                                 PJ_MAX_NBYTES_OFF); 0: PJ_MAX_NBYTES_DEFAULT, 1 MiB; < 0:
                                 off, every input copied per task */
} pj_config;

/* Inner threads.  A task that calls OpenMP or a threaded BLAS starts a thread per core: with
 * n_jobs workers on C cores that would be n_jobs * C threads.  As joblib does, each worker of
 * "fork" and "spawn" gets OMP_NUM_THREADS, OPENBLAS_NUM_THREADS, MKL_NUM_THREADS,
 * BLIS_NUM_THREADS, VECLIB_MAXIMUM_THREADS, NUMBA_NUM_THREADS and NUMEXPR_NUM_THREADS set to
 * the limit (and ENABLE_IPC=1 for TBB unless set) — in a spawned worker's environment before
 * exec, so every runtime reads them when it starts; in a forked worker's environment at its
 * start, for runtimes it loads from then on, and the runtimes already loaded in this process,
 * which read their variable long before, are told directly: OpenMP's omp_set_num_threads and
 * OpenBLAS's openblas_set_num_threads (found with dlsym: no link-time dependency).  MKL or
 * BLIS already loaded keep their own count in forked workers: use "spawn" for those.
 * "threading" cannot give a thread an environment: each pool thread calls
 * omp_set_num_threads for itself (OpenMP's nthreads ICV is per thread), so an OpenMP region a
 * task starts there uses the limit; BLAS libraries' settings are process-wide and stay as they
 * are, as does this process's environment.  The limit is fixed when the workers start (the
 * first run).
 *
 * OpenMP and fork.  GCC's libgomp keeps a team of threads per thread that ran a parallel
 * region; a child forked from such a thread has the team's bookkeeping without its threads and
 * hangs in its first region.  parjob forks its workers from its own I/O thread, which never
 * runs one, so OpenMP in "fork" workers starts a fresh team even after the program's threads
 * ran regions (tests/test-inner.c checks it).  pj_process(task, "fork") forks the calling
 * thread: after that thread ran an OpenMP region, OpenMP in the child is unsafe — use
 * "spawn".  libgomp offers no way to ask whether a thread holds a team, so this is not
 * detected. */

/* Process backends.  "fork" keeps n_jobs worker processes forked from this one (started at
 * the first run: its first tasks go to the first workers while the others start, so the first
 * results do not wait for the last of many workers, and each worker has this process's memory
 * as of its own fork; reused by every later run of the handle,
 * retired after max_tasks_per_child tasks or idle_worker_timeout, replaced after a crash or a
 * timeout).  A
 * task that dies by a signal gets PJ_ECRASHED (code: the signal), one that calls exit
 * PJ_EEXITED (code: the status); the other tasks of its batch run again on a live worker and
 * no finished task runs twice.  Raw pointers (also a pointer member of a struct passed by
 * value, nested or not) are refused (PJ_EPOINTER) on "fork" too, although
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
 * while another thread allocates can hang, which is why in a sanitizer build "fork" workers
 * all start while the thread that opened the pool waits; replacements can still meet it) and
 * no stdio; crash signals are reset to their defaults so a crash is reported as the signal.
 * What remains unsafe is what a *task* reaches: a lock another thread held at the moment of
 * the fork stays locked forever in the worker — the program's mutexes, stdio streams (printf
 * from a task may block; parjob flushes
 * a task's stdout/stderr after each batch only when their lock is free), and libraries with
 * threads or locks of their own (OpenMP, BLAS thread pools, gettext, dlopen).  A task that
 * blocks so shows up as a timeout when config.timeout is set.  Such programs should use
 * "spawn", whose workers start from a fresh program image.
 *
 * "spawn" is the same pool with workers started by posix_spawn of the running program
 * (/proc/self/exe, concurrently, about a millisecond each): a fresh image, so nothing the
 * parent's threads hold can deadlock a worker.  Only the worker's channel and shared memory
 * cross (every other descriptor is closed, whatever its close-on-exec flag; signals start at
 * their defaults).  A worker runs the program's whole start-up — every constructor of the
 * program and of the libraries it loads at start-up, C++ dynamic initialisation included, in
 * the loader's order — then serves tasks in main's place: it never runs main, nor the
 * program's exit handlers and destructors (libparjob defines __libc_start_main for this).
 * What constructors do (print, open files, start threads) they do in every new worker too,
 * and a start-up that cannot finish there is an error at the first run, and at every later
 * one on the handle: a worker that ends before it is ready fails the run's tasks with
 * PJ_EEXITED or PJ_ECRASHED, one not ready within config.worker_start_timeout with
 * PJ_ETIMEDOUT, the message naming the start-up.  What remains: where main's place cannot
 * be taken — libparjob reaches the program only through another shared library, or the
 * program is linked fully static (-static) — workers start in libparjob's constructor, and
 * constructors the loader runs after it (the program's own, with the shared library) do not
 * run in them; link parjob into the program itself.  Functions cross as
 * (module, offset from its load base): static functions, functions of linked libraries and of
 * libraries dlopen'ed at run time resolve with ASLR on (a library not loaded in the worker is
 * dlopen'ed there); a function in no loaded module (an anonymous mapping, a JIT buffer) is
 * refused before it runs, PJ_ERESOLVE naming the task.
 *
 * Both process backends, and every entry point (pj_run, pj_start, pj_submit, pj_map_start,
 * pj_process_new with "spawn"), refuse the same tasks before anything runs: a raw pointer
 * argument (PJ_EPOINTER) and a function that no loaded module holds — a libffi closure, JIT
 * code — (PJ_ERESOLVE): a fork worker has this process's memory as of its fork, and such code
 * may have appeared or changed since (run it on "threading").  A library dlopen'ed (or closed)
 * after the "fork" workers started is fine: a worker forked before it is replaced by a fresh
 * one before it gets another batch.  With config.timeout set, a worker that holds a batch and
 * starts none of its tasks for that long (stopped by SIGSTOP, a frozen cgroup) is killed and
 * replaced, and its batch runs on another worker. */

typedef struct pj_parallel pj_parallel;

/* Validate config (NULL: every field unset), resolve n_jobs and the backend, parse
 * pre_dispatch.  Workers start at the first run and persist until pj_parallel_free.
 * NULL on error, with pj_last_error() one of PJ_EINVAL (NULL/absurd field, with the field
 * named), PJ_EBACKEND (the message lists the known backends), PJ_ENOMEM.  On "mpi" with
 * n_jobs < 0 the worker ranks are asked for their CPUs now: PJ_EBACKEND when they cannot be
 * (no worker ranks, a rank that does not answer), PJ_EBUSY while another mpi pj_parallel
 * holds them. */
PJ_EXPORT pj_parallel *pj_parallel_new(const pj_config *config);
/* Stops and joins (or kills) every worker.  Must not be called while a run or an iterator is
 * open on par. */
PJ_EXPORT void pj_parallel_free(pj_parallel *par);
/* The last detailed error of a run on par ("task 17 (add) failed: negative input"), "" if
 * none; the same text as the failing call's pj_last_errmsg(), kept with the handle. */
PJ_EXPORT const char *pj_parallel_errmsg(const pj_parallel *par);
/* The number of workers par runs with: config.n_jobs resolved (-1: every usable CPU, 0: the
 * environment's or 1, ...), as the progress lines show it.  PJ_EINVAL for NULL. */
PJ_EXPORT int pj_parallel_n_jobs(const pj_parallel *par);
/* The backend's name ("threading"), after the environment and defaults; NULL for NULL. */
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
 * and message in pj_last_errmsg (and pj_parallel_errmsg) — *results is still set and holds
 * every task's status.
 * n == 0 (tasks may then be NULL) is joblib's Parallel()([]): 0, and *results holds no result.
 * Returns PJ_EINVAL (NULL argument, a NULL task: *results NULL), PJ_EBUSY (par is
 * running in another thread or has an open iterator: par's own message belongs to that run
 * and is left alone), PJ_EPOINTER (a raw pointer argument on a process backend, or a struct
 * passed by value holding a pointer), PJ_ENOMEM, PJ_ESYS.
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
 * Order follows config.return_as.  Over n == 0 tasks (tasks may then be NULL), the first
 * pj_next returns PJ_EEND.  A result's message and heap value stay valid until the next
 * pj_next or pj_iter_close.  At most pre_dispatch batches are taken from the source and not yet
 * finished; finished batches the consumer has not taken yet (behind an early slow task in
 * order, or before a slow consumer) are held, up to 16 times pre_dispatch batches, so the
 * workers keep running meanwhile and a producer of ten million tasks still runs in constant
 * memory.  A backend that runs batches in the calling thread (PJ_BACKEND_INLINE: "sequential")
 * has every batch finished as it is taken: there a generator runs pre_dispatch batches ahead of
 * its consumer, then yields.
 * NULL on error: pj_last_error() as for pj_run. */
PJ_EXPORT pj_iter *pj_start(pj_parallel *par, pj_task *const *tasks, size_t n);
/* pj_start over a producer (ownership of the tasks passes to parjob, as in pj_run_source). */
PJ_EXPORT pj_iter *pj_start_source(pj_parallel *par, pj_producer next, void *state);
PJ_EXPORT int pj_next(pj_iter *it, pj_result *out);
/* Ends the iteration: tasks not yet started are cancelled, the producer is not called again,
 * tasks already running are waited for (config.timeout bounds that wait, on the backends that
 * can stop a task), everything is freed.  Returns 0,
 * or the first failure as pj_run does. */
PJ_EXPORT int pj_iter_close(pj_iter *it);

/* Cancels the run in progress on par (pj_run, pj_run_source, or the iterator of pj_start) —
 * what a program that catches SIGINT calls from its handler: it is async-signal-safe (one
 * atomic store; it neither locks, allocates nor waits) and may be called from any thread.
 * Within 100 ms the run ends: pj_run returns PJ_ECANCELLED with *results set (pj_parallel_errmsg
 * says it was cancelled); a waiting pj_next returns PJ_ECANCELLED, as does every later pj_next
 * (then pj_iter_close, which returns PJ_ECANCELLED too).  Tasks not started get PJ_ECANCELLED;
 * a process worker ("fork", "spawn") running a task is killed, and that task is PJ_ECANCELLED
 * — the run returns once every killed worker is reaped, so none is left behind.  A thread
 * cannot be killed: on "threading" a running task is abandoned as a late task is when
 * config.timeout is set (it runs to its end in the background, its result discarded), and
 * waited for otherwise; "sequential" waits for the call it is in.  Tasks that finished keep
 * their results.  A cancel with no run in progress is dropped (the next run starts afresh).
 * 0, or PJ_EINVAL for a NULL par. */
PJ_EXPORT int pj_parallel_cancel(pj_parallel *par);

/* ------------------------------------------------------------------------------------------ */
/* Bulk calls: one function over columns of arguments                                        */

/* A bulk run is one function called n times, call i taking its arguments from columns —
 * joblib's Parallel()(delayed(f)(x, y) for x, y in zip(xs, ys)) and Executor.map(f, xs, ys) —
 * without a task record or a result record per call:
 *
 *     for (size_t i = 0; i < n; i++) out[i] = fn(xs[i], ys[i]);
 *
 *     int xs[N], ys[N], sums[N];
 *     pj_fn *add_fn = PJ_FN(add, &ffi_type_sint, &ffi_type_sint, &ffi_type_sint);
 *     int rc = pj_run_bulk(par, &(pj_bulk){ .fn = add_fn, .n = N, .out = sums,
 *                                           .cols = (pj_col[]){ pj_col_array(xs),
 *                                                               pj_col_array(ys) } });
 *
 * A column says where argument j of every call comes from; build it with these macros (C11:
 * they find the elements' C type with _Generic, as pj_delayed does; from C++ fill the struct):
 *  - pj_col_array(p): call i takes p[i] (p an array or a pointer to its first element);
 *  - pj_col_strided(p, stride): call i takes the value at (char *)p + i * stride, of *p's type
 *    — a member of an array of structs: pj_col_strided(&pts[0].x, sizeof pts[0]);
 *  - pj_col_const(v): every call takes v (broadcast), copied into the column now;
 *  - pj_col_struct(p, stride): a struct parameter by value, call i taking the sizeof *p bytes
 *    at (char *)p + i * stride (stride 0: sizeof *p);
 *  - pj_col_buf(kind, p, stride, len): a pointer parameter declared as a buffer (pj_buf's
 *    kinds PJ_BUF_IN, PJ_BUF_OUT, PJ_BUF_INOUT), call i receiving the len bytes at
 *    (char *)p + i * stride; an array of pj_buf given to pj_col_array is a buffer per call.
 * Values convert to the parameter's type as pj_delayed converts them (an int column for a
 * double parameter), the column's type checked once for the run, before anything runs; a
 * floating value that does not fit an integer parameter fails that call (PJ_ETYPE).
 * The columns (not the pj_col array, which is copied) and the output array are the caller's:
 * they must stay valid, the columns unchanged, until the run ends (pj_run_bulk returns,
 * pj_bulk_close); they are read and written while calls run, on every backend. */
typedef enum pj_col_kind {
    PJ_COL_ARRAY = 1,  /* element i at (const char *)base + i * stride, of C type `type` */
    PJ_COL_CONST,      /* value, of C type `type`, for every call */
    PJ_COL_STRUCT,     /* a struct by value: `size` bytes at base + i * stride */
    PJ_COL_BUF         /* a buffer per call: pj_buf{ base + i * stride, size, buf_kind } */
} pj_col_kind;

typedef struct pj_col {
    pj_col_kind kind;
    pj_argtag type;       /* PJ_COL_ARRAY, PJ_COL_CONST: the C type of the values */
    const void *base;
    size_t stride;        /* bytes from call i's element to call i + 1's; 0: packed */
    size_t size;          /* PJ_COL_STRUCT: the struct's size; PJ_COL_BUF: bytes per call */
    pj_buf_kind buf_kind; /* PJ_COL_BUF: PJ_BUF_IN, PJ_BUF_OUT or PJ_BUF_INOUT */
    union {               /* PJ_COL_CONST's value: i for signed types (PJ_ARG_INT...), u for
                             unsigned ones, f for float and double, ld the bytes of a long
                             double (not a long double member: a union holding one is passed
                             differently by GCC versions, which it warns of at every use), p
                             for PJ_ARG_PTR (a pointer to the struct for a struct parameter,
                             as pj_delayed takes it) */
        long long i;
        unsigned long long u;
        double f;
        unsigned char ld[16];
        const void *p;
    } value;
} pj_col;

/* The most calls one bulk run takes (2^48 - 1 with a 64-bit size_t): more is PJ_EINVAL.  The
 * margin lets workers claim ranges past the end without the counter wrapping. */
#define PJ_BULK_MAX (SIZE_MAX >> 16)

typedef struct pj_bulk {
    const pj_fn *fn;
    size_t n;             /* calls, 0 to PJ_BULK_MAX */
    const pj_col *cols;   /* fn's nargs columns (may be NULL when fn takes none) */
    void *out;            /* call i's return value at (char *)out + i * out_stride, written
                             when call i succeeds; NULL for a void function (else PJ_EINVAL) */
    size_t out_stride;    /* 0: the return type's size (a packed array) */
    int *statuses;        /* NULL, or n ints: call i's status (0, PJ_EFAILED, PJ_ECANCELLED,
                             PJ_ETIMEDOUT, PJ_ECRASHED, ...), written for every call */
} pj_bulk;

/* Runs bulk->n calls of bulk->fn as pj_run runs tasks: config's backend, batch_size (auto: by
 * measured range durations), pre_dispatch, timeout, on_error, verbose lines and progress
 * callback all apply, a batch being a range of calls.  On "threading" and "sequential"
 * (PJ_BACKEND_BATCH_RUN) workers claim ranges of calls with one atomic step each and call fn
 * directly from the columns.  On "fork", "spawn" and "mpi" (PJ_BACKEND_COLUMNS) a function of
 * scalars (no pointer, no struct) whose columns hold the parameters' own types goes in
 * range batches: each call's arguments are encoded straight from the columns into the
 * batch's message, the values come back as a run and are copied into out, no task per call;
 * a call that kills its worker is that call's PJ_ECRASHED and the rest of its range runs
 * again elsewhere.  Otherwise — config.timeout set, buffers, structs, conversions, or a
 * registered backend — each call becomes a task built from the columns as the window allows
 * (pj_run's path: crash isolation and deadlines as there), its value copied into out.
 * Memory: the caller's arrays plus a bounded amount per worker, whatever n is.
 * Returns 0 when every call succeeded; otherwise, as pj_run, the first failure's status with
 * the call's index and message in pj_last_errmsg() ("call 17 (add): ...") and
 * pj_parallel_errmsg(); every call then has its status in bulk->statuses when given.  Before
 * anything runs: PJ_EINVAL (NULL par or bulk or fn, cols NULL for a function with arguments,
 * a NULL base for a column that is not a constant, a stride smaller than the element, out
 * NULL for a non-void function or given for a void one, out_stride smaller than the return
 * type, n past PJ_BULK_MAX, a C-string return type), PJ_ETYPE (a column whose values cannot
 * convert to the parameter: the column and both types named), PJ_EPOINTER (a column of raw
 * pointers on a process backend: declare buffers), PJ_ERESOLVE, PJ_EBUSY, PJ_ENOMEM, PJ_ESYS. */
PJ_EXPORT int pj_run_bulk(pj_parallel *par, const pj_bulk *bulk);

/* A range of calls [begin, end) that have all ended; status 0 when every one succeeded, else
 * the status of the first of them that did not (bulk->statuses says which). */
typedef struct pj_range {
    size_t begin, end;
    int status;
} pj_range;

typedef struct pj_bulk_iter pj_bulk_iter;

/* The generator form: starts the run of pj_run_bulk and returns an iterator whose
 * pj_bulk_next yields ranges of finished calls, their values already in out —
 *
 *     for (r in finished ranges) { for (i = r.begin; i < r.end; i++) use(out[i]); }
 *
 * in order (each range starts where the last ended) unless config.return_as is
 * PJ_GENERATOR_UNORDERED (as they complete; together they cover [0, n) once).  Workers run
 * ahead of a slow consumer by at most 16 times pre_dispatch ranges (unordered; in order they
 * are never held), and on the task path by one window of finished batches: that bounds a
 * run's memory, whatever n.
 * *bulk is copied; its arrays are borrowed until pj_bulk_close.  NULL on error, with
 * pj_last_error() as for pj_run_bulk. */
PJ_EXPORT pj_bulk_iter *pj_start_bulk(pj_parallel *par, const pj_bulk *bulk);
/* 0 and the next range in *out; PJ_EEND once every call was yielded; PJ_ECANCELLED after
 * pj_parallel_cancel (then close); PJ_EINVAL for NULL. */
PJ_EXPORT int pj_bulk_next(pj_bulk_iter *it, pj_range *out);
/* Ends the run, every call with its status: calls not started are cancelled, running ones
 * waited for (on the task path, the calls already taken into the window — at most
 * pre_dispatch batches — run to their end), par released.  Returns 0 or the first failure,
 * as pj_run_bulk; NULL is PJ_EINVAL. */
PJ_EXPORT int pj_bulk_close(pj_bulk_iter *it);

/* pj_col_const's machinery: tag is a pj_argtag, then the value (C's default promotions). */
PJ_EXPORT pj_col pj_col_const_tagged(int tag, ...);

#ifndef __cplusplus
/* pj_col_array(p), pj_col_strided(p, stride), pj_col_const(v), pj_col_struct(p, stride),
 * pj_col_buf(kind, p, stride, len): the columns of a bulk run, as described above pj_col_kind
 * (C11 only: they use _Generic). */
#define pj_col_strided(p, stride_)                                                             \
    ((pj_col){ .kind = PJ_COL_ARRAY,                                                          \
               .type = (pj_argtag)(PJ__TAG(*(p)) + 0 * PJ__NOT_A_STRUCT(*(p))),                \
               .base = (p), .stride = (stride_) })
#define pj_col_array(p) pj_col_strided((p), sizeof *(p))
#define pj_col_const(v) pj_col_const_tagged((int)(PJ__TAG(v) + 0 * PJ__NOT_A_STRUCT(v)), (v))
#define pj_col_struct(p, stride_)                                                              \
    ((pj_col){ .kind = PJ_COL_STRUCT, .base = (p), .stride = (stride_), .size = sizeof *(p) })
#define pj_col_buf(kind_, p, stride_, len)                                                     \
    ((pj_col){ .kind = PJ_COL_BUF, .base = (p), .stride = (stride_), .size = (len),           \
               .buf_kind = (kind_) })
#endif

/* ------------------------------------------------------------------------------------------ */
/* Backends                                                                                   */

/* The version of struct pj_backend this header describes: set it in the table's version. */
#define PJ_BACKEND_VERSION 1

enum pj_backend_features {
    PJ_BACKEND_PROCESS = 1 << 0, /* tasks cross a process boundary: pointers must be buffers */
    PJ_BACKEND_INLINE = 1 << 1,  /* runs batches in the submitting thread, one at a time: the
                                    progress lines are joblib's sequential ones (no "Using
                                    backend" line, n_jobs=1's schedule) */
    PJ_BACKEND_BATCH_RUN = 1 << 2, /* runs every batch in this process with pj_batch_run (never
                                    task by task): bulk runs (pj_run_bulk) then hand it
                                    batches that claim ranges of calls themselves; without
                                    it a bulk run goes through tasks built per call */
    PJ_BACKEND_COLUMNS = 1 << 3  /* parjob's own process pool ("fork", "spawn", "mpi"): takes bulk
                                    batches with no task records, encoding each call from the
                                    run's columns; not for registered backends */
};

typedef struct pj_batch pj_batch;

/* A backend runs batches somewhere.  It knows nothing of batching policy, ordering or
 * progress: it receives whole batches, runs them (all at once with pj_batch_run, or task by
 * task its own way through the batch accessors below), and hands each back with
 * pj_batch_done.  Version 1 ends at `close`; later versions append. */
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
    /* The task batch is running has overrun its deadline, or the run was cancelled: abandon
     * or kill it.  Before the call the dispatcher has written that task's status
     * (PJ_ETIMEDOUT, PJ_ECANCELLED) and marked the tasks after it pending; the backend hands
     * the batch back without writing those slots again, and the dispatcher re-runs the
     * pending ones.  Only a task that pj_batch_run is running can be claimed so (the
     * dispatcher watches its start time): a backend that runs tasks with pj_batch_run_task
     * gets no stop_task calls, and its late tasks are reported when they return.  NULL for
     * backends that cannot interrupt a task. */
    void (*stop_task)(void *state, pj_batch *batch);
    /* Stop every worker and free the state; nothing is running. */
    void (*close)(void *state);
};

/* Registers a backend under backend->name (the table must outlive its use).  PJ_EINVAL for a
 * malformed table, PJ_EBUSY when the name is taken. */
PJ_EXPORT int pj_backend_register(const struct pj_backend *backend);
/* The backend registered (or built in) under name, NULL when none is. */
PJ_EXPORT const struct pj_backend *pj_backend_find(const char *name);
/* The i-th backend known: the built-in ones ("sequential", "threading", "fork", "spawn"),
 * then the registered ones in the order registered; NULL past the last.  To list them:
 *     for (size_t i = 0; pj_backend_at(i); i++) puts(pj_backend_at(i)->name);
 * Safe from any thread; a table returned stays valid (backends are never unregistered). */
PJ_EXPORT const struct pj_backend *pj_backend_at(size_t i);

/* For backends that run tasks in this process: run every task of the batch from
 * pj_batch_begin on, in order, in the calling thread, writing results in place (honours
 * cancellation and deadlines) — on a batch whose tasks from begin are all pending, so not on
 * one that comes again after the backend itself marked tasks pending out of order.
 * Returns 0, then hand the batch back with pj_batch_done; or PJ_ETIMEDOUT when stop_task
 * claimed the running task meanwhile: the batch is the dispatcher's again, forget it (do not
 * call pj_batch_done) and leave the thread, whose capacity stop_task has already replaced. */
PJ_EXPORT int pj_batch_run(pj_batch *batch);
/* Hand a batch back to the dispatcher.  The batch must not be touched afterwards. */
PJ_EXPORT void pj_batch_done(pj_batch *batch);

/* The batch, task by task: what a backend may read and write between submit and
 * pj_batch_done, for a backend that runs tasks its own way (in another order, elsewhere)
 * instead of calling pj_batch_run.  The batch and every task and result slot stay the front
 * end's (the dispatcher's, an executor's): use them only until pj_batch_done, from one thread
 * at a time.  The contract, for tasks i in [pj_batch_begin, pj_batch_count) that
 * pj_batch_pending reports:
 *  - call pj_batch_start once before running any; if it returns 0, hand the batch back;
 *  - give each a status: run it (pj_batch_run_task, or elsewhere and write its slot through
 *    pj_batch_result), end it without a result (pj_batch_mark_stopped), or leave it pending
 *    or mark it so (pj_batch_mark_pending): the front end hands the batch back with its
 *    pending tasks again (begin at the first of them), or cancels them when the run stops;
 *  - once pj_batch_cancelled is nonzero start no more: leave the rest pending (the front end
 *    reports them cancelled);
 *  - enforce pj_batch_timeout where the backend can (pj_batch_run_task reports a task that
 *    returns late as PJ_ETIMEDOUT; a backend that can stop a task itself marks it stopped).
 * After three hand-backs in a row that left the first pending task unrun, the front end
 * gives up on it: it and the pending tasks after it fail with PJ_ESYS.
 *
 *     if (pj_batch_start(b) == 1)
 *         for (size_t i = pj_batch_count(b); i-- > pj_batch_begin(b);)   // last first
 *             if (pj_batch_pending(b, i) && !pj_batch_cancelled(b))
 *                 pj_batch_run_task(b, i);
 *     pj_batch_done(b);
 *
 * An i at or past pj_batch_count is PJ_EINVAL (NULL for the pointer accessors). */

/* The number of tasks in the batch. */
PJ_EXPORT size_t pj_batch_count(const pj_batch *batch);
/* The first task still to run: 0 on the first submit, the first pending task when the batch
 * comes again after some of it ran; the tasks before it have their status. */
PJ_EXPORT size_t pj_batch_begin(const pj_batch *batch);
/* Task i, as the front end holds it (read it, never free it). */
PJ_EXPORT pj_task *pj_batch_task(const pj_batch *batch, size_t i);
/* Task i's result slot.  A backend that runs the task elsewhere writes its status, code, fn
 * and value here (a message must be malloc'd: the results free it); index is the front
 * end's. */
PJ_EXPORT pj_result *pj_batch_result(pj_batch *batch, size_t i);
/* 1 when task i still has to run: from pj_batch_begin on, pending since pj_batch_start and
 * not given a status since; else 0 (also before pj_batch_start). */
PJ_EXPORT int pj_batch_pending(const pj_batch *batch, size_t i);
/* Seconds each task may run from its own start (config.timeout); 0: no limit. */
PJ_EXPORT double pj_batch_timeout(const pj_batch *batch);
/* Nonzero once tasks not started must not start: 1 the run stops (a failure under
 * PJ_ON_ERROR_STOP, pj_iter_close), 2 it was cancelled (pj_parallel_cancel): a backend that
 * can stop running tasks at once should.  0 otherwise. */
PJ_EXPORT int pj_batch_cancelled(const pj_batch *batch);
/* Call once before running the batch's first task, each time the batch comes: 1 to go on
 * (every task to run is then pending, with its slot's index and fn set); 0 when the front end
 * cancelled the batch before it started (a future's pj_future_cancel): every task is then
 * PJ_ECANCELLED and the batch must be handed back unrun.  PJ_EINVAL for NULL.  pj_batch_run
 * does the same itself: call one or the other. */
PJ_EXPORT int pj_batch_start(pj_batch *batch);
/* Runs task i in the calling thread, writing its result: 0 after the call, whatever the
 * task's status (PJ_EFAILED from pj_fail; PJ_ETIMEDOUT when it returned past
 * pj_batch_timeout); PJ_ECANCELLED, without running it, once pj_batch_cancelled is nonzero
 * (the task stays pending); PJ_EINVAL for a task that is not pending.  Nested runs inside the
 * task default to n_jobs = 1, as in every worker. */
PJ_EXPORT int pj_batch_run_task(pj_batch *batch, size_t i);
/* Task i has not run (or must run again): whatever its slot held is freed and it is pending.
 * 0, or PJ_EINVAL (i out of range or before pj_batch_begin, or pj_batch_start not called). */
PJ_EXPORT int pj_batch_mark_pending(pj_batch *batch, size_t i);
/* Task i ended without a result of its own: its status becomes status (a negative PJ_E...
 * code: PJ_ECRASHED, PJ_EEXITED, PJ_ETIMEDOUT, PJ_ECANCELLED, ...) with code (the signal or
 * exit status, else 0) and a copy of why (NULL: pj_strerror(status)).  0, PJ_EINVAL (status
 * not negative, i as for pj_batch_mark_pending), PJ_ENOMEM (the status is set, without
 * the message). */
PJ_EXPORT int pj_batch_mark_stopped(pj_batch *batch, size_t i, int status, int code,
                                    const char *why);

/* ------------------------------------------------------------------------------------------ */
/* pj_delayed's machinery: argument counting and type tags                                   */

#define PJ__NARG(...)                                                                          \
    PJ__NARG_(__VA_ARGS__, 17, 16, 15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0)
#define PJ__NARG_(_1, _2, _3, _4, _5, _6, _7, _8, _9, _10, _11, _12, _13, _14, _15, _16, _17,    \
                  N, ...)                                                                      \
    N
#define PJ__CAT(a, b) PJ__CAT_(a, b)
#define PJ__CAT_(a, b) a##b

/* A _Static_assert where only an expression may stand, worth sizeof(int).  GCC and clang take
 * it in a statement expression (block scope: the operands may hold compound literals of
 * variables, which clang refuses in a struct declaration); others in a struct declaration. */
#if defined(__GNUC__)
#define PJ__STATIC_CHECK(cond, msg) sizeof(__extension__({ _Static_assert(cond, msg); 0; }))
#else
#define PJ__STATIC_CHECK(cond, msg) sizeof(struct { _Static_assert(cond, msg); int pj__unused; })
#endif

/* PJ_FN's count of types: the size of the array of types, exact at any length, where
 * PJ__NARG cannot count past 17 (and gave a pointer for a count).  Past 17 the build stops
 * with words. */
#ifndef __cplusplus
#define PJ__NTYPES(...)                                                                        \
    ((unsigned)(sizeof((ffi_type *const[]){ __VA_ARGS__ }) / sizeof(ffi_type *)) +            \
     0 * (unsigned)PJ__STATIC_CHECK(                                                           \
         sizeof((ffi_type *const[]){ __VA_ARGS__ }) <= 17 * sizeof(ffi_type *),                \
         "PJ_FN takes a return type and at most 16 parameter types: use pj_fn_new for a "      \
         "function of more parameters"))
#else
#define PJ__NTYPES(...) PJ__NARG(__VA_ARGS__)
#endif

#ifndef __cplusplus
#define PJ__TAG(x)                                                                             \
    _Generic((x), _Bool: PJ_ARG_BOOL, char: PJ_ARG_CHAR, signed char: PJ_ARG_SCHAR,            \
        unsigned char: PJ_ARG_UCHAR, short: PJ_ARG_SHORT, unsigned short: PJ_ARG_USHORT,        \
        int: PJ_ARG_INT, unsigned: PJ_ARG_UINT, long: PJ_ARG_LONG, unsigned long: PJ_ARG_ULONG,  \
        long long: PJ_ARG_LLONG, unsigned long long: PJ_ARG_ULLONG, float: PJ_ARG_FLOAT,         \
        double: PJ_ARG_DOUBLE, long double: PJ_ARG_LDOUBLE, pj_buf: PJ_ARG_BUF,                 \
        default: PJ_ARG_PTR)
/* The sizeof term refuses a struct (or union) passed by value at compile time: C varargs
 * cannot carry it for pj_delayed to read.  GCC and clang say so in words; other compilers
 * stop at a comparison of the struct with 0. */
#if defined(__GNUC__)
#define PJ__BY_VALUE_OK(x)                                                                     \
    _Generic((x), pj_buf: 1, default: __builtin_classify_type(x) != 12 /* struct */ &&        \
                                      __builtin_classify_type(x) != 13 /* union */)
#define PJ__NOT_A_STRUCT(x)                                                                    \
    PJ__STATIC_CHECK(PJ__BY_VALUE_OK(x), "pj_delayed: a struct cannot be passed by value: "    \
                     "pass a pointer to the struct (&s); its bytes are copied at once")
#else
#define PJ__NOT_A_STRUCT(x) sizeof((_Generic((x), pj_buf: 0, default: (x))) == 0)
#endif
#define PJ__ARG(x) (int)(PJ__TAG(x) + 0 * PJ__NOT_A_STRUCT(x)), (x)
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
 * inner_max_num_threads limits the runtimes inside tasks as for pj_run ("Inner threads").
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
 * with pj_in/pj_out/...), PJ_ERESOLVE (a process backend and a function no loaded module
 * holds), PJ_ENOMEM, or the backend's refusal. */
PJ_EXPORT pj_future *pj_submit(pj_executor *ex, pj_task *task);

/* Waits up to timeout seconds (PJ_FOREVER: no limit; 0: just look) for f to be done.
 *  - done: *out is f's result (owned by f, valid until pj_future_free) and the return value is
 *    its status: 0, or PJ_EFAILED (pj_fail), PJ_ECRASHED (the signal in code), PJ_EEXITED,
 *    PJ_ECANCELLED (cancelled: *out says so), ...;
 *  - not done in time: PJ_ETIMEDOUT with *out NULL; the task keeps running (ask again later);
 *  - PJ_EINVAL: NULL f or out, NaN timeout. */
PJ_EXPORT int pj_future_result(pj_future *f, double timeout, const pj_result **out);
/* 1 or 0 (PJ_EINVAL for NULL).  pj_future_done: finished or cancelled.  pj_future_running: a
 * worker has started the task (for process backends: handed it to a worker process) and it is
 * not done.  pj_future_cancelled: cancelled (pj_future_cancel, pj_executor_shutdown). */
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
/* Frees the iterator (not the futures); NULL is a no-op. */
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
 * double parameter: no conversion here).  Every chunk is submitted by this call.  On backends
 * that run batches in this process (PJ_BACKEND_BATCH_RUN: "threading", "sequential") no task
 * is built: each chunk calls fn straight from the arrays, as pj_run_bulk does, so the arrays
 * must stay valid and unchanged until pj_map_free; on the others ("fork", "spawn") every task
 * is built now, reading the arrays before this call returns.
 * timeout: one deadline for the whole iteration, from this call (PJ_FOREVER: none).
 * NULL with pj_last_error(): PJ_EINVAL, PJ_EARGC, PJ_EPOINTER (pointer parameters on a process
 * backend), PJ_ERESOLVE (fn in no loaded module, on a process backend), PJ_ESHUTDOWN,
 * PJ_ENOMEM. */
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
/* The name of the backend ex runs on (NULL for NULL). */
PJ_EXPORT const char *pj_executor_backend(const pj_executor *ex);
/* The number of workers (PJ_EINVAL for NULL). */
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
 * the spawn backend: this program re-executed, a worker in main's place once the program's
 * start-up has run — a start-up that ends the process shows as its exit code, and
 * worker_start_timeout does not apply: join with a timeout — sent the task with the
 * codec — the function found again by module and offset, pointer arguments only as declared
 * buffers — ending once the call is over; what the spawn backend says of its workers holds).
 * Both behave alike from here on: join, is_alive, exitcode, terminate, kill and the result.
 * The task stays the caller's and must outlive pj_process_start.  NULL with pj_last_error():
 * PJ_EINVAL (NULL task), PJ_EBACKEND (unknown method), PJ_EPOINTER ("spawn": a raw pointer
 * argument), PJ_ERESOLVE ("spawn": a function no loaded module holds), PJ_ENOMEM. */
PJ_EXPORT pj_process *pj_process_new(pj_task *task, const char *method);
/* Starts the process.  0, PJ_EINVAL (started already), PJ_ESYS (fork/spawn failed), or why the
 * task could not be encoded for its worker (PJ_ERESOLVE, PJ_ENOMEM); pj_last_errmsg()
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
/* pj_process_terminate / pj_process_kill send SIGTERM / SIGKILL (nothing if it has ended).
 * 0, PJ_EINVAL (not started), PJ_ESYS. */
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
