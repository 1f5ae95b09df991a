/* Progress in joblib's words: the same lines at the same moments, and a callback with the same
 * figures for programs that draw their own bar.
 *
 * The lines follow joblib's Parallel.print_progress (joblib 1.6), fed the same events: a batch
 * dispatched, a batch completed (printing, before the dispatcher tries to take the next one),
 * the dispatcher finding the source exhausted.  While the source is open, a line is printed
 * when the number of *dispatched* batches crosses joblib's square-root scale; once it is
 * exhausted, "remaining:" lines fall on joblib's cursor arithmetic; "finished" comes with the
 * completion that leaves nothing in flight and nothing to take.  tests/test-progress.c replays
 * joblib's recorded event sequences (tests/progress/) through these functions. */
#include "internal.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

void pj__format_time(char *buf, size_t len, double seconds)
{
    if (seconds > 60)
        snprintf(buf, len, "%4.1fmin", seconds / 60.0);
    else
        snprintf(buf, len, " %5.1fs", seconds);
}

static double elapsed_s(const struct pj__progress *p)
{
    return (double)(pj__now_ns() - p->start_ns) / 1e9;
}

static void emit(const struct pj__progress *p, const char *fmt, ...) PJ_PRINTF(2, 3);

static void emit(const struct pj__progress *p, const char *fmt, ...)
{
    FILE *out = p->out ? p->out : p->verbose >= 50 ? stdout : stderr;
    char line[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    fprintf(out, "[Parallel(n_jobs=%s)]: %s\n", p->n_jobs_label, line);
    fflush(out);
}

/* joblib's width: the digits of the number of tasks when it is known, else 3. */
static int count_width(const struct pj__progress *p)
{
    if (!p->total_known || p->n_tasks == 0)
        return 3;
    int w = 1;
    for (size_t t = p->n_tasks; t >= 10; t /= 10)
        w++;
    return w;
}

void pj__progress_begin(struct pj__progress *p, const struct pj__progress_setup *s)
{
    *p = (struct pj__progress){
        .verbose = s->verbose > 0 ? s->verbose : 0,
        .sequential = s->workers == 1,
        .total_known = s->total_known,
        .n_tasks = s->n_tasks,
        .pre_dispatch = s->pre_dispatch,
        .dispatch_open = !s->dispatch_all,
        .start_ns = pj__now_ns(),
        .out = s->out,
        .callback = s->callback,
        .callback_data = s->callback_data,
        .bar = s->callback == PJ_PROGRESS_BAR,
    };
    if (p->bar) {
        p->callback = NULL;
        pj__bar_begin(p, s->bar_out, s->bar_tty);
    }
    snprintf(p->n_jobs_label, sizeof p->n_jobs_label, "%s", s->n_jobs_label);
    if (p->verbose && !p->sequential) /* joblib's n_jobs == 1 path announces nothing */
        emit(p, "Using backend %s with %d concurrent workers%s%s%s.", s->backend_display,
             s->workers, s->share && *s->share ? " (" : "", s->share ? s->share : "",
             s->share && *s->share ? ")" : "");
}

/* joblib's _verbosity_filter: true to stay silent.  Prints when int(sqrt(index / s)) moves
 * between index and index + 1, s = 0.5 (11 - verbose)^2; every time above verbose 10. */
static bool filtered(int verbose, size_t index)
{
    if (verbose > 10 || index == 0)
        return false;
    double s = 0.5 * (11 - verbose) * (11 - verbose);
    return (long)sqrt((double)(index + 1) / s) == (long)sqrt((double)index / s);
}

/* Python's a % b (b > 0): never negative. */
static long long py_mod(long long a, long long b)
{
    long long m = a % b;
    return m < 0 ? m + b : m;
}

/* joblib's print_progress, on the counters as they stand. */
static void print_progress(struct pj__progress *p)
{
    if (!p->verbose)
        return;
    int w = count_width(p);
    char elapsed[32], remaining[32];
    double secs = elapsed_s(p);
    pj__format_time(elapsed, sizeof elapsed, secs);
    bool iterating = p->dispatch_open && p->dispatched_batches > 0;
    size_t done = p->completed_tasks;
    if (done == p->dispatched_tasks && !iterating) {
        emit(p, "Done %*zu out of %*zu | elapsed: %s finished", w, done, w, done, elapsed);
    } else if (p->dispatch_open) {
        if (filtered(p->verbose, p->dispatched_batches))
            return;
        if (p->total_known)
            emit(p, "Done %*zu out of %*zu | elapsed: %s", w, done, w, p->n_tasks, elapsed);
        else
            emit(p, "Done %*zu tasks %*s| elapsed: %s", w, done, (int)strlen("out of ") + w -
                 (int)strlen("tasks"), "", elapsed);
    } else {
        size_t total = p->dispatched_tasks;
        if (done != 0) {
            /* A line as soon as dispatch is over (cursor 0), then every total / verbose + 1
             * tasks, never for the last but one. */
            long long cursor = (long long)total - (long long)done + 1 - (long long)p->pre_dispatch;
            long long every = (long long)(total / (size_t)p->verbose) + 1;
            if (done + 1 == total || py_mod(cursor, every))
                return;
        }
        pj__format_time(remaining, sizeof remaining,
                        secs / (double)(done ? done : 1) * (double)(total - done));
        emit(p, "Done %*zu out of %*zu | elapsed: %s remaining: %s", w, done, w, total,
             elapsed, remaining);
    }
}

void pj__progress_dispatch_begin(struct pj__progress *p)
{
    if (!p->sequential) /* joblib's sequential path counts each task as it runs: see completed */
        p->dispatched_batches++;
}

void pj__progress_dispatch_end(struct pj__progress *p, size_t tasks)
{
    if (p->sequential)
        return;
    if (tasks == 0)
        p->dispatched_batches--;
    p->dispatched_tasks += tasks;
}

void pj__progress_completed(struct pj__progress *p, size_t tasks, size_t total_so_far)
{
    if (p->sequential) {
        for (size_t i = 0; i < tasks; i++) {
            p->dispatched_batches++;
            p->dispatched_tasks++;
            p->completed_tasks++;
            print_progress(p);
        }
    } else {
        p->completed_tasks += tasks;
        print_progress(p);
    }
    if (p->callback)
        p->callback(p->callback_data, p->completed_tasks, total_so_far, elapsed_s(p));
    else if (p->bar)
        pj__bar_update(p, p->completed_tasks, total_so_far, elapsed_s(p));
}

void pj__progress_exhausted(struct pj__progress *p)
{
    if (!p->sequential) /* joblib's sequential path drops its iterator only at the end */
        p->dispatch_open = false;
}

void pj__progress_end(struct pj__progress *p)
{
    if (p->bar) /* the total is known now: what completed */
        pj__bar_end(p, p->completed_tasks, p->completed_tasks, elapsed_s(p));
    if (!p->sequential)
        return; /* joblib's threads print "finished" from the last completion, or not at all */
    p->dispatch_open = false;
    print_progress(p);
}
