/* How many CPUs this process may use (affinity, cgroup v1 and v2 quotas), and n_jobs resolved
 * against them as joblib does (negative counts, PARJOB_N_JOBS / nested defaults). */
#include "internal.h"

#include <limits.h>
#include <math.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

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

int pj__resolve_n_jobs(int requested, int *out, char *err, size_t errlen)
{
    int n = requested;
    if (n == 0 && pj__in_worker_context()) {
        *out = 1;
        return 0;
    }
    if (n == 0) {
        int rc = pj__parse_int_env("PARJOB_N_JOBS", &n);
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
