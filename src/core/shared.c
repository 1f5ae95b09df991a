/* Shared memory objects: pj_shared_alloc's allocations, and the sealed copies of large inputs
 * that process pools place once per run (config.max_nbytes).  Every object is a memfd: it has
 * no name in any file system (nothing in /dev/shm or /tmp, ever, and /dev/shm may be tiny or
 * absent), and its memory goes with the last descriptor and mapping of it, whoever holds them
 * — so a parent killed by SIGKILL leaves nothing behind: its workers die with it and take
 * their mappings along.
 *
 * This file is the registry of those objects in the process that creates them: what an address
 * belongs to (the codec sends (object, offset, length) instead of bytes), which objects still
 * live, and who wants to hear that one died (a pool tells its workers to unmap it).  How an
 * object reaches a worker is the process layer's (src/process/sharing.c); threads need nothing,
 * they share the memory already.  It is process-wide state on purpose: an allocation belongs to
 * the process, not to a handle, like malloc's.
 *
 * Use after free: pj_shared_free does not give the addresses back.  It maps the range again
 * with no access and no memory (PROT_NONE, MAP_NORESERVE), so that no later allocation can
 * land there and a pointer into it stays recognisable: pj_run refuses a task whose buffer lies
 * in a freed allocation instead of letting a worker (or a thread) fault on it.  That costs
 * address space only, which a 64-bit process has plenty of.
 *
 * Lock rule: one mutex guards the tables, taken around fork too (pthread_atfork).  Listeners
 * are called with it held; they only wake a thread (an eventfd write) and must not call back
 * into this file.  A sealed copy is written with it held (two pools of one run must not place
 * an input twice), so a lookup may wait for one copy. */
#include "internal.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

struct object {
    uint64_t id;                 /* never reused within the process */
    int fd;                      /* the memfd */
    unsigned char *base;         /* allocations: mapped here, read-write; sealed: NULL */
    size_t size;
    uint64_t run;                /* sealed inputs: the run they belong to, else 0 */
    const void *src;             /* sealed inputs: the caller's bytes they copy */
};

struct range {
    uintptr_t base;
    size_t size;
};

#define MAX_LISTENERS 4096

static struct {
    pthread_mutex_t lock;
    struct object *objects;      /* live ones, allocations and sealed inputs alike */
    size_t n, cap;
    struct range *freed;         /* allocations freed: reserved, never reused */
    size_t n_freed, cap_freed;
    uint64_t next_id;
    struct { void (*fn)(void *); void *arg; } listeners[MAX_LISTENERS];
    size_t n_listeners;
} reg = { .lock = PTHREAD_MUTEX_INITIALIZER, .next_id = 1 };

/* Whether any allocation was ever made: the task checks cost nothing in a program that never
 * asks for shared memory. */
static _Atomic bool ever_allocated;
static _Atomic uint64_t generation;   /* changes whenever an object dies */
static _Atomic bool ever_sealed;      /* whether any sealed copy was made: pj__shared_forget_src */
static _Atomic uint64_t last_run;

/* A forked worker that builds tasks itself (a nested run) reaches these tables too: the lock
 * must not be copied held by a thread that does not exist there. */
static void lock_for_fork(void)
{
    pthread_mutex_lock(&reg.lock);
}

static void unlock_after_fork(void)
{
    pthread_mutex_unlock(&reg.lock);
}

static void install_fork_handlers(void)
{
    pthread_atfork(lock_for_fork, unlock_after_fork, unlock_after_fork);
}

static void lock(void)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, install_fork_handlers);
    pthread_mutex_lock(&reg.lock);
}

static bool grow(void **p, size_t *cap, size_t n, size_t elem)
{
    if (n < *cap)
        return true;
    size_t c = *cap ? *cap * 2 : 16;
    void *q = realloc(*p, c * elem);
    if (!q)
        return false;
    *p = q;
    *cap = c;
    return true;
}

/* ---- how much memory the machine gives ------------------------------------------------------ */

/* The memory.max of this process's cgroup v2 and its ancestors, the smallest; ULLONG_MAX when
 * none is set or there is no cgroup v2. */
