/* This process's one link to MPI, for the mpi backend: rank 0's transport (transport_mpi.c)
 * and a worker rank's supervisor (supervisor_mpi.c) both talk through it.
 *
 * libmpi is reached only through libparjob-mpi.so (mpi_shim.h), dlopen'ed at the first use:
 * a program that never asks for mpi never loads it.  The module is looked for where
 * $PARJOB_MPI_MODULE says, next to the object that holds libparjob's code, in the build tree
 * and in the install libdir (both known at build time).
 *
 * One thread, the link's, makes every MPI call after MPI's initialisation: Open MPI's blocking
 * calls busy-poll a core, so the thread polls with the non-blocking calls and sleeps between
 * polls on an eventfd, with a back-off (POLL_MIN_NS doubling to POLL_MAX_NS while nothing
 * comes; reset by any message) — rank 0 then costs next to no CPU while it waits, and a post
 * wakes the thread at once.  Messages out are queued (post) and handed to MPI_Isend by the
 * thread; messages in are handed to the listener on the thread.
 *
 * Liveness: MPI reports nothing when a peer dies over shared memory, and Open MPI 4.1 has no
 * ULFM.  So rank 0 pings every worker rank and every worker rank pings rank 0 each PJ__MPI_PING_NS;
 * pj__mpi_heard says when a rank was last heard from.  A worker rank whose rank 0 has been
 * silent for LOST_NS is orphaned and exits (its local workers die with it).
 *
 * Lock rule: link->lock guards the outgoing queue; deliver_lock the listener, which runs under
 * it on the link thread (so a listener taken away is never running after pj__mpi_listen
 * returns); a listener may post (link->lock), never change the listener. */
#include "mpi_link.h"

#include <dlfcn.h>
#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#define POLL_MIN_NS 20000ull      /* 20 us: the first sleep after a message */
#define POLL_MAX_NS 1000000ull    /* 1 ms: mpi4py.futures' back-off, at most */
/* Within ACTIVE_NS of the last message (not a ping) the back-off stops at POLL_ACTIVE_NS: a
 * batch's answer usually comes soon after its send, and each poll missed is the worker's idle
 * time (a round trip is two polls, one on each side). */
#define POLL_ACTIVE_NS 100000ull  /* 100 us */
#define ACTIVE_NS (20ull * 1000000ull)
#define ABORT_GRACE_NS (200ull * 1000000ull)
#define FLUSH_NS (2000ull * 1000000ull) /* how long exit waits for the last sends */

struct outgoing {
    struct outgoing *next;
    int dest;
    size_t len;
    struct pj_mpi_request *req;  /* NULL until handed to MPI */
    _Alignas(8) unsigned char bytes[];
};

struct incoming {                /* matched, its bytes arriving (link thread only) */
    struct incoming *next;
    int src;
    void *buf;
    size_t len;
    struct pj_mpi_request *req;  /* NULL once complete */
};

struct pj__mpi_link {
    const struct pj_mpi_shim *mpi;
    int rank, size;
    bool ours;                   /* parjob initialised MPI */
    pthread_t thread;
    int wake_fd;
    pthread_mutex_t lock;
    struct outgoing *queue, **tail; /* not yet handed to MPI */
    struct outgoing *flight;     /* handed to MPI, not complete (link thread only) */
    struct incoming *arriving, **arriving_tail; /* in the order matched (link thread only) */
    pthread_mutex_t deliver_lock; /* held while the listener runs, and to change it */
    pj__mpi_listener listener;
    void *listener_ctx;
    _Atomic uint64_t *heard;     /* per rank: pj__now_ns() of its last message (or of the
                                    link's start) */
    _Atomic bool *spoke;         /* per rank: anything came from it */
    _Atomic bool stopping;
    _Atomic uint64_t traffic_ns; /* pj__now_ns() of the last message but a ping, in or out */
    bool finalised;
};

static pthread_mutex_t open_lock = PTHREAD_MUTEX_INITIALIZER;
static struct pj__mpi_link *the_link;
static char open_error[320];
static int open_code;

/* ---- loading the module ------------------------------------------------------------------- */

