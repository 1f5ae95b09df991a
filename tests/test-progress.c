/* joblib's progress lines, replayed without Python: tests/progress/ holds transcripts that
 * scripts/record-joblib-progress recorded from joblib's own Parallel (the batches it dispatched
 * and completed, the moment it found its iterator exhausted, every line it printed, times
 * normalised to T).  Each transcript's events are fed to parjob's progress logic, which must
 * print the same lines at the same points. */
#include "../src/core/internal.h"
#include "helpers.h"

#include <dirent.h>
#include <stdio.h>
#include <string.h>

#ifndef PROGRESS_DIR
#define PROGRESS_DIR "tests/progress"
#endif

static char names[64][64];
static int n_names;

static const char *transcript_dir(void)
{
    const char *env = getenv("PJ_PROGRESS_DIR");
    return env && *env ? env : PROGRESS_DIR;
}

static int by_name(const void *a, const void *b)
{
    return strcmp(a, b);
}

static void list_transcripts(void)
{
    DIR *d = opendir(transcript_dir());
    if (!d)
        return;
    struct dirent *e;
    while ((e = readdir(d)) && n_names < 64) {
        size_t len = strlen(e->d_name);
        if (len > 4 && len < 64 && strcmp(e->d_name + len - 4, ".txt") == 0)
            snprintf(names[n_names++], sizeof names[0], "%s", e->d_name);
    }
    closedir(d);
    qsort(names, (size_t)n_names, sizeof names[0], by_name);
}

/* joblib's times become T, as the recorder wrote them: "elapsed:    0.1s" -> "elapsed: T". */
static void normalise_times(char *line)
{
    static const char *const keys[] = { "elapsed:", "remaining:" };
    for (int k = 0; k < 2; k++) {
        char *at = strstr(line, keys[k]);
        if (!at)
            continue;
        char *v = at + strlen(keys[k]), *end = v;
        while (*end == ' ')
            end++;
        while ((*end >= '0' && *end <= '9') || *end == '.')
            end++;
        if (strncmp(end, "min", 3) == 0)
            end += 3;
        else if (*end == 's')
            end++;
        memmove(v + 2, end, strlen(end) + 1);
        v[0] = ' ', v[1] = 'T';
    }
}

struct replay {
    struct pj__progress p;
    char *out;                /* what parjob printed, not yet matched */
    size_t out_len;
    FILE *stream;
    size_t matched;           /* bytes of out matched so far */
    const char *file;
    int line_no;
};

/* The next line parjob printed and no expectation has consumed yet, or NULL. */
static char *next_printed(struct replay *r, char *buf, size_t len)
{
    fflush(r->stream);
    if (r->matched >= r->out_len)
        return NULL;
    const char *start = r->out + r->matched, *nl = strchr(start, '\n');
    ck_assert_msg(nl, "%s: an unterminated line: %s", r->file, start);
    size_t n = (size_t)(nl - start);
    snprintf(buf, len, "%.*s", (int)n, start);
    r->matched += n + 1;
    normalise_times(buf);
    return buf;
}

static void expect_quiet(struct replay *r)
{
    char got[512];
    ck_assert_msg(!next_printed(r, got, sizeof got), "%s:%d: parjob printed \"%s\" where joblib "
                  "printed nothing", r->file, r->line_no, got);
}

static void expect_line(struct replay *r, const char *stream, const char *want, int verbose)
{
    char got[512];
    ck_assert_msg(strcmp(stream, verbose >= 50 ? "stdout" : "stderr") == 0,
                  "%s:%d: joblib wrote to %s at verbose %d", r->file, r->line_no, stream, verbose);
    ck_assert_msg(next_printed(r, got, sizeof got), "%s:%d: joblib printed \"%s\", parjob "
                  "nothing", r->file, r->line_no, want);
    ck_assert_msg(strcmp(got, want) == 0, "%s:%d:\n  joblib: %s\n  parjob: %s", r->file,
                  r->line_no, want, got);
}