static unsigned long long cgroup_memory_max(void)
{
    char line[PATH_MAX], dir[PATH_MAX + 32], file[PATH_MAX + 48];
    unsigned long long best = ULLONG_MAX;
    FILE *f = fopen("/proc/self/cgroup", "re");
    if (!f)
        return best;
    bool found = false;
    while (fgets(line, sizeof line, f))
        if (strncmp(line, "0::", 3) == 0) {
            line[strcspn(line, "\n")] = 0;
            snprintf(dir, sizeof dir, "/sys/fs/cgroup%s", line + 3);
            found = true;
            break;
        }
    fclose(f);
    while (found) {
        snprintf(file, sizeof file, "%s/memory.max", dir);
        FILE *m = fopen(file, "re");
        unsigned long long v;
        if (m) {
            if (fscanf(m, "%llu", &v) == 1 && v < best)
                best = v;
            fclose(m);
        }
        char *slash = strrchr(dir, '/');
        if (!slash || slash <= dir + strlen("/sys/fs/cgroup"))
            break;
        *slash = 0;
    }
    return best;
}

/* Refuses what the machine cannot give: more than its memory, or than its memory cgroup may
 * use.  A memfd would accept any size (its pages come when first touched) and the task that
 * touched the page too many would be killed, far from the cause. */
static int check_size(size_t size)
{
    long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
    unsigned long long ram = pages > 0 && page > 0 ? (unsigned long long)pages * page : ULLONG_MAX;
    unsigned long long cg = cgroup_memory_max();
    if (size > ram)
        return pj__set_last_error(PJ_ENOMEM, "pj_shared_alloc: %zu bytes is more than this "
                                  "machine's memory (%llu MiB)", size, ram >> 20);
    if (size > cg)
        return pj__set_last_error(PJ_ENOMEM, "pj_shared_alloc: %zu bytes is more than this "
                                  "process's memory cgroup allows (memory.max %llu MiB)",
                                  size, cg >> 20);
    return 0;
}

/* ---- the tables ----------------------------------------------------------------------------- */

static struct object *object_at_locked(uintptr_t p)
{
    for (size_t i = 0; i < reg.n; i++) {
        struct object *o = &reg.objects[i];
        if (o->base && p >= (uintptr_t)o->base && p - (uintptr_t)o->base < o->size)
            return o;
    }
    return NULL;
}

static const struct range *freed_at_locked(uintptr_t p)
{
    for (size_t i = 0; i < reg.n_freed; i++)
        if (p >= reg.freed[i].base && p - reg.freed[i].base < reg.freed[i].size)
            return &reg.freed[i];
    return NULL;
}

static void notify_locked(void)
{
    atomic_fetch_add(&generation, 1);
    for (size_t i = 0; i < reg.n_listeners; i++)
        reg.listeners[i].fn(reg.listeners[i].arg);
}

static void remove_locked(size_t i)
{
    close(reg.objects[i].fd);
    reg.objects[i] = reg.objects[--reg.n];
}

static int add_locked(struct object o)
{
    if (!grow((void **)&reg.objects, &reg.cap, reg.n, sizeof *reg.objects))
        return PJ_ENOMEM;
    o.id = reg.next_id++;
    reg.objects[reg.n++] = o;
    return 0;
}

/* ---- allocations ---------------------------------------------------------------------------- */

void *pj_shared_alloc(size_t size)
{
    if (size == 0) {
        pj__set_last_error(PJ_EINVAL, "pj_shared_alloc: size 0");
        return NULL;
    }
    if (check_size(size))
        return NULL;
    int fd = memfd_create("parjob-shared", MFD_CLOEXEC | MFD_ALLOW_SEALING);
    if (fd < 0 || ftruncate(fd, (off_t)size) ||
        fcntl(fd, F_ADD_SEALS, F_SEAL_GROW | F_SEAL_SHRINK | F_SEAL_SEAL)) {
        int e = errno;
        if (fd >= 0)
            close(fd);
        pj__set_last_error(e == ENOMEM || e == ENOSPC || e == EFBIG ? PJ_ENOMEM : PJ_ESYS,
                           "pj_shared_alloc: cannot create %zu bytes of shared memory: %s",
                           size, strerror(e));
        return NULL;
    }
    void *m = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (m == MAP_FAILED) {
        int e = errno;
        close(fd);
        pj__set_last_error(e == ENOMEM ? PJ_ENOMEM : PJ_ESYS, "pj_shared_alloc: cannot map "
                           "%zu bytes of shared memory: %s", size, strerror(e));
        return NULL;
    }
    /* Forked workers map it from its descriptor when a task needs it (sharing.c): inherited,
     * a mapping would outlive pj_shared_free in every long-lived worker. */
    madvise(m, size, MADV_DONTFORK);
    madvise(m, size, MADV_HUGEPAGE); /* where shmem_enabled lets a memfd have them */
    lock();
    int rc = add_locked((struct object){ .fd = fd, .base = m, .size = size });
    pthread_mutex_unlock(&reg.lock);
    if (rc) {
        munmap(m, size);
        close(fd);
        pj__set_last_error(PJ_ENOMEM, "pj_shared_alloc: out of memory");
        return NULL;
    }
    atomic_store(&ever_allocated, true);
    return m;
}

