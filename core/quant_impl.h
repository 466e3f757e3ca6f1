/* quant_impl.h — helpers shared by quant_legacy.c and quant_k.c (internal). */
#ifndef AV_QUANT_IMPL_H
#define AV_QUANT_IMPL_H

#include <stdint.h>
#include <string.h>

#include "quant.h"

#define Q_MAX(a, b) ((a) > (b) ? (a) : (b))
#define Q_MIN(a, b) ((a) < (b) ? (a) : (b))
#define GROUP_MAX_EPS 1e-15f

static inline uint16_t q_fp16(float f) { return av_f32_to_f16(f); }
static inline float q_f32(uint16_t h) { return av_f16_to_f32(h); }

/* Round to nearest (ties to even) for |fval| <= 4194303, as ggml: add 1.5*2^23
 * and read the mantissa. */
static inline int q_nearest_int(float fval) {
    float val = fval + 12582912.f;
    int i;
    memcpy(&i, &val, sizeof(int));
    return (i & 0x007fffff) - 0x00400000;
}

/* ggml's scale searches (quant_search.c). qw / weights may be NULL where
 * ggml allows it. */
float q_make_qx_quants(int n, int nmax, const float *x, int8_t *L, int rmse_type, const float *qw);
float q_make_qkx3_quants(int n, int nmax, const float *x, const float *weights, uint8_t *L,
                         float *the_min, uint8_t *Laux, float rmin, float rdelta, int nstep,
                         int use_mad);
float q_make_q3_quants(int n, int nmax, const float *x, int8_t *L, int do_rmse);
float q_make_qkx2_quants(int n, int nmax, const float *x, const float *weights, uint8_t *L,
                         float *the_min, uint8_t *Laux, float rmin, float rdelta, int nstep,
                         int use_mad);
float q_make_qp_quants(int n, int nmax, const float *x, uint8_t *L, const float *quant_weights);

/* Row quantizers with importance weights (ggml's quantize_row_*_impl):
 * one row of n_per_row elements, qw = n_per_row weights. */
void q_quantize_row_q4_0_w(const float *x, block_q4_0 *y, int64_t n_per_row, const float *qw);
void q_quantize_row_q4_1_w(const float *x, block_q4_1 *y, int64_t n_per_row, const float *qw);
void q_quantize_row_q5_0_w(const float *x, block_q5_0 *y, int64_t n_per_row, const float *qw);
void q_quantize_row_q5_1_w(const float *x, block_q5_1 *y, int64_t n_per_row, const float *qw);
void q_quantize_row_q2_K_w(const float *x, block_q2_K *y, int64_t n_per_row, const float *qw);
void q_quantize_row_q3_K_w(const float *x, block_q3_K *y, int64_t n_per_row, const float *qw);
void q_quantize_row_q4_K_w(const float *x, block_q4_K *y, int64_t n_per_row, const float *qw);
void q_quantize_row_q5_K_w(const float *x, block_q5_K *y, int64_t n_per_row, const float *qw);
void q_quantize_row_q6_K_w(const float *x, block_q6_K *y, int64_t n_per_row, const float *qw);

#endif
