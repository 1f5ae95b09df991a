/* work.h — the work functions every benchmark calls, parjob and peers alike.
 *
 * Built once as libpjwork.so so that C programs (direct calls, ffi_call) and Python (ctypes) run
 * the very same machine code. None of these functions knows about parjob; they stand for "an
 * existing C function the user already has".
 *
 * Calibration: spin_us() converts microseconds into iterations of a dependent arithmetic loop,
 * using an iterations-per-microsecond figure measured once per process (pthread_once, ~0.1 s) —
 * never by reading the clock inside the loop, so the task's cost is pure computation. Set
 * PJWORK_ITERS_PER_US in the environment to skip measuring and to give every program of a
 * benchmark run the same task lengths (scripts/bench does this). */
#ifndef PJWORK_H
#define PJWORK_H

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__clang__)
#define PJWORK_API __attribute__((visibility("default"), noinline))
#else
#define PJWORK_API __attribute__((visibility("default"), noinline, noclone))
#endif

/* The smallest useful task: a + b. */
PJWORK_API int add(int a, int b);

/* Computes for about `us` microseconds; returns a value derived from the work (use it). */
PJWORK_API double spin_us(double us);

/* The loop spin_us() runs: `iters` dependent multiply-adds; returns its final value. */
PJWORK_API double spin_iters(long iters);

/* Sleeps `s` seconds (nanosleep, restarted on EINTR); returns s. */
PJWORK_API double sleep_s(double s);

/* Measures the loop rate now (first call only; later calls are no-ops). Thread-safe. */
PJWORK_API void pjwork_calibrate(void);

/* Iterations of spin_iters() per microsecond (calibrates on first use). */
PJWORK_API double pjwork_iters_per_us(void);

#ifdef __cplusplus
}
#endif

#endif
