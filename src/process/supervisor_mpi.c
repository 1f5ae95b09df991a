/* A worker rank of the mpi backend: claimed before main (startup.c's table), it serves in
 * main's place as a supervisor — a relay between rank 0's transport (transport_mpi.c, over the
 * MPI link) and worker processes of its own on this node, over the local transport
 * (transport_local.c) with spawn's launcher.  Tasks never run in the supervisor: a task that
 * crashes, exits or is killed for its deadline takes down one local worker, whose wait status
 * goes to rank 0 as that slot's END, and the MPI job goes on.
 *
 * Which ranks: a process that MPI started as a rank other than 0 (OMPI_COMM_WORLD_RANK, else
 * PMIX_RANK or PMI_RANK, in its environment), when the mpi backend is wanted: PARJOB_MPI=1,
 * PARJOB_BACKEND=mpi, or an argument that is exactly `mpi` (the examples' way of choosing a
 * backend).  PARJOB_MPI=0 says no: a program that runs under mpirun for MPI of its own and uses
 * parjob only with threads keeps all its ranks.  A supervisor sets PARJOB_MPI=0 for what it
 * starts, so nothing below it claims again.
 *
 * What it does with rank 0's messages (mpi_link.h): OPEN checks that this is rank 0's program
 * (ELF build-id), opens the local transport for that many slots and answers; START, DATA,
 * CANCEL, KILL, REAP act on one local slot; CLOSE ends them all;
 * QUIT ends the supervisor.  What a local worker sends goes back as BYTES, and a DONE takes the
 * records of its half with it; a worker's death is END with its status, its cell and the
 * records it committed.  For a batch with a deadline the cell is mirrored (CELL) as it changes.
 *
 * Exit: on QUIT (rank 0 is done: at its exit or MPI_Finalize), or when rank 0, once heard, has
 * been silent for ORPHAN_NS (it died; Open MPI tells no one over shared memory): the local
 * workers are killed (the local transport's close, and PR_SET_PDEATHSIG) and the process ends
 * with MPI_Abort — MPI_Finalize would wait for rank 0, and mpirun, told not to end the job
 * when a rank dies (orte_abort_on_non_zero_status=0, the way to survive a dead worker rank),
 * would wait for ever for the ranks that exited without it.  A rank 0 that never opens the
 * link (no mpi pool: it returned from main early, failed, used threads) would leave them in
 * MPI_Init for ever; so rank 0, when the same test says mpi is wanted, arranges at start-up
 * that its exit sends them QUIT (rank0_arrange_release, pj__mpi_release_unopened).
 *
 * Threads: the supervisor's loop runs on the thread that took main's place; the link thread
 * only queues messages into the inbox (inbox_lock) and wakes the loop. */
#include "mpi_link.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#define ORPHAN_NS (1200ull * 1000000ull) /* 12 missed pings: gone, with 0.8 s left of the 2 s
                                            in which its workers and it must be */
#define MIRROR_MS 1                      /* how often a deadline batch's cell is looked at */
#define IDLE_MS 100

struct inbox_msg {
    struct inbox_msg *next;
    struct pj__mpi_head h;
    size_t len;
    _Alignas(16) unsigned char payload[];
};

struct local {
    bool live;
    bool mirror;                 /* its batch has a deadline: mirror the cell */
    uint64_t cell_sent;
    unsigned char *rx;
    size_t rx_len, rx_cap;
};

struct supervisor {
    struct pj__mpi_link *link;
    pthread_mutex_t inbox_lock;
    struct inbox_msg *head, **tail;
    struct pj__transport *lt;    /* the local transport while a pool is open (inbox_lock to
                                    change, so the link thread wakes the right one) */
    int wake_fd;                 /* woken when no local transport is open */
    int n;
    struct local *slots;
    struct pj__inner inner;
    uint32_t pool;               /* the number of rank 0's pool served (OPEN's) */
    bool quit;
};

static const struct pj__proc_ops local_ops = {
    .transport = &pj__transport_local,
    .launch = pj__spawn_launch,
    .fnref = &pj__fnref_buildid,
    .startup = "the program's start-up on an MPI worker rank (every constructor; main never "
               "runs in a worker)",
};

