/* err.h — status codes and the error buffer every core function fills.
 *
 * Core never prints and never exits: a function returns 0 or a negative AV_E*
 * code and writes one line into a caller-given av_err naming the file, the
 * byte offset or tensor, and what was expected. */
#ifndef AV_ERR_H
#define AV_ERR_H

#include <stddef.h>

enum {
    AV_OK = 0,
    AV_EIO = -1,          /* open/read/write/mmap failed (errno text in msg) */
    AV_EFORMAT = -2,      /* malformed or truncated input */
    AV_ENOMEM = -3,       /* allocation failed */
    AV_EINVAL = -4,       /* bad argument from the caller */
    AV_EUNSUPPORTED = -5, /* valid input we do not handle (yet) */
    AV_ENOTFOUND = -6,    /* missing key / tensor / file */
};

#define AV_ERR_MSG_MAX 512

typedef struct av_err {
    int code;
    char msg[AV_ERR_MSG_MAX];
} av_err;

/* Fill e (may be NULL) with a printf-formatted message; returns code. */
int av_errf(av_err *e, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Prefix the existing message with "prefix: " (e.g. a tool adding context). */
void av_err_prefix(av_err *e, const char *prefix);

/* Reset e to "no error". */
void av_err_clear(av_err *e);

/* Short static name of a status code ("format error", ...). */
const char *av_strerror(int code);

#endif
