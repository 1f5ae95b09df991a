// parjob.h must compile from C++ (pj_delayed, which needs _Generic, is C only; pj_task_new
// is the C++ way in).
#include <parjob.h>

static int add(int a, int b)
{
    return a + b;
}

int main()
{
    ffi_type *args[] = { &ffi_type_sint, &ffi_type_sint };
    pj_fn *fn = pj_fn_new("add", reinterpret_cast<void (*)(void)>(add), &ffi_type_sint, 2, args);
    int a = 2, b = 3;
    void *argv[] = { &a, &b };
    pj_task *t = pj_task_new(fn, argv);
    pj_parallel *par = pj_parallel_new(nullptr);
    pj_results *res = nullptr;
    int rc = pj_run(par, &t, 1, &res);
    int sum = rc == 0 ? pj_result_int(pj_results_at(res, 0)) : -1;
    pj_results_free(res);
    pj_parallel_free(par);
    pj_task_free(t);
    pj_fn_free(fn);
    return sum == 5 ? 0 : 1;
}
