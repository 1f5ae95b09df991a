#include <parjob.h>
#include <stdio.h>

static int add(int a, int b)
{
    return a + b;
}

int main(void)
{
    pj_fn *fn = PJ_FN(add, &ffi_type_sint, &ffi_type_sint, &ffi_type_sint);
    pj_task *t = pj_delayed(fn, 2, 3);
    pj_parallel *par = pj_parallel_new(&(pj_config){ .n_jobs = 2, .backend = "threading" });
    pj_results *res;
    if (!par || pj_run(par, &t, 1, &res))
        return 1;
    printf("%d\n", pj_result_int(pj_results_at(res, 0)));
    pj_results_free(res);
    pj_parallel_free(par);
    pj_task_free(t);
    pj_fn_free(fn);
    return 0;
}
