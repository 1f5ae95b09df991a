/* Memory for task records (taskmem.c): what pj_delayed and pj_task_new allocate, and
 * pj_task_free gives back.  Private to src/core. */
#ifndef PJ_TASKMEM_H
#define PJ_TASKMEM_H

#include "internal.h"

#include <stddef.h>

/* Largest record cut from a shared block; a bigger one gets a block of its own. */
#define PJ__TASKMEM_MAX_RECORD ((size_t)64 << 10)

/* size bytes, 16-byte aligned, uninitialised; NULL when out of memory.  Any thread. */
PJ_HIDDEN void *pj__taskmem_alloc(size_t size);
/* Gives back a record of pj__taskmem_alloc of size bytes (as asked; NULL: nothing), from any
 * thread, in any order, whether or not the thread that allocated it still runs. */
PJ_HIDDEN void pj__taskmem_free(void *record, size_t size);
/* Frees the blocks kept for later tasks, and the calling thread's block when every task cut
 * from it has been freed: for tests that measure the heap (mallinfo2), where kept blocks
 * would look like tasks not freed. */
PJ_HIDDEN void pj__taskmem_trim(void);

#endif
