/* How a program started as a worker becomes one: in main's place, once its whole start-up has
 * run.
 *
 * A launcher starts this same program as a worker and marks the new process (spawn: a
 * variable in its environment).  The worker must run tasks in a fully initialised program —
 * every constructor of the program and of the libraries loaded at start-up, C++ dynamic
 * initialisation included, in the order the loader runs them — and must never run main.  So
 * parjob takes main's place rather than a constructor's: libparjob defines
 * __libc_start_main, which the program's entry code (_start, from crt1.o) calls with main;
 * ours asks the table of worker entries below whether this process is a worker and calls the
 * C library's own __libc_start_main (dlsym RTLD_NEXT) with main, or with worker_main in a
 * worker.  The C library then runs the start-up exactly as it would for main — it is its code
 * that does it — and calls worker_main where main would have been called.
 *
 * Why this holds for every way of linking (tests/startup-links.sh builds a program each way:
 * shared and static libparjob, PIE and non-PIE, with and without -Wl,--as-needed):
 *  - shared libparjob: the executable's reference to __libc_start_main is bound at load time
 *    to the first definition in the symbol lookup order: the executable, then its DT_NEEDED
 *    libraries in link order, where libc comes last.  An unversioned definition satisfies the
 *    versioned reference (__libc_start_main@GLIBC_2.34).  --as-needed keeps libparjob, since
 *    the program calls it; PIE or not, _start calls through the GOT.
 *  - static libparjob: crt1.o's reference is still undefined when the linker reaches
 *    libparjob.a (libc comes later), so this object is linked into every program that links
 *    the archive, and the reference binds to it at link time.
 * It is weak so that a fully static program (-static), whose libc.a defines it too, still
 * links: there libc's wins.
 *
 * Where main's place cannot be taken — a fully static program, or libparjob reaching the
 * program only through another shared library (libc then comes first in the lookup order) —
 * the constructor below starts serving instead, as parjob did before: constructors that the
 * loader runs after libparjob's do not run in such a worker.  It tells the two cases apart by
 * asking the loader which __libc_start_main the program will call.
 *
 * A worker entry claims the process as early as it can — in the constructor below, or in
 * __libc_start_main when that comes first (static libparjob: the program's constructors run
 * inside it) — taking its mark out of the environment and its descriptors out of the way of
 * the program's start-up (close-on-exec, parent-death signal); pj__process_is_worker is set
 * then, so a pj_parallel that a constructor creates there is a nested one.  The mpi backend's
 * worker ranks are to use the same entry: one more line in the table, whose claim recognises
 * a rank that is not the driver from the launcher's environment (without starting MPI: the
 * MPI library's own constructors may not have run yet) and whose serve starts MPI and runs
 * the worker loop over its transport.
 *
 * Everything here runs single-threaded, before main; the state is this process's one worker
 * identity, written once then read. */
#include "process.h"

#include <dlfcn.h>
#include <stdio.h>
#include <unistd.h>

typedef int (*pj__main_fn)(int, char **, char **);
typedef int (*pj__start_main_fn)(pj__main_fn program_main, int argc, char **argv,
                                 void (*init)(void), void (*fini)(void),
                                 void (*rtld_fini)(void), void *stack_end);

/* Every kind of worker a launcher can start; the first that claims the process serves. */
static const struct pj__worker_entry *const entries[] = {
    &pj__spawn_worker_entry,
    &pj__mpi_worker_entry,       /* after spawn's: an MPI rank's own local workers are spawn's */
};

static bool asked;                             /* the entries were asked */
static const struct pj__worker_entry *worker;  /* the one that claimed this process, or NULL */

static void ask_entries(void)
{
    if (asked)
        return;
    asked = true;
    for (size_t i = 0; i < sizeof entries / sizeof *entries; i++)
        if (entries[i]->claim()) {
            worker = entries[i];
            pj__process_is_worker = true;
            return;
        }
}

static _Noreturn void serve_and_exit(void)
{
    int status = worker->serve();
    /* What tasks printed.  The program's exit handlers and destructors are not run: they
     * belong to the program's main, which never ran here. */
    fflush(NULL);
    _exit(status);
}

static int worker_main(int argc, char **argv, char **envp)
{
    (void)argc;
    (void)argv;
    (void)envp;
    serve_and_exit();
}

static int start_main(pj__main_fn program_main, int argc, char **argv, void (*init)(void),
                      void (*fini)(void), void (*rtld_fini)(void), void *stack_end)
{
    pj__start_main_fn next = (pj__start_main_fn)(void (*)(void))dlsym(RTLD_NEXT,
                                                                      "__libc_start_main");
    if (!next) {
        /* Unreachable with a C library that defines it; nothing could start the program. */
        fprintf(stderr, "parjob: the C library's __libc_start_main is not found: %s\n",
                dlerror());
        _exit(127);
    }
    ask_entries();
    return next(worker ? worker_main : program_main, argc, argv, init, fini, rtld_fini, stack_end);
}

/* The name the program's entry code calls; start_main is its local address. */
__attribute__((weak, visibility("default"), alias("start_main"))) int
__libc_start_main(pj__main_fn program_main, int argc, char **argv, void (*init)(void),
                  void (*fini)(void), void (*rtld_fini)(void), void *stack_end);

/* True when the program's entry code will call start_main: the loader's first
 * __libc_start_main is ours. */
static bool takes_mains_place(void)
{
    return dlsym(RTLD_DEFAULT, "__libc_start_main") == (void *)start_main;
}

/* Runs in every program that links parjob, before main: one getenv per entry unless this is
 * a worker. */
__attribute__((constructor)) static void startup_constructor(void)
{
    ask_entries();
    if (worker && !takes_mains_place())
        serve_and_exit();
}