/* "config n_tasks=100 n_jobs=-1 workers=2 verbose=10 pre_dispatch=4 backend=..." */
static void begin(struct replay *r, const char *config)
{
    char n_tasks[32], label[16], pre[32], backend[64];
    int workers, verbose;
    ck_assert_int_eq(sscanf(config, "config n_tasks=%31s n_jobs=%15s workers=%d verbose=%d "
                            "pre_dispatch=%31s backend=%63s", n_tasks, label, &workers, &verbose,
                            pre, backend), 6);
    bool all = strcmp(pre, "all") == 0;
    pj__progress_begin(&r->p, &(struct pj__progress_setup){
        .verbose = verbose, .n_jobs_label = label, .workers = workers,
        .backend_display = backend, .total_known = strcmp(n_tasks, "-") != 0,
        .n_tasks = strtoul(n_tasks, NULL, 10), .pre_dispatch = all ? 0 : strtoul(pre, NULL, 10),
        .dispatch_all = all, .out = r->stream, .bar_tty = -1 });
}

static int replay_event(struct replay *r, const char *ev)
{
    size_t k;
    if (sscanf(ev, "dispatch %zu", &k) == 1) {
        pj__progress_dispatch_begin(&r->p);
        pj__progress_dispatch_end(&r->p, k);
    } else if (sscanf(ev, "complete %zu", &k) == 1) {
        pj__progress_completed(&r->p, k, 0);
    }
    else if (strcmp(ev, "exhausted") == 0)
        pj__progress_exhausted(&r->p);
    else if (strcmp(ev, "final") == 0)
        pj__progress_end(&r->p);
    else
        return -1;
    return 0;
}

START_TEST(replay_joblib_transcript)
{
    char path[512], ev[512];
    snprintf(path, sizeof path, "%s/%s", transcript_dir(), names[_i]);
    FILE *f = fopen(path, "r");
    ck_assert_msg(f, "cannot open %s", path);
    struct replay r = { .file = names[_i] };
    r.stream = open_memstream(&r.out, &r.out_len);
    int verbose = 0, lines = 0;
    bool configured = false;
    while (fgets(ev, sizeof ev, f)) {
        r.line_no++;
        ev[strcspn(ev, "\n")] = 0;
        if (ev[0] == '#' || ev[0] == 0)
            continue;
        if (strncmp(ev, "config ", 7) == 0) {
            ck_assert(sscanf(strstr(ev, "verbose="), "verbose=%d", &verbose) == 1);
            begin(&r, ev);
            configured = true;
        } else if (strncmp(ev, "line ", 5) == 0) {
            char stream[8];
            ck_assert_int_eq(sscanf(ev, "line %7s", stream), 1);
            expect_line(&r, stream, ev + 6 + strlen(stream), verbose);
            lines++;
        } else {
            ck_assert_msg(configured, "%s: events before the config line", r.file);
            expect_quiet(&r);
            ck_assert_msg(replay_event(&r, ev) == 0, "%s:%d: unknown event \"%s\"", r.file,
                          r.line_no, ev);
        }
    }
    expect_quiet(&r);
    ck_assert_msg(lines > 0, "%s: joblib printed nothing", r.file);
    fclose(f);
    fclose(r.stream);
    free(r.out);
}
END_TEST

/* The transcripts are there: an empty directory would pass every replay vacuously. */
START_TEST(transcripts_present)
{
    ck_assert_msg(n_names >= 20, "%d transcripts in %s", n_names, transcript_dir());
}
END_TEST

/* ---- the progress bar ------------------------------------------------------------------------ */

struct bar_run {
    struct pj__progress p;
    char *text;
    size_t len;
    FILE *out;
};

static void bar_begin(struct bar_run *b, int tty, bool known, size_t n)
{
    b->out = open_memstream(&b->text, &b->len);
    pj__progress_begin(&b->p, &(struct pj__progress_setup){
        .n_jobs_label = "2", .workers = 2, .backend_display = "ThreadingBackend",
        .total_known = known, .n_tasks = n, .pre_dispatch = 4, .callback = PJ_PROGRESS_BAR,
        .bar_out = b->out, .bar_tty = tty });
}

static void bar_done(struct bar_run *b)
{
    fclose(b->out);
    free(b->text);
}

static size_t count_char(const char *s, size_t len, char c)
{
    size_t n = 0;
    for (size_t i = 0; i < len; i++)
        n += s[i] == c;
    return n;
}

