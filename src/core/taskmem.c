/* Memory for task records: each thread cuts the records it builds from a block of its own.
 *
 * Why: a million pj_delayed calls were a million mallocs of ~32 bytes.  In a program that
 * builds its tasks right before a run and frees them after, glibc hands the freed heap back to
 * the kernel (M_TRIM_THRESHOLD) and every page of the next million faults in again: ~60 ns a
 * task, where the same mallocs on memory not handed back cost ~30 (bench/delayed_bench, no_run
 * and run, the building thread's CPU time).  Blocks cut by a bump pointer take no lock and no
 * atomic operation per record, and freed blocks are kept (CACHE_SLOTS of them, 64 MiB at most)
 * for the next tasks, so their pages are not faulted in again.
 *
 * A record is the bytes asked for, no more: its block is found by masking its address (blocks
 * are aligned to their size).  A block counts its records with refs, prepaid: while a thread
 * allocates from it refs is PREPAID, each record freed takes one off; when the thread moves on
 * (the block is full, or the thread ends) it takes off what it did not use, PREPAID - records
 * made.  Whoever brings refs to 0 — the last pj_task_free or the retiring thread — gives the
 * block back.  So records may be freed in any order, from any thread, after the thread that
 * made them has ended, and allocation needs no atomic operation.  A forked child inherits the
 * blocks of the other threads of its parent prepaid: records of theirs freed in the child
 * never give those blocks back (bounded: one block per such thread, in the child only).
 *
 * Thread safety: a block's cut (arena.used) is its thread's own (thread-local); refs is
 * atomic; the cache is an array of atomic slots, taken and filled with exchange and
 * compare-exchange, no lock (a worker may be forked at any moment and must not inherit a held
 * lock). */
#include "taskmem.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#define POISON(p, n) ASAN_POISON_MEMORY_REGION((p), (n))
#define UNPOISON(p, n) ASAN_UNPOISON_MEMORY_REGION((p), (n))
#else
#define POISON(p, n) ((void)(p), (void)(n))
#define UNPOISON(p, n) ((void)(p), (void)(n))
#endif

/* 1 MiB: ~32000 records of int add(int, int); a thread that builds one task touches one page
 * of it.  64 blocks kept: a million such tasks built, freed and built again never leave the
 * cache (bench/delayed_bench).  Blocks are aligned to their size, so a record finds its block
 * by masking its address: no header per record (a 16-byte one made 48 bytes of a 32-byte task,
 * and a million tasks are written to memory once: bytes are time). */
#define BLOCK_BYTES ((size_t)1 << 20)
#define CACHE_SLOTS 64
#define PREPAID ((int64_t)1 << 40)

struct block {
    _Alignas(64) _Atomic int64_t refs; /* alone on its cache line: other threads write it */
};
/* The first record of a block; a record bigger than a block holds lies alone in a block of
 * its own size (aligned alike, refs 1). */
#define FIRST_RECORD 64

/* The calling thread's block.  Kept as bits no leak checker (ASan's, valgrind's) reads as a
 * pointer, nor an address inside it: a task that is never freed then leaves its block
 * unreachable and reported, wherever it lies, as it was when each task was malloc'd. */
struct arena {
    uintptr_t hidden_block;     /* (uintptr_t)block ^ HIDE, 0 when none */
    /* The same block, as a pointer: a thread that still runs at exit holds its block in use
     * (a threading worker left to a task past its deadline), and a block of records that are
     * all freed, reachable from nowhere else, was reported as leaked (test-bulk's deadlines
     * under ASan).  Only while the thread holds it: the exiting thread and ended ones retire
     * theirs, so their records never freed are still reported. */
    struct block *held;
    size_t used;                /* bytes of it cut (from FIRST_RECORD) */
    int64_t records;            /* records cut from it */
    bool registered;            /* the exit key is set: the block is retired when it ends */
};
#define HIDE ((uintptr_t)0x5a5a5a5a5a5a5a5aull)
static PJ_TLS struct arena arena = { .used = BLOCK_BYTES };

static _Atomic(struct block *) cache[CACHE_SLOTS];
static pthread_once_t key_once = PTHREAD_ONCE_INIT;
static pthread_key_t exit_key;
static bool exit_key_ok;

static struct block *arena_block(const struct arena *a)
{
    return a->hidden_block ? (struct block *)(a->hidden_block ^ HIDE) : NULL;
}

static struct block *block_of(const void *record)
{
    return (struct block *)((uintptr_t)record & ~(uintptr_t)(BLOCK_BYTES - 1));
}

/* Kept in the cache as they are: handing the pages to the kernel lazily (MADV_FREE) cost
 * ~4.5 ns a task on the next build, a quarter of it (bench/delayed_bench), in the first write
 * to each page again. */
static void block_give_back(struct block *b)
{
    for (int i = 0; i < CACHE_SLOTS; i++) {
        struct block *empty = NULL;
        if (atomic_compare_exchange_strong(&cache[i], &empty, b))
            return;
    }
    UNPOISON(b, BLOCK_BYTES);
    free(b);
}

