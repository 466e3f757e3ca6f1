#include "tensor.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int64_t av_tensor_nelements(const av_tensor *t) {
    int64_t n = 1;
    for (int i = 0; i < t->n_dims; i++) {
        if (t->shape[i] < 0) return -1;
        if (t->shape[i] && n > INT64_MAX / t->shape[i]) return -1;
        n *= t->shape[i];
    }
    return n;
}

size_t av_tensor_nbytes(const av_tensor *t, int *ok) {
    int64_t n = av_tensor_nelements(t);
    if (n < 0) { *ok = 0; return 0; }
    return av_dtype_nbytes(t->dtype, n, ok);
}

size_t av_tensor_src_nbytes(const av_tensor *t, int *ok) {
    int64_t n = av_tensor_nelements(t);
    if (n < 0) { *ok = 0; return 0; }
    return av_dtype_nbytes(t->src_dtype, n, ok);
}

void av_shape_str(const av_tensor *t, char *buf, size_t n) {
    size_t k = 0;
    k += (size_t)snprintf(buf + k, n - k, "[");
    for (int i = 0; i < t->n_dims && k < n; i++)
        k += (size_t)snprintf(buf + k, n - k, "%s%lld", i ? ", " : "", (long long)t->shape[i]);
    if (k < n) snprintf(buf + k, n - k, "]");
}

int av_can_convert(av_dtype st, av_dtype dt) {
    if (st == dt) return av_dtype_traits_of(st) != NULL;
    const av_dtype_traits *a = av_dtype_traits_of(st), *b = av_dtype_traits_of(dt);
    return a && b && a->to_float && b->from_float;
}

#define CONV_CHUNK 16384 /* elements per f32 scratch row: fits L2 */
/* Below this many chunks (16 M elements) one thread keeps up with memory and
 * the disk; waking a team per 4 MiB writer chunk only adds spinning. */
#define CONV_PAR_MIN_CHUNKS 1024

int av_convert(const void *src, av_dtype st, void *dst, av_dtype dt, int64_t n, av_err *err) {
    const av_dtype_traits *a = av_dtype_traits_of(st), *b = av_dtype_traits_of(dt);
    if (!a || !b) return av_errf(err, AV_EINVAL, "unknown dtype %d or %d", (int)st, (int)dt);
    if (st == dt) {
        int ok;
        size_t nb = av_dtype_nbytes(st, n, &ok);
        if (!ok) return av_errf(err, AV_EINVAL, "%lld elements are not whole %s blocks", (long long)n, a->name);
        memcpy(dst, src, nb);
        return 0;
    }
    if (!a->to_float || !b->from_float)
        return av_errf(err, AV_EUNSUPPORTED, "no conversion from %s to %s", a->name, b->name);
    /* chunk must be a multiple of both block sizes; all are powers of two <= 256 */
    int64_t nchunks = (n + CONV_CHUNK - 1) / CONV_CHUNK;
    if (n % a->block_size || n % b->block_size)
        return av_errf(err, AV_EINVAL, "%lld elements are not whole blocks of %s/%s", (long long)n, a->name, b->name);
    int failed = 0;
    /* Direct kernels for the common paths avoid the f32 scratch copy. */
    if (st == AV_F32 && (dt == AV_F16 || dt == AV_BF16)) {
        #pragma omp parallel for schedule(static) if (nchunks >= CONV_PAR_MIN_CHUNKS)
        for (int64_t c = 0; c < nchunks; c++) {
            int64_t i0 = c * CONV_CHUNK, k = n - i0 < CONV_CHUNK ? n - i0 : CONV_CHUNK;
            b->from_float((const float *)src + i0, (uint16_t *)dst + i0, k);
        }
        return 0;
    }
    if (dt == AV_F32) {
        #pragma omp parallel for schedule(static) if (nchunks >= CONV_PAR_MIN_CHUNKS)
        for (int64_t c = 0; c < nchunks; c++) {
            int64_t i0 = c * CONV_CHUNK, k = n - i0 < CONV_CHUNK ? n - i0 : CONV_CHUNK;
            a->to_float((const uint8_t *)src + (size_t)(i0 / a->block_size) * a->type_size, (float *)dst + i0, k);
        }
        return 0;
    }
    #pragma omp parallel if (nchunks >= CONV_PAR_MIN_CHUNKS)
    {
        float *tmp = malloc(CONV_CHUNK * sizeof(float));
        if (!tmp) {
            #pragma omp atomic write
            failed = 1;
        }
        #pragma omp for schedule(static)
        for (int64_t c = 0; c < nchunks; c++) {
            if (!tmp) continue;
            int64_t i0 = c * CONV_CHUNK, k = n - i0 < CONV_CHUNK ? n - i0 : CONV_CHUNK;
            a->to_float((const uint8_t *)src + (size_t)(i0 / a->block_size) * a->type_size, tmp, k);
            b->from_float(tmp, (uint8_t *)dst + (size_t)(i0 / b->block_size) * b->type_size, k);
        }
        free(tmp);
    }
    if (failed) return av_errf(err, AV_ENOMEM, "out of memory converting %s to %s", a->name, b->name);
    return 0;
}
