/* The MPI transport, rank 0's side: the pool's slots (procpool.c, unchanged) are local worker
 * processes of the worker ranks, reached over MPI (mpi_link.c).
 *
 * Slot i lives on worker rank 1 + i % (size - 1), as that rank's local slot i / (size - 1):
 * round-robin, so n_jobs = 2 on two worker ranks is one worker each, and on one rank two local
 * workers.  Each worker rank is a supervisor (supervisor_mpi.c) that runs its slots' workers
 * as spawned processes over the local transport and relays, per batch and per event:
 *  - send: whole messages as DATA; a batch the pool encoded into the region's input half
 *    (BATCH_SHM) goes as a plain BATCH with that body.  DATA carries the record half the pool
 *    chose and whether the batch has a deadline;
 *  - the region stays the pool's view, here in rank 0's memory: a BYTES message that brings
 *    a worker's DONE first brings the records the worker committed to its half, copied into
 *    the same half here before the DONE is received; END (the worker died or was reaped)
 *    brings its cell and the records committed so far, so crash attribution and "no finished
 *    task lost" work as locally.  For batches with a deadline the rank mirrors the cell as
 *    tasks start (CELL): the dispatcher's watchdog reads it here, and its claim (a CAS here)
 *    is never overwritten;
 *  - the cancel flag the pool raises in a region is sent (CANCEL) when wait next runs;
 *  - kill is KILL (SIGKILL of the local worker by its supervisor); reap is REAP, answered by
 *    END with the worker's wait status;
 *  - a worker rank silent for PJ__MPI_LOST_NS (it died: MPI tells nothing over shared
 *    memory) ends all its slots with SIGKILL's status, refuses new starts, and says so to the
 *    pool (lost):
 *    the run fails with PJ_ECRASHED and a message naming the rank — which task was running
 *    there is not known, so none is blamed, and none is re-run as if nothing happened.
 *
 * The ranks as a whole (rank 0 of a job with worker ranks, one pool at a time, their CPUs)
 * are ranks_mpi.c's.
 *
 * Threads: the pool's I/O thread calls everything but kill and wake; the link thread delivers
 * (deliver); kill comes from the watchdog too.  t->lock guards every slot's receive buffer,
 * ended, status and the ready list; deliver copies records into a region under it. */
#include "mpi_link.h"

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <unistd.h>

#define ANSWER_NS (30000ull * 1000000ull) /* OPEN, REAP, CLOSE answered within */
#define TIMEOUT_AT 24                    /* the batch body's u64 timeout_ns (codec.c) */

struct mpi_slot {
    int rank, local;
    void *tag;
    bool live;                   /* started, END not yet received */
    bool ended;                  /* END came (or the rank was lost): receive returns 0 */
    bool listed;                 /* on the ready list */
    int status;
    int cancel_sent;
    uint64_t cell_last;          /* the running value last mirrored into the region */
    unsigned char *rx;           /* bytes received, not yet taken by receive */
    size_t rx_len, rx_at, rx_cap;
    struct pj__shm *shm;
};

struct pj__transport {
    struct pj__mpi_link *link;
    int n, workers;              /* slots, worker ranks */
    struct mpi_slot *slots;
    unsigned char *regions;
    size_t regions_len;
    pthread_mutex_t lock;
    int wake_fd;
    int *ready, n_ready;         /* slot numbers with news */
    int *opened;                 /* per worker rank: 0 waiting, 1 ok, < 0 PJ_E code */
    int *closed;
    _Atomic bool *lost;          /* per rank; read by kill on the watchdog's thread too */
    char why[256];               /* a worker rank's refusal of OPEN */
    pid_t next_id;
    uint32_t pool;               /* this pool's number, in every message */
};

static _Atomic uint32_t pools_opened;

static int mpi_open(struct pj__transport **out, int n, const struct pj__proc_ops *ops,
                    const struct pj__inner *inner, char *err, size_t errlen);
