/* A library test-spawn dlopens at run time: its functions must resolve in spawn workers, which
 * have never loaded it. */
int pjmod_mul(int a, int b)
{
    return a * b;
}

/* Not exported: reachable only through the pointer below, so no symbol lookup can find it. */
static long hidden_square(long x)
{
    return x * x;
}

long (*pjmod_hidden(void))(long)
{
    return hidden_square;
}
