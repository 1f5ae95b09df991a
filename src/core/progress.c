/* Progress in joblib's words: the same lines, at the same moments, and a callback with the same
 * figures for programs that draw their own bar. */
#include "internal.h"

#include <math.h>
#include <stdio.h>

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
    FILE *out = p->verbose >= 50 ? stdout : stderr;
    char line[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    fprintf(out, "[Parallel(n_jobs=%d)]: %s\n", p->n_jobs, line);
    fflush(out);
}

static int count_width(size_t total)
{
    int w = 1;
    for (size_t t = total; t >= 10; t /= 10)
        w++;
    return w < 3 ? 3 : w;
}

void pj__progress_begin(struct pj__progress *p, const pj_config *cfg, int n_jobs,
                        const char *backend_display, int workers)
{
    *p = (struct pj__progress){
        .verbose = cfg->verbose > 0 ? cfg->verbose : 0,
        .n_jobs = n_jobs,
        .start_ns = pj__now_ns(),
        .last_printed_done = SIZE_MAX,
        .callback = cfg->progress,
        .callback_data = cfg->progress_data,
    };
    if (p->verbose)
        emit(p, "Using backend %s with %d concurrent workers.", backend_display, workers);
}

/* joblib's _verbosity_filter: print when int(sqrt(batches / s)) moves, s = 0.5 (11 - v)^2. */
static bool scale_moved(int verbose, size_t done_batches)
{
    if (verbose > 10)
        return true;
    double s = 0.5 * (11 - verbose) * (11 - verbose);
    return (long)sqrt((double)done_batches / s) != (long)sqrt((double)(done_batches - 1) / s);
}

void pj__progress_batch(struct pj__progress *p, size_t done, size_t done_batches, size_t total,
                        bool all_dispatched)
{
    if (p->callback)
        p->callback(p->callback_data, done, total, elapsed_s(p));
    if (!p->verbose || (total && done >= total))
        return; /* the final line is pj__progress_end's */
    char elapsed[32];
    double secs = elapsed_s(p);
    pj__format_time(elapsed, sizeof elapsed, secs);
    int w = count_width(total ? total : done);
    if (!all_dispatched || !total) {
        if (!scale_moved(p->verbose, done_batches))
            return;
        if (total)
            emit(p, "Done %*zu out of %*zu | elapsed: %s", w, done, w, total, elapsed);
        else
            emit(p, "Done %*zu tasks      | elapsed: %s", w, done, elapsed);
        return;
    }
    /* Everything is dispatched: a line as soon as that happens, then about every
     * total / verbose + 1 tasks, with the time left at the rate so far. */
    size_t every = total / (size_t)p->verbose + 1;
    if (p->verbose <= 10 && p->last_printed_done != SIZE_MAX && done - p->last_printed_done < every)
        return;
    p->last_printed_done = done;
    char remaining[32];
    pj__format_time(remaining, sizeof remaining, done ? secs / done * (double)(total - done) : 0);
    emit(p, "Done %*zu out of %*zu | elapsed: %s remaining: %s", w, done, w, total, elapsed,
         remaining);
}

void pj__progress_end(struct pj__progress *p, size_t done)
{
    if (!p->verbose)
        return;
    char elapsed[32];
    pj__format_time(elapsed, sizeof elapsed, elapsed_s(p));
    int w = count_width(done);
    emit(p, "Done %*zu out of %*zu | elapsed: %s finished", w, done, w, done, elapsed);
}
