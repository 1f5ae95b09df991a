/* Configuration, n_jobs resolution, the backend registry, the public run/iterate entry points,
 * error names and the results container. */
#include "internal.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---- errors and version --------------------------------------------------------------------- */

const char *pj_strerror(int code)
{
    switch (code) {
    case 0: return "success";
#define PJ__STRERROR(name, value, text) case PJ_##name: return text;
    PJ_ERRNO_MAP(PJ__STRERROR)
#undef PJ__STRERROR
    default: return "unknown error";
    }
}

const char *pj_err_name(int code)
{
    switch (code) {
    case 0: return "PJ_OK";
#define PJ__ERRNAME(name, value, text) case PJ_##name: return "PJ_" #name;
    PJ_ERRNO_MAP(PJ__ERRNAME)
#undef PJ__ERRNAME
    default: return "PJ_UNKNOWN";
    }
}

unsigned pj_version(void)
{
    return PJ_VERSION_HEX;
}

#define STRINGIFY(x) #x
#define DECIMAL(x) STRINGIFY(x)

const char *pj_version_string(void)
{
    return DECIMAL(PJ_VERSION_MAJOR) "." DECIMAL(PJ_VERSION_MINOR) "." DECIMAL(PJ_VERSION_PATCH);
}

int pj__parallel_set_error(pj_parallel *par, int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(par->errmsg, sizeof par->errmsg, fmt, ap);
    va_end(ap);
    return code;
}

/* A run's failure, as every failing call reports it: in the calling thread's pj_last_errmsg
 * too.  Not for PJ_EBUSY: that message is the caller's already, par's belongs to the run
 * going on. */
static int run_failed(const pj_parallel *par, int code)
{
    if (code == 0 || code == PJ_EBUSY)
        return code;
    return pj__set_last_error(code, "%s", *par->errmsg ? par->errmsg : pj_strerror(code));
}

const char *pj_parallel_errmsg(const pj_parallel *par)
{
    return par ? par->errmsg : "parallel handle is NULL";
}

/* One lock-free store and nothing else: a signal handler may call it (the run notices, see
 * cancel_seen in dispatch.c). */
_Static_assert(ATOMIC_INT_LOCK_FREE == 2, "pj_parallel_cancel needs a lock-free atomic int");

int pj_parallel_cancel(pj_parallel *par)
{
    if (!par)
        return PJ_EINVAL;
    atomic_store_explicit(&par->run_cancel, PJ__CANCEL_KILL, memory_order_release);
    return 0;
}

/* ---- backend registry ----------------------------------------------------------------------- */

#define MAX_BACKENDS 32

static const struct pj_backend *const builtin_backends[] = {
    &pj__backend_sequential,
    &pj__backend_threading,
    &pj__backend_fork,
    &pj__backend_spawn,
};
#define N_BUILTIN (sizeof builtin_backends / sizeof builtin_backends[0])

static pthread_mutex_t registry_lock = PTHREAD_MUTEX_INITIALIZER;
static const struct pj_backend *registered[MAX_BACKENDS];
static size_t n_registered;

static const struct pj_backend *find_locked(const char *name)
{
    for (size_t i = 0; i < N_BUILTIN; i++)
        if (strcmp(builtin_backends[i]->name, name) == 0)
            return builtin_backends[i];
    for (size_t i = 0; i < n_registered; i++)
        if (strcmp(registered[i]->name, name) == 0)
            return registered[i];
    return NULL;
}

const struct pj_backend *pj_backend_find(const char *name)
{
    if (!name)
        return NULL;
    pthread_mutex_lock(&registry_lock);
    const struct pj_backend *b = find_locked(name);
    pthread_mutex_unlock(&registry_lock);
    return b;
}

int pj_backend_register(const struct pj_backend *b)
{
    if (!b || b->version < 1 || !b->name || !*b->name || !b->open || !b->submit || !b->close)
        return pj__set_last_error(PJ_EINVAL, "pj_backend_register: %s",
                                  !b ? "backend is NULL" : b->version < 1 ? "version < 1"
                                  : !b->name || !*b->name ? "no name"
                                  : "open, submit and close are required");
    pthread_mutex_lock(&registry_lock);
    int rc = 0;
    if (find_locked(b->name))
        rc = PJ_EBUSY;
    else if (n_registered == MAX_BACKENDS)
        rc = PJ_ENOMEM;
    else
        registered[n_registered++] = b;
    pthread_mutex_unlock(&registry_lock);
    if (rc)
        return pj__set_last_error(rc, "pj_backend_register: %s", rc == PJ_EBUSY
                                  ? "a backend of that name is known already"
                                  : "the registry is full");
    return rc;
}

