/* The fixture every test case of every Check test file runs under, as Wayland's test runner
 * does: after the case, the test process holds exactly the descriptors and child processes
 * it held before it (nothing leaked, nothing of the case's left running or unreaped), and
 * every worker process it had when a handle was freed held none of the test process's
 * parjob descriptors (fixture-workers.c).  helpers.h routes tcase_create here, so that no
 * test file and no TCase can be left out of it. */
#ifndef PJ_TEST_FIXTURE_H
#define PJ_TEST_FIXTURE_H

#include <check.h>
#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

/* tcase_create with the fixture added before any fixture of the file's own: its setup runs
 * first and its teardown last (Check runs teardowns in reverse), so the file's teardowns have
 * freed what they hold when the comparison is made. */
TCase *pj_test_tcase_create(const char *name);

/* A finding made outside the teardown (by the worker check, inside a free function that must
 * still run to the end): reported as the case's failure by the teardown.  Thread-safe. */
void pj_test_fixture_note(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* One open descriptor of a process, as /proc shows it. */
struct pj_test_fd {
    int fd;
    unsigned long long dev, ino; /* what it refers to (stat of the /proc link) */
    char link[128];              /* the link's text: "socket:[123]", "/memfd:x (deleted)", ... */
};

/* The open descriptors of process pid (0: this one), at most max, in out; returns the count,
 * or -1 when /proc/<pid>/fd cannot be read (the process is gone).  The descriptor the listing
 * itself uses is left out. */
int pj_test_list_fds(int pid, struct pj_test_fd *out, int max);

/* The child processes of process pid (0: this one), at most max, in out; returns the count. */
int pj_test_list_children(int pid, int *out, int max);

#ifdef __cplusplus
}
#endif

#endif
