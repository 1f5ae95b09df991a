/* A shared library the C++ start-up tests link (not dlopen): its constructor sets a value, so
 * a task reading it sees whether the library's start-up ran in the process running it. */
#include "startup-lib.h"

static int value;

__attribute__((constructor)) static void set_value(void)
{
    value = STARTUP_LIB_VALUE;
}

int startup_lib_value(void)
{
    return value;
}