/* ---- claim: before main ---------------------------------------------------------------------- */

static int env_rank(void)
{
    static const char *const vars[] = { "OMPI_COMM_WORLD_RANK", "PMIX_RANK", "PMI_RANK" };
    for (size_t i = 0; i < sizeof vars / sizeof *vars; i++) {
        const char *v = getenv(vars[i]);
        if (v && isdigit((unsigned char)*v))
            return atoi(v);
    }
    return -1;
}

/* Whether one of the program's arguments is exactly "mpi" (/proc/self/cmdline: the claim
 * runs before main, where argv may not be at hand). */
static bool mpi_argument(void)
{
    int fd = open("/proc/self/cmdline", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return false;
    char buf[8192];
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0)
        return false;
    buf[n] = 0;
    size_t first = strlen(buf) + 1; /* skip the program's name */
    for (size_t at = first; at < (size_t)n; at += strlen(buf + at) + 1)
        if (strcmp(buf + at, "mpi") == 0)
            return true;
    return false;
}

static bool mpi_wanted(void)
{
    const char *flag = getenv("PARJOB_MPI");
    if (flag && *flag)
        return strcmp(flag, "0") != 0;
    const char *backend = getenv("PARJOB_BACKEND");
    return (backend && strcmp(backend, "mpi") == 0) || mpi_argument();
}

/* The job's size from the launcher's environment; 0 when it does not say. */
static int env_size(void)
{
    static const char *const vars[] = { "OMPI_COMM_WORLD_SIZE", "PMI_SIZE" };
    for (size_t i = 0; i < sizeof vars / sizeof *vars; i++) {
        const char *v = getenv(vars[i]);
        if (v && isdigit((unsigned char)*v))
            return atoi(v);
    }
    return 0;
}

/* Rank 0, when its worker ranks were taken over before main: at its exit, if it never opened
 * the link (no mpi pool, no CPU query), they are still waiting for it — in MPI_Init, whose
 * fence Open MPI spins on until every rank has called it — and are told to quit
 * (pj__mpi_release_unopened).  In this process only: not in a fork of it, nor in a program it
 * starts with this environment (RANK0_MARK names rank 0's pid). */
#define RANK0_MARK "PARJOB_MPI_RANK0_PID"
static pid_t rank0_pid;

static void release_at_exit(void)
{
    if (getpid() == rank0_pid && !pj__process_is_worker)
        pj__mpi_release_unopened();
}

static void rank0_arrange_release(void)
{
    const char *mark = getenv(RANK0_MARK);
    if ((mark && *mark) || env_size() == 1 || !mpi_wanted())
        return;
    char pid[24];
    snprintf(pid, sizeof pid, "%ld", (long)getpid());
    setenv(RANK0_MARK, pid, 1);
    rank0_pid = getpid();
    atexit(release_at_exit);
}

static bool mpi_claim(void)
{
    int rank = env_rank();
    if (rank == 0)
        rank0_arrange_release();
    if (rank <= 0 || !mpi_wanted())
        return false;
    /* What this rank starts (its local workers, a task's programs) must not claim again. */
    setenv("PARJOB_MPI", "0", 1);
    return true;
}

/* ---- the inbox (link thread in, loop out) ---------------------------------------------------- */

static void wake_loop_locked(struct supervisor *s)
{
    if (s->lt) {
        pj__transport_local.wake(s->lt);
    } else {
        uint64_t one = 1;
        ssize_t k = write(s->wake_fd, &one, sizeof one);
        (void)k;
    }
}

static void to_inbox(void *ctx, int src, const struct pj__mpi_head *h, const unsigned char *p,
                     size_t len)
{
    struct supervisor *s = ctx;
    if (src != 0)
        return;
    struct inbox_msg *m = malloc(sizeof *m + len);
    if (!m)
        return; /* rank 0 sees the slot stop answering; nothing better to do without memory */
    m->next = NULL;
    m->h = *h;
    m->len = len;
    memcpy(m->payload, p, len);
    pthread_mutex_lock(&s->inbox_lock);
    *s->tail = m;
    s->tail = &m->next;
    wake_loop_locked(s);
    pthread_mutex_unlock(&s->inbox_lock);
}

