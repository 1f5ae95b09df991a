/* The work of shared_bench (issue 13), in a library of its own so that joblib's peer
 * (shared_joblib.py, through ctypes) runs exactly the code parjob's tasks run. */
#include <stdint.h>

/* Reads every word of p[0..n): a checksum that depends on each word and its place, at about
 * memory speed. */
uint64_t pjshared_checksum(const uint64_t *p, uint64_t n)
{
    uint64_t a = 0, b = 0, c = 0, d = 0, k = 0;
    for (; k + 4 <= n; k += 4) {
        a += p[k] ^ k;
        b += p[k + 1] ^ (k + 1);
        c += p[k + 2] ^ (k + 2);
        d += p[k + 3] ^ (k + 3);
    }
    for (; k < n; k++)
        a += p[k] ^ k;
    return a + 3 * b + 5 * c + 7 * d;
}
