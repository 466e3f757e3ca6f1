#include "progress.h"

#include <stdarg.h>
#include <time.h>
#include <unistd.h>

double av_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

void av_bar_init(av_bar *b, FILE *f, const char *label, uint64_t total) {
    b->f = f;
    b->label = label;
    b->total = total;
    b->tty = f && isatty(fileno(f));
    b->t0 = av_now();
    b->last_draw = 0;
    b->last_quarter = 0;
}

static void draw(av_bar *b, uint64_t done) {
    double frac = b->total ? (double)done / (double)b->total : 1.0;
    if (frac > 1) frac = 1;
    double el = av_now() - b->t0;
    double rate = el > 0 ? (double)done / el / 1e6 : 0;
    if (b->tty) {
        char bar[31];
        int fill = (int)(frac * 30);
        for (int i = 0; i < 30; i++) bar[i] = i < fill ? '#' : '.';
        bar[30] = '\0';
        fprintf(b->f, "\r%s [%s] %5.1f%% %8.1f MB/s %6.1fs", b->label, bar, frac * 100, rate, el);
    } else {
        fprintf(b->f, "%s: %3.0f%% (%.1f MB/s, %.1fs)\n", b->label, frac * 100, rate, el);
    }
    fflush(b->f);
}

/* Work shorter than this shows nothing: a bar that flashes is noise. */
#define QUIET_SECONDS 1.0

void av_bar_update(void *bar, uint64_t done, uint64_t total) {
    av_bar *b = bar;
    if (!b || !b->f) return;
    if (total) b->total = total;
    double t = av_now();
    if (t - b->t0 < QUIET_SECONDS) return;
    if (b->tty) {
        if (t - b->last_draw < 0.1 && done < b->total) return;
        b->last_draw = t;
        draw(b, done);
    } else {
        int q = b->total ? (int)(done * 4 / b->total) : 4;
        if (q > b->last_quarter && q < 4) {
            b->last_quarter = q;
            b->last_draw = t;
            draw(b, done);
        }
    }
}

void av_bar_done(av_bar *b) {
    if (!b || !b->f) return;
    if (!b->last_draw && !b->last_quarter) return; /* nothing shown: stay quiet */
    draw(b, b->total);
    if (b->tty) fputc('\n', b->f);
}

static int g_log_level = AV_LOG_INFO;

void av_log_set_level(int level) { g_log_level = level; }
int av_log_level(void) { return g_log_level; }

void av_log(int level, const char *fmt, ...) {
    if (level > g_log_level) return;
    va_list ap;
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
}