static struct pj__shm *mpi_region(struct pj__transport *t, int i);
static pid_t mpi_start(struct pj__transport *t, int i, void *tag, char *err, size_t errlen);
static void mpi_send(struct pj__transport *t, int i, const void *msg, size_t len);
static ssize_t mpi_receive(struct pj__transport *t, int i, void *buf, size_t cap);
static int mpi_wait(struct pj__transport *t, void **tags, int max, int timeout_ms);
static void mpi_wake(struct pj__transport *t);
static void mpi_kill(struct pj__transport *t, int i);
static int mpi_reap(struct pj__transport *t, int i);
static void mpi_close(struct pj__transport *t);
static int mpi_lost(struct pj__transport *t, int i, char *err, size_t errlen);

const struct pj__transport_ops pj__transport_mpi = {
    .name = "mpi",
    .open = mpi_open,
    .region = mpi_region,
    .start = mpi_start,
    .send = mpi_send,
    .receive = mpi_receive,
    .wait = mpi_wait,
    .wake = mpi_wake,
    .kill = mpi_kill,
    .reap = mpi_reap,
    .close = mpi_close,
    .lost = mpi_lost,
};

static void post(struct pj__transport *t, struct mpi_slot *s, uint32_t op, uint64_t a,
                 uint64_t b)
{
    struct pj__mpi_head h = { .op = op, .slot = (uint32_t)s->local, .pool = t->pool, .a = a,
                              .b = b };
    pj__mpi_post(t->link, s->rank, &h, NULL, 0);
}

/* ---- what the worker ranks send (the link thread) ------------------------------------------ */

/* Under t->lock. */
static void list_ready(struct pj__transport *t, struct mpi_slot *s)
{
    if (s->listed)
        return;
    s->listed = true;
    t->ready[t->n_ready++] = (int)(s - t->slots);
}

static bool rx_append(struct mpi_slot *s, const unsigned char *p, size_t n)
{
    if (s->rx_at == s->rx_len)
        s->rx_at = s->rx_len = 0;
    if (s->rx_len + n > s->rx_cap) {
        size_t cap = s->rx_cap * 2 > s->rx_len + n ? s->rx_cap * 2 : s->rx_len + n;
        unsigned char *grown = realloc(s->rx, cap);
        if (!grown)
            return false;
        s->rx = grown;
        s->rx_cap = cap;
    }
    memcpy(s->rx + s->rx_len, p, n);
    s->rx_len += n;
    return true;
}

/* Records a worker committed to half of its region, into the same half here. */
static void put_records(struct mpi_slot *s, int half, const unsigned char *p, size_t n)
{
    struct pj__area a = pj__shm_area(s->shm, half);
    if (n > a.cap)
        n = 0; /* cannot be: the worker's half is as big; the records are lost as a crash's */
    memcpy(a.data, p, n);
    atomic_store_explicit(a.used, n, memory_order_release);
}

/* The cell as the worker's, unless the watchdog claimed the task here (its claim stands). */
static void mirror_cell(struct mpi_slot *s, uint64_t running)
{
    uint64_t expected = s->cell_last;
    if (running & ~PJ__CELL_RETURNED && !(expected & PJ__CELL_STOPPED))
        atomic_store(&s->shm->cell.started_ns, pj__now_ns());
    if (atomic_compare_exchange_strong(&s->shm->cell.running, &expected, running))
        s->cell_last = running;
}

static void slot_news(struct pj__transport *t, struct mpi_slot *s, const struct pj__mpi_head *h,
                      const unsigned char *p, size_t len)
{
    if (!s->live)
        return; /* from a worker reaped already */
    switch (h->op) {
    case PJ__MPI_BYTES:
        if (h->b > len)
            break;
        if (h->b)
            put_records(s, (int)h->a, p, (size_t)h->b);
        if (!rx_append(s, p + h->b, len - (size_t)h->b))
            post(t, s, PJ__MPI_KILL, 0, 0); /* cannot hold it: lost, as a crash */
        list_ready(t, s);
        break;
    case PJ__MPI_CELL:
        mirror_cell(s, h->a);
        break;
    case PJ__MPI_END:
        if (len)
            put_records(s, atomic_load(&s->shm->half), p, len);
        if (!(atomic_load(&s->shm->cell.running) & PJ__CELL_STOPPED))
            mirror_cell(s, h->b);
        s->status = (int)h->a;
        s->ended = true;
        s->live = false;
        list_ready(t, s);
        break;
    }
}

