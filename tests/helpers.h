/* Small helpers the Check test files share. */
#ifndef PJ_TEST_HELPERS_H
#define PJ_TEST_HELPERS_H

#include <check.h>
#include <errno.h>

#include "fixture.h"
#include <stdbool.h>
#include <stdlib.h>
#include <time.h>

/* Every TCase gets the leak fixture (fixture.h), whichever way its file creates it. */
#define tcase_create(name) pj_test_tcase_create(name)

/* 1 in an ASan or TSan build (GCC's macros, clang's __has_feature). */
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define UNDER_SANITIZER 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define UNDER_SANITIZER 1
#endif
#endif
#ifndef UNDER_SANITIZER
#define UNDER_SANITIZER 0
#endif

/* meson test --setup=valgrind sets it: bounds on time scale, valgrind-blind checks skip. */
static inline bool under_valgrind(void)
{
    return getenv("PARJOB_UNDER_VALGRIND") != NULL;
}

static inline double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static inline void sleep_us(long us)
{
    struct timespec ts = { us / 1000000, (us % 1000000) * 1000 };
    while (nanosleep(&ts, &ts) == -1 && errno == EINTR)
        ;
}

/* A named test run once per backend index (a Check loop test), in a TCase of its own. */
struct loop_case {
    const char *name;
    const TTest *test;
};

static inline void add_loop_cases(Suite *suite, const struct loop_case *cases, size_t n,
                                  double timeout, int loops)
{
    for (size_t k = 0; k < n; k++) {
        TCase *tc = tcase_create(cases[k].name);
        tcase_set_timeout(tc, timeout);
        tcase_add_loop_test(tc, cases[k].test, 0, loops);
        suite_add_tcase(suite, tc);
    }
}

/* Runs a suite; the process's exit status says whether every test passed. */
static inline int run_suite(Suite *suite)
{
    SRunner *sr = srunner_create(suite);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}

#endif
