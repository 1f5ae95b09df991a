/* Task records cut from per-thread blocks (src/core/taskmem.c, issue 14 item 5): whoever
 * builds a task still owns it and frees it with pj_task_free, in any order, from any thread,
 * before or after its runs, whether or not the thread that built it still runs; and freed
 * task memory is reused by the next tasks instead of being faulted in again. */
#include <parjob.h>

#include <check.h>

#include "helpers.h"
#include <malloc.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

/* More than a block holds of these tasks (1 MiB, 32 bytes a task): frees cross blocks. */
#define MANY 100000

static int add(int a, int b)
{
    return a + b;
}

static pj_fn *add_fn(void)
{
    pj_fn *fn = PJ_FN(add, &ffi_type_sint, &ffi_type_sint, &ffi_type_sint);
    ck_assert_msg(fn != NULL, "%s", pj_last_errmsg());
    return fn;
}

static pj_task **build(pj_fn *fn, size_t n, int base)
{
    pj_task **tasks = malloc(n * sizeof *tasks);
    ck_assert_ptr_nonnull(tasks);
    for (size_t i = 0; i < n; i++) {
        tasks[i] = pj_delayed(fn, base + (int)i, 1);
        ck_assert_msg(tasks[i] != NULL, "%s", pj_last_errmsg());
    }
    return tasks;
}

/* Runs tasks[0..n) on backend and checks every result is base + i + 1. */
static void run_and_check(const char *backend, pj_task **tasks, size_t n, int base)
{
    pj_parallel *par = pj_parallel_new(&(pj_config){ .n_jobs = 2, .backend = backend });
    ck_assert_msg(par != NULL, "%s", pj_last_errmsg());
    pj_results *res;
    ck_assert_int_eq(pj_run(par, tasks, n, &res), 0);
    for (size_t i = 0; i < n; i++)
        ck_assert_int_eq(pj_result_int(pj_results_at(res, i)), base + (int)i + 1);
    pj_results_free(res);
    pj_parallel_free(par);
}

/* A permutation of 0..n-1 from a fixed seed. */
static size_t *shuffled(size_t n, unsigned seed)
{
    size_t *order = malloc(n * sizeof *order);
    ck_assert_ptr_nonnull(order);
    for (size_t i = 0; i < n; i++)
        order[i] = i;
    for (size_t i = n - 1; i > 0; i--) {
        seed = seed * 1103515245u + 12345u;
        size_t j = (seed >> 8) % (i + 1), t = order[i];
        order[i] = order[j], order[j] = t;
    }
    return order;
}

/* Freed in a random order, half of them first: the others, in blocks that are partly free,
 * still hold their arguments and run right; then new tasks reuse what was freed. */
START_TEST(free_in_any_order)
{
    pj_fn *fn = add_fn();
    pj_task **tasks = build(fn, MANY, 0);
    size_t *order = shuffled(MANY, 7);
    for (size_t k = 0; k < MANY / 2; k++) {
        pj_task_free(tasks[order[k]]);
        tasks[order[k]] = NULL;
    }
    for (size_t k = MANY / 2; k < MANY; k++)
        ck_assert_ptr_eq(pj_task_fn(tasks[order[k]]), fn);
    pj_task **again = build(fn, MANY / 2, 1000);
    run_and_check("threading", again, MANY / 2, 1000);
    for (size_t k = MANY; k-- > MANY / 2;) /* the rest backwards */
        pj_task_free(tasks[order[k]]);
    for (size_t i = 0; i < MANY / 2; i++)
        pj_task_free(again[i]);
    free(order);
    free(tasks);
    free(again);
    pj_fn_free(fn);
}
END_TEST

/* One task kept alive in a block whose every other task is freed keeps that block: the tasks
 * built next, which reuse freed blocks, do not land on it.  Survivors 40000 tasks apart (a
 * block holds ~32000 of these) are each the last of their block. */