static void rank_news(struct pj__transport *t, int src, const struct pj__mpi_head *h,
                      const unsigned char *p, size_t len)
{
    if (h->op == PJ__MPI_OPENED) {
        t->opened[src] = h->a ? -(int)(uint32_t)h->a : 1;
        if (h->a)
            snprintf(t->why, sizeof t->why, "%.*s", (int)(len < 255 ? len : 255),
                     (const char *)p);
    } else if (h->op == PJ__MPI_CLOSED) {
        t->closed[src] = 1;
    }
}

static void deliver(void *ctx, int src, const struct pj__mpi_head *h, const unsigned char *p,
                    size_t len)
{
    struct pj__transport *t = ctx;
    if (src < 1 || src > t->workers || h->pool != t->pool)
        return;
    pthread_mutex_lock(&t->lock);
    if (h->op == PJ__MPI_OPENED || h->op == PJ__MPI_CLOSED) {
        rank_news(t, src, h, p, len);
    } else {
        size_t i = (size_t)h->slot * (size_t)t->workers + (size_t)(src - 1);
        if (i < (size_t)t->n)
            slot_news(t, &t->slots[i], h, p, len);
    }
    pthread_mutex_unlock(&t->lock);
    mpi_wake(t);
}

/* A worker rank not heard from for PJ__MPI_LOST_NS is gone: its slots end as killed. */
static void check_ranks(struct pj__transport *t)
{
    for (int r = 1; r <= t->workers; r++) {
        if (atomic_load(&t->lost[r]) || pj__mpi_silent_ns(t->link, r) < PJ__MPI_LOST_NS)
            continue;
        pthread_mutex_lock(&t->lock);
        atomic_store(&t->lost[r], true);
        for (int i = r - 1; i < t->n; i += t->workers) {
            struct mpi_slot *s = &t->slots[i];
            if (!s->live)
                continue;
            s->live = false;
            s->ended = true;
            s->status = SIGKILL; /* waitpid's encoding of a death by SIGKILL */
            list_ready(t, s);
        }
        pthread_mutex_unlock(&t->lock);
    }
}

/* ---- waiting for answers (open, reap, close: the opening or the I/O thread) --------------- */

/* Up to ms for a delivery (deliver wakes wake_fd) or mpi_wake. */
static void sleep_on_wake(struct pj__transport *t, int ms)
{
    struct pollfd pfd = { .fd = t->wake_fd, .events = POLLIN };
    uint64_t v;
    if (poll(&pfd, 1, ms) > 0 && read(t->wake_fd, &v, sizeof v) < 0)
        v = 0; /* drained by another reader: as good */
}

/* Waits until done(t, arg) holds (checked under t->lock) or ANSWER_NS pass or the rank is
 * lost; whether it holds. */
static bool await(struct pj__transport *t, bool (*done)(struct pj__transport *, int), int arg,
                  int rank)
{
    uint64_t give_up = pj__now_ns() + ANSWER_NS;
    for (;;) {
        pthread_mutex_lock(&t->lock);
        bool ok = done(t, arg);
        pthread_mutex_unlock(&t->lock);
        if (ok)
            return true;
        check_ranks(t);
        if (pj__now_ns() > give_up || (rank > 0 && atomic_load(&t->lost[rank])))
            return false;
        sleep_on_wake(t, 50);
    }
}

static bool rank_opened(struct pj__transport *t, int r)
{
    return t->opened[r] != 0;
}

static bool rank_closed(struct pj__transport *t, int r)
{
    return t->closed[r] != 0;
}

static bool slot_ended(struct pj__transport *t, int i)
{
    return t->slots[i].ended;
}

/* ---- opening and closing ------------------------------------------------------------------- */