static void *try_module(const char *path, char *why, size_t len)
{
    void *h = dlopen(path, RTLD_NOW | RTLD_GLOBAL);
    if (!h && !*why)
        snprintf(why, len, "%s", dlerror());
    return h;
}

static const struct pj_mpi_shim *load_shim(char *err, size_t errlen)
{
    char why[256] = "", here[PATH_MAX];
    void *h = NULL;
    const char *env = getenv("PARJOB_MPI_MODULE");
    if (env && *env)
        h = try_module(env, why, sizeof why);
    Dl_info info;
    if (!h && dladdr((void *)load_shim, &info) && info.dli_fname) {
        snprintf(here, sizeof here, "%s", info.dli_fname);
        char *slash = strrchr(here, '/');
        if (slash) {
            snprintf(slash + 1, sizeof here - (size_t)(slash + 1 - here), "libparjob-mpi.so");
            h = dlopen(here, RTLD_NOW | RTLD_GLOBAL);
        }
    }
#ifdef PJ_MPI_MODULE_BUILD
    if (!h)
        h = try_module(PJ_MPI_MODULE_BUILD, why, sizeof why);
#endif
#ifdef PJ_MPI_MODULE_INSTALL
    if (!h)
        h = try_module(PJ_MPI_MODULE_INSTALL, why, sizeof why);
#endif
    if (!h) {
#if defined(PJ_MPI_MODULE_BUILD) || defined(PJ_MPI_MODULE_INSTALL)
        snprintf(err, errlen, "cannot load libparjob-mpi.so (the mpi backend's module, which "
                 "links libmpi): %s", *why ? why : "not found");
#else
        snprintf(err, errlen, "this parjob was built without MPI (meson -Dmpi=enabled with "
                 "libopenmpi-dev installed builds libparjob-mpi.so)");
#endif
        return NULL;
    }
    const struct pj_mpi_shim *s = dlsym(h, PJ_MPI_SHIM_SYMBOL);
    if (!s || s->version != PJ_MPI_SHIM_VERSION) {
        snprintf(err, errlen, "libparjob-mpi.so is not this parjob's (no %s version %d)",
                 PJ_MPI_SHIM_SYMBOL, PJ_MPI_SHIM_VERSION);
        return NULL;
    }
    return s;
}

/* ---- the link thread ---------------------------------------------------------------------- */

static void sleep_on(int fd, uint64_t ns)
{
    struct timespec ts = { (time_t)(ns / 1000000000ull), (long)(ns % 1000000000ull) };
    struct pollfd p = { .fd = fd, .events = POLLIN };
    if (ppoll(&p, 1, &ts, NULL) > 0) {
        uint64_t v;
        ssize_t k = read(fd, &v, sizeof v);
        (void)k;
    }
}

/* Hands the queued messages to MPI and frees those complete.  true when any moved. */
static bool pump_out(struct pj__mpi_link *L)
{
    pthread_mutex_lock(&L->lock);
    struct outgoing *q = L->queue;
    L->queue = NULL;
    L->tail = &L->queue;
    pthread_mutex_unlock(&L->lock);
    bool moved = q != NULL;
    while (q) {
        struct outgoing *next = q->next;
        q->req = L->mpi->isend(q->dest, q->bytes, q->len);
        if (!q->req) { /* the peer is gone or the message broken: it is lost as the peer is */
            free(q);
        } else {
            q->next = L->flight;
            L->flight = q;
        }
        q = next;
    }
    for (struct outgoing **p = &L->flight; *p;) {
        struct outgoing *o = *p;
        int done = L->mpi->test(o->req);
        if (done == 0) {
            p = &o->next;
            continue;
        }
        *p = o->next;
        free(o);
        moved = true;
    }
    return moved;
}

static void deliver(struct pj__mpi_link *L, const struct incoming *in)
{
    struct pj__mpi_head h;
    if (in->len < sizeof h)
        return;
    memcpy(&h, in->buf, sizeof h);
    if (h.op == PJ__MPI_PING)
        return;
    atomic_store(&L->traffic_ns, pj__now_ns());
    pthread_mutex_lock(&L->deliver_lock);
    if (L->listener)
        L->listener(L->listener_ctx, in->src, &h, (unsigned char *)in->buf + sizeof h,
                    in->len - sizeof h);
    pthread_mutex_unlock(&L->deliver_lock);
}

