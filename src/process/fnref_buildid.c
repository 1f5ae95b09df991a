/* Function references checked by ELF build-id, for workers on other machines (the mpi
 * backend): (module path, offset) as spawn's (fnref.c), but the module is identified by the
 * build-id the linker wrote into it (NT_GNU_BUILD_ID) instead of its file's device and inode,
 * which differ between machines even for the same file.  A worker whose module at that path
 * has another build-id (or none, when the parent's had one) refuses with PJ_ERESOLVE: the
 * offset would point into other code.  A module built without a build-id is checked by path
 * only, as the reference then carries none.
 *
 * Wire: u64 offset, u32 id_len, id bytes, then the path (the rest). */
#include "mpi_link.h"

#include <elf.h>
#include <limits.h>
#include <link.h>
#include <stdio.h>
#include <string.h>

#define ID_MAX 64

struct id_query {
    uintptr_t addr;              /* a code address in the module, or 0 for the main program */
    unsigned char *id;
    size_t len, cap;
    bool found;
};

/* The build-id note among a module's PT_NOTE segments, if any. */
static size_t note_id(const struct dl_phdr_info *info, unsigned char *id, size_t cap)
{
    for (int i = 0; i < info->dlpi_phnum; i++) {
        const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
        if (ph->p_type != PT_NOTE)
            continue;
        const unsigned char *p = (const unsigned char *)(info->dlpi_addr + ph->p_vaddr);
        const unsigned char *end = p + ph->p_memsz;
        while (p + sizeof(ElfW(Nhdr)) <= end) {
            const ElfW(Nhdr) *n = (const ElfW(Nhdr) *)p;
            size_t name = (n->n_namesz + 3) & ~(size_t)3, desc = (n->n_descsz + 3) & ~(size_t)3;
            const unsigned char *d = p + sizeof *n + name;
            if (d + desc > end)
                break;
            if (n->n_type == NT_GNU_BUILD_ID && n->n_namesz == 4 &&
                memcmp(p + sizeof *n, "GNU", 4) == 0 && n->n_descsz <= cap) {
                memcpy(id, d, n->n_descsz);
                return n->n_descsz;
            }
            p = d + desc;
        }
    }
    return 0;
}

static bool holds(const struct dl_phdr_info *info, uintptr_t addr)
{
    for (int i = 0; i < info->dlpi_phnum; i++) {
        const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
        uintptr_t lo = info->dlpi_addr + ph->p_vaddr;
        if (ph->p_type == PT_LOAD && addr >= lo && addr - lo < ph->p_memsz)
            return true;
    }
    return false;
}

static int find_id_cb(struct dl_phdr_info *info, size_t size, void *data)
{
    (void)size;
    struct id_query *q = data;
    /* The loader lists the main program first. */
    if (q->addr ? !holds(info, q->addr) : false)
        return 0;
    q->len = note_id(info, q->id, q->cap);
    q->found = true;
    return 1;
}

static size_t build_id_at(uintptr_t addr, unsigned char *id, size_t cap)
{
    struct id_query q = { .addr = addr, .id = id, .cap = cap };
    dl_iterate_phdr(find_id_cb, &q);
    return q.found ? q.len : 0;
}

size_t pj__main_build_id(unsigned char *id, size_t cap)
{
    return build_id_at(0, id, cap);
}

static int buildid_encode(struct pj__wbuf *w, void (*fn)(void), char *err, size_t errlen)
{
    struct pj__fnref ref;
    int rc = pj__fnref_of(fn, &ref, err, errlen);
    if (rc)
        return rc;
    unsigned char id[ID_MAX];
    uint64_t offset = ref.offset;
    uint32_t len = (uint32_t)build_id_at((uintptr_t)fn, id, sizeof id);
    pj__wbuf_put(w, &offset, sizeof offset);
    pj__wbuf_put(w, &len, sizeof len);
    pj__wbuf_put(w, id, len);
    pj__wbuf_put(w, ref.path, strlen(ref.path));
    return 0;
}

static void hex(const unsigned char *id, size_t len, char *out, size_t cap)
{
    size_t k = 0;
    for (size_t i = 0; i < len && k + 3 <= cap; i++, k += 2)
        snprintf(out + k, cap - k, "%02x", id[i]);
    if (cap)
        out[k < cap ? k : cap - 1] = 0;
}

static int buildid_resolve(const unsigned char *ref, size_t len, void (**fn)(void), char *err,
                           size_t errlen)
{
    uint64_t offset;
    uint32_t id_len;
    if (len < 12 || (memcpy(&offset, ref, 8), memcpy(&id_len, ref + 8, 4), id_len > ID_MAX) ||
        len - 12 < id_len || len - 12 - id_len >= PATH_MAX) {
        snprintf(err, errlen, "malformed function reference (%zu bytes)", len);
        return PJ_EPROTO;
    }
    const unsigned char *want = ref + 12;
    const char *path = (const char *)ref + 12 + id_len;
    size_t path_len = len - 12 - id_len;
    int rc = pj__fnref_resolve(path, path_len, offset, 0, 0, fn, err, errlen);
    if (rc || !id_len)
        return rc;
    unsigned char have[ID_MAX];
    size_t have_len = build_id_at((uintptr_t)*fn, have, sizeof have);
    if (have_len == id_len && memcmp(have, want, id_len) == 0)
        return 0;
    char a[2 * ID_MAX + 1], b[2 * ID_MAX + 1];
    hex(want, id_len, a, sizeof a);
    hex(have, have_len, b, sizeof b);
    snprintf(err, errlen, "%.*s differs from rank 0's: ELF build-id %s here, %s on rank 0 (every "
             "node must run the same build)", (int)(path_len ? path_len : 16),
             path_len ? path : "the main program", have_len ? b : "(none)", a);
    *fn = NULL;
    return PJ_ERESOLVE;
}

const struct pj__fnref_ops pj__fnref_buildid = {
    .kind = PJ__FNREF_BUILDID,
    .encode = buildid_encode,
    .resolve = buildid_resolve,
};