static void transport_free(struct pj__transport *t)
{
    if (t->link)
        pj__mpi_listen(t->link, NULL, NULL);
    for (int i = 0; t->slots && i < t->n; i++)
        free(t->slots[i].rx);
    if (t->regions)
        munmap(t->regions, t->regions_len);
    if (t->wake_fd >= 0)
        close(t->wake_fd);
    pthread_mutex_destroy(&t->lock);
    free(t->slots);
    free(t->ready);
    free(t->opened);
    free(t->closed);
    free((void *)t->lost);
    free(t);
    pj__mpi_ranks_release();
}

static int alloc_state(struct pj__transport *t, int n, char *err, size_t errlen)
{
    t->slots = calloc((size_t)n, sizeof *t->slots);
    t->ready = calloc((size_t)n, sizeof *t->ready);
    t->opened = calloc((size_t)t->workers + 1, sizeof *t->opened);
    t->closed = calloc((size_t)t->workers + 1, sizeof *t->closed);
    t->lost = calloc((size_t)t->workers + 1, sizeof *t->lost);
    if (!t->slots || !t->ready || !t->opened || !t->closed || !t->lost)
        return PJ_ENOMEM;
    /* The pool's regions, here only: anonymous memory, pages touched as used. */
    t->regions_len = (size_t)n * PJ__SHM_SIZE;
    void *m = mmap(NULL, t->regions_len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
                   -1, 0);
    if (m == MAP_FAILED) {
        snprintf(err, errlen, "cannot map the workers' regions (%zu MiB)", t->regions_len >> 20);
        return PJ_ESYS;
    }
    t->regions = m;
    for (int i = 0; i < n; i++) {
        t->slots[i] = (struct mpi_slot){
            .rank = 1 + i % t->workers, .local = i / t->workers,
            .shm = (struct pj__shm *)(t->regions + (size_t)i * PJ__SHM_SIZE),
        };
    }
    return 0;
}

/* The config's inner_max_num_threads back from rank 0's limit: each rank works out its
 * workers' share from its own CPUs. */
static int inner_request(const struct pj__inner *in)
{
    if (!in || !in->threads)
        return -1;
    return in->keep_set ? 0 : in->threads;
}

/* Tells every worker rank how many local slots it serves and waits for each to agree (the
 * same program: ELF build-id).  0, or the first refusal. */
static int open_ranks(struct pj__transport *t, int inner_limit, char *err, size_t errlen)
{
    struct pj__mpi_open o = { .order = 0x01020304u };
    o.id_len = (uint32_t)pj__main_build_id(o.id, sizeof o.id);
    snprintf(o.program, sizeof o.program, "%s", program_invocation_name);
    for (int r = 1; r <= t->workers; r++) {
        int local = t->n / t->workers + (r - 1 < t->n % t->workers);
        struct pj__mpi_head h = { .op = PJ__MPI_OPEN, .pool = t->pool, .a = (uint64_t)local,
                                  .b = (uint64_t)(int64_t)inner_limit };
        pj__mpi_post(t->link, r, &h, &o, sizeof o);
    }
    for (int r = 1; r <= t->workers; r++) {
        if (!await(t, rank_opened, r, r)) {
            snprintf(err, errlen, "MPI rank %d did not answer (is it running parjob's worker? "
                     "every rank but 0 must be started with the same program, PARJOB_MPI=1 "
                     "or PARJOB_BACKEND=mpi in its environment, or `mpi` among its "
                     "arguments)", r);
            return PJ_EBACKEND;
        }
        if (t->opened[r] < 0) {
            snprintf(err, errlen, "MPI rank %d refused: %s", r, t->why);
            return t->opened[r];
        }
    }
    return 0;
}