int pj_shared_free(void *p)
{
    if (!p)
        return 0;
    lock();
    size_t i = 0;
    while (i < reg.n && reg.objects[i].base != p)
        i++;
    if (i == reg.n) {
        bool freed = freed_at_locked((uintptr_t)p) != NULL;
        pthread_mutex_unlock(&reg.lock);
        return pj__set_last_error(PJ_EINVAL, freed ? "pj_shared_free: %p was freed already"
                                  : "pj_shared_free: %p is not the start of a shared allocation",
                                  p);
    }
    struct object o = reg.objects[i];
    bool keep = grow((void **)&reg.freed, &reg.cap_freed, reg.n_freed, sizeof *reg.freed);
    /* The range stays reserved (no memory, no access): see the opening comment. */
    if (keep && mmap(p, o.size, PROT_NONE, MAP_FIXED | MAP_PRIVATE | MAP_ANONYMOUS |
                     MAP_NORESERVE, -1, 0) != MAP_FAILED)
        reg.freed[reg.n_freed++] = (struct range){ (uintptr_t)p, o.size };
    else
        munmap(p, o.size);
    remove_locked(i);
    notify_locked();
    pthread_mutex_unlock(&reg.lock);
    return 0;
}

/* ---- what the codec and the task checks ask ------------------------------------------------- */

int pj__shared_find(const void *p, size_t len, struct pj__shared_ref *out, char *why,
                    size_t n)
{
    if (!p || !atomic_load_explicit(&ever_allocated, memory_order_relaxed))
        return 0;
    uintptr_t a = (uintptr_t)p;
    lock();
    const struct object *o = object_at_locked(a);
    int rc = 0;
    if (o && len > o->size - (a - (uintptr_t)o->base)) {
        snprintf(why, n, "its %zu bytes from offset %zu run past the end of their shared "
                 "allocation (%zu bytes, pj_shared_alloc)", len, (size_t)(a - (uintptr_t)o->base),
                 o->size);
        rc = PJ_EINVAL;
    } else if (o) {
        *out = (struct pj__shared_ref){ o->id, a - (uintptr_t)o->base, o->size, false };
        rc = 1;
    } else if (freed_at_locked(a)) {
        snprintf(why, n, "it points into a shared allocation freed with pj_shared_free");
        rc = PJ_EINVAL;
    }
    pthread_mutex_unlock(&reg.lock);
    return rc;
}

/* Writes all of src[0..len) to fd (pwrite: a memfd takes any size at once, but a write may
 * still be cut short). */
static int fill(int fd, const unsigned char *src, size_t len)
{
    size_t done = 0;
    while (done < len) {
        size_t chunk = len - done < ((size_t)1 << 30) ? len - done : (size_t)1 << 30;
        ssize_t k = pwrite(fd, src + done, chunk, (off_t)done);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0)
            return k < 0 ? errno : ENOSPC;
        done += (size_t)k;
    }
    return 0;
}

/* A sealed copy of src[0..len): a memfd nobody can write, grow or shrink any more, so a
 * worker that maps it can trust it stays as it is, and one that writes faults. */
static int seal_new(const void *src, size_t len, int *fd, char *err, size_t errlen)
{
    *fd = memfd_create("parjob-input", MFD_CLOEXEC | MFD_ALLOW_SEALING);
    int e = *fd < 0 ? errno : 0;
    if (!e && ftruncate(*fd, (off_t)len))
        e = errno;
    if (!e)
        e = fill(*fd, src, len);
    if (!e && fcntl(*fd, F_ADD_SEALS, F_SEAL_WRITE | F_SEAL_GROW | F_SEAL_SHRINK | F_SEAL_SEAL))
        e = errno;
    if (!e)
        return 0;
    if (*fd >= 0)
        close(*fd);
    snprintf(err, errlen, "cannot place a %zu-byte input in shared memory (max_nbytes): %s",
             len, strerror(e));
    return e == ENOMEM || e == ENOSPC ? PJ_ENOMEM : PJ_ESYS;
}

