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
        .dispatch_all = all, .out = r->stream });
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

int main(void)
{
    list_transcripts();
    Suite *s = suite_create("progress");
    TCase *tc = tcase_create("joblib_transcripts");
    tcase_add_test(tc, transcripts_present);
    if (n_names)
        tcase_add_loop_test(tc, replay_joblib_transcript, 0, n_names);
    suite_add_tcase(s, tc);
    return run_suite(s);
}