static int mpi_open(struct pj__transport **out, int n, const struct pj__proc_ops *ops,
                    const struct pj__inner *inner, char *err, size_t errlen)
{
    (void)ops;
    struct pj__mpi_link *link;
    int rc = pj__mpi_ranks_claim(&link, err, errlen); /* one pool at a time: the ranks' */
    if (rc)
        return rc;
    struct pj__transport *t = calloc(1, sizeof *t);
    if (!t) {
        pj__mpi_ranks_release();
        return PJ_ENOMEM;
    }
    pthread_mutex_init(&t->lock, NULL);
    t->n = n;
    t->link = link;
    t->pool = atomic_fetch_add(&pools_opened, 1) + 1;
    t->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    rc = t->wake_fd < 0 ? PJ_ESYS : 0;
    if (!rc) {
        t->workers = pj__mpi_size(t->link) - 1;
        if (t->workers > n)
            t->workers = n; /* ranks beyond n stay idle */
        rc = alloc_state(t, n, err, errlen);
    }
    bool told = false;
    if (!rc) {
        pj__mpi_listen(t->link, deliver, t);
        told = true;
        rc = open_ranks(t, inner_request(inner), err, errlen);
    }
    if (rc) {
        if (told) /* the ranks that agreed end what they opened */
            mpi_close(t);
        else
            transport_free(t);
        return rc;
    }
    *out = t;
    return 0;
}

static void mpi_close(struct pj__transport *t)
{
    for (int r = 1; r <= t->workers; r++)
        if (!atomic_load(&t->lost[r]))
            pj__mpi_post(t->link, r, &(struct pj__mpi_head){ .op = PJ__MPI_CLOSE,
                                                             .pool = t->pool }, NULL, 0);
    for (int r = 1; r <= t->workers; r++)
        if (!atomic_load(&t->lost[r]))
            await(t, rank_closed, r, r);
    transport_free(t);
}

/* ---- one worker ----------------------------------------------------------------------------- */

static struct pj__shm *mpi_region(struct pj__transport *t, int i)
{
    return t->slots[i].shm;
}

static pid_t mpi_start(struct pj__transport *t, int i, void *tag, char *err, size_t errlen)
{
    struct mpi_slot *s = &t->slots[i];
    check_ranks(t);
    if (atomic_load(&t->lost[s->rank])) {
        snprintf(err, errlen, "MPI rank %d has stopped answering (dead, or its node is)",
                 s->rank);
        return PJ_ECRASHED;
    }
    pthread_mutex_lock(&t->lock);
    s->tag = tag;
    s->live = true;
    s->ended = false;
    s->status = 0;
    s->cancel_sent = 0;
    s->cell_last = 0;
    s->rx_len = s->rx_at = 0;
    pthread_mutex_unlock(&t->lock);
    post(t, s, PJ__MPI_START, 0, 0);
    return ++t->next_id > 0 ? t->next_id : (t->next_id = 1);
}

/* The batch body of a message: where the pool encoded it (its input half) or in the message. */
static const unsigned char *batch_body(struct mpi_slot *s, const struct pj__msg_header *h,
                                       const unsigned char *body, size_t *len)
{
    if (h->type != PJ__MSG_BATCH_SHM) {
        *len = (size_t)h->len;
        return body;
    }
    return pj__area_batch_body(s->shm, body, (size_t)h->len, len);
}

static void mpi_send(struct pj__transport *t, int i, const void *msg, size_t len)
{
    struct mpi_slot *s = &t->slots[i];
    const unsigned char *p = msg;
    struct pj__msg_header h;
    while (len && pj__frame_next(p, len, &h) == 1) {
        size_t body_len = 0;
        const unsigned char *body = batch_body(s, &h, p + sizeof h, &body_len);
        uint32_t type = h.type == PJ__MSG_BATCH_SHM ? PJ__MSG_BATCH : h.type;
        uint64_t timeout = 0;
        if (body && (type == PJ__MSG_BATCH || type == PJ__MSG_INIT) && body_len >= TIMEOUT_AT + 8)
            memcpy(&timeout, body + TIMEOUT_AT, sizeof timeout);
        int cancel = atomic_load(&s->shm->cancel);
        s->cancel_sent = cancel;
        struct pj__mpi_head m = { .op = PJ__MPI_DATA, .slot = (uint32_t)s->local, .pool = t->pool,
                                  .a = (uint64_t)atomic_load(&s->shm->half),
                                  .b = (cancel ? 1u : 0u) | (timeout ? 2u : 0u) };
        struct pj__msg_header out = pj__frame_header(type, body ? body_len : 0);
        pj__mpi_post2(t->link, s->rank, &m, &out, sizeof out, body, body ? body_len : 0);
        p += sizeof h + h.len;
        len -= sizeof h + (size_t)h.len;
    }
}

