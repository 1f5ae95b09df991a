/* Function references that survive re-execution: (module, offset from the module's load base).
 *
 * The spawn backend's workers are the same program started afresh, with address space layout
 * randomisation on: a function pointer means nothing there.  What does carry over is which
 * loaded module holds the function and where in it: the main program (sent as the empty path,
 * because the worker *is* the main program, re-executed from /proc/self/exe) or a shared
 * library, by its canonical path.  No symbol is looked up, so a `static` function resolves as
 * well as an exported one.
 *
 * Parent side: dl_iterate_phdr finds the loaded object whose PT_LOAD segment holds the address
 * (what dladdr does, but we also see the segment's flags, so a pointer into data is refused).
 * An address in no loaded object is described from /proc/self/maps (anonymous mapping, heap,
 * a file mapped by hand) for the error message.  Results are cached per address; the cache is
 * dropped whenever the loader reports an unload (dlpi_subs changed), so a dlclose'd library
 * cannot leave a stale entry.
 *
 * Worker side: the main program by identity; a library by finding it among the loaded objects
 * (by name, then by canonical path), else by dlopen(path, RTLD_NOW).  The offset must fall in
 * an executable segment of that module, so a malformed or mismatched reference is an error and
 * not a jump into data.  Resolved modules are cached; a worker never dlcloses them.
 *
 * Module paths are interned in an append-only table and never freed, so a path handed out stays
 * valid for the life of the process (they are few: one per distinct library ever used). */
#include "process.h"

#include <dlfcn.h>
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <link.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_MODULES 1024
#define CACHE_SLOTS 512  /* parent: address -> reference, direct-mapped */
#define MAX_SEGS 8       /* executable PT_LOAD segments remembered per module */

/* A module as this process has it loaded. */
struct loaded {
    const char *path;            /* interned canonical path, "" for the main program */
    uintptr_t base;              /* load base (dlpi_addr) */
    uint64_t seg_lo[MAX_SEGS], seg_hi[MAX_SEGS]; /* executable segments, offsets from base */
    unsigned n_segs;
    uint64_t dev, ino;           /* the file mapped, per /proc/self/maps (0: unknown) */
};

struct cache_entry {
    uintptr_t addr;              /* 0: empty */
    struct pj__fnref ref;
};

static struct {
    pthread_mutex_t lock;
    const char *paths[MAX_MODULES]; /* interned, append-only */
    size_t n_paths;
    unsigned long long subs;     /* loader's unload count when the parent cache was filled */
    struct cache_entry cache[CACHE_SLOTS];
    struct loaded loaded[MAX_MODULES]; /* worker side: modules resolved so far */
    size_t n_loaded;
} fr = { .lock = PTHREAD_MUTEX_INITIALIZER };

/* ---- interning ------------------------------------------------------------------------------ */

/* The interned copy of path; NULL when out of memory or the table is full.  Lock held. */
static const char *intern(const char *path)
{
    for (size_t i = 0; i < fr.n_paths; i++)
        if (strcmp(fr.paths[i], path) == 0)
            return fr.paths[i];
    if (fr.n_paths == MAX_MODULES)
        return NULL;
    char *copy = strdup(path);
    if (copy)
        fr.paths[fr.n_paths++] = copy;
    return copy;
}

/* ---- parent: address -> (module, offset) ---------------------------------------------------- */

struct find_addr {
    uintptr_t addr;
    bool found, is_main, executable;
    const char *name;            /* dlpi_name of the holder */
    uintptr_t base;
    unsigned long long subs;
    int index;
};

static int find_addr_cb(struct dl_phdr_info *info, size_t size, void *data)
{
    struct find_addr *f = data;
    (void)size;
    int index = f->index++;
    if (index == 0)
        f->subs = info->dlpi_subs;
    for (ElfW(Half) i = 0; i < info->dlpi_phnum; i++) {
        const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
        if (ph->p_type != PT_LOAD)
            continue;
        uintptr_t lo = info->dlpi_addr + ph->p_vaddr;
        if (f->addr < lo || f->addr - lo >= ph->p_memsz)
            continue;
        f->found = true;
        f->is_main = index == 0; /* glibc reports the main program first */
        f->executable = ph->p_flags & PF_X;
        f->name = info->dlpi_name;
        f->base = info->dlpi_addr;
        return 1;
    }
    return 0;
}

