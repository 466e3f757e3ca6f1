/* tensor.h — a named, typed, shaped view of bytes.
 *
 * Shapes are in PyTorch order (outermost first, last dimension fastest); GGUF's
 * reversed ne[] is converted only inside gguf.c. data points into an mmap
 * (kept alive by the owning model) or into `owned`, which the model frees.
 * When src_dtype != dtype the bytes at data are src_dtype and writers convert
 * them on the fly (streamed, so a 30 GB f32 model never sits in memory twice). */
#ifndef AV_TENSOR_H
#define AV_TENSOR_H

#include <stdint.h>

#include "dtype.h"
#include "err.h"

#define AV_MAX_DIMS 8  /* GGUF allows 4; safetensors/PyTorch may have more */

typedef struct av_tensor {
    char *name;
    av_dtype dtype;            /* the tensor's logical (output) type */
    av_dtype src_dtype;        /* type of the bytes at data (== dtype unless converting) */
    int n_dims;
    int64_t shape[AV_MAX_DIMS];/* PyTorch order */
    const void *data;          /* src_dtype bytes, nelements of them */
    void *owned;               /* heap buffer to free with the tensor, or NULL */
    uint64_t file_offset;      /* absolute offset of data in its source file (for info) */
} av_tensor;

/* Element count (product of shape; 1 for a scalar). Returns -1 on overflow. */
int64_t av_tensor_nelements(const av_tensor *t);
/* Bytes of the tensor in `dtype` (what a writer will emit); 0 with *ok=0 if
 * the element count is not a whole number of blocks. */
size_t av_tensor_nbytes(const av_tensor *t, int *ok);
/* Bytes of the source data (src_dtype). */
size_t av_tensor_src_nbytes(const av_tensor *t, int *ok);

/* Write "[a, b, c]" into buf. */
void av_shape_str(const av_tensor *t, char *buf, size_t n);

/* Convert n elements from src (type st) to dst (type dt) through f32 rows,
 * parallel over OpenMP threads. Errors: AV_EUNSUPPORTED when a side has no
 * float conversion (quantized types until the quant issue lands). */
int av_convert(const void *src, av_dtype st, void *dst, av_dtype dt, int64_t n, av_err *err);

/* Whether av_convert can go from st to dt. */
int av_can_convert(av_dtype st, av_dtype dt);

#endif
