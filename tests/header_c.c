/* parjob.h must compile alone, as strict C11 (built with -std=c11 -pedantic -Werror). */
#include <parjob.h>

int main(void)
{
    return pj_version() == PJ_VERSION_HEX ? 0 : 1;
}
