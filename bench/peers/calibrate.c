/* calibrate.c — measures the spin loop once for a whole benchmark run and checks spin_us().
 *
 * Prints "# iters_per_us=<x>" (scripts/bench exports it as PJWORK_ITERS_PER_US so every program,
 * parjob's included, runs tasks of the same length), then, for each sweep duration, how long
 * spin_us(d) really takes: metric=actual_us, and actual/nominal as metric=accuracy. */
#include <stdio.h>

#include "harness.h"

int main(void)
{
	static const double us[] = { 0.05, 1, 10, 50, 100, 1000, 5000, 10000 };
	size_t nw;
	pjb_init(&nw);
	printf("# iters_per_us=%.4f\n", pjwork_iters_per_us());
	int runs = pjb_runs();
	double actual[64], acc[64];
	volatile double sink = 0;
	for (size_t k = 0; k < sizeof us / sizeof us[0]; k++) {
		long reps = (long)(2000.0 / us[k]) + 1; /* about 2 ms a measurement */
		struct pjb_workload w = { "calibration", PJB_SPIN, reps, us[k], 1, 0 };
		for (int r = 0; r < runs && r < 64; r++) {
			double t0 = pjb_now();
			for (long i = 0; i < reps; i++)
				sink += spin_us(us[k]);
			actual[r] = (pjb_now() - t0) * 1e6 / (double)reps;
			acc[r] = actual[r] / us[k];
		}
		pjb_print("spin_us", "calibrate", &w, "actual_us", actual, runs, 1, "");
		pjb_print("spin_us", "calibrate", &w, "accuracy", acc, runs, 1, "");
	}
	(void)sink;
	return 0;
}