START_TEST(last_task_of_a_block_keeps_it)
{
    enum { N = 200000, APART = 40000 };
    pj_fn *fn = add_fn();
    pj_task **tasks = build(fn, N, 0);
    size_t *order = shuffled(N, 11);
    for (size_t k = 0; k < N; k++)
        if (order[k] % APART != 0)
            pj_task_free(tasks[order[k]]);
    pj_task **next = build(fn, N, 7);
    pj_task *survivors[N / APART];
    for (size_t j = 0; j < N / APART; j++)
        survivors[j] = tasks[j * APART];
    pj_parallel *par = pj_parallel_new(&(pj_config){ .n_jobs = 1, .backend = "sequential" });
    ck_assert_ptr_nonnull(par);
    pj_results *res;
    ck_assert_int_eq(pj_run(par, survivors, N / APART, &res), 0);
    for (size_t j = 0; j < N / APART; j++)
        ck_assert_int_eq(pj_result_int(pj_results_at(res, j)), (int)(j * APART) + 1);
    pj_results_free(res);
    pj_parallel_free(par);
    run_and_check("threading", next, N, 7);
    for (size_t j = 0; j < N / APART; j++)
        pj_task_free(survivors[j]);
    for (size_t i = 0; i < N; i++)
        pj_task_free(next[i]);
    free(order);
    free(tasks);
    free(next);
    pj_fn_free(fn);
}
END_TEST

/* A task outlives the runs it took part in, and the handles that ran it. */
START_TEST(tasks_outlive_their_runs)
{
    pj_fn *fn = add_fn();
    pj_task **tasks = build(fn, 1000, 5);
    run_and_check("threading", tasks, 1000, 5);
    run_and_check("fork", tasks, 1000, 5);
    run_and_check("sequential", tasks, 1000, 5);
    for (size_t i = 0; i < 1000; i++)
        pj_task_free(tasks[i]);
    free(tasks);
    pj_fn_free(fn);
}
END_TEST

struct builder {
    pj_fn *fn;
    pj_task **tasks;
    size_t n;
    int base;
};

static void *build_in_thread(void *arg)
{
    struct builder *b = arg;
    for (size_t i = 0; i < b->n; i++)
        if (!(b->tasks[i] = pj_delayed(b->fn, b->base + (int)i, 1)))
            return NULL;
    return b;
}

static void *free_in_thread(void *arg)
{
    struct builder *b = arg;
    for (size_t i = 0; i < b->n; i++)
        pj_task_free(b->tasks[i]);
    return b;
}

/* Tasks built by threads that have ended run and are freed by the main thread; while other
 * threads build and free at the same time. */
START_TEST(tasks_of_ended_threads)
{
    pj_fn *fn = add_fn();
    enum { THREADS = 4, EACH = MANY / 4 };
    struct builder b[THREADS];
    pthread_t th[THREADS];
    for (int k = 0; k < THREADS; k++) {
        b[k] = (struct builder){ fn, malloc(EACH * sizeof(pj_task *)), EACH, k * EACH };
        ck_assert_ptr_nonnull(b[k].tasks);
        ck_assert_int_eq(pthread_create(&th[k], NULL, build_in_thread, &b[k]), 0);
    }
    for (int k = 0; k < THREADS; k++) {
        void *ok;
        pthread_join(th[k], &ok);
        ck_assert_msg(ok != NULL, "pj_delayed failed in a thread: %s", pj_last_errmsg());
    }
    for (int k = 0; k < THREADS; k++)
        run_and_check("threading", b[k].tasks, EACH, k * EACH);
    /* Half freed by the main thread, half by threads of their own, while the main thread
     * builds more. */
    for (int k = 0; k < THREADS / 2; k++)
        ck_assert_int_eq(pthread_create(&th[k], NULL, free_in_thread, &b[k]), 0);
    pj_task **more = build(fn, MANY, 3);
    for (int k = THREADS / 2; k < THREADS; k++)
        free_in_thread(&b[k]);
    for (int k = 0; k < THREADS / 2; k++)
        pthread_join(th[k], NULL);
    run_and_check("threading", more, MANY, 3);
    for (size_t i = 0; i < MANY; i++)
        pj_task_free(more[i]);
    for (int k = 0; k < THREADS; k++)
        free(b[k].tasks);
    free(more);
    pj_fn_free(fn);
}
END_TEST

/* A task too big to share a block (an 80 KiB struct by value), beside small ones.  It is
 * only built and freed: add would not take such a struct. */
