/* Message framing (framing.c): the one place headers and the small bodies are written and
 * checked.  What a parent or a worker must refuse, and that every body reads back as written. */
#include "process.h" /* the framing functions are hidden: checked directly */

#include "helpers.h"

#include <string.h>

static struct pj__wbuf framed(uint32_t type, const void *body, size_t len)
{
    struct pj__wbuf w = { 0 };
    size_t at = pj__frame_open(&w, type);
    pj__wbuf_put(&w, body, len);
    pj__frame_close(&w, at);
    ck_assert(!w.oom);
    return w;
}

START_TEST(a_message_is_whole_only_with_all_its_body)
{
    struct pj__wbuf w = framed(PJ__MSG_RECORDS, "abcdefgh", 8);
    struct pj__msg_header h;
    ck_assert_uint_eq(w.len, sizeof h + 8);
    for (size_t n = 0; n < w.len; n++)
        ck_assert_msg(pj__frame_next(w.p, n, &h) == 0, "%zu of %zu bytes read as whole", n,
                      w.len);
    ck_assert_int_eq(pj__frame_next(w.p, w.len, &h), 1);
    ck_assert_uint_eq(h.type, PJ__MSG_RECORDS);
    ck_assert_uint_eq(h.len, 8);
    pj__wbuf_free(&w);
}
END_TEST

START_TEST(a_bad_magic_or_length_is_refused_at_once)
{
    struct pj__msg_header h = pj__frame_header(PJ__MSG_DONE, 8), out;
    ck_assert(pj__frame_valid(&h));
    h.magic ^= 1;
    ck_assert(!pj__frame_valid(&h));
    ck_assert_int_eq(pj__frame_next((const unsigned char *)&h, sizeof h, &out), -1);
    h = pj__frame_header(PJ__MSG_RECORDS, PJ__MSG_MAX + 1);
    /* Refused before its body arrives: a corrupt length must not make the reader wait for,
     * or allocate, 2^36 bytes. */
    ck_assert_int_eq(pj__frame_next((const unsigned char *)&h, sizeof h, &out), -1);
}
END_TEST

START_TEST(a_worker_accepts_only_what_a_parent_sends)
{
    ck_assert(pj__frame_to_worker(PJ__MSG_BATCH));
    ck_assert(pj__frame_to_worker(PJ__MSG_INIT));
    ck_assert(pj__frame_to_worker(PJ__MSG_BATCH_SHM));
    ck_assert(!pj__frame_to_worker(PJ__MSG_DONE));
    ck_assert(!pj__frame_to_worker(PJ__MSG_ERROR));
    ck_assert(!pj__frame_to_worker(PJ__MSG_RECORDS));
    ck_assert(!pj__frame_to_worker(PJ__MSG_READY));
    ck_assert(!pj__frame_to_worker(0));
}
END_TEST

START_TEST(done_carries_the_run_time)
{
    unsigned char body[PJ__FRAME_DONE_LEN];
    pj__frame_put_done(body, 123456789u);
    uint64_t ns = 0;
    ck_assert(pj__frame_done(body, sizeof body, &ns));
    ck_assert_uint_eq(ns, 123456789u);
    ck_assert(!pj__frame_done(body, sizeof body - 1, &ns));
    ck_assert(!pj__frame_done(body, 0, &ns));
}
END_TEST

static struct pj__frame_error error_of(const struct pj__wbuf *w)
{
    struct pj__msg_header h;
    ck_assert_int_eq(pj__frame_next(w->p, w->len, &h), 1);
    ck_assert_uint_eq(h.type, PJ__MSG_ERROR);
    return pj__frame_error(w->p + sizeof h, (size_t)h.len);
}

START_TEST(error_carries_code_and_reason)
{
    struct pj__wbuf w = { 0 };
    pj__frame_put_error(&w, PJ_ERESOLVE, "no module holds it");
    struct pj__frame_error e = error_of(&w);
    ck_assert_int_eq(e.code, PJ_ERESOLVE);
    ck_assert_int_eq(e.why_len, (int)strlen("no module holds it"));
    ck_assert(memcmp(e.why, "no module holds it", (size_t)e.why_len) == 0);
    pj__wbuf_free(&w);
}
END_TEST

START_TEST(error_reason_is_clamped_once_for_every_reader)
{
    char why[1000];
    memset(why, 'x', sizeof why - 1);
    why[sizeof why - 1] = 0;
    struct pj__wbuf w = { 0 };
    pj__frame_put_error(&w, PJ_EPROTO, why);
    ck_assert_int_eq(error_of(&w).why_len, PJ__FRAME_WHY_MAX);
    pj__wbuf_free(&w);
}
END_TEST

START_TEST(error_without_a_valid_code_is_a_protocol_error)
{
    int32_t head[2] = { 5, 0 }; /* not a PJ_E code */
    ck_assert_int_eq(pj__frame_error((const unsigned char *)head, sizeof head).code, PJ_EPROTO);
    head[0] = -1000;
    ck_assert_int_eq(pj__frame_error((const unsigned char *)head, sizeof head).code, PJ_EPROTO);
    struct pj__frame_error e = pj__frame_error((const unsigned char *)head, 3);
    ck_assert_int_eq(e.code, PJ_EPROTO);
    ck_assert_int_eq(e.why_len, 0);
}
END_TEST

START_TEST(an_area_batch_names_a_body_inside_the_input_half)
{
    size_t size = PJ__SHM_SIZE;
    struct pj__shm *shm = calloc(1, size);
    ck_assert_ptr_nonnull(shm);
    shm->cap = PJ__SHM_HALF_CAP(size);
    shm->in_cap = PJ__SHM_INPUT;
    struct pj__wbuf w = { 0 };
    pj__put_area_batch(&w, 1, 1000);
    struct pj__msg_header h;
    ck_assert_int_eq(pj__frame_next(w.p, w.len, &h), 1);
    ck_assert_uint_eq(h.type, PJ__MSG_BATCH_SHM);
    ck_assert_uint_eq(h.len, PJ__FRAME_AREA_LEN);
    size_t len = 0;
    const unsigned char *body = pj__area_batch_body(shm, w.p + sizeof h, (size_t)h.len, &len);
    ck_assert_ptr_eq(body, pj__shm_input(shm, 1) + sizeof h);
    ck_assert_uint_eq(len, 1000);
    pj__put_area_batch(&w, 1, PJ__SHM_INPUT); /* the header's bytes do not fit after it */
    ck_assert_ptr_null(pj__area_batch_body(shm, w.p + sizeof h, (size_t)h.len, &len));
    pj__put_area_batch(&w, 2, 16);
    ck_assert_ptr_null(pj__area_batch_body(shm, w.p + sizeof h, (size_t)h.len, &len));
    pj__wbuf_free(&w);
    free(shm);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("framing");
    TCase *tc = tcase_create("framing");
    tcase_add_test(tc, a_message_is_whole_only_with_all_its_body);
    tcase_add_test(tc, a_bad_magic_or_length_is_refused_at_once);
    tcase_add_test(tc, a_worker_accepts_only_what_a_parent_sends);
    tcase_add_test(tc, done_carries_the_run_time);
    tcase_add_test(tc, error_carries_code_and_reason);
    tcase_add_test(tc, error_reason_is_clamped_once_for_every_reader);
    tcase_add_test(tc, error_without_a_valid_code_is_a_protocol_error);
    tcase_add_test(tc, an_area_batch_names_a_body_inside_the_input_half);
    suite_add_tcase(s, tc);
    return run_suite(s);
}
