/* The per-case fixture of every Check test file (fixture.h): descriptors and child processes
 * of the test process before and after each case.
 *
 * It runs where the case runs: in the process Check forks for it (CK_FORK, the default), or in
 * the one test process under CK_FORK=no (the valgrind setup), where a case's leftovers would
 * otherwise reach every later case.  Either way the comparison is against the same process's
 * state at the case's start, so what Check or an earlier case holds is not the case's.  The
 * test process's own children are found through /proc/<pid>/task/<tid>/children (a zombie
 * still is one; nothing is reaped here, so the check changes nothing it looks at). */
#include "fixture.h"

#include <dirent.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

enum { MAX_FDS = 1024, MAX_CHILDREN = 256, NOTES_LEN = 4096 };

static struct pj_test_fd fds_before[MAX_FDS];
static int n_fds_before;
static int children_before[MAX_CHILDREN];
static int n_children_before;

/* Findings of the worker check since the case began (fixture_note). */
static pthread_mutex_t notes_lock = PTHREAD_MUTEX_INITIALIZER;
static char notes[NOTES_LEN];

static void proc_path(char *buf, size_t len, int pid, const char *rest)
{
    if (pid)
        snprintf(buf, len, "/proc/%d/%s", pid, rest);
    else
        snprintf(buf, len, "/proc/self/%s", rest);
}

int pj_test_list_fds(int pid, struct pj_test_fd *out, int max)
{
    char dir_path[64];
    proc_path(dir_path, sizeof dir_path, pid, "fd");
    DIR *dir = opendir(dir_path);
    if (!dir)
        return -1;
    int n = 0, own = dirfd(dir);
    struct dirent *e;
    while ((e = readdir(dir)) && n < max) {
        if (e->d_name[0] == '.' || (!pid && atoi(e->d_name) == own))
            continue;
        struct pj_test_fd *f = &out[n];
        char path[400];
        snprintf(path, sizeof path, "%s/%s", dir_path, e->d_name);
        ssize_t k = readlink(path, f->link, sizeof f->link - 1);
        if (k < 0)
            continue; /* closed meanwhile */
        f->link[k] = 0;
        struct stat st;
        f->fd = atoi(e->d_name);
        f->dev = f->ino = 0;
        if (stat(path, &st) == 0) {
            f->dev = (unsigned long long)st.st_dev;
            f->ino = (unsigned long long)st.st_ino;
        }
        n++;
    }
    closedir(dir);
    return n;
}

int pj_test_list_children(int pid, int *out, int max)
{
    char task_path[64];
    proc_path(task_path, sizeof task_path, pid, "task");
    DIR *dir = opendir(task_path);
    if (!dir)
        return 0;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(dir))) {
        if (e->d_name[0] == '.')
            continue;
        char path[400];
        snprintf(path, sizeof path, "%s/%s/children", task_path, e->d_name);
        FILE *f = fopen(path, "re");
        if (!f)
            continue; /* the thread ended meanwhile */
        int child;
        while (n < max && fscanf(f, "%d", &child) == 1)
            out[n++] = child;
        fclose(f);
    }
    closedir(dir);
    return n;
}

void pj_test_fixture_note(const char *fmt, ...)
{
    pthread_mutex_lock(&notes_lock);
    size_t used = strlen(notes);
    va_list ap;
    va_start(ap, fmt);
    if (used + 2 < sizeof notes) {
        vsnprintf(notes + used, sizeof notes - used - 1, fmt, ap);
        strcat(notes, "\n");
    }
    va_end(ap);
    pthread_mutex_unlock(&notes_lock);
}

/* The same descriptor on the same object.  Not by the link's text, which changes when the file
 * is deleted or renamed meanwhile (valgrind holds the program's file open: a rebuild during
 * the run shows it "(deleted)"); by it alone where stat failed. */
static bool same_fd(const struct pj_test_fd *a, const struct pj_test_fd *b)
{
    if (a->fd != b->fd)
        return false;
    if (!a->dev && !a->ino && !b->dev && !b->ino)
        return strcmp(a->link, b->link) == 0;
    return a->dev == b->dev && a->ino == b->ino;
}

