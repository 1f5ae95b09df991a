/* Inner threads: how many threads the parallel runtimes a task calls (OpenMP, OpenBLAS, MKL, BLIS,
 * vecLib, numexpr, TBB) may start in each worker, so that n_jobs workers of C threads each do not
 * make a machine of C cores run C * C threads.  joblib's inner_max_num_threads, the same rule:
 * explicit, the limit replaces each variable; by default, usable CPUs / workers (at least 1) and
 * a variable the parent already sets keeps its value.
 *
 * Runtimes read their variable once, when they initialise, so where the limit can act differs:
 *  - a spawned worker is a fresh program: the variables in its environment before exec reach
 *    every runtime it loads (pj__inner_environ builds that environment);
 *  - a forked worker is a copy of a parent whose runtimes have already read theirs: it gets the
 *    same environment (for runtimes it loads later), and the runtimes already loaded are told
 *    directly: omp_set_num_threads (OpenMP's nthreads ICV) and openblas_set_num_threads, found
 *    with dlsym in the parent so that parjob links against neither and the child never takes
 *    the dynamic loader's lock;
 *  - a pool thread cannot have an environment of its own, but OpenMP's nthreads ICV belongs to
 *    the thread that starts a region: each pool thread sets its own.  The process's
 *    environment is left alone. */
#include "internal.h"

#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

extern char **environ;

/* joblib's MAX_NUM_THREADS_VARS, then TBB's switch to share one pool between processes, which
 * joblib adds unless the parent sets it. */
static const char *const limit_vars[PJ__INNER_NVARS] = {
    "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS", "NUMBA_NUM_THREADS", "NUMEXPR_NUM_THREADS", "ENABLE_IPC",
};
#define TBB_VAR (PJ__INNER_NVARS - 1)

typedef void (*set_num_threads_fn)(int);

/* The entry of env that sets name, or NULL. */
static const char *find_var(char *const *env, const char *name)
{
    size_t len = strlen(name);
    for (char *const *e = env; e && *e; e++)
        if (strncmp(*e, name, len) == 0 && (*e)[len] == '=')
            return *e;
    return NULL;
}

/* Which of limit_vars entry e sets, or -1. */
static int limit_var_of(const char *e)
{
    for (int v = 0; v < PJ__INNER_NVARS; v++) {
        size_t len = strlen(limit_vars[v]);
        if (strncmp(e, limit_vars[v], len) == 0 && e[len] == '=')
            return v;
    }
    return -1;
}

void pj__inner_init(struct pj__inner *in, const pj_config *cfg, int n_workers)
{
    *in = (struct pj__inner){ 0 };
    int requested = cfg->inner_max_num_threads;
    if (requested < 0)
        return;
    int share = n_workers > 0 ? pj_cpu_count() / n_workers : 1;
    in->threads = requested > 0 ? requested : share > 1 ? share : 1;
    in->keep_set = requested == 0;
    /* A runtime already running in this process read OMP_NUM_THREADS when it started: by
     * joblib's default rule that value stands. */
    in->omp_threads = in->keep_set && getenv("OMP_NUM_THREADS") ? 0 : in->threads;
    in->blas_threads = in->keep_set && getenv("OPENBLAS_NUM_THREADS") ? 0 : in->threads;
    for (int v = 0; v < PJ__INNER_NVARS; v++)
        snprintf(in->vars[v], sizeof in->vars[v], "%s=%d", limit_vars[v],
                 v == TBB_VAR ? 1 : in->threads);
}

char **pj__inner_environ(const struct pj__inner *in, char *const *env, size_t extra)
{
    size_t n = 0;
    for (char *const *e = env; e && *e; e++)
        n++;
    char **out = malloc((n + PJ__INNER_NVARS + extra + 1) * sizeof *out);
    if (!out)
        return NULL;
    size_t k = 0;
    bool active = in && in->threads > 0;
    for (size_t i = 0; i < n; i++) {
        int v = active ? limit_var_of(env[i]) : -1;
        /* Replaced when explicit (TBB's switch is joblib's only when the parent has none). */
        if (v < 0 || (in->keep_set || v == TBB_VAR))
            out[k++] = env[i];
    }
    for (int v = 0; active && v < PJ__INNER_NVARS; v++)
        if (!((in->keep_set || v == TBB_VAR) && find_var(env, limit_vars[v])))
            out[k++] = (char *)in->vars[v];
    out[k] = NULL;
    return out;
}

struct pj__inner_runtimes pj__inner_find_runtimes(void)
{
    return (struct pj__inner_runtimes){
        .omp_set = dlsym(RTLD_DEFAULT, "omp_set_num_threads"),
        .openblas_set = dlsym(RTLD_DEFAULT, "openblas_set_num_threads"),
    };
}

/* The forked worker's environment array, for as long as the worker lives: a root that leak
 * checkers see (environ itself can be swapped for a copy by a task's setenv). */
char **pj__forked_environ;

void pj__inner_apply_forked(const struct pj__inner *in, const struct pj__inner_runtimes *rt)
{
    if (!in || in->threads <= 0)
        return;
    /* This process is one thread, a copy of the pool's: nothing else reads environ now.  The
     * array lives as long as the worker, as setenv's would. */
    char **env = pj__inner_environ(in, environ, 0);
    if (env)
        environ = pj__forked_environ = env;
    if (in->omp_threads && rt->omp_set)
        ((set_num_threads_fn)rt->omp_set)(in->omp_threads);
    /* OpenBLAS's own threads (its pthreads build) are process-wide and were sized at its start
     * in the parent; its fork handler stopped them, so the child sizes its pool afresh. */
    if (in->blas_threads && rt->openblas_set)
        ((set_num_threads_fn)rt->openblas_set)(in->blas_threads);
}

void pj__inner_apply_thread(const struct pj__inner *in)
{
    if (!in || !in->omp_threads)
        return;
    void *omp_set = dlsym(RTLD_DEFAULT, "omp_set_num_threads");
    if (omp_set)
        ((set_num_threads_fn)omp_set)(in->omp_threads);
}
