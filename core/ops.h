/* ops.h — numeric kernels of the transformer forward pass.
 *
 * Activations are always f32; weights may be F32, F16 or BF16 rows read
 * straight from the mmap (accumulation in f32). Every vectorised kernel has a
 * scalar `_ref` twin that defines it; tests/test_ops.c compares them.
 * Matrices are row-major in PyTorch order: W [rows, cols], cols fastest. */
#ifndef AV_OPS_H
#define AV_OPS_H

#include <stddef.h>
#include <stdint.h>

#include "dtype.h"

/* 1 when ops_matvec/ops_matmul accept weights of type t: F32, F16, BF16 and
 * every quantized type with a dequantizer (core/quant.c). */
int ops_weight_supported(av_dtype t);

/* Bytes of one row of cols elements of type t (cols a whole number of blocks). */
size_t ops_row_bytes(av_dtype t, int64_t cols);

/* dot(w, x) over n elements, w in the named type, x f32. */
float ops_dot_f32(const float *w, const float *x, int64_t n);
float ops_dot_f16(const uint16_t *w, const float *x, int64_t n);
float ops_dot_bf16(const uint16_t *w, const float *x, int64_t n);
float ops_dot_f32_ref(const float *w, const float *x, int64_t n);
float ops_dot_f16_ref(const uint16_t *w, const float *x, int64_t n);
float ops_dot_bf16_ref(const uint16_t *w, const float *x, int64_t n);

/* y[r] = W[r,:] . x for r in [0, rows).  W: [rows, cols] of type wt, x: [cols],
 * y: [rows]. Rows are split over n_threads OpenMP threads (1 = serial). */
void ops_matvec(av_dtype wt, const void *W, const float *x, float *y, int64_t rows, int64_t cols,
                int n_threads);
void ops_matvec_ref(av_dtype wt, const void *W, const float *x, float *y, int64_t rows,
                    int64_t cols);

/* Y = X W^T (batch of n rows): X [n, cols] f32, W [rows, cols] of type wt,
 * Y [n, rows]. cblas_sgemm; F16/BF16 weights are widened into `scratch`
 * (rows*cols floats; unused and may be NULL for F32). */
void ops_matmul(av_dtype wt, const void *W, const float *X, float *Y, int64_t n, int64_t rows,
                int64_t cols, float *scratch, int n_threads);

/* out = x / sqrt(mean(x^2) + eps) * w   (x, w, out: [n]; out may alias x). */
void ops_rmsnorm(float *out, const float *x, const float *w, int64_t n, float eps);
void ops_rmsnorm_ref(float *out, const float *x, const float *w, int64_t n, float eps);

/* In-place softmax over x[0..n) (max-subtracted, f32). */
void ops_softmax(float *x, int64_t n);
void ops_softmax_ref(float *x, int64_t n);

/* g[i] = silu(g[i]) * u[i]   (g, u: [n]). */
void ops_swiglu(float *g, const float *u, int64_t n);
void ops_swiglu_ref(float *g, const float *u, int64_t n);

/* y += a * x   (y, x: [n]; attention's weighted sum of V rows). */
void ops_axpy(float *y, float a, const float *x, int64_t n);
void ops_axpy_ref(float *y, float a, const float *x, int64_t n);

/* Causal attention of one head for n_q queries at positions pos0.. pos0+n_q-1:
 * q [n_q, hd] (row stride ldq), k, v [pos0+n_q, hd] (row stride ldkv), out
 * [n_q, hd] (row stride ldo); query r sees keys [0, pos0+r]. scores: scratch
 * of n_q*(pos0+n_q) floats. n_q > 1 runs two single-threaded sgemms (call
 * from inside OpenMP threads, one head each). */
void ops_attention(const float *q, int64_t ldq, const float *k, const float *v, int64_t ldkv,
                   int n_q, int pos0, int hd, float scale, float *out, int64_t ldo, float *scores);
void ops_attention_ref(const float *q, int64_t ldq, const float *k, const float *v, int64_t ldkv,
                       int n_q, int pos0, int hd, float scale, float *out, int64_t ldo,
                       float *scores);

/* RoPE styles: OPS_ROPE_NORM rotates adjacent pairs (x[2i], x[2i+1]) — the
 * GGUF/Meta weight layout llama.cpp uses for `llama`; OPS_ROPE_NEOX rotates
 * halves (x[i], x[i+d/2]) — HF's rotate_half on unpermuted HF weights. */
enum { OPS_ROPE_NORM = 0, OPS_ROPE_NEOX = 2 };

/* Rotate each of n_head vectors of head_dim floats in x ([n_head, head_dim])
 * for position pos: angle_i = pos * base^(-2i/head_dim), i in [0, head_dim/2). */
void ops_rope(float *x, int n_head, int head_dim, int pos, float base, int mode);
void ops_rope_ref(float *x, int n_head, int head_dim, int pos, float base, int mode);

#endif