static struct block *block_take(void)
{
    for (int i = 0; i < CACHE_SLOTS; i++) {
        struct block *b;
        if (atomic_load_explicit(&cache[i], memory_order_relaxed) &&
            (b = atomic_exchange(&cache[i], NULL)))
            return b;
    }
    struct block *b = aligned_alloc(BLOCK_BYTES, BLOCK_BYTES);
    if (b)
        POISON((unsigned char *)b + FIRST_RECORD, BLOCK_BYTES - FIRST_RECORD);
    return b;
}

/* The thread is done with its block: what it did not cut is no longer owed. */
static void arena_retire(struct arena *a)
{
    struct block *b = arena_block(a);
    if (!b)
        return;
    int64_t unused = PREPAID - a->records;
    a->hidden_block = 0;
    a->held = NULL;
    a->used = BLOCK_BYTES;
    if (atomic_fetch_sub_explicit(&b->refs, unused, memory_order_acq_rel) == unused)
        block_give_back(b);
}

static void thread_ends(void *unused)
{
    (void)unused;
    arena_retire(&arena);
    arena.registered = false; /* a later destructor that builds a task registers again */
}

static void make_exit_key(void)
{
    exit_key_ok = pthread_key_create(&exit_key, thread_ends) == 0;
}

/* At exit (or when the library is unloaded): the thread that exits retires its block, as a
 * thread that ends does, so that a leak checker finds only blocks that still hold a task.
 * The key goes too, so no thread that ends after an unload calls into unloaded code. */
__attribute__((noinline)) static void retire_at_exit(void)
{
    arena_retire(&arena);
}

/* What retire_at_exit left on the stack: a leak checker that runs after this (ASan's, at
 * exit) would read a block's address there as a reference to it. */
__attribute__((noinline)) static void clear_dead_frame(void)
{
    volatile unsigned char scratch[1024];
    for (size_t i = 0; i < sizeof scratch; i++)
        scratch[i] = 0;
}

__attribute__((destructor)) static void library_ends(void)
{
    retire_at_exit();
    clear_dead_frame();
    if (exit_key_ok) {
        exit_key_ok = false;
        pthread_key_delete(exit_key);
    }
}

/* A record in a block of its own: one too big to share a block, or when the thread cannot
 * have a block (no exit key: it could never be retired).  Rounded to whole blocks: the
 * alignment costs that much address space anyway, and a small record's block is then one
 * like the others, which the cache may keep. */
static void *alloc_alone(size_t size)
{
    size_t bytes = (FIRST_RECORD + size + BLOCK_BYTES - 1) & ~(BLOCK_BYTES - 1);
    struct block *b = bytes >= FIRST_RECORD + size ? aligned_alloc(BLOCK_BYTES, bytes) : NULL;
    if (!b)
        return NULL;
    atomic_init(&b->refs, 1);
    return (unsigned char *)b + FIRST_RECORD;
}

/* The thread's block is full (or it has none): a fresh one, from the cache when it can. */
static bool arena_refill(struct arena *a)
{
    if (!a->registered || !exit_key_ok) { /* (the key is gone once the library ends) */
        pthread_once(&key_once, make_exit_key);
        if (!exit_key_ok || pthread_setspecific(exit_key, a) != 0)
            return false;
        a->registered = true;
    }
    arena_retire(a);
    struct block *b = block_take();
    if (!b)
        return false;
    atomic_store_explicit(&b->refs, PREPAID, memory_order_relaxed);
    a->hidden_block = (uintptr_t)b ^ HIDE;
    a->held = b;
    a->used = FIRST_RECORD;
    a->records = 0;
    return true;
}

void *pj__taskmem_alloc(size_t size)
{
    size = (size + 15) & ~(size_t)15;
    struct arena *a = &arena;
    if (size > PJ__TASKMEM_MAX_RECORD)
        return alloc_alone(size);
    if (BLOCK_BYTES - a->used < size && !arena_refill(a))
        return alloc_alone(size);
    unsigned char *record = (unsigned char *)(a->hidden_block ^ HIDE) + a->used;
    UNPOISON(record, size);
    a->used += size;
    a->records++;
    return record;
}

void pj__taskmem_free(void *record, size_t size)
{
    if (!record)
        return;
    struct block *b = block_of(record);
    POISON(record, (size + 15) & ~(size_t)15);
    if (atomic_fetch_sub_explicit(&b->refs, 1, memory_order_acq_rel) != 1)
        return;
    if (FIRST_RECORD + size > BLOCK_BYTES)
        free(b); /* a big record's own block: the cache keeps blocks of one size */
    else
        block_give_back(b);
}

void pj__taskmem_trim(void)
{
    struct arena *a = &arena;
    struct block *b = arena_block(a);
    if (b && PREPAID - atomic_load(&b->refs) == a->records)
        arena_retire(a); /* every record cut from it is free: it goes to the cache */
    for (int i = 0; i < CACHE_SLOTS; i++) {
        struct block *b = atomic_exchange(&cache[i], NULL);
        if (b) {
            UNPOISON(b, BLOCK_BYTES);
            free(b);
        }
    }
}