/* On a terminal: redrawn in place (\r, no newline) at most ~10 times a second however many
 * completions come, the last state finished with a newline. */
START_TEST(bar_redraws_in_place_at_a_bounded_rate)
{
    struct bar_run b;
    bar_begin(&b, 1, true, 1000);
    double t0 = now_s();
    for (int i = 0; i < 1000; i++) {
        pj__progress_dispatch_begin(&b.p);
        pj__progress_dispatch_end(&b.p, 1);
        pj__progress_completed(&b.p, 1, 1000);
        sleep_us(100);
    }
    double took = now_s() - t0;
    pj__progress_end(&b.p);
    fflush(b.out);
    size_t redraws = count_char(b.text, b.len, '\r');
    ck_assert_msg(redraws >= 2 && redraws <= 2 + (size_t)(took / 0.1), "%zu redraws in %.2f s",
                  redraws, took);
    ck_assert_uint_eq(count_char(b.text, b.len, '\n'), 1);
    ck_assert_msg(b.len && b.text[b.len - 1] == '\n', "no newline at the end: %s", b.text);
    const char *last = strrchr(b.text, '\r');
    ck_assert_msg(strncmp(last, "\r1000/1000 100% |###", 20) == 0, "last: %s", last);
    ck_assert_msg(strstr(last, "tasks/s elapsed ") && strstr(last, " eta 0:00"), "%s", last);
    bar_done(&b);
}
END_TEST

/* Not a terminal: plain lines, not redraws; a producer's unknown total shows a count only. */
START_TEST(bar_plain_lines_and_unknown_total)
{
    struct bar_run b;
    bar_begin(&b, 0, false, 0);
    for (int i = 0; i < 50; i++)
        pj__progress_completed(&b.p, 1, 0);
    fflush(b.out);
    ck_assert_uint_eq(count_char(b.text, b.len, '\r'), 0);
    ck_assert_uint_eq(count_char(b.text, b.len, '\n'), 1); /* the first, then 10 s apart */
    ck_assert_msg(strncmp(b.text, "1 tasks ", 8) == 0 && !strchr(b.text, '|'), "%s", b.text);
    pj__progress_end(&b.p);
    fflush(b.out);
    ck_assert_msg(strstr(b.text, "\n50/50 100% |"), "%s", b.text);
    bar_done(&b);
}
END_TEST

/* A run begun while another's bar is up (nested in its tasks) draws nothing; once the first
 * ends, the next run's bar draws again. */
START_TEST(bar_nested_runs_draw_one_bar)
{
    struct bar_run outer, inner, after;
    bar_begin(&outer, 1, true, 10);
    bar_begin(&inner, 1, true, 5);
    for (int i = 0; i < 5; i++)
        pj__progress_completed(&inner.p, 1, 5);
    pj__progress_end(&inner.p);
    fflush(inner.out);
    ck_assert_msg(inner.len == 0, "the nested bar drew: %s", inner.text);
    pj__progress_completed(&outer.p, 10, 10);
    pj__progress_end(&outer.p);
    fflush(outer.out);
    ck_assert_ptr_nonnull(strstr(outer.text, "\r10/10 100% |"));
    bar_begin(&after, 1, true, 3);
    pj__progress_completed(&after.p, 3, 3);
    pj__progress_end(&after.p);
    fflush(after.out);
    ck_assert_ptr_nonnull(strstr(after.text, "\r3/3 100% |"));
    bar_done(&outer);
    bar_done(&inner);
    bar_done(&after);
}
END_TEST

int main(void)
{
    list_transcripts();
    Suite *s = suite_create("progress");
    TCase *tc = tcase_create("joblib_transcripts");
    tcase_add_test(tc, transcripts_present);
    if (n_names)
        tcase_add_loop_test(tc, replay_joblib_transcript, 0, n_names);
    suite_add_tcase(s, tc);
    TCase *bar = tcase_create("bar");
    tcase_add_test(bar, bar_redraws_in_place_at_a_bounded_rate);
    tcase_add_test(bar, bar_plain_lines_and_unknown_total);
    tcase_add_test(bar, bar_nested_runs_draw_one_bar);
    suite_add_tcase(s, bar);
    return run_suite(s);
}