/* The loader's unload count: a cheap call (no system call), to validate the cache. */
static int subs_cb(struct dl_phdr_info *info, size_t size, void *data)
{
    (void)size;
    *(unsigned long long *)data = info->dlpi_subs;
    return 1;
}

static int generation_cb(struct dl_phdr_info *info, size_t size, void *data)
{
    (void)size;
    *(uint64_t *)data = (uint64_t)info->dlpi_adds + (uint64_t)info->dlpi_subs;
    return 1;
}

uint64_t pj__modules_generation(void)
{
    uint64_t gen = 0;
    dl_iterate_phdr(generation_cb, &gen);
    return gen;
}

/* The line of /proc/self/maps holding addr: its permissions, its name ("" for an anonymous
 * mapping, "[heap]", or a file's absolute path as the kernel sees it) and the file's device and
 * inode.  false when unmapped. */
static bool maps_entry(uintptr_t addr, char perms[8], char *name, size_t len, uint64_t *dev,
                       uint64_t *ino)
{
    FILE *f = fopen("/proc/self/maps", "re");
    if (!f)
        return false;
    char line[PATH_MAX + 128];
    bool found = false;
    while (!found && fgets(line, sizeof line, f)) {
        unsigned long lo, hi, inode = 0;
        unsigned major = 0, minor = 0;
        int name_at = 0;
        if (sscanf(line, "%lx-%lx %7s %*s %x:%x %lu %n", &lo, &hi, perms, &major, &minor, &inode,
                   &name_at) < 3 || addr < lo || addr >= hi)
            continue;
        *dev = (uint64_t)major << 32 | minor;
        *ino = inode;
        line[strcspn(line, "\n")] = 0;
        snprintf(name, len, "%s", name_at ? line + name_at : "");
        found = true;
    }
    fclose(f);
    return found;
}

/* What an address no loaded object holds is in, for the error message. */
static void describe_mapping(uintptr_t addr, char *buf, size_t len)
{
    char perms[8], name[PATH_MAX];
    uint64_t dev, ino;
    if (!maps_entry(addr, perms, name, sizeof name, &dev, &ino))
        snprintf(buf, len, "is not mapped");
    else if (!*name)
        snprintf(buf, len, "is in an anonymous mapping (%s; a JIT buffer or mmap'ed code?)",
                 perms);
    else if (*name == '[')
        snprintf(buf, len, "is in %s (%s)", name, perms);
    else
        snprintf(buf, len, "is in %s (%s), a file the dynamic loader did not load", name, perms);
}

/* The module's canonical path and the identity of the file mapped.  The loader's name may be
 * relative (dlopen("./x.so")) and so depend on the current directory, which may have changed
 * since: the kernel's name of the mapping is absolute. */
static bool module_file(const char *loader_name, uintptr_t addr, char *out, struct pj__fnref *ref)
{
    char perms[8], name[PATH_MAX];
    if (!maps_entry(addr, perms, name, sizeof name, &ref->dev, &ref->ino))
        ref->dev = ref->ino = 0;
    else if (loader_name[0] != '/' && name[0] == '/')
        loader_name = name;
    return realpath(loader_name, out) != NULL;
}

static int lookup_uncached(uintptr_t addr, struct pj__fnref *out, unsigned long long *subs,
                           char *err, size_t errlen)
{
    struct find_addr f = { .addr = addr };
    dl_iterate_phdr(find_addr_cb, &f);
    *subs = f.subs;
    if (!f.found) {
        char what[PATH_MAX + 96];
        describe_mapping(addr, what, sizeof what);
        snprintf(err, errlen, "function address %p %s: a worker process can only call a function "
                 "of the program or of a shared library", (void *)addr, what);
        return PJ_ERESOLVE;
    }
    if (!f.executable) {
        snprintf(err, errlen, "address %p is in a non-executable segment of %s: not a function",
                 (void *)addr, f.is_main ? "the program" : f.name);
        return PJ_ERESOLVE;
    }
    char canonical[PATH_MAX] = "";
    out->dev = out->ino = 0; /* the main program: the worker runs the very same file */
    if (!f.is_main && !module_file(f.name, addr, canonical, out)) {
        snprintf(err, errlen, "function %p is in %s, which cannot be found on disk (%s): a worker "
                 "process could not load it", (void *)addr, f.name, strerror(errno));
        return PJ_ERESOLVE;
    }
    out->path = intern(canonical);
    if (!out->path) {
        snprintf(err, errlen, "too many modules or out of memory interning %s", canonical);
        return PJ_ENOMEM;
    }
    out->offset = (uint64_t)(addr - f.base);
    return 0;
}

