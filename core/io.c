#include "io.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

int av_map_open(const char *path, av_map **out, av_err *err) {
    *out = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return av_errf(err, AV_EIO, "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int e = errno;
        close(fd);
        return av_errf(err, AV_EIO, "%s: cannot stat: %s", path, strerror(e));
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        return av_errf(err, AV_EIO, "%s: not a regular file", path);
    }
    av_map *m = calloc(1, sizeof *m);
    if (!m || !(m->path = strdup(path))) {
        free(m);
        close(fd);
        return av_errf(err, AV_ENOMEM, "%s: out of memory", path);
    }
    m->size = (size_t)st.st_size;
    m->refs = 1;
    if (m->size) {
        void *p = mmap(NULL, m->size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (p == MAP_FAILED) {
            int e = errno;
            close(fd);
            free(m->path);
            free(m);
            return av_errf(err, AV_EIO, "%s: mmap failed: %s", path, strerror(e));
        }
        m->data = p;
    }
    close(fd);
    *out = m;
    return 0;
}

void av_map_free(av_map *m) {
    if (!m || --m->refs > 0) return;
    if (m->data) munmap((void *)m->data, m->size);
    free(m->path);
    free(m);
}

int av_read_file(const char *path, size_t max_size, char **out, size_t *len, av_err *err) {
    *out = NULL;
    FILE *f = fopen(path, "rb");
    if (!f) return av_errf(err, AV_EIO, "%s: cannot open: %s", path, strerror(errno));
    char *buf = NULL;
    size_t n = 0, cap = 0;
    int rc = 0;
    for (;;) {
        if (n + 65536 + 1 > cap) {
            cap = cap ? cap * 2 : 65536 * 2;
            char *nb = realloc(buf, cap);
            if (!nb) { rc = av_errf(err, AV_ENOMEM, "%s: out of memory", path); goto fail; }
            buf = nb;
        }
        size_t r = fread(buf + n, 1, 65536, f);
        n += r;
        if (n > max_size) { rc = av_errf(err, AV_EFORMAT, "%s: larger than %zu bytes", path, max_size); goto fail; }
        if (r < 65536) break;
    }
    if (ferror(f)) { rc = av_errf(err, AV_EIO, "%s: read error", path); goto fail; }
    fclose(f);
    buf[n] = '\0';
    *out = buf;
    if (len) *len = n;
    return 0;
fail:
    fclose(f);
    free(buf);
    return rc;
}

#define OUT_BUF (4u << 20)

int av_out_open(const char *path, av_out **out, av_err *err) {
    *out = NULL;
    av_out *o = calloc(1, sizeof *o);
    if (!o) return av_errf(err, AV_ENOMEM, "%s: out of memory", path);
    o->fd = -1;
    o->path = strdup(path);
    size_t tl = strlen(path) + 32;
    o->tmp_path = malloc(tl);
    o->buf = malloc(OUT_BUF);
    if (!o->path || !o->tmp_path || !o->buf) {
        av_out_abort(o);
        return av_errf(err, AV_ENOMEM, "%s: out of memory", path);
    }
    o->buf_cap = OUT_BUF;
    snprintf(o->tmp_path, tl, "%s.tmp.%ld", path, (long)getpid());
    o->fd = open(o->tmp_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (o->fd < 0) {
        int e = errno;
        free(o->tmp_path);
        o->tmp_path = NULL; /* nothing to unlink */
        av_out_abort(o);
        return av_errf(err, AV_EIO, "%s: cannot create: %s", path, strerror(e));
    }
    *out = o;
    return 0;
}

static int write_all(av_out *o, const uint8_t *p, size_t n, uint64_t at, av_err *err);

static int flush_buf(av_out *o, av_err *err) {
    int rc = write_all(o, o->buf, o->buf_len, o->pos - o->buf_len, err);
    o->buf_len = 0;
    return rc;
}

/* Ask the kernel to start writing back what is already written, so the
 * final fsync waits for less (outputs are GBs; fsync is most of the time). */
#define WRITEBACK_STEP (16u << 20)

static int write_all(av_out *o, const uint8_t *p, size_t n, uint64_t at, av_err *err) {
    size_t off = 0;
    while (off < n) {
        ssize_t w = write(o->fd, p + off, n - off);
        if (w < 0) {
            if (errno == EINTR) continue;
            return av_errf(err, AV_EIO, "%s: write failed at offset %llu: %s", o->path,
                           (unsigned long long)(at + off), strerror(errno));
        }
        off += (size_t)w;
    }
    uint64_t end = at + n;
    if (end / WRITEBACK_STEP != at / WRITEBACK_STEP)
        sync_file_range(o->fd, 0, 0, SYNC_FILE_RANGE_WRITE); /* advisory: errors surface at fsync */
    return 0;
}

int av_out_write(av_out *o, const void *p, size_t n, av_err *err) {
    const uint8_t *s = p;
    if (n >= o->buf_cap) { /* large block: skip the copy through the buffer */
        int rc = flush_buf(o, err);
        if (rc) return rc;
        rc = write_all(o, s, n, o->pos, err);
        if (rc) return rc;
        o->pos += n;
        return 0;
    }
    while (n) {
        size_t k = o->buf_cap - o->buf_len;
        if (k > n) k = n;
        memcpy(o->buf + o->buf_len, s, k);
        o->buf_len += k;
        o->pos += k;
        s += k;
        n -= k;
        if (o->buf_len == o->buf_cap) {
            int rc = flush_buf(o, err);
            if (rc) return rc;
        }
    }
    return 0;
}

int av_out_zeros(av_out *o, size_t n, av_err *err) {
    static const uint8_t z[256];
    while (n) {
        size_t k = n < sizeof z ? n : sizeof z;
        int rc = av_out_write(o, z, k, err);
        if (rc) return rc;
        n -= k;
    }
    return 0;
}

int av_out_commit(av_out *o, av_err *err) {
    int rc = flush_buf(o, err);
    if (rc) goto fail;
    if (fsync(o->fd) != 0) {
        rc = av_errf(err, AV_EIO, "%s: fsync failed: %s", o->path, strerror(errno));
        goto fail;
    }
    if (close(o->fd) != 0) {
        o->fd = -1;
        rc = av_errf(err, AV_EIO, "%s: close failed: %s", o->path, strerror(errno));
        goto fail;
    }
    o->fd = -1;
    if (rename(o->tmp_path, o->path) != 0) {
        rc = av_errf(err, AV_EIO, "%s: rename from %s failed: %s", o->path, o->tmp_path, strerror(errno));
        goto fail;
    }
    /* make the rename itself durable */
    char *dup = strdup(o->path);
    if (dup) {
        int dfd = open(dirname(dup), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dfd >= 0) {
            fsync(dfd);
            close(dfd);
        }
        free(dup);
    }
    free(o->tmp_path);
    o->tmp_path = NULL;
    av_out_abort(o);
    return 0;
fail:
    av_out_abort(o);
    return rc;
}

void av_out_abort(av_out *o) {
    if (!o) return;
    if (o->fd >= 0) close(o->fd);
    if (o->tmp_path) unlink(o->tmp_path);
    free(o->tmp_path);
    free(o->path);
    free(o->buf);
    free(o);
}

int av_has_ext(const char *path, const char *ext) {
    size_t n = strlen(path), k = strlen(ext);
    return n >= k && strcasecmp(path + n - k, ext) == 0;
}

int av_write_atomic(const char *path, const void *p, size_t n, av_err *err) {
    av_out *o;
    int rc = av_out_open(path, &o, err);
    if (rc) return rc;
    if ((rc = av_out_write(o, p, n, err))) {
        av_out_abort(o);
        return rc;
    }
    return av_out_commit(o, err);
}

int av_parse_int(const char *s, long lo, long hi, int *out) {
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi) return -1;
    *out = (int)v;
    return 0;
}