const struct pj_backend *pj_backend_at(size_t i)
{
    const struct pj_backend *b = NULL;
    pthread_mutex_lock(&registry_lock);
    if (i < N_BUILTIN)
        b = builtin_backends[i];
    else if (i - N_BUILTIN < n_registered)
        b = registered[i - N_BUILTIN];
    pthread_mutex_unlock(&registry_lock);
    return b;
}

static void known_backends(char *buf, size_t len)
{
    size_t used = 0;
    buf[0] = 0;
    pthread_mutex_lock(&registry_lock);
    for (size_t i = 0; i < N_BUILTIN + n_registered && used < len; i++) {
        const struct pj_backend *b = i < N_BUILTIN ? builtin_backends[i]
                                                    : registered[i - N_BUILTIN];
        used += (size_t)snprintf(buf + used, len - used, "%s\"%s\"", i ? ", " : "", b->name);
    }
    pthread_mutex_unlock(&registry_lock);
}

/* ---- CPUs and n_jobs ------------------------------------------------------------------------ */

/* CPUs allowed by a cgroup v2 cpu.max ("max 100000" or "50000 100000"), or a v1 quota pair. */
static int quota_cpus(long long quota, long long period)
{
    if (quota <= 0 || period <= 0)
        return INT_MAX;
    long long n = (quota + period - 1) / period;
    return n > INT_MAX ? INT_MAX : (int)(n < 1 ? 1 : n);
}

static int cgroup_v2_cpus(const char *path)
{
    char dir[PATH_MAX], file[PATH_MAX + 16];
    int best = INT_MAX;
    snprintf(dir, sizeof dir, "/sys/fs/cgroup%s", path);
    for (;;) {
        snprintf(file, sizeof file, "%s/cpu.max", dir);
        FILE *f = fopen(file, "re");
        if (f) {
            char quota[32];
            long long period;
            if (fscanf(f, "%31s %lld", quota, &period) == 2 && strcmp(quota, "max") != 0) {
                int n = quota_cpus(atoll(quota), period);
                best = n < best ? n : best;
            }
            fclose(f);
        }
        char *slash = strrchr(dir, '/');
        if (!slash || slash == dir + strlen("/sys/fs/cgroup") - 1 ||
            strcmp(dir, "/sys/fs/cgroup") == 0)
            break;
        *slash = 0;
    }
    return best;
}

static long long read_ll(const char *path)
{
    FILE *f = fopen(path, "re");
    long long v = -1;
    if (f) {
        if (fscanf(f, "%lld", &v) != 1)
            v = -1;
        fclose(f);
    }
    return v;
}

static int cgroup_v1_cpus(const char *controllers, const char *path)
{
    char q[PATH_MAX + 64], p[PATH_MAX + 64];
    snprintf(q, sizeof q, "/sys/fs/cgroup/%s%s/cpu.cfs_quota_us", controllers, path);
    snprintf(p, sizeof p, "/sys/fs/cgroup/%s%s/cpu.cfs_period_us", controllers, path);
    return quota_cpus(read_ll(q), read_ll(p));
}

static int cgroup_cpus(void)
{
    FILE *f = fopen("/proc/self/cgroup", "re");
    if (!f)
        return INT_MAX;
    char line[PATH_MAX + 64];
    int best = INT_MAX;
    while (fgets(line, sizeof line, f)) {
        line[strcspn(line, "\n")] = 0;
        char *c1 = strchr(line, ':'), *c2 = c1 ? strchr(c1 + 1, ':') : NULL;
        if (!c2)
            continue;
        *c2 = 0;
        const char *controllers = c1 + 1, *path = c2 + 1;
        int n = INT_MAX;
        if (*controllers == 0)
            n = cgroup_v2_cpus(path);
        else if (strstr(controllers, "cpu") && !strstr(controllers, "cpuset"))
            n = cgroup_v1_cpus(controllers, path);
        else if (strstr(controllers, "cpu,"))
            n = cgroup_v1_cpus(controllers, path);
        best = n < best ? n : best;
    }
    fclose(f);
    return best;
}

