/* Shared objects between a parent and its worker processes: which objects each worker has been
 * handed (the parent's side, one struct pj__peer per slot) and what a worker maps (struct
 * pj__mappings).  The objects themselves — pj_shared_alloc's allocations and the sealed copies
 * of large inputs — are core's registry (src/core/shared.c); the codec sends (object, offset)
 * for a buffer that lies in one (codec.c, pj__sharing_place).
 *
 * The rule that keeps a worker from meeting an object it does not know: before a batch goes to
 * a worker, the pool hands it every object the batch names that it lacks (the transport's share
 * method: a SHARE message and the descriptor), on the same ordered channel, so the worker maps
 * them before it reads the batch.  Each object is handed to a worker once, however many tasks
 * and batches name it.  When an object dies (pj_shared_free, the end of the run that placed a
 * sealed copy), the registry's generation changes and wakes the pools; each tells the workers
 * that hold it to unmap it (UNSHARE), so the memory goes once the last of them has.
 *
 * A worker maps a sealed input read-only.  A task that writes into it faults; the handler here
 * notes in the region which object it was before the worker dies of the signal as any crash
 * does, so that the parent can say the task wrote into a read-only input rather than report a
 * bare SIGSEGV. */
#include "process.h"

#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

/* ---- the parent's side: what a worker holds ------------------------------------------------- */

static bool peer_has(const struct pj__peer *pr, uint64_t id)
{
    for (size_t i = 0; i < pr->n; i++)
        if (pr->ids[i] == id)
            return true;
    return false;
}

void pj__peer_sweep(struct pj__peer *pr, const struct pj__transport_ops *tr,
                    struct pj__transport *t, int slot)
{
    uint64_t gen = pj__shared_generation();
    if (gen == pr->gen)
        return;
    pr->gen = gen;
    for (size_t i = pr->n; i-- > 0;) {
        if (pj__shared_live(pr->ids[i]))
            continue;
        struct { struct pj__msg_header h; uint64_t id; } msg = {
            pj__frame_header(PJ__MSG_UNSHARE, PJ__FRAME_UNSHARE_LEN), pr->ids[i] };
        tr->send(t, slot, &msg, sizeof msg); /* a dead worker shows as EOF */
        pr->ids[i] = pr->ids[--pr->n];
    }
}

struct handing {
    struct pj__peer *pr;
    const struct pj__transport_ops *tr;
    struct pj__transport *t;
    int slot;
    int rc;
    char *err;
    size_t errlen;
};

static void hand_one(struct handing *h, const struct pj__shared_ref *ref)
{
    struct pj__peer *pr = h->pr;
    if (h->rc || peer_has(pr, ref->id))
        return;
    if (pr->n == pr->cap) {
        size_t cap = pr->cap ? pr->cap * 2 : 8;
        uint64_t *ids = realloc(pr->ids, cap * sizeof *ids);
        if (!ids) {
            h->rc = PJ_ENOMEM;
            snprintf(h->err, h->errlen, "out of memory handing shared memory to a worker");
            return;
        }
        pr->ids = ids;
        pr->cap = cap;
    }
    int fd = pj__shared_fd(ref->id);
    if (fd < 0) {
        h->rc = PJ_EINVAL;
        snprintf(h->err, h->errlen, "a buffer's shared allocation was freed (pj_shared_free) "
                 "while the run used it");
        return;
    }
    h->tr->share(h->t, h->slot, ref->id, fd, ref->size, ref->readonly);
    close(fd);
    pr->ids[pr->n++] = ref->id;
}

int pj__peer_hand(struct pj__peer *pr, const struct pj__sharing *sh, pj_task *const *tasks,
                  size_t begin, size_t end, const struct pj__transport_ops *tr,
                  struct pj__transport *t, int slot, char *err, size_t errlen)
{
    pj__peer_sweep(pr, tr, t, slot);
    struct handing h = { pr, tr, t, slot, 0, err, errlen };
    for (size_t i = begin; i < end && !h.rc; i++) {
        const pj_task *task = tasks[i];
        for (unsigned a = 0; task->bufs && a < task->fn->nargs && !h.rc; a++) {
            struct pj__shared_ref ref;
            int placed = pj__sharing_place(sh, &task->bufs[a], &ref, err, errlen);
            if (placed < 0)
                h.rc = placed;
            else if (placed)
                hand_one(&h, &ref);
        }
    }
    return h.rc;
}

