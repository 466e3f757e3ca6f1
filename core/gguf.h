/* gguf.h — GGUF v2/v3 reader and v3 writer.
 *
 * Reading validates everything before use: counts and string lengths against
 * the file size, <= 4 dims, element-count overflow, tensor data inside the
 * file, aligned and not overlapping, duplicate names, unknown types. Tensor
 * data are zero-copy views into the mmap. Writing a model read from a GGUF
 * reproduces it byte for byte (key order, value types, tensor order,
 * alignment and padding as llama.cpp writes them). */
#ifndef AV_GGUF_H
#define AV_GGUF_H

#include "model.h"

#define GGUF_DEFAULT_ALIGNMENT 32
#define GGUF_MAX_DIMS 4

/* Parse path into a new model (*out owned by the caller; av_model_free).
 * Errors: AV_EIO, AV_EFORMAT (message names file, offset and cause). */
int gguf_read(const char *path, av_model **out, av_err *err);

/* Parse an in-memory GGUF image (no file; `name` is used in messages). The
 * model's tensor views point into buf, which must outlive the model. */
int gguf_read_mem(const void *buf, size_t size, const char *name, av_model **out, av_err *err);

/* Write m as GGUF v3 to path atomically. Tensor data are converted on the fly
 * when src_dtype != dtype. progress (may be NULL) is called with bytes done.
 * Errors: AV_EIO, AV_EINVAL (shape > 4 dims, non-GGUF dtype, bad alignment). */
typedef void (*av_progress_fn)(void *ud, uint64_t done, uint64_t total);
int gguf_write(const av_model *m, const char *path, av_progress_fn progress, void *ud, av_err *err);

#endif
