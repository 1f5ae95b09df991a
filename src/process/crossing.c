/* What can cross to a worker process: the one portability check every entry point runs before
 * anything does (raw pointers, functions a worker can find).  It lives in the process layer
 * because the answer is the process layer's (function references, fnref.c); the dispatcher and
 * the front ends reach it only through pj__task_crossing, declared in internal.h. */
#include "process.h"

#include <stdio.h>

/* A function that no loaded module holds (a libffi closure, a JIT buffer, an anonymous
 * mapping) cannot be named to a worker that re-executes the program (spawn), and cannot be
 * trusted in a forked one either: a worker has the parent's memory as of its fork, and such
 * code, or its data, may have appeared or changed since.  (A library dlopen'ed after the fork
 * is the pool's to handle: it starts fresh workers, procpool.c.)  So every process backend
 * refuses it.  *checked remembers the last function found good: tasks of one function cost
 * one lookup. */
int pj__task_crossing(unsigned features, const pj_task *t, const pj_fn **checked, char *why,
                      size_t len)
{
    /* A buffer past the end of a shared allocation, or in a freed one, must not reach a
     * worker (it would map the wrong bytes, or none), nor a thread (it would fault). */
    if (pj__shared_check_task(t, why, len))
        return PJ_EINVAL;
    if (!(features & PJ_BACKEND_PROCESS))
        return 0;
    unsigned a = pj__raw_pointer_arg(t);
    if (a) {
        char what[256];
        const char *fix = pj__raw_pointer_what(t, a, what, sizeof what);
        snprintf(why, len, "%s, which cannot cross to a worker process; %s", what, fix);
        return PJ_EPOINTER;
    }
    if (t->fn == *checked)
        return 0;
    struct pj__fnref ref;
    int rc = pj__fnref_of(t->fn->ptr, &ref, why, len);
    if (rc == 0)
        *checked = t->fn;
    return rc;
}