int pj__fnref_of(void (*fn)(void), struct pj__fnref *out, char *err, size_t errlen)
{
    uintptr_t addr = (uintptr_t)fn;
    if (!addr) {
        snprintf(err, errlen, "function pointer is NULL");
        return PJ_ERESOLVE;
    }
    unsigned long long subs = 0;
    dl_iterate_phdr(subs_cb, &subs);
    struct cache_entry *e = &fr.cache[(addr >> 4) % CACHE_SLOTS];
    pthread_mutex_lock(&fr.lock);
    if (subs != fr.subs) {
        memset(fr.cache, 0, sizeof fr.cache);
        fr.subs = subs;
    }
    if (e->addr == addr) {
        *out = e->ref;
        pthread_mutex_unlock(&fr.lock);
        return 0;
    }
    int rc = lookup_uncached(addr, out, &subs, err, errlen);
    if (rc == 0 && subs == fr.subs)
        *e = (struct cache_entry){ addr, *out };
    pthread_mutex_unlock(&fr.lock);
    return rc;
}

/* ---- worker: (module, offset) -> address ---------------------------------------------------- */

struct find_module {
    const char *path;            /* canonical, "" for the main program */
    bool by_base;                /* match base instead of name (after dlopen) */
    uintptr_t base;
    struct loaded *into;
    bool found;
    int index;
};

static void take_segments(struct loaded *m, const struct dl_phdr_info *info)
{
    m->base = info->dlpi_addr;
    m->n_segs = 0;
    for (ElfW(Half) i = 0; i < info->dlpi_phnum && m->n_segs < MAX_SEGS; i++) {
        const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
        if (ph->p_type != PT_LOAD || !(ph->p_flags & PF_X))
            continue;
        m->seg_lo[m->n_segs] = ph->p_vaddr;
        m->seg_hi[m->n_segs] = ph->p_vaddr + ph->p_memsz;
        m->n_segs++;
    }
}

static int find_module_cb(struct dl_phdr_info *info, size_t size, void *data)
{
    struct find_module *f = data;
    (void)size;
    int index = f->index++;
    bool match;
    if (f->by_base)
        match = index > 0 && info->dlpi_addr == f->base;
    else if (!*f->path)
        match = index == 0;
    else if (index == 0 || !info->dlpi_name || !*info->dlpi_name)
        match = false;
    else if (strcmp(info->dlpi_name, f->path) == 0)
        match = true;
    else {
        char canonical[PATH_MAX];
        match = realpath(info->dlpi_name, canonical) && strcmp(canonical, f->path) == 0;
    }
    if (!match)
        return 0;
    take_segments(f->into, info);
    f->found = true;
    return 1;
}

/* Finds or loads the module at path (canonical, "" for the main program).  Lock held. */
static int load_module(const char *path, struct loaded *m, char *err, size_t errlen)
{
    struct find_module f = { .path = path, .into = m };
    dl_iterate_phdr(find_module_cb, &f);
    if (f.found)
        return 0;
    if (!*path) {
        snprintf(err, errlen, "the main program is not among the loaded objects");
        return PJ_ERESOLVE;
    }
    if (path[0] != '/') {
        snprintf(err, errlen, "module path \"%s\" is not absolute", path);
        return PJ_ERESOLVE;
    }
    dlerror();
    void *handle = dlopen(path, RTLD_NOW);
    if (!handle) {
        const char *why = dlerror();
        snprintf(err, errlen, "cannot load %s in the worker: %s", path, why ? why : "dlopen "
                 "failed");
        return PJ_ERESOLVE;
    }
    struct link_map *lm = NULL;
    if (dlinfo(handle, RTLD_DI_LINKMAP, &lm) != 0 || !lm) {
        snprintf(err, errlen, "cannot find where %s was loaded", path);
        return PJ_ERESOLVE;
    }
    /* The handle is kept open for the life of the worker: its functions stay callable. */
    f = (struct find_module){ .path = path, .by_base = true, .base = lm->l_addr, .into = m };
    dl_iterate_phdr(find_module_cb, &f);
    if (!f.found) {
        snprintf(err, errlen, "%s was loaded but the loader does not list it", path);
        return PJ_ERESOLVE;
    }
    return 0;
}

