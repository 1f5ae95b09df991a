/* Message framing, beside the codec (codec.c): every message between a parent and a worker
 * process is a struct pj__msg_header (type, magic, length) then `len` bytes of body.  This file
 * is the one place that writes and checks a header and that writes and parses the small bodies
 * that are not batches or records:
 *     READY      worker -> parent, first and once: empty
 *     DONE       worker -> parent: u64 exec_ns, the batch's run time in the worker
 *     ERROR      worker -> parent: i32 code (a PJ_E code), u32 0, then the reason's bytes (no
 *                NUL); the reader keeps at most PJ__FRAME_WHY_MAX of them
 *     BATCH_SHM  parent -> worker: u64 half, u64 length: a batch body lies in that input half
 *                of the worker's region, after a header's worth of bytes
 *     SHARE      parent -> worker: u64 id, u64 size, u32 readonly (0 or 1), u32 0: map this
 *                shared object, whose descriptor the transport attaches (sharing.c)
 *     UNSHARE    parent -> worker: u64 id: unmap it, it died
 * BATCH and INIT bodies are the codec's batches, RECORDS bodies its records.
 *
 * Nothing here touches a descriptor: the bytes go wherever the transport carries them. */
#include "process.h"

#include <string.h>

struct pj__msg_header pj__frame_header(uint32_t type, uint64_t len)
{
    return (struct pj__msg_header){ type, PJ__MSG_MAGIC, len };
}

bool pj__frame_valid(const struct pj__msg_header *h)
{
    return h->magic == PJ__MSG_MAGIC && h->len <= PJ__MSG_MAX;
}

int pj__frame_next(const unsigned char *p, size_t n, struct pj__msg_header *h)
{
    if (n < sizeof *h)
        return 0;
    memcpy(h, p, sizeof *h);
    if (!pj__frame_valid(h))
        return -1;
    return n - sizeof *h >= h->len ? 1 : 0;
}

bool pj__frame_to_worker(uint32_t type)
{
    return type == PJ__MSG_BATCH || type == PJ__MSG_INIT || type == PJ__MSG_BATCH_SHM ||
           type == PJ__MSG_SHARE || type == PJ__MSG_UNSHARE;
}

void pj__frame_put_share(unsigned char body[PJ__FRAME_SHARE_LEN], uint64_t id, uint64_t size,
                         bool readonly)
{
    uint32_t flags[2] = { readonly, 0 };
    memcpy(body, &id, 8);
    memcpy(body + 8, &size, 8);
    memcpy(body + 16, flags, 8);
}

bool pj__frame_share(const unsigned char *body, size_t len, uint64_t *id, uint64_t *size,
                     bool *readonly)
{
    uint32_t flags[2];
    if (len != PJ__FRAME_SHARE_LEN)
        return false;
    memcpy(id, body, 8);
    memcpy(size, body + 8, 8);
    memcpy(flags, body + 16, 8);
    *readonly = flags[0] == 1;
    return *size && flags[0] <= 1 && !flags[1];
}

size_t pj__frame_open(struct pj__wbuf *w, uint32_t type)
{
    size_t at = w->len;
    struct pj__msg_header h = pj__frame_header(type, 0);
    pj__wbuf_put(w, &h, sizeof h);
    return at;
}

void pj__frame_close(struct pj__wbuf *w, size_t at)
{
    if (w->oom)
        return;
    struct pj__msg_header h;
    memcpy(&h, w->p + at, sizeof h);
    h.len = w->len - at - sizeof h;
    memcpy(w->p + at, &h, sizeof h);
}

void pj__frame_put_done(unsigned char body[PJ__FRAME_DONE_LEN], uint64_t exec_ns)
{
    memcpy(body, &exec_ns, sizeof exec_ns);
}

bool pj__frame_done(const unsigned char *body, size_t len, uint64_t *exec_ns)
{
    if (len != PJ__FRAME_DONE_LEN)
        return false;
    memcpy(exec_ns, body, sizeof *exec_ns);
    return true;
}

void pj__frame_put_error(struct pj__wbuf *w, int code, const char *why)
{
    size_t at = pj__frame_open(w, PJ__MSG_ERROR);
    int32_t head[2] = { code, 0 };
    pj__wbuf_put(w, head, sizeof head);
    pj__wbuf_put(w, why, strlen(why));
    pj__frame_close(w, at);
}

struct pj__frame_error pj__frame_error(const unsigned char *body, size_t len)
{
    struct pj__frame_error e = { PJ_EPROTO, 0, "" };
    int32_t code = PJ_EPROTO;
    if (len >= 8)
        memcpy(&code, body, sizeof code);
    /* A worker sends PJ_E codes only; anything else is a broken worker, not its reason. */
    if (code < 0 && code >= -100)
        e.code = code;
    if (len > 8) {
        e.why = (const char *)body + 8;
        e.why_len = (int)(len - 8 < PJ__FRAME_WHY_MAX ? len - 8 : PJ__FRAME_WHY_MAX);
    }
    return e;
}

void pj__put_area_batch(struct pj__wbuf *w, int half, uint64_t len)
{
    uint64_t at[2] = { (uint64_t)half, len };
    w->len = 0;
    struct pj__msg_header h = pj__frame_header(PJ__MSG_BATCH_SHM, sizeof at);
    pj__wbuf_put(w, &h, sizeof h);
    pj__wbuf_put(w, at, sizeof at);
}

const unsigned char *pj__area_batch_body(struct pj__shm *shm, const unsigned char *body,
                                         size_t n, size_t *len)
{
    const size_t head = sizeof(struct pj__msg_header);
    uint64_t at[2]; /* half, length */
    if (n != sizeof at)
        return NULL;
    memcpy(at, body, sizeof at);
    if (at[0] > 1 || shm->in_cap < head || at[1] > shm->in_cap - head)
        return NULL;
    *len = (size_t)at[1];
    return pj__shm_input(shm, (int)at[0]) + head;
}
