/* harness.c — see harness.h. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "harness.h"

#include <math.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

int *pjb_iout;
double *pjb_dout;
ffi_cif pjb_cif_add, pjb_cif_d_d;

static ffi_type *add_args[2] = { &ffi_type_sint, &ffi_type_sint };
static ffi_type *d_args[1] = { &ffi_type_double };

/* Serial time per workload is ~0.1-0.2 s so a full program stays well under a minute at five
 * runs on two cores; the sweep covers 50 ns to 10 ms tasks. */
static const struct pjb_workload workloads[] = {
	{ "tiny", PJB_ADD, 1000000, 0, 0, 0 },
	{ "cpu5ms", PJB_SPIN, 40, 5000, 0, 0 },
	{ "cpu50us", PJB_SPIN, 4000, 50, 0, 0 },
	{ "sweep", PJB_SPIN, 1000000, 0.05, 0, 0 },
	{ "sweep", PJB_SPIN, 100000, 1, 0, 0 },
	{ "sweep", PJB_SPIN, 10000, 10, 0, 0 },
	{ "sweep", PJB_SPIN, 1000, 100, 0, 0 },
	{ "sweep", PJB_SPIN, 100, 1000, 0, 0 },
	{ "sweep", PJB_SPIN, 20, 10000, 0, 0 },
	{ "seed", PJB_SLEEP, 10, 1.0, 10, 1 },
};

double pjb_now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

int pjb_runs(void)
{
	const char *s = getenv("PJBENCH_RUNS");
	int r = s ? atoi(s) : 5;
	return r > 0 ? r : 5;
}

int pjb_cpus(void)
{
	cpu_set_t set;
	if (sched_getaffinity(0, sizeof set, &set) == 0)
		return CPU_COUNT(&set);
	long n = sysconf(_SC_NPROCESSORS_ONLN);
	return n > 0 ? (int)n : 1;
}

int pjb_workers(const struct pjb_workload *w, int dflt)
{
	return w->workers > 0 ? w->workers : dflt;
}

int pjb_enabled(const char *name)
{
	const char *only = getenv("PJBENCH_ONLY");
	if (only == NULL || *only == '\0')
		return 1;
	size_t len = strlen(name);
	for (const char *p = only; (p = strstr(p, name)) != NULL; p += len)
		if ((p == only || p[-1] == ',') && (p[len] == ',' || p[len] == '\0'))
			return 1;
	return 0;
}

const struct pjb_workload *pjb_init(size_t *count)
{
	long nmax = 0;
	for (size_t k = 0; k < sizeof workloads / sizeof workloads[0]; k++)
		if (workloads[k].n > nmax)
			nmax = workloads[k].n;
	pjb_iout = calloc((size_t)nmax, sizeof *pjb_iout);
	pjb_dout = calloc((size_t)nmax, sizeof *pjb_dout);
	if (pjb_iout == NULL || pjb_dout == NULL ||
	    ffi_prep_cif(&pjb_cif_add, FFI_DEFAULT_ABI, 2, &ffi_type_sint, add_args) != FFI_OK ||
	    ffi_prep_cif(&pjb_cif_d_d, FFI_DEFAULT_ABI, 1, &ffi_type_double, d_args) != FFI_OK) {
		fprintf(stderr, "harness: out of memory or ffi_prep_cif failed\n");
		exit(1);
	}
	pjwork_calibrate();
	*count = sizeof workloads / sizeof workloads[0];
	return workloads;
}

double pjb_serial_direct(const struct pjb_workload *w, void *ctx)
{
	(void)ctx;
	double t0 = pjb_now();
	switch (w->kind) {
	case PJB_ADD:
		for (long i = 0; i < w->n; i++)
			pjb_add_direct(i);
		break;
	case PJB_SPIN:
		for (long i = 0; i < w->n; i++)
			pjb_spin_direct(i, w->arg);
		break;
	case PJB_SLEEP:
		for (long i = 0; i < w->n; i++)
			pjb_sleep_direct(i, w->arg);
		break;
	}
	return pjb_now() - t0;
}

