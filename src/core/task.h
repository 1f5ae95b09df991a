/* The private header of functions and tasks, included only by fn.c (function descriptions)
 * and task.c (tasks and argument capture): what the two share.  The small helpers are static
 * inline, as they were static beside their callers before the split. */
#ifndef PJ_TASK_H
#define PJ_TASK_H

#include "internal.h"

#include <stdbool.h>
#include <stddef.h>

static inline size_t align_up(size_t n, size_t a)
{
    return (n + a - 1) / a * a;
}

/* An integer parameter or return type (not a pointer): fn.c's direct calls, task.c's
 * conversions. */
static inline bool is_integral(unsigned short type)
{
    switch (type) {
    case FFI_TYPE_INT:
    case FFI_TYPE_UINT8: case FFI_TYPE_SINT8:
    case FFI_TYPE_UINT16: case FFI_TYPE_SINT16:
    case FFI_TYPE_UINT32: case FFI_TYPE_SINT32:
    case FFI_TYPE_UINT64: case FFI_TYPE_SINT64:
        return true;
    default:
        return false;
    }
}

static inline const char *fn_label(const pj_fn *fn)
{
    return fn->name ? fn->name : "function";
}

/* A pointer member of struct type t, anywhere inside it, as the path of member numbers ("2.1")
 * into path (when not NULL).  With value NULL any pointer member counts; with the struct's
 * bytes, only one that is not NULL (a NULL pointer means the same in every process). */
PJ_HIDDEN bool pj__pointer_member(const ffi_type *t, const unsigned char *value, char *path,
                                  size_t len, int depth);

#endif