int pj_cpu_count(void)
{
    long online = sysconf(_SC_NPROCESSORS_ONLN);
    int n = online > 0 ? (int)online : 1;
    cpu_set_t *set = CPU_ALLOC(8192);
    size_t size = CPU_ALLOC_SIZE(8192);
    if (set && sched_getaffinity(0, size, set) == 0) {
        int allowed = CPU_COUNT_S(size, set);
        n = allowed > 0 && allowed < n ? allowed : n;
    }
    CPU_FREE(set);
    int quota = cgroup_cpus();
    return quota < n ? quota : n;
}

static int parse_int_env(const char *name, int *out)
{
    const char *s = getenv(name);
    if (!s || !*s)
        return 0;
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    while (isspace((unsigned char)*end))
        end++;
    if (errno || *end || v < INT_MIN || v > INT_MAX)
        return PJ_EINVAL;
    *out = (int)v;
    return 1;
}

int pj__resolve_n_jobs(int requested, int *out, char *err, size_t errlen)
{
    int n = requested;
    if (n == 0 && pj__in_worker_context()) {
        *out = 1;
        return 0;
    }
    if (n == 0) {
        int rc = parse_int_env("PARJOB_N_JOBS", &n);
        if (rc < 0) {
            snprintf(err, errlen, "PARJOB_N_JOBS=\"%s\" is not an integer",
                     getenv("PARJOB_N_JOBS"));
            return PJ_EINVAL;
        }
        if (rc == 0 || n == 0)
            n = 1;
    }
    if (n > PJ_MAX_JOBS || n < -PJ_MAX_JOBS) {
        snprintf(err, errlen, "n_jobs = %d is out of range (at most %d workers)", n,
                 PJ_MAX_JOBS);
        return PJ_EINVAL;
    }
    if (n < 0) {
        int cpus = pj_cpu_count();
        n = cpus + 1 + n;
        n = n < 1 ? 1 : n;
    }
    *out = n;
    return 0;
}

/* ---- pre_dispatch: a tiny arithmetic parser, so no evaluator ever sees user text ------------ */

struct expr {
    const char *s;
    double n_jobs;
    const char *error;
};

static double parse_sum(struct expr *e);

static void skip_space(struct expr *e)
{
    while (*e->s == ' ' || *e->s == '\t')
        e->s++;
}

static bool accept(struct expr *e, const char *tok)
{
    skip_space(e);
    size_t len = strlen(tok);
    if (strncmp(e->s, tok, len) != 0)
        return false;
    /* "*" must not swallow the first half of "**", nor "/" of "//". */
    if (len == 1 && (tok[0] == '*' || tok[0] == '/') && e->s[1] == tok[0])
        return false;
    e->s += len;
    return true;
}

static double parse_atom(struct expr *e)
{
    skip_space(e);
    if (accept(e, "(")) {
        double v = parse_sum(e);
        if (!accept(e, ")") && !e->error)
            e->error = "missing ')'";
        return v;
    }
    if (strncmp(e->s, "n_jobs", 6) == 0 && !isalnum((unsigned char)e->s[6]) && e->s[6] != '_') {
        e->s += 6;
        return e->n_jobs;
    }
    if (isdigit((unsigned char)*e->s)) {
        double v = 0;
        while (isdigit((unsigned char)*e->s))
            v = v * 10 + (*e->s++ - '0');
        return v;
    }
    if (!e->error)
        e->error = *e->s ? "expected a number, n_jobs or '('" : "unexpected end";
    return 0;
}

static double parse_unary(struct expr *e);

static double parse_power(struct expr *e)
{
    double base = parse_atom(e);
    if (accept(e, "**"))
        return pow(base, parse_unary(e)); /* right-associative, binds tighter than unary - */
    return base;
}

static double parse_unary(struct expr *e)
{
    if (accept(e, "-"))
        return -parse_unary(e);
    if (accept(e, "+"))
        return parse_unary(e);
    return parse_power(e);
}

static double parse_product(struct expr *e)
{
    double v = parse_unary(e);
    for (;;) {
        int op = accept(e, "**") ? (e->error = "misplaced '**'", 0)
               : accept(e, "//") ? 'f' : accept(e, "*") ? '*' : accept(e, "/") ? '/'
               : accept(e, "%") ? '%' : 0;
        if (!op || e->error)
            return v;
        double r = parse_unary(e);
        if (op == '*') {
            v *= r;
            continue;
        }
        if (r == 0) {
            e->error = "division by zero";
            return 0;
        }
        if (op == '/')
            v /= r;
        else if (op == 'f')
            v = floor(v / r);
        else
            v = v - r * floor(v / r); /* Python's %: the sign of the divisor */
    }
}

