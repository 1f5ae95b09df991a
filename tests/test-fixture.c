/* The leak fixture (fixture.h) catches what it is there for: cases that leak a descriptor,
 * close one they did not open, leave a zombie or a live child, or free a handle while a child
 * holds a descriptor of the test process each fail, naming it, and a clean case that uses
 * process workers passes.  They run as a suite of their own, forked (CK_FORK), inside one
 * case of this one. */
#include <parjob.h>

#include <check.h>

#include "helpers.h"
#include <fcntl.h>
#include <signal.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

static int open_before = -1; /* a descriptor open before every case (main) */

/* A child that dies with the case's process, whatever the case does with it. */
static pid_t child_that_waits(void)
{
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        pause();
        _exit(0);
    }
    return pid;
}

START_TEST(leaks_a_descriptor)
{
    ck_assert_int_ge(open("/dev/null", O_RDONLY | O_CLOEXEC), 0);
}
END_TEST

START_TEST(closes_a_descriptor_of_before)
{
    ck_assert_int_eq(close(open_before), 0);
}
END_TEST

START_TEST(leaves_a_zombie)
{
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0)
        _exit(0);
    siginfo_t info;
    ck_assert_int_eq(waitid(P_PID, (id_t)pid, &info, WEXITED | WNOWAIT), 0); /* not reaped */
}
END_TEST

START_TEST(leaves_a_live_child)
{
    child_that_waits();
}
END_TEST

/* A child holds both ends of a socket pair of the test process while a handle is freed. */
START_TEST(child_holds_a_parent_socket)
{
    int sv[2];
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    pid_t pid = child_that_waits();
    pj_parallel *par = pj_parallel_new(&(pj_config){ .n_jobs = 1, .backend = "sequential" });
    ck_assert_ptr_nonnull(par);
    pj_parallel_free(par);
    kill(pid, SIGKILL);
    ck_assert_int_eq(waitpid(pid, NULL, 0), pid);
    close(sv[0]);
    close(sv[1]);
}
END_TEST

static int twice(int x)
{
    return 2 * x;
}

START_TEST(clean_with_process_workers)
{
    pj_fn *fn = PJ_FN(twice, &ffi_type_sint, &ffi_type_sint);
    pj_task *t[4] = { pj_delayed(fn, 1), pj_delayed(fn, 2), pj_delayed(fn, 3),
                      pj_delayed(fn, 4) };
    for (int b = 0; b < 2; b++) {
        pj_parallel *par = pj_parallel_new(&(pj_config){ .n_jobs = 2,
                                                         .backend = b ? "spawn" : "fork" });
        ck_assert_ptr_nonnull(par);
        pj_results *res;
        ck_assert_int_eq(pj_run(par, t, 4, &res), 0);
        ck_assert_int_eq(pj_result_int(pj_results_at(res, 3)), 8);
        pj_results_free(res);
        pj_parallel_free(par);
    }
    for (int k = 0; k < 4; k++)
        pj_task_free(t[k]);
    pj_fn_free(fn);
}
END_TEST

/* Each leaking case and the words its failure must hold. */
struct leaking_case {
    const char *name;
    const TTest *test;
    const char *finding;
};
#define N_LEAKING 5

START_TEST(fixture_finds_each_leak)
{
    const struct leaking_case leaking[N_LEAKING] = {
        { "leaks_a_descriptor", leaks_a_descriptor, "(/dev/null) left open" },
        { "closes_a_descriptor_of_before", closes_a_descriptor_of_before,
          "open before, was closed" },
        { "leaves_a_zombie", leaves_a_zombie, ") Z left behind" },
        { "leaves_a_live_child", leaves_a_live_child, "left behind" },
        { "child_holds_a_parent_socket", child_holds_a_parent_socket,
          "at pj_parallel_free: child process" },
    };
    Suite *inner = suite_create("leaks");
    for (size_t k = 0; k < N_LEAKING; k++) {
        TCase *tc = tcase_create(leaking[k].name);
        tcase_add_test(tc, leaking[k].test);
        suite_add_tcase(inner, tc);
    }
    TCase *clean = tcase_create("clean");
    tcase_set_timeout(clean, 60);
    tcase_add_test(clean, clean_with_process_workers);
    suite_add_tcase(inner, clean);
    SRunner *sr = srunner_create(inner);
    srunner_set_fork_status(sr, CK_FORK); /* a case's leaks stay in its own process */
    srunner_run_all(sr, CK_SILENT);
    ck_assert_int_eq(srunner_ntests_run(sr), N_LEAKING + 1);
    TestResult **results = srunner_results(sr);
    for (size_t k = 0; k < N_LEAKING + 1; k++) {
        TestResult *r = results[k];
        const char *name = tr_tcname(r);
        if (strcmp(name, "clean") == 0) {
            ck_assert_msg(tr_rtype(r) == CK_PASS, "the clean case failed: %s", tr_msg(r));
            continue;
        }
        size_t c = 0;
        while (c < N_LEAKING && strcmp(leaking[c].name, name) != 0)
            c++;
        ck_assert_uint_lt(c, N_LEAKING);
        ck_assert_msg(tr_rtype(r) == CK_FAILURE, "%s passed the fixture", name);
        ck_assert_msg(strstr(tr_msg(r), leaking[c].finding), "%s: %s", name, tr_msg(r));
    }
    free(results);
    srunner_free(sr);
}
END_TEST

int main(void)
{
    open_before = open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (open_before < 0)
        return EXIT_FAILURE;
    Suite *s = suite_create("fixture");
    TCase *tc = tcase_create("fixture");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, fixture_finds_each_leak);
    suite_add_tcase(s, tc);
    return run_suite(s);
}