void pj__peer_forget(struct pj__peer *pr)
{
    pr->n = 0;
}

void pj__peer_free(struct pj__peer *pr)
{
    free(pr->ids);
    *pr = (struct pj__peer){ 0 };
}

/* ---- the worker's side: what it maps -------------------------------------------------------- */

struct mapping {
    uint64_t id;
    unsigned char *addr;
    uint64_t size;
    bool readonly;
};

/* The one worker of this process, for the fault handler (a worker process serves one pool). */
static struct pj__mappings *faulting;

/* A write into a read-only mapping: note which before dying of the signal.  SA_RESETHAND has
 * put the default action back, and the signal raised again here is delivered as the handler
 * returns (a fault would also come again), so the worker dies by SIGSEGV as it would have —
 * also for one sent by kill or raise: the parent sees the crash, and reads the note. */
static void on_fault(int sig, siginfo_t *si, void *ctx)
{
    (void)ctx;
    struct pj__mappings *m = faulting;
    uintptr_t a = (uintptr_t)si->si_addr;
    for (size_t i = 0; m && si->si_code > 0 && i < m->n; i++) {
        const struct mapping *e = &m->at[i];
        if (e->readonly && a >= (uintptr_t)e->addr && a - (uintptr_t)e->addr < e->size)
            atomic_store(&m->shm->readonly_fault, e->id + 1);
    }
    raise(sig);
}

static void watch_faults(struct pj__mappings *m)
{
    if (m->watching)
        return;
    m->watching = true;
    faulting = m;
    struct sigaction sa = { .sa_sigaction = on_fault, .sa_flags = SA_SIGINFO | SA_RESETHAND };
    sigemptyset(&sa.sa_mask);
    sigaction(SIGSEGV, &sa, NULL);
}

int pj__mappings_share(struct pj__mappings *m, const unsigned char *body, size_t len, int fd)
{
    uint64_t id, size;
    bool readonly;
    if (fd < 0 || !pj__frame_share(body, len, &id, &size, &readonly) || size > SIZE_MAX)
        return -1;
    for (size_t i = 0; i < m->n; i++)
        if (m->at[i].id == id)
            return -1; /* handed twice: the parent lost count */
    if (m->n == m->cap) {
        size_t cap = m->cap ? m->cap * 2 : 8;
        struct mapping *at = realloc(m->at, cap * sizeof *at);
        if (!at)
            return -1;
        m->at = at;
        m->cap = cap;
    }
    /* A sealed input is read whole by the tasks that name it, as a rule: its page tables are
     * filled at once (MAP_POPULATE), cheaper than a fault per page.  An allocation may be
     * used a slice per worker: its pages come when touched. */
    void *p = mmap(NULL, (size_t)size, readonly ? PROT_READ : PROT_READ | PROT_WRITE,
                   MAP_SHARED | (readonly ? MAP_POPULATE : 0), fd, 0);
    if (p == MAP_FAILED)
        return -1;
    madvise(p, (size_t)size, MADV_HUGEPAGE); /* where shmem_enabled allows: fewer TLB misses */
    m->at[m->n++] = (struct mapping){ id, p, size, readonly };
    if (readonly)
        watch_faults(m);
    return 0;
}

int pj__mappings_unshare(struct pj__mappings *m, const unsigned char *body, size_t len)
{
    uint64_t id;
    if (len != PJ__FRAME_UNSHARE_LEN)
        return -1;
    memcpy(&id, body, sizeof id);
    for (size_t i = 0; i < m->n; i++)
        if (m->at[i].id == id) {
            munmap(m->at[i].addr, (size_t)m->at[i].size);
            m->at[i] = m->at[--m->n];
            return 0;
        }
    return -1;
}

unsigned char *pj__mapping_at(const struct pj__mappings *m, uint64_t id, uint64_t offset,
                              uint64_t len, bool writable)
{
    for (size_t i = 0; i < m->n; i++) {
        const struct mapping *e = &m->at[i];
        if (e->id != id)
            continue;
        if (offset > e->size || len > e->size - offset || (writable && e->readonly))
            return NULL;
        return e->addr + offset;
    }
    return NULL;
}

void pj__mappings_free(struct pj__mappings *m)
{
    for (size_t i = 0; i < m->n; i++)
        munmap(m->at[i].addr, (size_t)m->at[i].size);
    free(m->at);
    if (faulting == m)
        faulting = NULL;
    m->at = NULL;
    m->n = m->cap = 0;
}
