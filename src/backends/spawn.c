/* The spawn backend: worker processes started with posix_spawn of the running program.
 *
 * fork copies a parent that may hold locks in other threads (malloc's, stdio's, the user's);
 * a spawned worker starts from a fresh image of the same executable, so whatever the parent's
 * threads were doing cannot leave it deadlocked.  Everything but the start is the process pool
 * shared with fork (procpool.c): channel, shared memory, codec, crash attribution, timeouts,
 * worker reuse.  What is ours:
 *
 *  - launch: posix_spawn("/proc/self/exe") (vfork-style in glibc: no copy of the parent's
 *    address space, so it stays cheap in a big parent; the pool starts every worker without
 *    waiting for the previous one to be ready, so they initialise concurrently).  Only the
 *    worker's channel and its shared-memory descriptor cross, onto fixed numbers 3 and 4;
 *    every other descriptor is closed in the child before exec (closefrom), whatever its
 *    O_CLOEXEC flag, and the worker starts with an empty signal mask and default handlers.
 *  - bootstrap: a process that sees PARJOB_WORKER_FD in its environment is claimed as a worker
 *    before main (startup.c, which holds the entry every kind of re-executed worker uses): it
 *    removes the variable, runs the start-up every worker process shares (child.c: SIGKILL
 *    when its parent dies and a check that the parent is still the one that started it —
 *    neither for a "detached" worker: pj_process's, which ends with its one batch — and the
 *    signals at their defaults) and maps the shared memory.  Then the
 *    program's start-up runs as usual, every constructor included, and in main's place the
 *    worker serves batches with the pool's worker loop (worker.c), then _exits.  Without the
 *    variable this costs one getenv.
 *  - functions cross as (module path, offset) (fnref.c), because addresses differ under ASLR.
 *
 * Initialisation order: what a worker sees is what main would see; startup.c says how, and
 * where that cannot be had.
 *
 * PR_SET_PDEATHSIG fires when the *thread* that started the worker ends: the pool launches
 * from its launcher thread, which lives as long as the pool (pj__proc_ops.launch's contract). */
#include "process.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
#if defined(__has_include)
#if __has_include(<valgrind/valgrind.h>)
#include <valgrind/valgrind.h>
#endif
#endif

#define WORKER_ENV "PARJOB_WORKER_FD"
#define FNREF_ENV "PARJOB_WORKER_FNREF"
#define CHANNEL_FD 3 /* the worker's channel, in the worker */
#define SHM_FD 4     /* the worker's shared memory, until mapped */
/* A worker that cannot start serving exits with this status, before main could run. */
#define BOOT_FAILED 125

extern char **environ;

static int spawn_open(void **state, int n_workers, const pj_config *config, char *errbuf,
                      size_t errlen);

const struct pj_backend pj__backend_spawn = {
    .version = PJ_BACKEND_VERSION,
    .name = "spawn",
    .display_name = "SpawnBackend",
    .features = PJ_BACKEND_PROCESS | PJ_BACKEND_COLUMNS,
    .open = spawn_open,
    .submit = pj__procpool_submit,
    .stop_task = pj__procpool_stop_task,
    .close = pj__procpool_close,
};

static const struct pj__proc_ops spawn_ops = {
    .transport = &pj__transport_local,
    .launch = pj__spawn_launch,
    .fnref = &pj__fnref_module,
    .startup = "the program's start-up (every constructor of the program and of the libraries "
               "it loads at start-up; main never runs in a worker)",
};

static int spawn_open(void **state, int n_workers, const pj_config *config, char *errbuf,
                      size_t errlen)
{
    return pj__procpool_open(state, n_workers, config, &spawn_ops, errbuf, errlen);
}

/* ---- parent: starting a worker ------------------------------------------------------------ */

/* The parent's environment with the pool's limit on inner threads, without any stale worker
 * variable, plus the worker's descriptor: "channel fd,shm fd,shm size,shm offset,parent pid,
 * detached".  The strings are the parent's and the limit's (not copied). */
