/* n_jobs on the mpi backend (issue 12, point 3), run as rank 0 of mpirun -n 3 by mpi-run.sh:
 * n_jobs < 0 counts the worker ranks' usable CPUs (each rank's own, as its tasks see them),
 * not rank 0's, and the "Using backend" line shows how the workers are spread over the ranks.
 * Exit status 0 when all is as it should be; each failure is printed. */
#include <parjob.h>

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define N_TASKS 64
#define MAX_RANKS 64

/* Which rank a task ran on and the CPUs that rank may use: rank * 1000 + CPUs. */
static int rank_cpus(int i)
{
    (void)i;
    const char *rank = getenv("OMPI_COMM_WORLD_RANK");
    usleep(20000); /* long enough that every worker takes some */
    return (rank ? atoi(rank) : -1) * 1000 + pj_cpu_count();
}

static int failures;

static void fail(const char *what, const char *why)
{
    fprintf(stderr, "FAIL %s: %s\n", what, why);
    failures++;
}

/* Runs the tasks on par; the worker ranks' CPUs summed (each rank counted once), -1 when a
 * rank below `ranks` ran nothing or the run failed. */
static int run_and_sum(pj_parallel *par, int ranks, const char *what)
{
    pj_fn *fn = PJ_FN(rank_cpus, &ffi_type_sint, &ffi_type_sint);
    pj_task *t[N_TASKS];
    for (int i = 0; i < N_TASKS; i++)
        t[i] = pj_delayed(fn, i);
    pj_results *res = NULL;
    int cpus[MAX_RANKS] = { 0 };
    int rc = pj_run(par, t, N_TASKS, &res);
    if (rc)
        fail(what, pj_parallel_errmsg(par));
    for (int i = 0; !rc && i < N_TASKS; i++) {
        int v = pj_result_int(pj_results_at(res, i));
        if (v / 1000 >= 1 && v / 1000 < MAX_RANKS)
            cpus[v / 1000] = v % 1000;
    }
    pj_results_free(res);
    for (int i = 0; i < N_TASKS; i++)
        pj_task_free(t[i]);
    pj_fn_free(fn);
    int sum = 0;
    for (int r = 1; r < ranks + 1 && r < MAX_RANKS; r++)
        sum = cpus[r] && sum >= 0 ? sum + cpus[r] : -1;
    return rc ? -1 : sum;
}

/* The worker ranks' CPUs as their tasks count them: a run of two workers per rank. */
static int ranks_cpus(int ranks)
{
    pj_parallel *par = pj_parallel_new(&(pj_config){ .n_jobs = 2 * ranks, .backend = "mpi",
                                                     .batch_size = 1 });
    int sum = par ? run_and_sum(par, ranks, "the worker ranks' CPUs") : -1;
    if (!par)
        fail("the worker ranks' CPUs", pj_last_errmsg());
    pj_parallel_free(par);
    return sum;
}

/* asked: the config's n_jobs; rule: the negative n_jobs it stands for (from PARJOB_N_JOBS). */
static void check_n_jobs(int asked, int rule, int cpus)
{
    char what[64], why[160];
    snprintf(what, sizeof what, "n_jobs = %d (%d)", asked, rule);
    pj_parallel *par = pj_parallel_new(&(pj_config){ .n_jobs = asked, .backend = "mpi" });
    if (!par) {
        fail(what, pj_last_errmsg());
        return;
    }
    int n = pj_parallel_n_jobs(par);
    int want = cpus + 1 + rule < 1 ? 1 : cpus + 1 + rule;
    snprintf(why, sizeof why, "%d workers, the worker ranks may use %d CPUs (this rank %d)", n,
             cpus, pj_cpu_count());
    if (n != want)
        fail(what, why);
    pj_parallel_free(par);
}

/* The "Using backend" line of a run of n workers, as verbose prints it to stderr. */
static void check_line(int n_jobs, const char *want)
{
    char what[64], line[512] = "";
    snprintf(what, sizeof what, "the line of n_jobs = %d", n_jobs);
    fflush(stderr);
    int saved = dup(2);
    FILE *log = tmpfile();
    dup2(fileno(log), 2);
    pj_parallel *par = pj_parallel_new(&(pj_config){ .n_jobs = n_jobs, .backend = "mpi",
                                                     .verbose = 1 });
    if (par)
        run_and_sum(par, 0, what);
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    rewind(log);
    bool found = false;
    while (!found && fgets(line, sizeof line, log))
        found = strstr(line, want) != NULL;
    fclose(log);
    if (!par)
        fail(what, pj_last_errmsg());
    else if (!found)
        fail(what, want);
    pj_parallel_free(par);
}

int main(void)
{
    const char *size = getenv("OMPI_COMM_WORLD_SIZE");
    int ranks = size ? atoi(size) - 1 : 0;
    if (ranks != 2) {
        fprintf(stderr, "FAIL: run as rank 0 of mpirun -n 3 (mpi-run.sh)\n");
        return 1;
    }
    int cpus = ranks_cpus(ranks);
    if (cpus < 1)
        return 1;
    check_n_jobs(-1, -1, cpus);
    check_n_jobs(-2, -2, cpus);
    setenv("PARJOB_N_JOBS", "-1", 1); /* the environment's n_jobs counts the same */
    check_n_jobs(0, -1, cpus);
    unsetenv("PARJOB_N_JOBS");
    check_line(4, "Using backend MPIBackend with 4 concurrent workers (ranks 1-2: 2 each).");
    check_line(3, "Using backend MPIBackend with 3 concurrent workers (rank 1: 2, rank 2: 1).");
    check_line(2, "Using backend MPIBackend with 2 concurrent workers (ranks 1-2: 1 each).");
    return failures ? 1 : 0;
}