static double parse_sum(struct expr *e)
{
    double v = parse_product(e);
    for (;;) {
        if (accept(e, "+"))
            v += parse_product(e);
        else if (accept(e, "-"))
            v -= parse_product(e);
        else
            return v;
    }
}

int pj__eval_pre_dispatch(const char *expr, int n_jobs, size_t *out, char *err, size_t errlen)
{
    if (strcmp(expr, "all") == 0) {
        *out = SIZE_MAX;
        return 0;
    }
    size_t len = strlen(expr);
    if (len > PJ_PRE_DISPATCH_MAX) {
        /* Shown whole, so that the reader sees what was refused, up to what a message holds. */
        snprintf(err, errlen, "pre_dispatch \"%.200s\"%s is %zu characters long, longer than "
                 "%d characters (PJ_PRE_DISPATCH_MAX)", expr, len > 200 ? " (cut here)" : "",
                 len, PJ_PRE_DISPATCH_MAX);
        return PJ_EINVAL;
    }
    struct expr e = { .s = expr, .n_jobs = n_jobs };
    double v = parse_sum(&e);
    skip_space(&e);
    if (!e.error && *e.s)
        e.error = "unexpected text";
    if (e.error) {
        snprintf(err, errlen, "pre_dispatch \"%s\": %s at offset %d (expected \"all\", an "
                 "integer or an expression in n_jobs such as \"2*n_jobs\")", expr, e.error,
                 (int)(e.s - expr));
        return PJ_EINVAL;
    }
    if (!(v >= 1) || v > 1e12) {
        snprintf(err, errlen, "pre_dispatch \"%s\" evaluates to %g; it must be at least 1",
                 expr, v);
        return PJ_EINVAL;
    }
    *out = (size_t)v;
    return 0;
}

/* ---- pj_parallel ---------------------------------------------------------------------------- */

static char *dup_or_null(const char *s)
{
    return s ? strdup(s) : NULL;
}

static int check_config(const pj_config *c, char *err, size_t errlen)
{
    if (c->batch_size < 0) {
        snprintf(err, errlen, "batch_size = %ld is negative (use a positive size or PJ_AUTO)",
                 c->batch_size);
        return PJ_EINVAL;
    }
    if (!(c->timeout >= 0) || c->timeout > 1e9) {
        snprintf(err, errlen, "timeout = %g is not a number of seconds >= 0", c->timeout);
        return PJ_EINVAL;
    }
    if (c->return_as > PJ_GENERATOR_UNORDERED || c->on_error > PJ_ON_ERROR_CONTINUE) {
        snprintf(err, errlen, "return_as or on_error holds an unknown value");
        return PJ_EINVAL;
    }
    if (c->max_tasks_per_child < 0 || !(c->idle_worker_timeout >= 0)) {
        snprintf(err, errlen, "max_tasks_per_child and idle_worker_timeout must be >= 0");
        return PJ_EINVAL;
    }
    if (!(c->worker_start_timeout >= 0) || c->worker_start_timeout > 1e9) {
        snprintf(err, errlen, "worker_start_timeout = %g is not a number of seconds >= 0",
                 c->worker_start_timeout);
        return PJ_EINVAL;
    }
    return 0;
}

static int pick_backend(pj_parallel *par, char *err, size_t errlen)
{
    const char *name = par->cfg.backend;
    if (!name || !*name) {
        const char *env = getenv("PARJOB_BACKEND");
        name = env && *env ? env : par->n_jobs == 1 ? "sequential" : "threading";
    }
    par->backend = pj_backend_find(name);
    if (!par->backend) {
        char known[256];
        known_backends(known, sizeof known);
        snprintf(err, errlen, "unknown backend \"%s\"; known backends: %s", name, known);
        return PJ_EBACKEND;
    }
    return 0;
}

/* inner_max_num_threads: a zero takes $PARJOB_INNER_MAX_NUM_THREADS; either must be a count
 * a runtime can be given (at most PJ_MAX_JOBS: more threads than that per worker is a typo). */
