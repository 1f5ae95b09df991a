// What a "spawn" task sees of this program's start-up, beside what main sees: prints
// "main=<v> spawn=<v>", v summing a dynamically initialised std::string's size, a
// std::unordered_map filled at start-up, this program's constructor and startup-lib's.
// startup-links.sh builds it every way a program may link parjob.
#include <parjob.h>

#include "startup-lib.h"

#include <cstdio>
#include <string>
#include <unordered_map>

static const std::string greeting = std::string(40, 'x');
static const std::unordered_map<int, int> squares = { { 7, 49 } };
static int ctor_value;

__attribute__((constructor)) static void set_value(void)
{
    ctor_value = 1;
}

static int probe(void)
{
    return (int)greeting.size() * 1000000 + (squares.count(7) ? squares.at(7) : 0) * 1000 +
           ctor_value * 100 + (startup_lib_value() == STARTUP_LIB_VALUE);
}

int main()
{
    pj_fn *fn = pj_fn_new("probe", reinterpret_cast<void (*)(void)>(probe), &ffi_type_sint, 0,
                          nullptr);
    pj_task *t = pj_task_new(fn, nullptr);
    pj_config cfg = {};
    cfg.n_jobs = 1;
    cfg.backend = "spawn";
    pj_parallel *par = pj_parallel_new(&cfg);
    pj_results *res = nullptr;
    int rc = par ? pj_run(par, &t, 1, &res) : pj_last_error();
    if (rc)
        printf("main=%d spawn=error: %s\n", probe(), par ? pj_parallel_errmsg(par) : "");
    else
        printf("main=%d spawn=%d\n", probe(), pj_result_int(pj_results_at(res, 0)));
    pj_results_free(res);
    pj_parallel_free(par);
    pj_task_free(t);
    pj_fn_free(fn);
    return rc ? 1 : 0;
}