static struct inbox_msg *inbox_take(struct supervisor *s)
{
    pthread_mutex_lock(&s->inbox_lock);
    struct inbox_msg *m = s->head;
    s->head = NULL;
    s->tail = &s->head;
    pthread_mutex_unlock(&s->inbox_lock);
    return m;
}

/* ---- to rank 0 ------------------------------------------------------------------------------- */

static void post(struct supervisor *s, uint32_t op, int slot, uint64_t a, uint64_t b,
                 const void *p1, size_t n1, const void *p2, size_t n2)
{
    struct pj__mpi_head h = { .op = op, .slot = (uint32_t)slot, .pool = s->pool, .a = a,
                              .b = b };
    pj__mpi_post2(s->link, 0, &h, p1, n1, p2, n2);
}

/* The records local worker j committed to its current half. */
static struct pj__area current_area(struct supervisor *s, int j, uint64_t *used)
{
    struct pj__shm *shm = pj__transport_local.region(s->lt, j);
    struct pj__area a = pj__shm_area(shm, atomic_load(&shm->half));
    *used = atomic_load_explicit(a.used, memory_order_acquire);
    if (*used > a.cap)
        *used = 0;
    return a;
}

/* Local worker j's channel ended, or rank 0 asked: reap it and say so. */
static void end_local(struct supervisor *s, int j)
{
    struct local *l = &s->slots[j];
    if (!l->live)
        return;
    int st = pj__transport_local.reap(s->lt, j);
    l->live = false;
    l->rx_len = 0;
    uint64_t used;
    struct pj__area a = current_area(s, j, &used);
    uint64_t running = atomic_load(&pj__transport_local.region(s->lt, j)->cell.running);
    post(s, PJ__MPI_END, j, (uint64_t)(unsigned)st, running, a.data, used, NULL, 0);
}

/* Whole messages out of slot j's bytes, each to rank 0; a DONE takes its half's records. */
static void forward(struct supervisor *s, int j)
{
    struct local *l = &s->slots[j];
    size_t at = 0;
    struct pj__msg_header h;
    int whole;
    while ((whole = pj__frame_next(l->rx + at, l->rx_len - at, &h)) == 1) {
        size_t n = sizeof h + (size_t)h.len;
        uint64_t used = 0;
        struct pj__area a = { 0 };
        if (h.type == PJ__MSG_DONE)
            a = current_area(s, j, &used);
        struct pj__shm *shm = pj__transport_local.region(s->lt, j);
        post(s, PJ__MPI_BYTES, j, (uint64_t)atomic_load(&shm->half), used, a.data, used,
             l->rx + at, n);
        at += n;
    }
    if (whole < 0) { /* a worker that breaks the protocol is ended, as the pool does */
        pj__transport_local.kill(s->lt, j);
        end_local(s, j);
        return;
    }
    memmove(l->rx, l->rx + at, l->rx_len - at);
    l->rx_len -= at;
}

static void read_local(struct supervisor *s, int j)
{
    struct local *l = &s->slots[j];
    while (l->live) {
        if (l->rx_cap - l->rx_len < 4096) {
            size_t cap = l->rx_cap ? l->rx_cap * 2 : 65536;
            unsigned char *grown = realloc(l->rx, cap);
            if (!grown) {
                pj__transport_local.kill(s->lt, j);
                end_local(s, j);
                return;
            }
            l->rx = grown;
            l->rx_cap = cap;
        }
        ssize_t k = pj__transport_local.receive(s->lt, j, l->rx + l->rx_len,
                                                l->rx_cap - l->rx_len);
        if (k < 0)
            return;
        if (k == 0) {
            end_local(s, j);
            return;
        }
        l->rx_len += (size_t)k;
        forward(s, j);
    }
}

static void mirror_cells(struct supervisor *s)
{
    for (int j = 0; j < s->n; j++) {
        struct local *l = &s->slots[j];
        if (!l->live || !l->mirror)
            continue;
        uint64_t running = atomic_load(&pj__transport_local.region(s->lt, j)->cell.running);
        if (running != l->cell_sent) {
            l->cell_sent = running;
            post(s, PJ__MPI_CELL, j, running, 0, NULL, 0, NULL, 0);
        }
    }
}

