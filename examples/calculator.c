/* The seed tutorial's calculator: a + b over two lists of 50 numbers, printed in order.
 *
 *     results = Parallel(n_jobs=2)(delayed(add)(a, b) for a, b in zip(xs, ys))
 *
 * Usage: calculator [backend]   (default "threading"). */
#include <parjob.h>

#include <stdio.h>

static int add(int a, int b)
{
    return a + b;
}

int main(int argc, char **argv)
{
    enum { N = 50 };
    const char *backend = argc > 1 ? argv[1] : "threading";
    pj_fn *add_fn = PJ_FN(add, &ffi_type_sint, &ffi_type_sint, &ffi_type_sint);
    pj_task *tasks[N];
    for (int i = 0; i < N; i++)
        tasks[i] = pj_delayed(add_fn, i, 100 * i);

    pj_parallel *par = pj_parallel_new(&(pj_config){ .n_jobs = 2, .backend = backend });
    if (!par) {
        fprintf(stderr, "calculator: %s\n", pj_last_errmsg());
        return 1;
    }
    pj_results *res;
    int rc = pj_run(par, tasks, N, &res);
    if (rc) {
        fprintf(stderr, "calculator: %s: %s\n", pj_strerror(rc), pj_parallel_errmsg(par));
    } else {
        for (int i = 0; i < N; i++)
            printf("%d + %d = %d\n", i, 100 * i, pj_result_int(pj_results_at(res, i)));
    }
    pj_results_free(res);
    pj_parallel_free(par);
    for (int i = 0; i < N; i++)
        pj_task_free(tasks[i]);
    pj_fn_free(add_fn);
    return rc ? 1 : 0;
}