static char **worker_environ(char *var, const struct pj__inner *inner)
{
    char **env = pj__inner_environ(inner, environ, 1);
    if (!env)
        return NULL;
    size_t k = 0;
    for (size_t i = 0; env[i]; i++)
        if (strncmp(env[i], WORKER_ENV "=", sizeof WORKER_ENV) != 0)
            env[k++] = env[i];
    env[k++] = var;
    env[k] = NULL;
    return env;
}

static bool under_valgrind(void)
{
#ifdef RUNNING_ON_VALGRIND
    if (RUNNING_ON_VALGRIND)
        return true;
#endif
    const char *preload = getenv("LD_PRELOAD");
    return preload && strstr(preload, "vgpreload");
}

/* The program to start.  /proc/self/exe is the running image itself, even when its file has
 * been replaced or deleted since (a rebuilt program would have other offsets).  Under valgrind
 * it is valgrind's launcher, which refuses to run alone: the program's path is used instead
 * (valgrind's readlink of /proc/self/exe gives it). */
static const char *program_path(char *buf, size_t len)
{
    if (!under_valgrind())
        return "/proc/self/exe";
    ssize_t n = readlink("/proc/self/exe", buf, len - 1);
    if (n <= 0)
        return "/proc/self/exe";
    buf[n] = 0;
    return buf;
}

/* posix_spawn's dup2 actions run in order: a source already sitting on a target number
 * (3 or 4) would be overwritten before it is copied.  Moves such a source above them. */
static int lift(int fd, int *tmp)
{
    *tmp = -1;
    if (fd > SHM_FD)
        return fd;
    *tmp = fcntl(fd, F_DUPFD_CLOEXEC, SHM_FD + 1);
    return *tmp;
}

