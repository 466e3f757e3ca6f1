#include "err.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

int av_errf(av_err *e, int code, const char *fmt, ...) {
    if (!e) return code;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->msg, sizeof e->msg, fmt, ap);
    va_end(ap);
    e->code = code;
    return code;
}

void av_err_prefix(av_err *e, const char *prefix) {
    if (!e || !prefix) return;
    char tmp[AV_ERR_MSG_MAX];
    size_t pl = strlen(prefix);
    if (pl > AV_ERR_MSG_MAX - 3) pl = AV_ERR_MSG_MAX - 3;
    memcpy(tmp, prefix, pl);
    memcpy(tmp + pl, ": ", 2);
    size_t room = AV_ERR_MSG_MAX - pl - 3, ml = strlen(e->msg);
    if (ml > room) ml = room;
    memcpy(tmp + pl + 2, e->msg, ml);
    tmp[pl + 2 + ml] = '\0';
    memcpy(e->msg, tmp, sizeof tmp);
}

void av_err_clear(av_err *e) {
    if (!e) return;
    e->code = 0;
    e->msg[0] = '\0';
}

const char *av_strerror(int code) {
    switch (code) {
    case AV_OK: return "ok";
    case AV_EIO: return "I/O error";
    case AV_EFORMAT: return "format error";
    case AV_ENOMEM: return "out of memory";
    case AV_EINVAL: return "invalid argument";
    case AV_EUNSUPPORTED: return "unsupported";
    case AV_ENOTFOUND: return "not found";
    default: return "unknown error";
    }
}