static int resolve_inner_threads(int *inner, char *err, size_t errlen)
{
    const char *var = "PARJOB_INNER_MAX_NUM_THREADS";
    if (*inner == 0 && parse_int_env(var, inner) < 0) {
        snprintf(err, errlen, "%s=\"%s\" is not an integer", var, getenv(var));
        return PJ_EINVAL;
    }
    if (*inner > PJ_MAX_JOBS) {
        snprintf(err, errlen, "inner_max_num_threads = %d is out of range (at most %d threads "
                 "per worker; < 0 leaves the runtimes alone)", *inner, PJ_MAX_JOBS);
        return PJ_EINVAL;
    }
    return 0;
}

/* joblib's prefix shows n_jobs as asked (Parallel(n_jobs=-1)), None when left unset. */
static void label_n_jobs(pj_parallel *par, int asked)
{
    int from_env = 0;
    if (asked == 0 && !pj__in_worker_context() && parse_int_env("PARJOB_N_JOBS", &from_env) > 0)
        asked = from_env;
    if (asked)
        snprintf(par->n_jobs_label, sizeof par->n_jobs_label, "%d", asked);
    else
        snprintf(par->n_jobs_label, sizeof par->n_jobs_label, "None");
}

pj_parallel *pj_parallel_new(const pj_config *config)
{
    static const pj_config unset;
    char err[512] = "";
    const pj_config *c = config ? config : &unset;
    int rc = check_config(c, err, sizeof err);
    pj_parallel *par = calloc(1, sizeof *par);
    if (!par)
        return pj__set_last_error(PJ_ENOMEM, "out of memory"), NULL;
    par->cfg = *c;
    if (!rc)
        rc = pj__resolve_n_jobs(c->n_jobs, &par->n_jobs, err, sizeof err);
    if (!rc)
        rc = resolve_inner_threads(&par->cfg.inner_max_num_threads, err, sizeof err);
    if (!rc)
        label_n_jobs(par, c->n_jobs);
    if (!rc)
        rc = pick_backend(par, err, sizeof err);
    if (!rc) {
        par->backend_name = strdup(par->backend->name);
        par->pre_dispatch_expr = dup_or_null(c->pre_dispatch ? c->pre_dispatch : "2*n_jobs");
        if (!par->backend_name || !par->pre_dispatch_expr)
            rc = PJ_ENOMEM, snprintf(err, sizeof err, "out of memory");
    }
    if (!rc)
        rc = pj__eval_pre_dispatch(par->pre_dispatch_expr, par->n_jobs, &par->window, err,
                                   sizeof err);
    if (rc) {
        pj__set_last_error(rc, "%s", err);
        free(par->backend_name);
        free(par->pre_dispatch_expr);
        free(par);
        return NULL;
    }
    par->cfg.backend = par->backend_name;
    par->cfg.pre_dispatch = par->pre_dispatch_expr;
    if (par->cfg.verbose == 0 && parse_int_env("PARJOB_VERBOSE", &par->cfg.verbose) < 0)
        par->cfg.verbose = 0;
    return par;
}

void pj_parallel_free(pj_parallel *par)
{
    if (!par)
        return;
    if (atomic_load(&par->busy)) {
        /* Freeing under a running call would pull the workers from under it: refuse. */
        pj__parallel_set_error(par, PJ_EBUSY, "pj_parallel_free: a run or iterator is open");
        return;
    }
    if (par->backend_open)
        par->backend->close(par->backend_state);
    free(par->backend_name);
    free(par->pre_dispatch_expr);
    free(par);
}

int pj_parallel_n_jobs(const pj_parallel *par)
{
    return par ? par->n_jobs : pj__set_last_error(PJ_EINVAL, "pj_parallel_n_jobs: par is NULL");
}

const char *pj_parallel_backend(const pj_parallel *par)
{
    return par ? par->backend->name : NULL;
}

int pj__parallel_acquire(pj_parallel *par)
{
    int idle = 0;
    if (!atomic_compare_exchange_strong(&par->busy, &idle, 1)) /* par->errmsg is the runner's */
        return pj__set_last_error(PJ_EBUSY, "this pj_parallel is already running in another "
                                  "thread (or has an open iterator)");
    par->errmsg[0] = 0;
    if (par->backend_open)
        return 0;
    char err[256] = "";
    int rc = par->backend->open(&par->backend_state, par->n_jobs, &par->cfg, err, sizeof err);
    if (rc) {
        atomic_store(&par->busy, 0);
        return pj__parallel_set_error(par, rc, "backend %s failed to start: %s",
                                      par->backend->name, *err ? err : pj_strerror(rc));
    }
    par->backend_open = true;
    return 0;
}

