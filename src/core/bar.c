/* The progress bar (config.progress = PJ_PROGRESS_BAR): one line on stderr, redrawn in place
 * at most BAR_REDRAW_NS apart while stderr is a terminal, plain lines at most BAR_PLAIN_NS
 * apart otherwise, finished with a newline when the run ends.
 *
 * The terminal is one per process: the first run that opens a bar owns it until it ends, and
 * a run nested in its tasks (or running beside it) draws nothing, so two bars never write
 * over each other; a process worker never draws (its stderr is the parent's terminal).  The
 * owner is an atomic pointer, the only process-wide state here, for that one resource. */
#include "internal.h"

#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

/* ~10 redraws a second: smooth to the eye, and a terminal write per 100 ms costs nothing. */
#define BAR_REDRAW_NS (100 * 1000 * 1000ull)
/* Without a terminal (a log file, a pipe) a line every 10 s keeps a log readable. */
#define BAR_PLAIN_NS (10 * 1000 * 1000 * 1000ull)
#define BAR_DEFAULT_COLUMNS 80

static _Atomic(struct pj__progress *) bar_owner;

void pj_progress_bar(void *data, size_t done, size_t total, double elapsed)
{
    /* Only a marker: the progress layer draws the bar itself (it knows when a run ends). */
    (void)data, (void)done, (void)total, (void)elapsed;
}

void pj__bar_begin(struct pj__progress *p, FILE *out, int tty)
{
    struct pj__progress *none = NULL;
    p->bar_out = out ? out : stderr;
    p->bar_tty = tty >= 0 ? tty : isatty(fileno(p->bar_out));
    p->bar_drawn_ns = 0;
    p->bar_lines = 0;
    p->bar_owner = !pj__in_worker_context() &&
                   atomic_compare_exchange_strong(&bar_owner, &none, p);
}

static int columns(const struct pj__progress *p)
{
    struct winsize ws;
    if (p->bar_tty && ioctl(fileno(p->bar_out), TIOCGWINSZ, &ws) == 0 && ws.ws_col >= 20)
        return ws.ws_col;
    return BAR_DEFAULT_COLUMNS;
}

/* "1:05" or "1:02:03". */
static void clock_text(char *buf, size_t len, double s)
{
    long t = s > 0 && s < 1e9 ? (long)(s + 0.5) : 0;
    if (t >= 3600)
        snprintf(buf, len, "%ld:%02ld:%02ld", t / 3600, t / 60 % 60, t % 60);
    else
        snprintf(buf, len, "%ld:%02ld", t / 60, t % 60);
}

/* The figures after the bar: "42/100  42% |...| 12.3/s 0:03<0:05", without the bar's part. */
static void figures(char *head, size_t hlen, char *tail, size_t tlen, size_t done, size_t total,
                    double elapsed)
{
    double rate = elapsed > 0 ? (double)done / elapsed : 0;
    char took[32], left[32];
    clock_text(took, sizeof took, elapsed);
    if (total) {
        clock_text(left, sizeof left, rate > 0 ? (double)(total - done) / rate : 0);
        snprintf(head, hlen, "%zu/%zu %3d%% ", done, total, (int)(100.0 * done / total));
        snprintf(tail, tlen, " %.1f tasks/s elapsed %s eta %s", rate, took, rate > 0 ? left
                                                                                  : "?");
    } else {
        snprintf(head, hlen, "%zu tasks", done);
        snprintf(tail, tlen, " %.1f tasks/s elapsed %s", rate, took);
    }
}

static void draw(struct pj__progress *p, size_t done, size_t total, double elapsed, bool last)
{
    char head[64], tail[96], bar[512] = "";
    figures(head, sizeof head, tail, sizeof tail, done, total, elapsed);
    if (total) {
        int width = columns(p) - 1 - (int)strlen(head) - (int)strlen(tail) - 2;
        width = width < 0 ? 0 : width > (int)sizeof bar - 3 ? (int)sizeof bar - 3 : width;
        int full = done >= total ? width : (int)((double)width * done / total);
        bar[0] = '|';
        memset(bar + 1, '#', (size_t)full);
        memset(bar + 1 + full, ' ', (size_t)(width - full));
        bar[1 + width] = '|';
        bar[2 + width] = 0;
    }
    if (p->bar_tty)
        fprintf(p->bar_out, "\r%s%s%s\033[K%s", head, bar, tail, last ? "\n" : "");
    else
        fprintf(p->bar_out, "%s%s%s\n", head, bar, tail);
    fflush(p->bar_out);
    p->bar_lines++;
}

void pj__bar_update(struct pj__progress *p, size_t done, size_t total, double elapsed)
{
    if (!p->bar_owner)
        return;
    uint64_t now = pj__now_ns(), gap = p->bar_tty ? BAR_REDRAW_NS : BAR_PLAIN_NS;
    if (p->bar_drawn_ns && now - p->bar_drawn_ns < gap)
        return;
    p->bar_drawn_ns = now;
    draw(p, done, total, elapsed, false);
}

void pj__bar_end(struct pj__progress *p, size_t done, size_t total, double elapsed)
{
    if (!p->bar_owner)
        return;
    draw(p, done, total ? total : 0, elapsed, true);
    p->bar_owner = false;
    atomic_store(&bar_owner, NULL);
}
