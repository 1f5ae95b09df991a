/* The seed tutorial's calculator: a + b over two lists of 50 numbers, printed in order — the
 * seed's executor.map(calculator, a1, a2), or joblib's
 *
 *     results = Parallel(n_jobs=2)(delayed(add)(a, b) for a, b in zip(xs, ys))
 *
 * as one bulk call over the two arrays (pj_run_bulk): no task per call, the sums written into
 * an int array.
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
    int xs[N], ys[N], sums[N];
    for (int i = 0; i < N; i++)
        xs[i] = i, ys[i] = 100 * i;
    pj_fn *add_fn = PJ_FN(add, &ffi_type_sint, &ffi_type_sint, &ffi_type_sint);

    pj_parallel *par = pj_parallel_new(&(pj_config){ .n_jobs = 2, .backend = backend });
    if (!par) {
        fprintf(stderr, "calculator: %s\n", pj_last_errmsg());
        return 1;
    }
    int rc = pj_run_bulk(par, &(pj_bulk){ .fn = add_fn, .n = N, .out = sums,
                                          .cols = (pj_col[]){ pj_col_array(xs),
                                                              pj_col_array(ys) } });
    if (rc) {
        fprintf(stderr, "calculator: %s: %s\n", pj_strerror(rc), pj_parallel_errmsg(par));
    } else {
        for (int i = 0; i < N; i++)
            printf("%d + %d = %d\n", xs[i], ys[i], sums[i]);
    }
    pj_parallel_free(par);
    pj_fn_free(add_fn);
    return rc ? 1 : 0;
}