/* Check's own message file: under CK_FORK=no Check replaces it (an unlinked
 * $TMPDIR/check_XXXXXX) as it moves from a case's setup to its test and teardown. */
static bool checks_own(const struct pj_test_fd *f)
{
    const char *base = strrchr(f->link, '/');
    return base && strncmp(base, "/check_", 7) == 0 && strstr(base, " (deleted)");
}

static bool fd_in(const struct pj_test_fd *f, const struct pj_test_fd *set, int n)
{
    for (int k = 0; k < n; k++)
        if (same_fd(f, &set[k]))
            return true;
    return false;
}

static bool pid_in(int pid, const int *set, int n)
{
    for (int k = 0; k < n; k++)
        if (set[k] == pid)
            return true;
    return false;
}

/* "1234 (test-dispatch) Z": the child's pid, name and state, from /proc/<pid>/stat. */
static void describe_child(int pid, char *buf, size_t len)
{
    char path[64], stat_line[256] = "";
    snprintf(path, sizeof path, "/proc/%d/stat", pid);
    FILE *f = fopen(path, "re");
    if (f) {
        if (!fgets(stat_line, sizeof stat_line, f))
            stat_line[0] = 0;
        fclose(f);
    }
    char *name_end = strrchr(stat_line, ')');
    if (name_end && name_end[1] == ' ')
        name_end[3] = 0; /* keep "pid (name) S" */
    snprintf(buf, len, "%s", stat_line[0] ? stat_line : "(gone)");
}

static void fixture_setup(void)
{
    notes[0] = 0;
    n_fds_before = pj_test_list_fds(0, fds_before, MAX_FDS);
    n_children_before = pj_test_list_children(0, children_before, MAX_CHILDREN);
}

/* Appends what the case left behind to report (descriptors opened and not closed, descriptors
 * of before that it closed or replaced, children started and not reaped). */
static void compare_with_before(char *report, size_t len)
{
    static struct pj_test_fd fds_after[MAX_FDS];
    int n_after = pj_test_list_fds(0, fds_after, MAX_FDS);
    size_t used = strlen(report);
    for (int k = 0; k < n_after && used < len; k++, used = strlen(report))
        if (!checks_own(&fds_after[k]) && !fd_in(&fds_after[k], fds_before, n_fds_before))
            snprintf(report + used, len - used, "descriptor %d (%s) left open\n",
                     fds_after[k].fd, fds_after[k].link);
    for (int k = 0; k < n_fds_before && used < len; k++, used = strlen(report))
        if (!checks_own(&fds_before[k]) && !fd_in(&fds_before[k], fds_after, n_after))
            snprintf(report + used, len - used, "descriptor %d (%s), open before, was closed\n",
                     fds_before[k].fd, fds_before[k].link);
    int children[MAX_CHILDREN];
    int n_children = pj_test_list_children(0, children, MAX_CHILDREN);
    for (int k = 0; k < n_children && used < len; k++, used = strlen(report)) {
        if (pid_in(children[k], children_before, n_children_before))
            continue;
        char who[160];
        describe_child(children[k], who, sizeof who);
        snprintf(report + used, len - used, "child process %s left behind\n", who);
    }
}

static void fixture_teardown(void)
{
    static char report[NOTES_LEN * 2];
    pthread_mutex_lock(&notes_lock);
    snprintf(report, sizeof report, "%s", notes);
    notes[0] = 0;
    pthread_mutex_unlock(&notes_lock);
    compare_with_before(report, sizeof report);
    ck_assert_msg(report[0] == 0, "the case left this behind:\n%s", report);
}

TCase *pj_test_tcase_create(const char *name)
{
    TCase *tc = (tcase_create)(name); /* Check's own: helpers.h's macro routes here */
    tcase_add_checked_fixture(tc, fixture_setup, fixture_teardown);
    return tc;
}