/* Sets up what the child gets: fds 3 and 4, nothing else open, a clean signal state. */
static int spawn_setup(posix_spawn_file_actions_t *fa, posix_spawnattr_t *attr, int chan, int shm)
{
    sigset_t none, all;
    sigemptyset(&none);
    sigfillset(&all);
    int rc = posix_spawn_file_actions_adddup2(fa, chan, CHANNEL_FD);
    if (!rc)
        rc = posix_spawn_file_actions_adddup2(fa, shm, SHM_FD);
#if defined(__GLIBC__) && (__GLIBC__ > 2 || __GLIBC_MINOR__ >= 34)
    /* Descriptors the program opened without O_CLOEXEC do not cross either.  (Older C
     * libraries: parjob's own descriptors are all close-on-exec, the program's are its own.) */
    if (!rc)
        rc = posix_spawn_file_actions_addclosefrom_np(fa, SHM_FD + 1);
#endif
    if (!rc)
        rc = posix_spawnattr_setflags(attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
    if (!rc)
        rc = posix_spawnattr_setsigmask(attr, &none);
    if (!rc)
        rc = posix_spawnattr_setsigdefault(attr, &all);
    return rc;
}

pid_t pj__spawn_launch(const struct pj__launch *l, char *err, size_t errlen)
{
    char var[128];
    snprintf(var, sizeof var, WORKER_ENV "=%d,%d,%zu,%zu,%ld,%d", CHANNEL_FD, SHM_FD,
             l->shm_size, l->shm_offset, (long)getpid(), l->detached ? 1 : 0);
    char *argv[] = { program_invocation_name, NULL };
    int tmp_chan, tmp_shm;
    int chan = lift(l->fd, &tmp_chan), shm = lift(l->shm_fd, &tmp_shm);
    int rc = chan < 0 || shm < 0 ? errno : 0;
    char **env = rc ? NULL : worker_environ(var, l->inner);
    if (!rc && !env)
        rc = ENOMEM;
    pid_t pid = -1;
    posix_spawn_file_actions_t fa;
    posix_spawnattr_t attr;
    if (!rc && (rc = posix_spawn_file_actions_init(&fa)) == 0) {
        if ((rc = posix_spawnattr_init(&attr)) == 0) {
            rc = spawn_setup(&fa, &attr, chan, shm);
            char buf[PATH_MAX];
            const char *path = program_path(buf, sizeof buf);
            if (!rc)
                rc = posix_spawn(&pid, path, &fa, &attr, argv, env);
            posix_spawnattr_destroy(&attr);
        }
        posix_spawn_file_actions_destroy(&fa);
    }
    free(env);
    if (tmp_chan >= 0)
        close(tmp_chan);
    if (tmp_shm >= 0)
        close(tmp_shm);
    if (rc) {
        snprintf(err, errlen, "posix_spawn of /proc/self/exe failed: %s", strerror(rc));
        return PJ_ESYS;
    }
    return pid;
}

/* ---- worker: claimed before main, serving in main's place (startup.c) ---------------------- */

static _Noreturn void boot_fail(const char *what, const char *value)
{
    /* stderr is the parent's: the one place a worker that cannot serve can say why. */
    fprintf(stderr, "parjob: spawn worker %ld: %s (" WORKER_ENV "=\"%s\")\n", (long)getpid(),
            what, value);
    _exit(BOOT_FAILED);
}

/* What claim found for serve: the channel and the mapped shared memory. */
static struct {
    int chan;
    struct pj__shm *shm;
    const struct pj__fnref_ops *fnref;
} boot;

/* The descriptor is checked, the worker's descriptors are made close-on-exec and the shared
 * memory mapped before the program's constructors run: a constructor that starts a program
 * must not pass them on. */
static void claim_descriptor(const char *value)
{
    char copy[128];
    snprintf(copy, sizeof copy, "%s", value);
    int chan, shm_fd, detached, used = 0;
    unsigned long long size, offset;
    long ppid;
    if (sscanf(copy, "%d,%d,%llu,%llu,%ld,%d%n", &chan, &shm_fd, &size, &offset, &ppid,
               &detached, &used) != 6 ||
        copy[used] || chan < 0 || shm_fd < 0 || size < sizeof(struct pj__shm) ||
        size > ((size_t)1 << 40) || offset > ((size_t)1 << 48) ||
        offset % (unsigned long long)sysconf(_SC_PAGESIZE) || ppid <= 1 ||
        (detached != 0 && detached != 1))
        boot_fail("malformed worker descriptor", copy);
    /* Gone before anything a task could see: its children do not inherit it. */
    unsetenv(WORKER_ENV);
    /* An MPI rank's local worker (supervisor_mpi.c): references checked by ELF build-id. */
    const char *kind = getenv(FNREF_ENV);
    boot.fnref = kind && strcmp(kind, "buildid") == 0 ? &pj__fnref_buildid : &pj__fnref_module;
    unsetenv(FNREF_ENV);
    /* A detached worker (pj_process) runs the batch already in its channel, as a forked child
     * runs its call, and ends with the channel.  posix_spawn closed every other descriptor. */
    chan = pj__child_start(&(struct pj__child_start){
        .parent = detached ? 0 : (pid_t)ppid, .channel = chan });
    if (chan < 0 && !detached && getppid() != (pid_t)ppid)
        _exit(BOOT_FAILED); /* the parent died before we got here: nobody to serve */
    if (chan < 0)
        boot_fail("cannot set PR_SET_PDEATHSIG, or the channel is not open", copy);
    if (fcntl(shm_fd, F_SETFD, FD_CLOEXEC) != 0)
        boot_fail("the shared memory's descriptor is not open", copy);
    struct pj__shm *shm = mmap(NULL, (size_t)size, PROT_READ | PROT_WRITE, MAP_SHARED, shm_fd,
                               (off_t)offset);
    close(shm_fd);
    if (shm == MAP_FAILED)
        boot_fail("cannot map the shared memory", copy);
    boot.chan = chan;
    boot.shm = shm;
}

/* One getenv in every program that links parjob, unless it is a worker. */
static bool spawn_claim(void)
{
    const char *value = getenv(WORKER_ENV);
    if (!value)
        return false;
    claim_descriptor(value);
    return true;
}

static int spawn_serve(void)
{
    /* Now, not at claim: the program's start-up may have installed handlers of its own. */
    pj__worker_default_signals();
    return pj__worker_serve(&(struct pj__worker_args){
        .fd = boot.chan, .shm = boot.shm, .fnref = boot.fnref });
}

const struct pj__worker_entry pj__spawn_worker_entry = {
    .claim = spawn_claim,
    .serve = spawn_serve,
};
