/* Error codes as names and text (parjob.h's PJ_ERRNO_MAP), and the library's version. */
#include "internal.h"

#include <stdio.h>

const char *pj_strerror(int code)
{
    switch (code) {
    case 0: return "success";
#define PJ__STRERROR(name, value, text) case PJ_##name: return text;
    PJ_ERRNO_MAP(PJ__STRERROR)
#undef PJ__STRERROR
    default: return "unknown error";
    }
}

const char *pj_err_name(int code)
{
    switch (code) {
    case 0: return "PJ_OK";
#define PJ__ERRNAME(name, value, text) case PJ_##name: return "PJ_" #name;
    PJ_ERRNO_MAP(PJ__ERRNAME)
#undef PJ__ERRNAME
    default: return "PJ_UNKNOWN";
    }
}

unsigned pj_version(void)
{
    return PJ_VERSION_HEX;
}

#define STRINGIFY(x) #x
#define DECIMAL(x) STRINGIFY(x)

const char *pj_version_string(void)
{
    return DECIMAL(PJ_VERSION_MAJOR) "." DECIMAL(PJ_VERSION_MINOR) "." DECIMAL(PJ_VERSION_PATCH);
}