/* ---- rank 0's requests ----------------------------------------------------------------------- */

static void close_pool(struct supervisor *s)
{
    if (!s->lt)
        return;
    pthread_mutex_lock(&s->inbox_lock);
    struct pj__transport *lt = s->lt;
    s->lt = NULL;
    pthread_mutex_unlock(&s->inbox_lock);
    pj__transport_local.close(lt);
    for (int j = 0; j < s->n; j++)
        free(s->slots[j].rx);
    free(s->slots);
    s->slots = NULL;
    s->n = 0;
}

static int open_pool(struct supervisor *s, const struct inbox_msg *m, char *err, size_t errlen)
{
    struct pj__mpi_open o;
    if (m->len != sizeof o || m->h.a < 1 || m->h.a > PJ_MAX_JOBS) {
        snprintf(err, errlen, "malformed OPEN from rank 0");
        return PJ_EPROTO;
    }
    memcpy(&o, m->payload, sizeof o);
    unsigned char id[sizeof o.id];
    size_t id_len = pj__main_build_id(id, sizeof id);
    if (o.order != 0x01020304u || o.id_len != id_len || memcmp(o.id, id, id_len) != 0) {
        char node[128];
        pj__mpi_node_name(s->link, node, sizeof node);
        snprintf(err, errlen, "%s on %s is not rank 0's %.*s (%s): every rank must run the "
                 "same build", program_invocation_name, node, (int)sizeof o.program,
                 o.program, o.order != 0x01020304u ? "other byte order" : "ELF build-id differs");
        return PJ_ERESOLVE;
    }
    close_pool(s);
    int n = (int)m->h.a;
    s->slots = calloc((size_t)n, sizeof *s->slots);
    if (!s->slots)
        return PJ_ENOMEM;
    pj__inner_init(&s->inner, &(pj_config){ .inner_max_num_threads = (int)(int64_t)m->h.b }, n);
    struct pj__transport *lt;
    int rc = pj__transport_local.open(&lt, n, &local_ops, &s->inner, err, errlen);
    if (rc) {
        free(s->slots);
        s->slots = NULL;
        return rc;
    }
    pthread_mutex_lock(&s->inbox_lock);
    s->lt = lt;
    s->n = n;
    pthread_mutex_unlock(&s->inbox_lock);
    return 0;
}

static void start_local(struct supervisor *s, int j)
{
    struct pj__shm *shm = pj__transport_local.region(s->lt, j);
    shm->cap = PJ__SHM_HALF_CAP(PJ__SHM_SIZE);
    shm->in_cap = PJ__SHM_INPUT;
    atomic_store(&shm->cell.running, 0);
    atomic_store(&shm->cancel, 0);
    char err[256] = "";
    struct local *l = &s->slots[j];
    l->rx_len = 0;
    l->mirror = false;
    l->cell_sent = 0;
    pid_t pid = pj__transport_local.start(s->lt, j, l, err, sizeof err);
    l->live = pid > 0;
    if (!l->live) /* rank 0 counts it as a start-up that failed */
        post(s, PJ__MPI_END, j, 125u << 8, 0, NULL, 0, NULL, 0);
}

static void data_local(struct supervisor *s, int j, const struct inbox_msg *m)
{
    struct local *l = &s->slots[j];
    if (!l->live)
        return; /* dead already: rank 0 has its END, or will */
    struct pj__shm *shm = pj__transport_local.region(s->lt, j);
    int half = (int)(m->h.a & 1);
    atomic_store(&shm->half, half);
    atomic_store(&shm->used[half], 0);
    atomic_store(&shm->cancel, (int)(m->h.b & 1));
    l->mirror = (m->h.b & 2) != 0;
    pj__transport_local.send(s->lt, j, m->payload, m->len);
}

