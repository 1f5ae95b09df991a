/* Mistakes parjob.h stops at compile time, with words that say the fix: PJ_FN given more than
 * 16 parameter types, and a struct passed by value to pj_delayed.  Each case compiles a small
 * program with the project's C compiler (PJ_TEST_CC, set by meson) and reads its messages;
 * the same program with the mistake fixed must compile cleanly (-pedantic -Werror), so a
 * broken setup cannot pass and the checks themselves add no warning. */
#include <check.h>

#include "helpers.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

/* Compiles source (-fsyntax-only); returns the compiler's exit status, its messages in out. */
static int compile(const char *source, char *out, size_t len)
{
    const char *cc = getenv("PJ_TEST_CC"), *inc = getenv("PJ_TEST_INCLUDES");
    ck_assert_msg(cc && inc, "PJ_TEST_CC and PJ_TEST_INCLUDES must be set (meson sets them)");
    char path[] = "/tmp/pjtest-compile-XXXXXX.c";
    int fd = mkstemps(path, 2);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(write(fd, source, strlen(source)), (ssize_t)strlen(source));
    close(fd);
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "%s -std=c11 -pedantic -Wall -Wextra -Werror -fsyntax-only %s %s "
             "2>&1", cc, inc, path);
    FILE *p = popen(cmd, "r");
    ck_assert_ptr_nonnull(p);
    size_t n = fread(out, 1, len - 1, p);
    out[n] = 0;
    int status = pclose(p);
    unlink(path);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

#define ck_compiles(src)                                                                       \
    do {                                                                                       \
        char msg_[16384];                                                                      \
        ck_assert_msg(compile((src), msg_, sizeof msg_) == 0, "does not compile:\n%s", msg_);  \
    } while (0)

#define ck_refused_with(src, words)                                                            \
    do {                                                                                       \
        char msg_[16384];                                                                      \
        ck_assert_msg(compile((src), msg_, sizeof msg_) != 0, "compiles, must not:\n%s", msg_); \
        ck_assert_msg(strstr(msg_, (words)) != NULL, "messages lack \"%s\":\n%s", (words),     \
                      msg_);                                                                   \
    } while (0)

#define TYPES_8 "&ffi_type_sint, &ffi_type_sint, &ffi_type_sint, &ffi_type_sint, " \
                "&ffi_type_sint, &ffi_type_sint, &ffi_type_sint, &ffi_type_sint"

static const char fn_head[] = "#include <parjob.h>\n"
                              "static void f(void) {}\n"
                              "int main(void) {\n"
                              "    pj_fn *fn = PJ_FN(f, &ffi_type_void, ";
static const char fn_tail[] = ");\n    pj_fn_free(fn);\n    return 0;\n}\n";

START_TEST(pj_fn_beyond_16_types)
{
    char src[2048];
    snprintf(src, sizeof src, "%s%s, %s%s", fn_head, TYPES_8, TYPES_8, fn_tail);
    ck_compiles(src);
    snprintf(src, sizeof src, "%s%s, %s, &ffi_type_sint%s", fn_head, TYPES_8, TYPES_8, fn_tail);
    ck_refused_with(src, "use pj_fn_new");
    snprintf(src, sizeof src, "%s%s, %s, %s%s", fn_head, TYPES_8, TYPES_8, TYPES_8, fn_tail);
    ck_refused_with(src, "use pj_fn_new");
}
END_TEST

static const char struct_src[] =
    "#include <parjob.h>\n"
    "struct pt { int x, y; };\n"
    "static int px(struct pt p, const char *s) { return p.x + s[0]; }\n"
    "int main(void) {\n"
    "    static ffi_type *el[] = { &ffi_type_sint, &ffi_type_sint, NULL };\n"
    "    static ffi_type pt_t = { 0, 0, FFI_TYPE_STRUCT, el };\n"
    "    pj_fn *fn = PJ_FN(px, &ffi_type_sint, &pt_t, &ffi_type_pointer);\n"
    "    struct pt p = { 1, 2 };\n"
    "    char name[8] = \"ab\";\n"
    "    pj_task *t = pj_delayed(fn, %s, pj_cstr(name));\n"
    "    pj_task_free(t);\n"
    "    pj_fn_free(fn);\n"
    "    return 0;\n"
    "}\n";

START_TEST(struct_by_value_to_delayed)
{
    char src[2048];
    snprintf(src, sizeof src, struct_src, "&p");
    ck_compiles(src);
    snprintf(src, sizeof src, struct_src, "p");
    ck_refused_with(src, "pass a pointer to the struct");
}
END_TEST

static Suite *compile_suite(void)
{
    Suite *s = suite_create("compile");
    TCase *tc = tcase_create("header");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, pj_fn_beyond_16_types);
    tcase_add_test(tc, struct_by_value_to_delayed);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return run_suite(compile_suite());
}
