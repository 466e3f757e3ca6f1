/* io.h — mmap'd input and atomic, buffered output.
 *
 * Input files are mapped read-only (zero-copy tensor views). Output goes to
 * "<path>.tmp.<pid>", is fsync'd and renamed over <path> on commit, so a crash
 * or an error never leaves a half-written file under the final name. */
#ifndef AV_IO_H
#define AV_IO_H

#include <stdint.h>
#include <stdio.h>

#include "err.h"

typedef struct av_map {
    char *path;        /* owned copy of the path, for error messages */
    const uint8_t *data;
    size_t size;
    int refs;          /* shared by a model and its tensors' views */
} av_map;

/* Map path read-only. *out is owned by the caller (av_map_free). An empty
 * file maps to data == NULL, size == 0. Errors: AV_EIO. */
int av_map_open(const char *path, av_map **out, av_err *err);
/* Drop one reference; unmaps at zero. NULL-safe. */
void av_map_free(av_map *m);

/* Read a whole (small) file into a NUL-terminated heap buffer the caller
 * frees; rejects files larger than max_size. Errors: AV_EIO, AV_EFORMAT. */
int av_read_file(const char *path, size_t max_size, char **out, size_t *len, av_err *err);

typedef struct av_out {
    char *path;      /* final name */
    char *tmp_path;  /* where bytes go until commit */
    int fd;
    uint64_t pos;    /* bytes written so far */
    uint8_t *buf;
    size_t buf_len, buf_cap;
} av_out;

/* Start writing path atomically. *out owned by caller: commit or abort it. */
int av_out_open(const char *path, av_out **out, av_err *err);
/* Append n bytes (buffered). Errors: AV_EIO. */
int av_out_write(av_out *o, const void *p, size_t n, av_err *err);
/* Append n zero bytes. */
int av_out_zeros(av_out *o, size_t n, av_err *err);
/* Flush, fsync, rename over the final path, fsync the folder; frees o. */
int av_out_commit(av_out *o, av_err *err);
/* Remove the temp file and free o. NULL-safe. */
void av_out_abort(av_out *o);
/* Write n bytes to path atomically (open, write, commit). Errors: AV_EIO, AV_ENOMEM. */
int av_write_atomic(const char *path, const void *p, size_t n, av_err *err);

/* Whole-string decimal integer in [lo, hi] into *out (CLI arguments).
 * Returns 0, or -1 for empty text, trailing characters or out of range. */
int av_parse_int(const char *s, long lo, long hi, int *out);

/* True when path ends with ext (case-insensitive), e.g. ".gguf". */
int av_has_ext(const char *path, const char *ext);

#endif
