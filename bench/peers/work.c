/* work.c — see work.h. Compiled with -O2 into libpjwork.so; every function is noinline and
 * returns a value computed from its whole loop, so the compiler cannot drop or shorten the work. */
#define _POSIX_C_SOURCE 200809L
#include "work.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <time.h>

/* Written once under pthread_once, read-only afterwards: pthread_once gives the ordering. */
static double iters_per_us;
static pthread_once_t calib_once = PTHREAD_ONCE_INIT;

int add(int a, int b)
{
	return a + b;
}

/* A 64-bit LCG step per iteration: each multiply depends on the previous one, so the loop runs
 * at the multiplier's latency and cannot be vectorised or reassociated. */
double spin_iters(long iters)
{
	uint64_t x = (uint64_t)iters | 1u;
	for (long i = 0; i < iters; i++)
		x = x * 6364136223846793005u + 1442695040888963407u;
	return (double)(x >> 11);
}

double spin_us(double us)
{
	if (us <= 0)
		return 0;
	return spin_iters((long)(us * pjwork_iters_per_us() + 0.5));
}

double sleep_s(double s)
{
	struct timespec ts = { (time_t)s, (long)((s - (double)(time_t)s) * 1e9) };
	while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
		;
	return s;
}

static double now_us(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec / 1e3;
}

/* Grow the iteration count until one pass takes >= 10 ms (this also lets the CPU clock ramp
 * up), then keep the fastest of five 20 ms passes: the fastest pass is the one least disturbed
 * by the scheduler, which is what a task on an idle core will see. */
static void calibrate(void)
{
	const char *env = getenv("PJWORK_ITERS_PER_US");
	if (env != NULL && atof(env) > 0) {
		iters_per_us = atof(env);
		return;
	}
	volatile double sink = 0; /* keeps the calibration loops' results alive */
	long iters = 1000;
	double t;
	for (;;) {
		double t0 = now_us();
		sink += spin_iters(iters);
		t = now_us() - t0;
		if (t >= 10000)
			break;
		iters *= 2;
	}
	iters = (long)(iters * (20000.0 / t));
	double best = INFINITY;
	for (int k = 0; k < 5; k++) {
		double t0 = now_us();
		sink += spin_iters(iters);
		t = now_us() - t0;
		if (t < best)
			best = t;
	}
	(void)sink;
	iters_per_us = (double)iters / best;
}

void pjwork_calibrate(void)
{
	pthread_once(&calib_once, calibrate);
}

double pjwork_iters_per_us(void)
{
	pjwork_calibrate();
	return iters_per_us;
}