int pj__shared_seal(uint64_t run, const void *src, size_t len, struct pj__shared_ref *out,
                    char *err, size_t errlen)
{
    lock();
    /* A slice of an input placed already is a reference into its copy: tasks that each take
     * a part of one array share the array's one copy. */
    uintptr_t a = (uintptr_t)src;
    for (size_t i = 0; i < reg.n; i++) {
        const struct object *o = &reg.objects[i];
        uintptr_t at = (uintptr_t)o->src;
        if (!o->base && o->src && o->run == run && a >= at && a - at <= o->size &&
            len <= o->size - (a - at)) {
            *out = (struct pj__shared_ref){ o->id, a - at, o->size, true };
            pthread_mutex_unlock(&reg.lock);
            return 0;
        }
    }
    /* Copied under the lock: two pools of one run cannot place the same input twice. */
    int fd, rc = seal_new(src, len, &fd, err, errlen);
    if (!rc && (rc = add_locked((struct object){ .fd = fd, .size = len, .run = run,
                                                 .src = src }))) {
        close(fd);
        snprintf(err, errlen, "out of memory");
    }
    if (!rc)
        *out = (struct pj__shared_ref){ reg.objects[reg.n - 1].id, 0, len, true };
    if (!rc)
        atomic_store(&ever_sealed, true);
    pthread_mutex_unlock(&reg.lock);
    return rc;
}

void pj__shared_forget_src(const void *p, size_t len)
{
    if (!p || !atomic_load_explicit(&ever_sealed, memory_order_relaxed))
        return;
    uintptr_t a = (uintptr_t)p;
    lock();
    for (size_t i = 0; i < reg.n; i++) {
        struct object *o = &reg.objects[i];
        uintptr_t at = (uintptr_t)o->src;
        if (!o->base && o->src && at >= a && at - a < (len ? len : 1))
            o->src = NULL; /* the copy lives on for the tasks that named it, found by no one */
    }
    pthread_mutex_unlock(&reg.lock);
}

uint64_t pj__shared_new_run(void)
{
    return atomic_fetch_add(&last_run, 1) + 1;
}

void pj__shared_run_end(uint64_t run)
{
    if (!run)
        return;
    lock();
    bool dropped = false;
    for (size_t i = reg.n; i-- > 0;)
        if (!reg.objects[i].base && reg.objects[i].run == run) {
            remove_locked(i);
            dropped = true;
        }
    if (dropped)
        notify_locked();
    pthread_mutex_unlock(&reg.lock);
}

int pj__shared_fd(uint64_t id)
{
    lock();
    int fd = -1;
    for (size_t i = 0; i < reg.n && fd < 0; i++)
        if (reg.objects[i].id == id)
            fd = fcntl(reg.objects[i].fd, F_DUPFD_CLOEXEC, 3);
    pthread_mutex_unlock(&reg.lock);
    return fd;
}

bool pj__shared_live(uint64_t id)
{
    lock();
    bool live = false;
    for (size_t i = 0; i < reg.n && !live; i++)
        live = reg.objects[i].id == id;
    pthread_mutex_unlock(&reg.lock);
    return live;
}

uint64_t pj__shared_generation(void)
{
    return atomic_load(&generation);
}

int pj__shared_listen(void (*fn)(void *), void *arg)
{
    lock();
    int rc = reg.n_listeners < MAX_LISTENERS ? 0 : PJ_ENOMEM;
    if (!rc)
        reg.listeners[reg.n_listeners].fn = fn, reg.listeners[reg.n_listeners++].arg = arg;
    pthread_mutex_unlock(&reg.lock);
    return rc;
}

void pj__shared_unlisten(void (*fn)(void *), void *arg)
{
    lock();
    for (size_t i = 0; i < reg.n_listeners; i++)
        if (reg.listeners[i].fn == fn && reg.listeners[i].arg == arg) {
            reg.listeners[i] = reg.listeners[--reg.n_listeners];
            break;
        }
    pthread_mutex_unlock(&reg.lock);
}

int pj__shared_check_task(const pj_task *t, char *why, size_t n)
{
    if (!t->bufs || !atomic_load_explicit(&ever_allocated, memory_order_relaxed))
        return 0;
    for (unsigned a = 0; a < t->fn->nargs; a++) {
        const pj_buf *b = &t->bufs[a];
        if (b->kind != PJ_BUF_IN && b->kind != PJ_BUF_OUT && b->kind != PJ_BUF_INOUT)
            continue;
        struct pj__shared_ref ref;
        char what[200];
        if (pj__shared_find(b->ptr, b->len, &ref, what, sizeof what) < 0) {
            snprintf(why, n, "argument %u: %s", a, what);
            return PJ_EINVAL;
        }
    }
    return 0;
}