double pjb_serial_ffi(const struct pjb_workload *w, void *ctx)
{
	(void)ctx;
	double t0 = pjb_now();
	switch (w->kind) {
	case PJB_ADD:
		for (long i = 0; i < w->n; i++)
			pjb_add_ffi(i);
		break;
	case PJB_SPIN:
		for (long i = 0; i < w->n; i++)
			pjb_spin_ffi(i, w->arg);
		break;
	case PJB_SLEEP:
		for (long i = 0; i < w->n; i++)
			pjb_sleep_ffi(i, w->arg);
		break;
	}
	return pjb_now() - t0;
}

/* Poison the outputs before a run and check every slot after it: a variant that skips or
 * duplicates work is a bug, not a fast result. */
static void clear_out(const struct pjb_workload *w)
{
	if (w->kind == PJB_ADD)
		memset(pjb_iout, 0xff, (size_t)w->n * sizeof *pjb_iout);
	else
		for (long i = 0; i < w->n; i++)
			pjb_dout[i] = NAN;
}

static int check_out(const struct pjb_workload *w)
{
	for (long i = 0; i < w->n; i++) {
		if (w->kind == PJB_ADD ? pjb_iout[i] != (int)i + 1
				       : (isnan(pjb_dout[i]) ||
					  (w->kind == PJB_SLEEP && pjb_dout[i] != w->arg)))
			return 0;
	}
	return 1;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return (x > y) - (x < y);
}

void pjb_print(const char *peer, const char *prog, const struct pjb_workload *w,
	       const char *metric, const double *vals, int n, int workers, const char *extra)
{
	double *s = malloc((size_t)n * sizeof *s);
	if (s == NULL)
		exit(1);
	memcpy(s, vals, (size_t)n * sizeof *s);
	qsort(s, (size_t)n, sizeof *s, cmp_double);
	double med = n % 2 ? s[n / 2] : (s[n / 2 - 1] + s[n / 2]) / 2;
	printf("peer=%s prog=%s workload=%s", peer, prog, w->name);
	if (w->kind == PJB_SPIN)
		printf(" task_us=%g", w->arg);
	printf(" metric=%s median=%.6g min=%.6g max=%.6g runs=%d n=%ld workers=%d%s%s\n", metric,
	       med, s[0], s[n - 1], n, w->n, workers, *extra ? " " : "", extra);
	fflush(stdout);
	free(s);
}

void pjb_bench(const char *prog, const struct pjb_workload *w, const struct pjb_variant *v,
	       int nv, int baseline, int workers)
{
	int runs = pjb_runs();
	double *t = calloc((size_t)nv * (size_t)runs, sizeof *t);
	double *fig = calloc((size_t)runs, sizeof *fig);
	if (t == NULL || fig == NULL)
		exit(1);
	for (int r = -1; r < runs; r++) { /* r == -1: warm-up, not recorded */
		for (int k = 0; k < nv; k++) {
			clear_out(w);
			double e = v[k].run(w, v[k].ctx);
			if (!check_out(w)) {
				fprintf(stderr, "%s: %s gave wrong results on %s\n", prog,
					v[k].peer, w->name);
				exit(1);
			}
			if (r >= 0)
				t[k * runs + r] = e;
		}
	}
	for (int k = 0; k < nv; k++) {
		const double *tk = &t[k * runs];
		int wk = strstr(v[k].peer, "serial") != NULL ||
				 strstr(v[k].peer, "sequential") != NULL
			 ? 1
			 : workers;
		if (w->wall) {
			pjb_print(v[k].peer, prog, w, "wall_s", tk, runs, wk, "");
			continue;
		}
		for (int r = 0; r < runs; r++)
			fig[r] = (double)w->n / tk[r];
		pjb_print(v[k].peer, prog, w, "tasks_per_s", fig, runs, wk, "");
		if (baseline < 0 || k == baseline)
			continue;
		char extra[128];
		snprintf(extra, sizeof extra, "baseline=%s", v[baseline].peer);
		for (int r = 0; r < runs; r++)
			fig[r] = t[baseline * runs + r] / tk[r];
		pjb_print(v[k].peer, prog, w, "speedup", fig, runs, wk, extra);
	}
	free(t);
	free(fig);
}