/* Matches what has come in (a rank is heard from at once, however long its message takes to
 * arrive) and delivers, in the order matched, those whose bytes are all there: messages of one
 * rank stay in order.  true when anything moved. */
static bool pump_in(struct pj__mpi_link *L)
{
    bool any = false;
    for (int k = 0; k < 64; k++) {
        struct incoming *in = calloc(1, sizeof *in);
        if (!in || L->mpi->take(&in->src, &in->buf, &in->len, &in->req) != 1) {
            free(in);
            break;
        }
        any = true;
        if (in->src >= 0 && in->src < L->size) {
            atomic_store(&L->heard[in->src], pj__now_ns());
            atomic_store(&L->spoke[in->src], true);
        }
        *L->arriving_tail = in;
        L->arriving_tail = &in->next;
    }
    while (L->arriving) {
        struct incoming *in = L->arriving;
        int done = in->req ? L->mpi->test(in->req) : 1;
        if (done == 0)
            break;
        if (done > 0)
            deliver(L, in);
        L->arriving = in->next;
        if (!L->arriving)
            L->arriving_tail = &L->arriving;
        free(in->buf);
        free(in);
        any = true;
    }
    return any;
}

static void ping(struct pj__mpi_link *L)
{
    struct pj__mpi_head h = { .op = PJ__MPI_PING };
    if (L->rank != 0) {
        pj__mpi_post(L, 0, &h, NULL, 0);
        return;
    }
    for (int r = 1; r < L->size; r++)
        pj__mpi_post(L, r, &h, NULL, 0);
}

static void *link_main(void *arg)
{
    struct pj__mpi_link *L = arg;
    uint64_t backoff = POLL_MIN_NS, next_ping = 0;
    while (!atomic_load(&L->stopping)) {
        uint64_t now = pj__now_ns();
        if (now >= next_ping) {
            ping(L);
            next_ping = now + PJ__MPI_PING_NS;
        }
        bool busy = pump_out(L);
        busy |= pump_in(L);
        /* A large message moves only as the sender calls MPI_Test (over shared memory, a
         * fragment at a time), while its receiver waits in MPI_Mrecv: no back-off then. */
        busy |= L->flight != NULL || L->arriving != NULL;
        uint64_t cap = now - atomic_load(&L->traffic_ns) < ACTIVE_NS ? POLL_ACTIVE_NS
                                                                      : POLL_MAX_NS;
        backoff = busy ? POLL_MIN_NS : backoff * 2 > cap ? cap : backoff * 2;
        if (!busy)
            sleep_on(L->wake_fd, backoff);
    }
    return NULL;
}

/* ---- opening, exit ------------------------------------------------------------------------ */

/* Sends what is queued (the workers' QUIT) for at most FLUSH_NS, then stops the thread. */
static void stop_thread(struct pj__mpi_link *L)
{
    uint64_t give_up = pj__now_ns() + FLUSH_NS;
    while (pj__now_ns() < give_up) {
        pthread_mutex_lock(&L->lock);
        bool queued = L->queue != NULL;
        pthread_mutex_unlock(&L->lock);
        if (!queued && !L->flight)
            break;
        struct timespec ts = { 0, 1000000 };
        nanosleep(&ts, NULL);
    }
    atomic_store(&L->stopping, true);
    pj__mpi_wake(L);
    pthread_join(L->thread, NULL);
}

/* Rank 0 at MPI_Finalize (the program's) or at exit (parjob's MPI): the worker ranks quit,
 * then MPI is finalised if parjob started it.  Once. */