START_TEST(big_task_beside_small_ones)
{
    enum { WORDS = (80 << 10) / 8 };
    static uint64_t big[WORDS];
    static ffi_type *elements[WORDS + 1];
    for (size_t i = 0; i < WORDS; i++) {
        elements[i] = &ffi_type_uint64;
        big[i] = i;
    }
    ffi_type big_type = { 0, 0, FFI_TYPE_STRUCT, elements };
    pj_fn *fn = add_fn();
    pj_fn *takes_big = pj_fn_new("takes_big", (void (*)(void))add, &ffi_type_sint, 1,
                                 (ffi_type *[]){ &big_type });
    ck_assert_msg(takes_big != NULL, "%s", pj_last_errmsg());
    pj_task *small = pj_delayed(fn, 1, 1);
    pj_task *large = pj_delayed(takes_big, (void *)big);
    pj_task *small2 = pj_delayed(fn, 2, 1);
    ck_assert_msg(small && large && small2, "%s", pj_last_errmsg());
    ck_assert_ptr_eq(pj_task_fn(large), takes_big);
    pj_task_free(large);
    pj_task *both[] = { small, small2 };
    run_and_check("sequential", both, 2, 1);
    pj_task_free(small);
    pj_task_free(small2);
    pj_fn_free(takes_big);
    pj_fn_free(fn);
}
END_TEST

static long minor_faults(void)
{
    struct rusage ru;
    getrusage(RUSAGE_THREAD, &ru);
    return ru.ru_minflt;
}

/* Building, freeing and building the same number of tasks again takes no new pages: the
 * memory of freed tasks is kept for the next ones, not handed back to the kernel and faulted
 * in again page by page (glibc's default, which made a pj_delayed cost 50 ns).  glibc hands
 * the freed heap back by itself where nothing sits above it (M_TRIM_THRESHOLD): whether it
 * can depends on what else this process allocated, so malloc_trim makes it happen here every
 * round.  Without the kept blocks each round faults in about one page per 85 tasks.  The
 * first two rounds warm up: the second still touches the part of the first's last block that
 * the first did not reach. */
START_TEST(freed_task_memory_is_reused)
{
    if (under_valgrind() || UNDER_SANITIZER)
        return; /* their allocators decide what pages are fresh (the plain build checks) */
    pj_fn *fn = add_fn();
    enum { N = 400000 };
    pj_task **tasks = malloc(N * sizeof *tasks);
    ck_assert_ptr_nonnull(tasks);
    for (size_t i = 0; i < N; i++)
        tasks[i] = NULL; /* the array's own pages are faulted in before the rounds */
    for (int round = 0; round < 4; round++) {
        long before = minor_faults();
        for (size_t i = 0; i < N; i++)
            ck_assert_ptr_nonnull(tasks[i] = pj_delayed(fn, (int)i, 1));
        long faults = minor_faults() - before;
        for (size_t i = 0; i < N; i++)
            pj_task_free(tasks[i]);
        malloc_trim(0);
        if (round >= 2)
            ck_assert_msg(faults < N / 128 / 10, "round %d: %ld page faults building %d tasks",
                          round, faults, N);
    }
    free(tasks);
    pj_fn_free(fn);
}
END_TEST

/* A thread still alive when the process exits (a threading worker left running a task past
 * its timeout) holds a block whose tasks were all freed: a leak checker at exit (ASan's: this
 * case can fail only in an ASan build, where a leak report makes the child exit non-zero)
 * must not report it, as it reports nothing of malloc'd memory freed before exit. */
static void *build_free_and_stay(void *ready)
{
    pj_fn *fn = add_fn();
    pj_task_free(pj_delayed(fn, 1, 2));
    pj_fn_free(fn);
    sem_post(ready);
    for (;;)
        pause();
    return NULL;
}

START_TEST(a_thread_alive_at_exit_leaks_nothing)
{
    pid_t child = fork();
    ck_assert_int_ge(child, 0);
    if (child == 0) {
        sem_t ready;
        pthread_t th;
        sem_init(&ready, 0, 0);
        if (pthread_create(&th, NULL, build_free_and_stay, &ready) != 0)
            _exit(2);
        sem_wait(&ready);
        exit(0);
    }
    int status;
    ck_assert_int_eq(waitpid(child, &status, 0), child);
    ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0,
                  "the child exited with status %#x: a leak reported at exit?", status);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("taskmem");
    TCase *tc = tcase_create("taskmem");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, free_in_any_order);
    tcase_add_test(tc, last_task_of_a_block_keeps_it);
    tcase_add_test(tc, tasks_outlive_their_runs);
    tcase_add_test(tc, tasks_of_ended_threads);
    tcase_add_test(tc, big_task_beside_small_ones);
    tcase_add_test(tc, freed_task_memory_is_reused);
    tcase_add_test(tc, a_thread_alive_at_exit_leaks_nothing);
    suite_add_tcase(s, tc);
    return run_suite(s);
}
