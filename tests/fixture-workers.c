/* The fixture's look inside worker processes (fixture.h), for the test files that link parjob.
 *
 * A worker lives only as long as its handle, so it is looked at when its handle is freed:
 * tests/meson.build links these executables with --wrap for pj_parallel_free,
 * pj_executor_free and pj_process_free, which makes the test code's calls land here first.
 * Every child of the test process is then checked against parjob.h's promise that workers
 * "inherit no parjob descriptor but their own": a worker may hold the test program's own
 * descriptors (a forked worker inherits them, as multiprocessing's fork does), but no socket,
 * memfd or anonymous-inode descriptor (eventfd, pidfd) that the test process holds too — the
 * parent's end of some worker's channel, a region, a pidfd, a pj_process's socket.  A worker's
 * own channel end is a socket the test process does not hold, so it passes.  A zombie child of
 * a worker (a task's process never reaped) is reported too.  A child the test forks itself
 * inherits everything, as fork does: no case frees a handle while it has one holding
 * parjob's descriptors (test-fixture.c's child_holds_a_parent_socket does so on purpose).
 *
 * A child caught between fork and the closing of inherited descriptors (a replacement worker
 * started at this moment) holds them for microseconds: a finding counts only when it is still
 * there a second later.  Findings are noted for the case's teardown to report, so the real
 * free always runs. */
#include "fixture.h"

#include <parjob.h>

#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

void __real_pj_parallel_free(pj_parallel *par);
void __real_pj_executor_free(pj_executor *ex);
void __real_pj_process_free(pj_process *p);
void __wrap_pj_parallel_free(pj_parallel *par);
void __wrap_pj_executor_free(pj_executor *ex);
void __wrap_pj_process_free(pj_process *p);

enum { MAX_FDS = 1024, MAX_CHILDREN = 256, SETTLE_MS = 1000 };

/* Descriptors parjob makes: the kinds a worker must not share with the test process. */
static bool parjob_kind(const char *link)
{
    return strncmp(link, "socket:", 7) == 0 || strncmp(link, "/memfd:parjob", 13) == 0 ||
           strncmp(link, "anon_inode:", 11) == 0 || strncmp(link, "pidfd:", 6) == 0;
}

static bool held_by(const struct pj_test_fd *f, const struct pj_test_fd *set, int n)
{
    for (int k = 0; k < n; k++)
        if (set[k].dev == f->dev && set[k].ino == f->ino && strcmp(set[k].link, f->link) == 0)
            return true;
    return false;
}

static void nap_ms(int ms)
{
    struct timespec ts = { 0, ms * 1000000L };
    nanosleep(&ts, NULL);
}

/* The first descriptor of the test process's (parent_fds) that child holds, into *shared;
 * false when it holds none (or is gone). */
static bool holds_parent_fd(int child, const struct pj_test_fd *parent_fds, int n_parent,
                            struct pj_test_fd *shared)
{
    static struct pj_test_fd child_fds[MAX_FDS];
    int n = pj_test_list_fds(child, child_fds, MAX_FDS);
    for (int k = 0; k < n; k++) {
        if (child_fds[k].fd > 2 && parjob_kind(child_fds[k].link) &&
            held_by(&child_fds[k], parent_fds, n_parent)) {
            *shared = child_fds[k];
            return true;
        }
    }
    return false;
}

static bool is_zombie(int pid)
{
    char path[64], line[256] = "";
    snprintf(path, sizeof path, "/proc/%d/stat", pid);
    FILE *f = fopen(path, "re");
    if (!f)
        return false;
    bool zombie = fgets(line, sizeof line, f) && strrchr(line, ')') &&
                  strncmp(strrchr(line, ')'), ") Z", 3) == 0;
    fclose(f);
    return zombie;
}

/* The first zombie child of child (a process a task started and never reaped), or 0. */
static int zombie_child_of(int child)
{
    int grandchildren[MAX_CHILDREN];
    int n = pj_test_list_children(child, grandchildren, MAX_CHILDREN);
    for (int k = 0; k < n; k++)
        if (is_zombie(grandchildren[k]))
            return grandchildren[k];
    return 0;
}

static void check_child(int child, const char *where)
{
    static struct pj_test_fd parent_fds[MAX_FDS];
    struct pj_test_fd shared;
    int zombie = 0;
    for (int waited = 0; waited <= SETTLE_MS; waited += 10) {
        int n_parent = pj_test_list_fds(0, parent_fds, MAX_FDS);
        bool leak = holds_parent_fd(child, parent_fds, n_parent, &shared);
        zombie = zombie_child_of(child);
        if (!leak && !zombie)
            return;
        if (waited == SETTLE_MS) {
            if (leak)
                pj_test_fixture_note("at %s: child process %d holds descriptor %d (%s) of "
                                     "the test process", where, child, shared.fd, shared.link);
            if (zombie)
                pj_test_fixture_note("at %s: child process %d left its child %d unreaped",
                                     where, child, zombie);
            return;
        }
        nap_ms(10);
    }
}

/* One check at a time: the listings above are static (too big for a thread's stack). */
static pthread_mutex_t check_lock = PTHREAD_MUTEX_INITIALIZER;

static void check_workers(const char *where)
{
    pthread_mutex_lock(&check_lock);
    int children[MAX_CHILDREN];
    int n = pj_test_list_children(0, children, MAX_CHILDREN);
    for (int k = 0; k < n; k++)
        check_child(children[k], where);
    pthread_mutex_unlock(&check_lock);
}

void __wrap_pj_parallel_free(pj_parallel *par)
{
    if (par)
        check_workers("pj_parallel_free");
    __real_pj_parallel_free(par);
}

void __wrap_pj_executor_free(pj_executor *ex)
{
    if (ex)
        check_workers("pj_executor_free");
    __real_pj_executor_free(ex);
}

void __wrap_pj_process_free(pj_process *p)
{
    if (p)
        check_workers("pj_process_free");
    __real_pj_process_free(p);
}