static void end_link(void)
{
    struct pj__mpi_link *L = the_link;
    if (!L || L->finalised)
        return;
    L->finalised = true;
    bool lost = false;
    for (int r = 0; r < L->size; r++) /* a worker rank hears rank 0 only */
        lost |= r != L->rank && (L->rank == 0 || r == 0) &&
                pj__mpi_silent_ns(L, r) > PJ__MPI_LOST_NS;
    if (L->rank == 0)
        for (int r = 1; r < L->size; r++)
            pj__mpi_post(L, r, &(struct pj__mpi_head){ .op = PJ__MPI_QUIT }, NULL, 0);
    stop_thread(L);
    /* MPI_Finalize waits for every rank, a dead one too: without it the job ends as one whose
     * rank died, which is what happened. */
    if (L->ours && !lost)
        L->mpi->finalize();
}

/* Rank 0 whose program's MPI cannot host the link: its worker ranks, waiting for a pool that
 * will never come, are told to quit inside the program's MPI_Finalize, which would otherwise
 * wait for them for ever.  On the program's thread, as its thread level asks. */
static const struct pj_mpi_shim *refused_mpi;
static int refused_size;

static void release_workers(void)
{
    struct pj__mpi_head h = { .op = PJ__MPI_QUIT };
    for (int r = 1; r < refused_size; r++)
        refused_mpi->send_now(r, &h, sizeof h);
}

static int link_start(struct pj__mpi_link *L, char *err, size_t errlen)
{
    int ours = 0;
    L->size = 0;
    if (L->mpi->init(&L->rank, &L->size, &ours, err, errlen)) {
        if (L->size > 1 && L->rank == 0) {
            refused_mpi = L->mpi;
            refused_size = L->size;
            L->mpi->at_finalize(release_workers);
        }
        return PJ_EBACKEND;
    }
    L->ours = ours;
    L->heard = calloc((size_t)L->size, sizeof *L->heard);
    L->spoke = calloc((size_t)L->size, sizeof *L->spoke);
    L->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (!L->heard || !L->spoke || L->wake_fd < 0) {
        snprintf(err, errlen, "cannot set up the MPI link: %s", strerror(errno));
        return PJ_ESYS;
    }
    uint64_t now = pj__now_ns();
    for (int r = 0; r < L->size; r++)
        atomic_store(&L->heard[r], now);
    L->tail = &L->queue;
    L->arriving_tail = &L->arriving;
    pthread_mutex_init(&L->lock, NULL);
    pthread_mutex_init(&L->deliver_lock, NULL);
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int rc = pthread_create(&L->thread, NULL, link_main, L);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc) {
        snprintf(err, errlen, "cannot start the MPI link's thread: %s", strerror(rc));
        return PJ_ESYS;
    }
    /* The hook runs inside the program's MPI_Finalize, before MPI goes; atexit covers the
     * program that never calls it (parjob's own MPI). */
    L->mpi->at_finalize(end_link);
    atexit(end_link);
    return 0;
}

int pj__mpi_link_open(struct pj__mpi_link **out, pj__mpi_listener first, void *ctx, char *err,
                      size_t errlen)
{
    pthread_mutex_lock(&open_lock);
    if (!the_link && !open_code) {
        struct pj__mpi_link *L = calloc(1, sizeof *L);
        int rc = L ? 0 : PJ_ENOMEM;
        if (L) {
            L->listener = first;
            L->listener_ctx = ctx;
        }
        if (L && !(L->mpi = load_shim(open_error, sizeof open_error)))
            rc = PJ_EBACKEND;
        if (!rc)
            rc = link_start(L, open_error, sizeof open_error);
        if (rc) /* MPI cannot be initialised twice: the first failure stays the answer */
            open_code = rc;
        else
            the_link = L;
    }
    int rc = open_code;
    if (rc)
        snprintf(err, errlen, "%s", open_error);
    *out = the_link;
    pthread_mutex_unlock(&open_lock);
    return rc;
}

/* ---- the calls ---------------------------------------------------------------------------- */

int pj__mpi_rank(const struct pj__mpi_link *L)
{
    return L->rank;
}

int pj__mpi_size(const struct pj__mpi_link *L)
{
    return L->size;
}

void pj__mpi_node_name(const struct pj__mpi_link *L, char *buf, size_t len)
{
    L->mpi->node_name(buf, len);
}