static ssize_t mpi_receive(struct pj__transport *t, int i, void *buf, size_t cap)
{
    struct mpi_slot *s = &t->slots[i];
    pthread_mutex_lock(&t->lock);
    ssize_t k = -1;
    size_t have = s->rx_len - s->rx_at;
    if (have) {
        k = (ssize_t)(have < cap ? have : cap);
        memcpy(buf, s->rx + s->rx_at, (size_t)k);
        s->rx_at += (size_t)k;
    } else if (s->ended) {
        k = 0;
    }
    pthread_mutex_unlock(&t->lock);
    return k;
}

/* The cancel flags the pool raised since: a region here is not the worker's. */
static void pass_cancels(struct pj__transport *t)
{
    for (int i = 0; i < t->n; i++) {
        struct mpi_slot *s = &t->slots[i];
        int c = atomic_load(&s->shm->cancel);
        if (s->live && c != s->cancel_sent) {
            s->cancel_sent = c;
            post(t, s, PJ__MPI_CANCEL, (uint64_t)c, 0);
        }
    }
}

static int take_ready(struct pj__transport *t, void **tags, int max)
{
    pthread_mutex_lock(&t->lock);
    int k = 0;
    while (k < max && t->n_ready) {
        struct mpi_slot *s = &t->slots[t->ready[--t->n_ready]];
        s->listed = false;
        tags[k++] = s->tag;
    }
    pthread_mutex_unlock(&t->lock);
    return k;
}

static int mpi_wait(struct pj__transport *t, void **tags, int max, int timeout_ms)
{
    pass_cancels(t);
    check_ranks(t);
    int k = take_ready(t, tags, max);
    if (k)
        return k;
    /* Ranks are checked at least every second, so a lost one is seen in PJ__MPI_LOST_NS + 1 s. */
    sleep_on_wake(t, timeout_ms < 0 || timeout_ms > 1000 ? 1000 : timeout_ms);
    check_ranks(t);
    return take_ready(t, tags, max);
}

static void mpi_wake(struct pj__transport *t)
{
    uint64_t one = 1;
    ssize_t k = write(t->wake_fd, &one, sizeof one);
    (void)k;
}

static void mpi_kill(struct pj__transport *t, int i)
{
    struct mpi_slot *s = &t->slots[i];
    if (!atomic_load(&t->lost[s->rank]))
        post(t, s, PJ__MPI_KILL, 0, 0);
}

static int mpi_reap(struct pj__transport *t, int i)
{
    struct mpi_slot *s = &t->slots[i];
    pthread_mutex_lock(&t->lock);
    bool ended = s->ended;
    pthread_mutex_unlock(&t->lock);
    if (!ended && !atomic_load(&t->lost[s->rank])) {
        post(t, s, PJ__MPI_REAP, 0, 0);
        if (!await(t, slot_ended, i, s->rank))
            post(t, s, PJ__MPI_KILL, 0, 0);
    }
    pthread_mutex_lock(&t->lock);
    int st = s->ended ? s->status : SIGKILL;
    s->live = s->ended = false;
    s->rx_len = s->rx_at = 0;
    pthread_mutex_unlock(&t->lock);
    return st;
}

static int mpi_lost(struct pj__transport *t, int i, char *err, size_t errlen)
{
    int r = t->slots[i].rank;
    if (!atomic_load(&t->lost[r]))
        return 0;
    snprintf(err, errlen, "MPI rank %d stopped answering (%.1f s without a message: the rank or "
             "its node died); the tasks it was running are lost", r, PJ__MPI_LOST_NS / 1e9);
    return PJ_ECRASHED;
}
