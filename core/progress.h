/* progress.h — a progress bar for long work, and the logging level.
 *
 * Core does not print on its own: the tool hands a FILE (normally stderr).
 * On a TTY the bar redraws in place (at most 10 times a second); otherwise it
 * prints a plain line at each quarter, so logs stay short. Work that ends
 * within a second prints nothing. */
#ifndef AV_PROGRESS_H
#define AV_PROGRESS_H

#include <stdint.h>
#include <stdio.h>

typedef struct av_bar {
    FILE *f;
    const char *label;
    uint64_t total;
    int tty;
    double t0, last_draw;
    int last_quarter;
} av_bar;

/* Start a bar on f for `total` units (bytes). f NULL disables it. */
void av_bar_init(av_bar *b, FILE *f, const char *label, uint64_t total);
/* Report progress; matches av_progress_fn so it can be passed as a callback with ud = av_bar*. */
void av_bar_update(void *bar, uint64_t done, uint64_t total);
/* Finish the line (TTY) or print the final plain line. */
void av_bar_done(av_bar *b);

/* Monotonic seconds. */
double av_now(void);

/* Logging level: 0 quiet, 1 normal (default), 2 verbose. The only mutable
 * global state in core. */
enum { AV_LOG_QUIET = 0, AV_LOG_INFO = 1, AV_LOG_DEBUG = 2 };
void av_log_set_level(int level);
int av_log_level(void);
/* Print to stderr when level <= the current level. */
void av_log(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
