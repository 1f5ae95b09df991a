/* omp.c — peer: OpenMP `parallel for schedule(dynamic, chunk)`, what a C programmer reaches for
 * first. Chunks 1 and 64; each task calls the work function directly or through ffi_call (the
 * price parjob pays for calling functions it was never compiled against). Threads: OpenMP's
 * default (OMP_NUM_THREADS, else usable CPUs); the seed workload asks for 10.
 *
 *   omp [PJBENCH_RUNS=5] [PJBENCH_ONLY=tiny,cpu5ms,cpu50us,sweep,seed]   */
#include <omp.h>
#include <stdio.h>

#include "harness.h"

struct omp_cfg {
	int chunk; /* schedule(dynamic, chunk) */
	int ffi;   /* 1: call through ffi_call */
};

/* One loop per kind rather than a switch inside the loop: this is the loop a user writes. */
static double run_omp(const struct pjb_workload *w, void *ctx)
{
	const struct omp_cfg *c = ctx;
	const long n = w->n;
	const int chunk = c->chunk, nt = pjb_workers(w, omp_get_max_threads());
	const double a = w->arg;
	double t0 = pjb_now();
	switch (w->kind * 2 + c->ffi) {
	case PJB_ADD * 2:
#pragma omp parallel for schedule(dynamic, chunk) num_threads(nt)
		for (long i = 0; i < n; i++)
			pjb_add_direct(i);
		break;
	case PJB_ADD * 2 + 1:
#pragma omp parallel for schedule(dynamic, chunk) num_threads(nt)
		for (long i = 0; i < n; i++)
			pjb_add_ffi(i);
		break;
	case PJB_SPIN * 2:
#pragma omp parallel for schedule(dynamic, chunk) num_threads(nt)
		for (long i = 0; i < n; i++)
			pjb_spin_direct(i, a);
		break;
	case PJB_SPIN * 2 + 1:
#pragma omp parallel for schedule(dynamic, chunk) num_threads(nt)
		for (long i = 0; i < n; i++)
			pjb_spin_ffi(i, a);
		break;
	case PJB_SLEEP * 2:
#pragma omp parallel for schedule(dynamic, chunk) num_threads(nt)
		for (long i = 0; i < n; i++)
			pjb_sleep_direct(i, a);
		break;
	case PJB_SLEEP * 2 + 1:
#pragma omp parallel for schedule(dynamic, chunk) num_threads(nt)
		for (long i = 0; i < n; i++)
			pjb_sleep_ffi(i, a);
		break;
	}
	return pjb_now() - t0;
}

int main(void)
{
	static struct omp_cfg d1 = { 1, 0 }, f1 = { 1, 1 }, d64 = { 64, 0 }, f64 = { 64, 1 };
	const struct pjb_variant v[] = {
		{ "c_serial_direct", pjb_serial_direct, NULL },
		{ "c_serial_ffi", pjb_serial_ffi, NULL },
		{ "omp_dyn1_direct", run_omp, &d1 },
		{ "omp_dyn1_ffi", run_omp, &f1 },
		{ "omp_dyn64_direct", run_omp, &d64 },
		{ "omp_dyn64_ffi", run_omp, &f64 },
	};
	const int nv = sizeof v / sizeof v[0];
	size_t nw;
	const struct pjb_workload *w = pjb_init(&nw);
	printf("# omp: threads=%d iters_per_us=%.2f\n", omp_get_max_threads(),
	       pjwork_iters_per_us());
	for (size_t k = 0; k < nw; k++) {
		if (!pjb_enabled(w[k].name))
			continue;
		int workers = pjb_workers(&w[k], omp_get_max_threads());
		/* Seed (ten 1 s sleeps): no serial baseline (10 s a run) and no chunk 64, which puts
		 * all ten tasks on one thread — 10 s a run, 2 minutes of the budget, nothing learnt. */
		if (w[k].wall)
			pjb_bench("omp", &w[k], v + 2, 2, -1, workers);
		else
			pjb_bench("omp", &w[k], v, nv, 0, workers);
	}
	return 0;
}
