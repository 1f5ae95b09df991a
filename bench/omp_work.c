/* The OpenMP task of inner_bench (and of inner_joblib.py, which calls it through ctypes: the
 * same machine code on both sides).  A time-stepping loop, as a solver would run: `steps`
 * parallel loops one after another, each ending at OpenMP's barrier, which is where running
 * more threads than cores costs (a thread waits for a team mate that is not running). */
#include <omp.h>

double omp_steps(long steps, long iters_per_step);

double omp_steps(long steps, long iters_per_step)
{
    double total = 0;
    for (long s = 0; s < steps; s++) {
        double x = 0;
#pragma omp parallel for schedule(static) reduction(+ : x)
        for (long i = 0; i < iters_per_step; i++)
            x += (double)(i ^ s) * 1e-9;
        total += x;
    }
    return total;
}
