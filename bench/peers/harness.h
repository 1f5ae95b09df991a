/* harness.h — the measuring side shared by the C peer benchmarks (omp.c, pthread_pool.c) and
 * meant to be shared by parjob's own bench programs, so that every figure of a run is taken the
 * same way and printed in the same format.
 *
 * A program describes *variants* (a name and a function that runs one workload once and returns
 * the elapsed seconds) and hands them to pjb_bench() with a workload from pjb_workloads().
 * pjb_bench() runs one unmeasured warm-up, then PJBENCH_RUNS (default 5, at least 5 for real
 * figures) interleaved repetitions of every variant — serial baseline first — and prints one line
 * per figure:
 *
 *   peer=omp_dyn64_ffi prog=omp workload=cpu50us task_us=50 metric=speedup median=1.97
 *       min=1.95 max=1.98 runs=5 n=4000 workers=2 baseline=c_serial_direct
 *
 * Ratios ("speedup": baseline time / variant time) are computed per repetition, i.e. against the
 * serial loop measured moments before, then summarised; so is every other figure. */
#ifndef PJB_HARNESS_H
#define PJB_HARNESS_H

#include <ffi.h>
#include <stddef.h>

#include "work.h"

enum pjb_kind { PJB_ADD, PJB_SPIN, PJB_SLEEP };

struct pjb_workload {
	const char *name;   /* tiny, cpu5ms, cpu50us, sweep, seed */
	enum pjb_kind kind; /* which work function each task calls */
	long n;             /* number of tasks */
	double arg;         /* task length: microseconds (PJB_SPIN) or seconds (PJB_SLEEP) */
	int workers;        /* 0: the program's default (usable CPUs); seed asks for 10 */
	int wall;           /* 1: report wall_s (seed); 0: tasks_per_s and speedup */
};

/* Runs `w` once (all n tasks, results stored in pjb_iout/pjb_dout) and returns elapsed seconds. */
typedef double (*pjb_run_fn)(const struct pjb_workload *w, void *ctx);

struct pjb_variant {
	const char *peer; /* output key, e.g. "omp_dyn64_ffi" */
	pjb_run_fn run;
	void *ctx;
};

/* Result storage, one slot per task index, sized for the largest workload by pjb_init(). */
extern int *pjb_iout;
extern double *pjb_dout;

/* Prepared libffi signatures: int(int, int) for add, double(double) for spin_us and sleep_s.
 * Read-only after pjb_init(), so any number of threads may ffi_call through them at once. */
extern ffi_cif pjb_cif_add, pjb_cif_d_d;

/* Calibrates the work loop, prepares the cifs and the output arrays; returns the workloads.
 * PJBENCH_ONLY=tiny,sweep (comma list of workload names) keeps only those. */
const struct pjb_workload *pjb_init(size_t *count);
int pjb_enabled(const char *workload_name);
double pjb_now(void);
int pjb_runs(void);
int pjb_cpus(void);
int pjb_workers(const struct pjb_workload *w, int dflt);

/* The serial loops every speedup is measured against ("c_serial_direct", "c_serial_ffi"). */
double pjb_serial_direct(const struct pjb_workload *w, void *ctx);
double pjb_serial_ffi(const struct pjb_workload *w, void *ctx);

/* Measures and prints; v[baseline] is the denominator of every speedup (-1: no speedup). */
void pjb_bench(const char *prog, const struct pjb_workload *w, const struct pjb_variant *v,
	       int nv, int baseline, int workers);

/* Prints one figure summarised from vals[0..n); `extra` is appended verbatim (may be ""). */
void pjb_print(const char *peer, const char *prog, const struct pjb_workload *w,
	       const char *metric, const double *vals, int n, int workers, const char *extra);

/* One task, by index: these are the loop bodies every peer runs. */
static inline void pjb_add_direct(long i)
{
	pjb_iout[i] = add((int)i, 1);
}

static inline void pjb_add_ffi(long i)
{
	int a = (int)i, b = 1;
	void *av[2] = { &a, &b };
	ffi_arg r; /* integral returns narrower than a register come back widened to ffi_arg */
	ffi_call(&pjb_cif_add, FFI_FN(add), &r, av);
	pjb_iout[i] = (int)r;
}

static inline void pjb_spin_direct(long i, double us)
{
	pjb_dout[i] = spin_us(us);
}

static inline void pjb_spin_ffi(long i, double us)
{
	void *av[1] = { &us };
	ffi_call(&pjb_cif_d_d, FFI_FN(spin_us), &pjb_dout[i], av);
}

static inline void pjb_sleep_direct(long i, double s)
{
	pjb_dout[i] = sleep_s(s);
}

static inline void pjb_sleep_ffi(long i, double s)
{
	void *av[1] = { &s };
	ffi_call(&pjb_cif_d_d, FFI_FN(sleep_s), &pjb_dout[i], av);
}

#endif