static void handle_slot(struct supervisor *s, const struct inbox_msg *m)
{
    int j = (int)m->h.slot;
    if (!s->lt || j < 0 || j >= s->n)
        return;
    switch (m->h.op) {
    case PJ__MPI_START:
        if (!s->slots[j].live)
            start_local(s, j);
        break;
    case PJ__MPI_DATA:
        data_local(s, j, m);
        break;
    case PJ__MPI_CANCEL:
        atomic_store(&pj__transport_local.region(s->lt, j)->cancel, (int)m->h.a);
        break;
    case PJ__MPI_KILL:
        if (s->slots[j].live)
            pj__transport_local.kill(s->lt, j);
        break;
    case PJ__MPI_REAP:
        end_local(s, j);
        break;
    }
}

static void handle(struct supervisor *s, const struct inbox_msg *m)
{
    char err[512] = "";
    switch (m->h.op) {
    case PJ__MPI_OPEN: {
        s->pool = m->h.pool; /* the answer is this pool's, a refusal too */
        int rc = open_pool(s, m, err, sizeof err);
        post(s, PJ__MPI_OPENED, 0, (uint64_t)(uint32_t)-rc, 0, err, rc ? strlen(err) + 1 : 0,
             NULL, 0);
        break;
    }
    case PJ__MPI_CLOSE:
        close_pool(s);
        post(s, PJ__MPI_CLOSED, 0, 0, 0, NULL, 0, NULL, 0);
        break;
    case PJ__MPI_QUIT:
        s->quit = true;
        break;
    case PJ__MPI_CPUS: /* the query's number, not the pool's: it may come with none open */
        pj__mpi_post(s->link, 0, &(struct pj__mpi_head){ .op = PJ__MPI_CPUS_ARE,
                                                         .pool = m->h.pool,
                                                         .a = (uint64_t)pj_cpu_count() },
                     NULL, 0);
        break;
    default:
        handle_slot(s, m);
    }
}

/* ---- the loop -------------------------------------------------------------------------------- */

static void wait_events(struct supervisor *s)
{
    bool mirroring = false;
    for (int j = 0; j < s->n; j++)
        mirroring |= s->slots[j].live && s->slots[j].mirror;
    int timeout = mirroring ? MIRROR_MS : IDLE_MS;
    if (!s->lt) {
        struct pollfd p = { .fd = s->wake_fd, .events = POLLIN };
        if (poll(&p, 1, timeout) > 0) {
            uint64_t v;
            ssize_t k = read(s->wake_fd, &v, sizeof v);
            (void)k;
        }
        return;
    }
    void *tags[64];
    int k = pj__transport_local.wait(s->lt, tags, 64, timeout);
    for (int i = 0; i < k; i++)
        read_local(s, (int)((struct local *)tags[i] - s->slots));
    mirror_cells(s);
}

/* Rank 0's pings start with its first pool: before that it may be busy in main. */
static bool orphaned(struct supervisor *s)
{
    return pj__mpi_spoke(s->link, 0) && pj__mpi_silent_ns(s->link, 0) > ORPHAN_NS;
}

static int mpi_serve(void)
{
    struct supervisor s = { .wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK) };
    pthread_mutex_init(&s.inbox_lock, NULL);
    s.tail = &s.head;
    /* For the local workers it spawns (spawn.c reads it): functions come from another
     * machine, checked by build-id.  Before MPI starts threads that may read the environment. */
    setenv("PARJOB_WORKER_FNREF", "buildid", 1);
    char err[320] = "";
    if (pj__mpi_link_open(&s.link, to_inbox, &s, err, sizeof err)) {
        fprintf(stderr, "parjob: MPI rank %d cannot serve as a worker: %s\n", env_rank(), err);
        return 1;
    }
    while (!s.quit) {
        for (struct inbox_msg *m = inbox_take(&s), *next; m; m = next) {
            next = m->next;
            if (!s.quit)
                handle(&s, m);
            free(m);
        }
        if (s.quit)
            break;
        if (orphaned(&s)) { /* its workers first: MPI_Abort may kill this process at once */
            close_pool(&s);
            pj__mpi_abort_job(s.link, 1);
        }
        wait_events(&s);
    }
    close_pool(&s);
    pj__mpi_listen(s.link, NULL, NULL);
    pj__mpi_link_end();
    return 0;
}

const struct pj__worker_entry pj__mpi_worker_entry = {
    .claim = mpi_claim,
    .serve = mpi_serve,
};