void pj__mpi_wake(struct pj__mpi_link *L)
{
    uint64_t one = 1;
    ssize_t k = write(L->wake_fd, &one, sizeof one);
    (void)k;
}

int pj__mpi_post(struct pj__mpi_link *L, int dest, const struct pj__mpi_head *h,
                 const void *payload, size_t len)
{
    return pj__mpi_post2(L, dest, h, payload, len, NULL, 0);
}

int pj__mpi_post2(struct pj__mpi_link *L, int dest, const struct pj__mpi_head *h,
                  const void *p1, size_t n1, const void *p2, size_t n2)
{
    size_t len = sizeof *h + n1 + n2;
    if (len > PJ__MPI_MAX_MESSAGE)
        return PJ_ENOMEM;
    struct outgoing *o = malloc(sizeof *o + len);
    if (!o)
        return PJ_ENOMEM;
    o->next = NULL;
    o->dest = dest;
    o->len = len;
    o->req = NULL;
    memcpy(o->bytes, h, sizeof *h);
    if (n1)
        memcpy(o->bytes + sizeof *h, p1, n1);
    if (n2)
        memcpy(o->bytes + sizeof *h + n1, p2, n2);
    if (h->op != PJ__MPI_PING)
        atomic_store(&L->traffic_ns, pj__now_ns());
    pthread_mutex_lock(&L->lock);
    *L->tail = o;
    L->tail = &o->next;
    pthread_mutex_unlock(&L->lock);
    pj__mpi_wake(L);
    return 0;
}

void pj__mpi_listen(struct pj__mpi_link *L, pj__mpi_listener f, void *ctx)
{
    pthread_mutex_lock(&L->deliver_lock);
    L->listener = f;
    L->listener_ctx = ctx;
    pthread_mutex_unlock(&L->deliver_lock);
}

uint64_t pj__mpi_silent_ns(const struct pj__mpi_link *L, int rank)
{
    uint64_t now = pj__now_ns(), then = atomic_load(&L->heard[rank]);
    return now > then ? now - then : 0;
}

static void *abort_main(void *arg)
{
    struct pj__mpi_link *L = arg;
    L->mpi->abort_job(1);
    return NULL;
}

/* MPI_Abort tells mpirun at once but then waits, seconds, for the runtime to kill this
 * process: it runs on a thread of its own while this one exits ABORT_GRACE_NS later. */
_Noreturn void pj__mpi_abort_job(struct pj__mpi_link *L, int code)
{
    pthread_t th;
    if (pthread_create(&th, NULL, abort_main, L) == 0) {
        struct timespec ts = { 0, (long)ABORT_GRACE_NS };
        nanosleep(&ts, NULL);
    }
    _exit(code);
}

bool pj__mpi_spoke(const struct pj__mpi_link *L, int rank)
{
    return atomic_load(&L->spoke[rank]);
}

void pj__mpi_link_end(void)
{
    end_link();
}

void pj__mpi_release_unopened(void)
{
    pthread_mutex_lock(&open_lock);
    if (the_link || open_code) {
        pthread_mutex_unlock(&open_lock);
        return;
    }
    /* From here on the link can no longer be opened: MPI is (being) finalised. */
    open_code = PJ_EBACKEND;
    snprintf(open_error, sizeof open_error, "the program is exiting (MPI is finalised)");
    char err[320] = "";
    const struct pj_mpi_shim *mpi = load_shim(err, sizeof err);
    int rank = -1, size = 0, ours = 0;
    if (mpi) {
        int rc = mpi->init(&rank, &size, &ours, err, sizeof err);
        /* A refusal for the program's thread level still leaves MPI running: QUIT is one
         * eager MPI_Send from this thread. */
        if (size > 1 && rank == 0) {
            struct pj__mpi_head h = { .op = PJ__MPI_QUIT };
            for (int r = 1; r < size; r++)
                mpi->send_now(r, &h, sizeof h);
        }
        if (ours && (rc == 0 || size > 0))
            mpi->finalize();
    }
    pthread_mutex_unlock(&open_lock);
}