void pj__parallel_release(pj_parallel *par)
{
    atomic_store(&par->busy, 0);
}

/* ---- runs ----------------------------------------------------------------------------------- */

static int run_list(pj_parallel *par, const struct pj__source *src, pj_results **results)
{
    if (!par) {
        if (results)
            *results = NULL;
        return pj__set_last_error(PJ_EINVAL, "par is NULL (did pj_parallel_new fail?)");
    }
    if (!results)
        return run_failed(par, pj__parallel_set_error(par, PJ_EINVAL, "results is NULL"));
    *results = NULL;
    int rc = pj__parallel_acquire(par);
    if (rc)
        return run_failed(par, rc);
    pj_iter *run;
    rc = pj__run_open(par, src, true, &run);
    if (!rc)
        rc = pj__run_collect(run, results);
    pj__parallel_release(par);
    return run_failed(par, rc);
}

/* What an empty array of tasks is read as, so that tasks may be NULL when n is 0. */
static pj_task *const no_tasks[1];

int pj_run(pj_parallel *par, pj_task *const *tasks, size_t n, pj_results **results)
{
    if (!tasks && n == 0)
        tasks = no_tasks;
    if (par && !tasks) {
        if (results)
            *results = NULL; /* as every other PJ_EINVAL of pj_run: never a stale pointer */
        return run_failed(par, pj__parallel_set_error(par, PJ_EINVAL, "tasks is NULL"));
    }
    struct pj__source src = { .array = tasks, .n = n };
    return run_list(par, &src, results);
}

int pj_run_source(pj_parallel *par, pj_producer next, void *state, pj_results **results)
{
    struct pj__source src = { .producer = next, .state = state };
    return run_list(par, &src, results);
}

static pj_iter *start(pj_parallel *par, const struct pj__source *src)
{
    if (!par)
        return pj__set_last_error(PJ_EINVAL, "pj_start: parallel handle is NULL"), NULL;
    int rc = pj__parallel_acquire(par);
    pj_iter *it = NULL;
    if (!rc)
        rc = pj__run_open(par, src, false, &it);
    if (rc) {
        if (rc != PJ_EBUSY) { /* busy: the message is already this thread's, par's is not ours */
            pj__parallel_release(par);
            pj__set_last_error(rc, "%s", par->errmsg);
        }
        return NULL;
    }
    return it;
}

pj_iter *pj_start(pj_parallel *par, pj_task *const *tasks, size_t n)
{
    if (!tasks && n == 0)
        tasks = no_tasks;
    if (!tasks)
        return pj__set_last_error(PJ_EINVAL, "pj_start: tasks is NULL"), NULL;
    struct pj__source src = { .array = tasks, .n = n };
    return start(par, &src);
}

pj_iter *pj_start_source(pj_parallel *par, pj_producer next, void *state)
{
    struct pj__source src = { .producer = next, .state = state };
    return start(par, &src);
}

int pj_next(pj_iter *it, pj_result *out)
{
    if (!it || !out)
        return pj__set_last_error(PJ_EINVAL, "pj_next: %s is NULL", !it ? "iterator" : "out");
    int rc = pj__run_next(it, out);
    return rc ? pj__set_last_error(rc, "pj_next: every result was returned") : 0;
}

int pj_iter_close(pj_iter *it)
{
    if (!it)
        return pj__set_last_error(PJ_EINVAL, "pj_iter_close: iterator is NULL");
    pj_parallel *par = pj__run_parallel(it);
    int rc = pj__run_close(it);
    /* par is idle once released and may be freed by another thread: read its message first. */
    rc = run_failed(par, rc);
    pj__parallel_release(par);
    return rc;
}

/* ---- results -------------------------------------------------------------------------------- */

size_t pj_results_count(const pj_results *res)
{
    return res ? res->n : 0;
}

const pj_result *pj_results_at(const pj_results *res, size_t i)
{
    return res && i < res->n ? &res->r[i] : NULL;
}

size_t pj_results_count_status(const pj_results *res, int status)
{
    size_t k = 0;
    for (size_t i = 0; res && i < res->n; i++)
        k += res->r[i].status == status;
    return k;
}

void pj_results_free(pj_results *res)
{
    if (!res)
        return;
    for (size_t i = 0; res->own_memory && i < res->n; i++)
        pj__result_release(&res->r[i]); /* a pass over every result only when it frees some */
    pj__results_release(res->r, res->mapped);
    free(res);
}