/* The resolved module for path, loading it on first use.  Lock held. */
static const struct loaded *module_for(const char *path, size_t len, char *err, size_t errlen)
{
    for (size_t i = 0; i < fr.n_loaded; i++) {
        const char *p = fr.loaded[i].path;
        if (strncmp(p, path, len) == 0 && p[len] == 0)
            return &fr.loaded[i];
    }
    if (fr.n_loaded == MAX_MODULES) {
        snprintf(err, errlen, "more than %d modules referenced", MAX_MODULES);
        return NULL;
    }
    char *z = strndup(path, len);
    const char *interned = z ? intern(z) : NULL;
    free(z);
    if (!interned) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    struct loaded *m = &fr.loaded[fr.n_loaded];
    *m = (struct loaded){ .path = interned };
    if (load_module(interned, m, err, errlen))
        return NULL;
    char perms[8], name[PATH_MAX];
    if (!*interned || !m->n_segs ||
        !maps_entry(m->base + (uintptr_t)m->seg_lo[0], perms, name, sizeof name, &m->dev, &m->ino))
        m->dev = m->ino = 0;
    fr.n_loaded++;
    return m;
}

int pj__fnref_resolve(const char *path, size_t path_len, uint64_t offset, uint64_t dev,
                      uint64_t ino, void (**out)(void), char *err, size_t errlen)
{
    if (!path || memchr(path, 0, path_len)) {
        snprintf(err, errlen, "malformed module path in a function reference");
        return PJ_ERESOLVE;
    }
    pthread_mutex_lock(&fr.lock);
    const struct loaded *m = module_for(path, path_len, err, errlen);
    int rc = PJ_ERESOLVE;
    if (m && (dev || ino) && (m->dev || m->ino) && (m->dev != dev || m->ino != ino)) {
        snprintf(err, errlen, "%s is not the file the parent loaded (replaced on disk since? an "
                 "upgrade?): its code would be at other offsets", m->path);
        m = NULL;
    }
    if (m) {
        for (unsigned i = 0; i < m->n_segs; i++) {
            if (offset >= m->seg_lo[i] && offset < m->seg_hi[i]) {
                *out = (void (*)(void))(m->base + (uintptr_t)offset);
                rc = 0;
                break;
            }
        }
        if (rc)
            snprintf(err, errlen, "offset 0x%" PRIx64 " is outside the code of %s (a different "
                     "build of it?)", offset, *m->path ? m->path : "the program");
    }
    pthread_mutex_unlock(&fr.lock);
    return rc;
}

/* ---- the codec's function-reference ops for re-executed workers ------------------------------ */

/* Wire form: u64 offset, u64 device, u64 inode of the module's file (0 for the main program),
 * then the module path's bytes (no NUL; empty for the main program). */
static int module_encode(struct pj__wbuf *w, void (*fn)(void), char *err, size_t errlen)
{
    struct pj__fnref ref;
    int rc = pj__fnref_of(fn, &ref, err, errlen);
    if (rc)
        return rc;
    uint64_t head[3] = { ref.offset, ref.dev, ref.ino };
    pj__wbuf_put(w, head, sizeof head);
    pj__wbuf_put(w, ref.path, strlen(ref.path));
    return 0;
}

static int module_resolve(const unsigned char *ref, size_t len, void (**fn)(void), char *err,
                          size_t errlen)
{
    uint64_t head[3];
    if (len < sizeof head || len - sizeof head >= PATH_MAX) {
        snprintf(err, errlen, "malformed function reference (%zu bytes)", len);
        return PJ_EPROTO;
    }
    memcpy(head, ref, sizeof head);
    return pj__fnref_resolve((const char *)ref + sizeof head, len - sizeof head, head[0], head[1],
                             head[2], fn, err, errlen);
}

const struct pj__fnref_ops pj__fnref_module = {
    .kind = PJ__FNREF_MODULE,
    .encode = module_encode,
    .resolve = module_resolve,
};
