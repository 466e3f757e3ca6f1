/* safetensors.h — safetensors reader/writer (single files, shards, HF folders).
 *
 * Format: u64 little-endian header length N, N bytes of JSON
 * {"name": {"dtype": "F32", "shape": [..], "data_offsets": [b, e]}, ...,
 *  "__metadata__": {"k": "v", ...}}, then the data buffer. Reading validates:
 * header <= 100 MB and inside the file, well-formed JSON (jansson), every
 * dtype known, dtype x shape = byte length, offsets inside the buffer and
 * contiguous (no gaps, no overlap, covering the whole buffer). Tensor data are
 * zero-copy views into the mmap. */
#ifndef AV_SAFETENSORS_H
#define AV_SAFETENSORS_H

#include "gguf.h" /* av_progress_fn */
#include "model.h"

#define ST_MAX_HEADER (100u * 1000u * 1000u)

/* Read a .safetensors file, a model.safetensors.index.json (all shards), or
 * an HF folder (model.safetensors or the index inside it) into *out.
 * __metadata__ entries become string KVs. GGUF-typed metadata that
 * st_write stored (keys prefixed "gguf:") are decoded back to their types, so
 * GGUF -> safetensors -> GGUF is lossless. Errors: AV_EIO, AV_EFORMAT. */
int st_read(const char *path, av_model **out, av_err *err);

/* Parse an in-memory image (fuzzing, tests); views point into buf. */
int st_read_mem(const void *buf, size_t size, const char *name, av_model **out, av_err *err);

/* Write m to one .safetensors file atomically: tensors in model order, data
 * packed in that order; string KVs go into __metadata__ as they are, other
 * GGUF-typed KVs as JSON under "gguf:<key>" so they can be restored.
 * Errors: AV_EIO, AV_EINVAL (dtype safetensors cannot hold, e.g. quantized). */
int st_write(const av_model *m, const char *path, av_progress_fn progress, void *ud, av_err *err);

/* safetensors dtype string <-> av_dtype ("F32" <-> AV_F32); NULL / -1 if none. */
const char *st_dtype_name(av_dtype t);
int st_dtype_from_name(const char *s);

#endif
